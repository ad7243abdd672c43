"""Resident memory over a long run: 1,000 cases through one Scratchpad, interventions included.

    python benchmarks/rss.py [--cases 1000] [--every 100] [--model shapes|PATH --sae shapes|PATH] [--json PATH]

Each case is a fresh (image, prompt) pair run with ``Scratchpad.run`` followed by one batched ``intervene`` call
(two ablations and a steer), the work a YAML case with causal checks does. The resident set size (``VmRSS`` from
``/proc/self/status``; ``ru_maxrss`` where there is no procfs) is sampled after every ``--every`` cases, after a
``gc.collect()``. The growth is the last sample minus the first (the first is taken after a warm-up of
``--every`` cases, so that one-off allocations — kernels, tokenizer caches, the allocator's arenas — are not
counted). A flat line means no hooks, recorders, traces or buffers accumulate across cases.

Without ``--model``, the shapes-world model is used when its artifacts are present, otherwise a random-weight
tiny LLaVA of the same size (64 × 64 images, 8 × 8 patches) from :mod:`vsp_assert.testing`.
"""

from __future__ import annotations

import argparse
import gc
import json
import resource
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch


def rss_mib() -> float:
    """The current resident set size of this process in MiB."""
    status = Path("/proc/self/status")
    if status.exists():
        for line in status.read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024.0
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux, bytes on macOS
    return peak / (1024.0 * 1024.0) if sys.platform == "darwin" else peak / 1024.0


def build(model: str | None, sae: str | None) -> tuple[Any, str]:
    """A Scratchpad over the requested (or the default) model and SAE, and a description of it."""
    from vsp_assert import Scratchpad, load_model, load_sae

    if model is None:
        try:
            from vsp_assert.shapes import MODEL_DIR, SAE_DIR

            if Path(MODEL_DIR).is_dir() and Path(SAE_DIR).is_dir():
                model, sae = "shapes", sae or "shapes"
        except ImportError:
            pass
    if model is not None:
        loaded = load_model(model)
        return Scratchpad(loaded, load_sae(sae or "shapes"), max_new_tokens=4), f"model {model}, SAE {sae}"
    from vsp_assert.testing import random_sae, tiny_llava

    loaded = tiny_llava(seed=0, image_size=64, patch_size=8)
    sae_ = random_sae(loaded.adapter.vision_width(), 128, k=8, hook_layer=loaded.adapter.default_hook_layer(),
                      concepts={"red": [1, 2], "square": [3], "stripes": [4, 5]})
    return Scratchpad(loaded, sae_, max_new_tokens=4), "tiny LLaVA (64x64 images, 64 patches), random SAE 128"


PROMPTS = ("what color is the square ?", "is there a red circle ?", "what shape is it ?", "describe the image")


def run(cases: int, every: int, model: str | None, sae: str | None) -> dict[str, Any]:
    from PIL import Image

    from vsp_assert import Intervention
    from vsp_assert.engine.hooks import count_hooks

    torch.manual_seed(0)
    pad, what = build(model, sae)
    hooks = count_hooks(pad.model)
    rng = np.random.RandomState(0)
    interventions = [Intervention.ablate("red"), Intervention.ablate("#7", "#9"),
                     Intervention.steer("square", scale=2.0)]
    labels = pad.sae.labels
    if "red" not in labels.concepts:  # a real SAE: ablate and steer its first latents instead
        interventions = [Intervention.ablate("#0"), Intervention.ablate("#1", "#2"),
                         Intervention.steer("#3", scale=2.0)]
    samples: list[tuple[int, float]] = []
    start = time.perf_counter()
    for i in range(1, cases + 1):
        image = Image.fromarray((rng.rand(64, 64, 3) * 255).astype("uint8"))
        trace = pad.run(image, PROMPTS[i % len(PROMPTS)])
        pad.intervene(trace, interventions)
        del trace
        if i % every == 0:
            gc.collect()
            samples.append((i, rss_mib()))
            print(f"{i:5d} cases  RSS {samples[-1][1]:8.1f} MiB", flush=True)
    seconds = time.perf_counter() - start
    growth = samples[-1][1] - samples[0][1] if samples else 0.0
    return {
        "setup": what,
        "cases": cases,
        "seconds_per_case": seconds / cases,
        "samples": samples,
        "rss_growth_mib": growth,
        "hooks_left": count_hooks(pad.model) - hooks,
        "torch": torch.__version__,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", type=int, default=1000)
    parser.add_argument("--every", type=int, default=100)
    parser.add_argument("--model", default=None, help="shapes, or a save_pretrained folder")
    parser.add_argument("--sae", default=None, help="shapes, or an SAE folder (SAELens format)")
    parser.add_argument("--json", dest="json_path", default=None, help="also write the figures here")
    args = parser.parse_args(argv)
    torch.set_num_threads(max(1, min(2, torch.get_num_threads())))
    result = run(args.cases, args.every, args.model, args.sae)
    first, last = result["samples"][0], result["samples"][-1]
    print(f"\n{result['setup']}: {result['cases']} cases, {1000 * result['seconds_per_case']:.1f} ms/case")
    print(f"RSS after {first[0]} cases: {first[1]:.1f} MiB; after {last[0]}: {last[1]:.1f} MiB; "
          f"growth {result['rss_growth_mib']:+.1f} MiB; hooks left on the model: {result['hooks_left']}")
    if args.json_path:
        from vsp_assert.files import atomic_write_text

        atomic_write_text(args.json_path, json.dumps(result, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
