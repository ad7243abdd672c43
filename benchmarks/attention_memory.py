"""Peak memory of one prefill forward: sdpa, sdpa + our attention capture, and eager ``output_attentions``.

Builds a tiny LLaVA-NeXT whose prompt holds 2,416 image tokens (anyres 6×6 tiles of 8×8 patches + base view
+ newlines; LM width 256, 4 layers) and measures, each in a fresh subprocess so allocator state cannot leak
between modes, the peak tensor memory of one forward: on CPU from ``torch.profiler`` (``profile_memory=True``):
each operator's self allocations and every free, replayed in time order, the peak of the running sum; on a GPU
``torch.cuda.max_memory_allocated`` above the memory allocated before the forward. The capture keeps one query
row per forward by default, as during generation (one per output token).

    python benchmarks/attention_memory.py --json memory.json

``attention_memory_ratio`` = capture / sdpa; ``eager_memory_ratio`` = eager / sdpa.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from typing import Any

TEXT_HIDDEN = 256  # an LM wide enough that, as in real VLMs, activations (not Python objects) dominate memory


def _build(tokens_side: int, text_layers: int) -> Any:
    from vsp_assert.testing.families import tiny_llava_next

    size = 8 * 4  # 8×8 patches of 4 px per view
    big = size * tokens_side
    return tiny_llava_next(image_size=size, patch_size=4, pinpoints=((big, big),), text_layers=text_layers,
                           max_positions=16384, text_hidden=TEXT_HIDDEN)


def _measure(mode: str, tokens_side: int, text_layers: int, rows: int) -> dict[str, Any]:
    import torch
    from PIL import Image

    from vsp_assert.engine.attention import AttentionRecorder, recording

    loaded = _build(tokens_side, text_layers)
    model, adapter = loaded.model, loaded.adapter
    image = Image.new("RGB", (256, 256), (120, 30, 200))
    inputs = adapter.prepare([image], ["what color is the square ?"])
    n_image = int((inputs["input_ids"] == model.config.image_token_id).sum())
    seq = int(inputs["input_ids"].shape[1])
    if mode == "eager":
        model.set_attn_implementation({"text_config": "eager"})
    elif mode == "sdpa":
        model.set_attn_implementation({"text_config": "sdpa"})
    positions = adapter.patch_map(inputs, 0).image_positions[None]
    recorder = AttentionRecorder(image_positions=positions, rows=rows)

    def forward() -> None:
        with torch.no_grad():
            if mode == "capture":
                with recording(recorder):
                    model(**inputs)
            else:
                model(**inputs, output_attentions=(mode == "eager"))

    if torch.cuda.is_available():
        forward()  # warm-up (lazy hooks, kernels)
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
        forward()
        peak = torch.cuda.max_memory_allocated() - base
    else:
        # torch's own CPU allocations during one forward, replayed in time order: every operator's *self*
        # allocations (children excluded, so nothing is counted twice) and every free ("[memory]" events);
        # the maximum of the running sum is the peak of live tensor memory. Deterministic, unlike RSS.
        from torch.profiler import ProfilerActivity, profile

        forward()  # warm-up (lazy hooks, kernels)
        with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
            forward()
        changes = sorted(
            (e.time_range.start, e.cpu_memory_usage if e.name == "[memory]" else e.self_cpu_memory_usage)
            for e in prof.events()
        )
        live = peak = 0
        for _, amount in changes:
            live += amount
            peak = max(peak, live)
    return {"mode": mode, "peak_bytes": int(peak), "seq_len": seq, "image_tokens": n_image,
            "lm_layers": text_layers, "rows": rows}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tiles", type=int, default=6, help="anyres tiles per side (6 → 2,416 image tokens)")
    parser.add_argument("--text-layers", type=int, default=4)
    parser.add_argument("--rows", type=int, default=1,
                        help="query rows the capture keeps per forward (1 during generation: one per output token)")
    parser.add_argument("--repeats", type=int, default=1, help="fresh processes per mode (median reported)")
    parser.add_argument("--json", type=str, default=None, help="write the results to this JSON file")
    parser.add_argument("--_mode", type=str, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args._mode:
        print(json.dumps(_measure(args._mode, args.tiles, args.text_layers, args.rows)))
        return 0
    results = {}
    for mode in ("sdpa", "capture", "eager"):
        cmd = [sys.executable, __file__, "--_mode", mode, "--tiles", str(args.tiles),
               "--text-layers", str(args.text_layers), "--rows", str(args.rows)]
        runs = []
        for _ in range(args.repeats):  # fresh process each time; the median smooths allocator noise
            out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
            runs.append(json.loads(out.strip().splitlines()[-1]))
        runs.sort(key=lambda r: r["peak_bytes"])
        results[mode] = {**runs[len(runs) // 2], "runs_peak_bytes": [r["peak_bytes"] for r in runs]}
    from tabulate import tabulate

    base = results["sdpa"]["peak_bytes"]
    table = [[m, r["image_tokens"], r["seq_len"], f"{r['peak_bytes'] / 2**20:.1f}", f"{r['peak_bytes'] / base:.2f}"]
             for m, r in results.items()]
    print(tabulate(table, headers=["mode", "image tokens", "seq len", "peak MiB", "× sdpa"]))
    summary = {
        "results": results,
        "attention_memory_ratio": results["capture"]["peak_bytes"] / base,
        "eager_memory_ratio": results["eager"]["peak_bytes"] / base,
    }
    print(f"attention_memory_ratio={summary['attention_memory_ratio']:.3f} "
          f"eager_memory_ratio={summary['eager_memory_ratio']:.3f}")
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(summary, fh, indent=2)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
