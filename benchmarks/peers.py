"""vsp-assert beside its peers, on the same cases, the same model and the same SAE, in one process.

    python benchmarks/peers.py [--quick] [--device cpu|cuda] [--json PATH]

Every path does the same work for a case: a greedy answer, the hooked layer's SAE codes ``f[p, k]``, the answer
tokens' text-to-image attention ``A[t, p]`` (averaged over LM layers and heads, over the image's tokens) and the
scores ``s = A · f``, then ``K`` single-latent ablations (the K latents most active on the image), each read as
the probability of the original answer under the edit ``z' = z + (f' − f) · W_dec`` at the hooked layer.

- **vsp-assert**: ``Scratchpad.run`` + one batched ``Scratchpad.intervene`` (attention captured one query row per
  step under sdpa, sparse codes, the K ablations as one batched forward).
- **the peers' way** (LVLM-Interpret, the VisualScratchpad paper's interface): eager attention with
  ``output_attentions=True`` during ``generate`` (every layer's full attention kept), a dense ``sae.encode`` of the
  hooked patches, then one forward per ablation with a hook that encodes densely and edits.
- **nnsight** (``pip install "vsp-assert[bench]"``): ``generate``, one ``NNsight.trace`` of the answered sequence that
  saves the hooked layer's output and every LM layer's attention weights (eager, which is what returns them), then
  one ``trace`` per ablation that edits the hooked layer's output inside the trace body. Skipped, with a note in the
  JSON, when nnsight is not installed.

Figures (``peers.*`` in ``benchmarks/run.py``'s JSON), each vsp-assert ÷ peer, measured and reported whatever
they are: ``eager_time_ratio`` and ``nnsight_time_ratio`` (interleaved timings, best of repeats), and
``eager_memory_ratio`` (peak tensor memory of one case: ``torch.cuda.max_memory_allocated`` on a GPU; on a CPU the
profiler's allocation and free events replayed in order, as ``benchmarks/attention_memory.py`` does).
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

HERE = Path(__file__).resolve().parent


def _wide() -> Any:
    import importlib.util

    key = "vsp_benchmarks_wide"
    if key not in sys.modules:
        spec = importlib.util.spec_from_file_location(key, HERE / "wide.py")
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        sys.modules[key] = module
        spec.loader.exec_module(module)
    return sys.modules[key]


def peak_bytes(fn: Callable[[], Any], device: str) -> int:
    """Peak tensor memory of one call of ``fn`` above what was allocated before it."""
    if device.startswith("cuda"):
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
        fn()
        torch.cuda.synchronize()
        return int(torch.cuda.max_memory_allocated() - base)
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        fn()
    changes = sorted((e.time_range.start, e.cpu_memory_usage if e.name == "[memory]" else e.self_cpu_memory_usage)
                     for e in prof.events())
    live = peak = 0
    for _, amount in changes:
        live += amount
        peak = max(peak, live)
    return int(peak)


class Peers:
    """The three ways of doing one case on ``pad``'s model and SAE (see the module docstring)."""

    def __init__(self, pad: Any, cases: list[tuple[Any, str]], k: int) -> None:
        self.pad, self.k, self.cases = pad, k, cases
        self.model, self.adapter, self.sae = pad.model, pad.adapter, pad.sae
        self.inputs = [pad._to_device(self.adapter.prepare([image], [prompt])) for image, prompt in cases]
        self.latents = [[int(i) for i in pad.run(image, prompt).image_scores.topk(k).indices]
                        for image, prompt in cases]
        self.image_token = self.model.config.image_token_id
        self.nnsight: Any = None
        try:
            from nnsight import NNsight

            self.nnsight = NNsight(self.model)
        except ImportError:
            pass

    # ------------------------------------------------------------------ vsp-assert
    def ours(self, i: int) -> list[float]:
        """Case ``i`` by vsp-assert; returns p(original answer) under each ablation (as every path does)."""
        from vsp_assert import Intervention

        trace = self.pad.run(*self.cases[i])
        return [r.p_after for r in self.pad.intervene(trace, [Intervention.ablate(j) for j in self.latents[i]])]

    # ------------------------------------------------------------------ shared pieces of the peers
    def _scores(self, x: torch.Tensor, attention: torch.Tensor) -> torch.Tensor:
        """Dense encode ``[P, d_sae]`` and ``s [T, d_sae]`` from image-token attention ``[T, N_img]``."""
        f = self.sae.encode(x)  # [P, d_sae]
        a = attention / attention.sum(-1, keepdim=True)
        return a.to(f.dtype) @ f

    def _edited(self, hidden: torch.Tensor, inputs: dict[str, torch.Tensor], latent: int) -> torch.Tensor:
        """The hooked output with ``latent`` ablated on every patch: a dense encode, the SAE error kept."""
        x = self.adapter.patches_of(hidden, 1, inputs)  # [1, P, d_in]
        f = self.sae.encode(x)  # [1, P, d_sae]
        delta = torch.zeros_like(f)
        delta[..., latent] = -f[..., latent]
        return self.adapter.with_patches(hidden, x + (delta @ self.sae.W_dec).to(x.dtype), inputs)

    def _answer_p(self, logits: torch.Tensor, seq: torch.Tensor, prompt_len: int) -> float:
        answer = seq[0, prompt_len:]  # [T]
        logp = torch.log_softmax(logits[0, -len(answer) - 1 : -1].float(), -1)  # [T, V]
        return float(logp.gather(1, answer[:, None]).sum().exp())

    # ------------------------------------------------------------------ the peers' way
    def eager(self, i: int) -> list[float]:
        from vsp_assert.engine.hooks import forward_hook

        inputs, model = self.inputs[i], self.model
        grabbed: dict[str, torch.Tensor] = {}
        with torch.inference_mode():
            with forward_hook(self.pad.hook_module, lambda h: grabbed.setdefault("z", h)):
                out = model.generate(**inputs, max_new_tokens=self.pad.max_new_tokens, do_sample=False,
                                     num_beams=1, pad_token_id=self.pad._pad_id(), output_attentions=True,
                                     return_dict_in_generate=True)
            image = (inputs["input_ids"][0] == self.image_token).nonzero().flatten()  # [N_img]
            # out.attentions: per step, per layer [1, H, q, S]; the step's last query row produced its token
            rows = [torch.stack([layer[0, :, -1, image] for layer in step]).float().mean((0, 1))
                    for step in out.attentions]  # T × [N_img]
            self._scores(self.adapter.patches_of(grabbed["z"], 1, inputs)[0], torch.stack(rows))
            seq, prompt_len = out.sequences, inputs["input_ids"].shape[1]
            extra = {key: v for key, v in inputs.items() if key not in ("input_ids", "attention_mask")}
            p_after = []
            for latent in self.latents[i]:  # one forward per ablation
                with forward_hook(self.pad.hook_module, lambda h, j=latent: self._edited(h, inputs, j)):
                    logits = model(input_ids=seq, attention_mask=torch.ones_like(seq), **extra).logits
                p_after.append(self._answer_p(logits, seq, prompt_len))
        return p_after

    # ------------------------------------------------------------------ nnsight
    def _envoy(self) -> Any:
        envoy = self.nnsight
        for part in self.pad.hook_layer.split("."):
            envoy = envoy[int(part)] if part.isdigit() else getattr(envoy, part)
        return envoy

    def nnsight_case(self, i: int) -> list[float]:
        import nnsight

        inputs, model, nn = self.inputs[i], self.model, self.nnsight
        envoy = self._envoy()
        lm = nn.model.language_model.layers  # LLaVA's LM decoder layers, as nnsight envoys
        with torch.inference_mode():
            seq = model.generate(**inputs, max_new_tokens=self.pad.max_new_tokens, do_sample=False, num_beams=1,
                                 pad_token_id=self.pad._pad_id())
            prompt_len = inputs["input_ids"].shape[1]
            image = (inputs["input_ids"][0] == self.image_token).nonzero().flatten()  # [N_img]
            extra = {key: v for key, v in inputs.items() if key not in ("input_ids", "attention_mask")}
            mask = torch.ones_like(seq)
            with nn.trace(input_ids=seq, attention_mask=mask, **extra):
                z = envoy.output.save()
                saved = nnsight.save([])  # a container saved once, raw values appended (nnsight's idiom)
                for layer in lm:  # each LM layer's attention weights [1, H, S, S]: the rows of the answer tokens
                    saved.append(layer.self_attn.output[1][0, :, prompt_len - 1 : -1][..., image])
            attention = torch.stack(list(saved)).float().mean((0, 1))  # [T, N_img]
            self._scores(self.adapter.patches_of(z, 1, inputs)[0], attention)
            p_after = []
            for latent in self.latents[i]:  # one trace per ablation
                with nn.trace(input_ids=seq, attention_mask=mask, **extra):
                    envoy.output = self._edited(envoy.output, inputs, latent)
                    logits = nn.output.logits.save()
                p_after.append(self._answer_p(logits, seq, prompt_len))
        return p_after

    # ------------------------------------------------------------------ measuring
    def _all(self, fn: Callable[[int], list[float]]) -> Callable[[], None]:
        def every() -> None:
            for i in range(len(self.cases)):
                fn(i)

        return every

    def agreement(self) -> dict[str, float]:
        """The largest difference of p(original answer) under an ablation between vsp-assert and each peer, over
        the cases: the paths time the same work only if these are near zero."""
        out: dict[str, float] = {}
        ours = [p for i in range(len(self.cases)) for p in self.ours(i)]
        peers = {"eager": self.eager} | ({"nnsight": self.nnsight_case} if self.nnsight is not None else {})
        for name, fn in peers.items():
            self.model.set_attn_implementation({"text_config": "eager"})
            try:
                theirs = [p for i in range(len(self.cases)) for p in fn(i)]
            finally:
                self.adapter.install_attention_capture()
            out[name] = max(abs(a - b) for a, b in zip(ours, theirs, strict=True))
        return out

    def figures(self, repeats: int, device: str) -> dict[str, Any]:
        run = _wide().load_module("run")
        model, adapter = self.model, self.adapter

        def eager_mode(fn: Callable[[], None]) -> Callable[[], None]:
            def wrapped() -> None:
                model.set_attn_implementation({"text_config": "eager"})
                try:
                    fn()
                finally:
                    adapter.install_attention_capture()

            return wrapped

        paths: dict[str, Callable[[], None]] = {"ours": self._all(self.ours),
                                                 "eager": eager_mode(self._all(self.eager))}
        out: dict[str, Any] = {"ablations": self.k, "cases": len(self.cases)}
        if self.nnsight is not None:
            import nnsight

            paths["nnsight"] = eager_mode(self._all(self.nnsight_case))
            out["nnsight_version"] = nnsight.__version__
        else:
            out["nnsight_note"] = ('nnsight is not installed: pip install "vsp-assert[bench]" (or nnsight) for '
                                   "peers.nnsight_time_ratio")
        for fn in paths.values():
            fn()  # warm-up
        times: dict[str, list[float]] = {name: [] for name in paths}
        for _ in range(repeats):  # interleaved: a busy spell of the machine hits every path
            for name, fn in paths.items():
                times[name].append(run._best_time(fn, 1))
        best = {name: min(t) for name, t in times.items()}
        out.update({f"{name}_case_seconds": s / len(self.cases) for name, s in best.items()})
        out["eager_time_ratio"] = best["ours"] / best["eager"]
        if "nnsight" in best:
            out["nnsight_time_ratio"] = best["ours"] / best["nnsight"]
        ours_peak = peak_bytes(lambda: self.ours(0), device)
        eager_peak = peak_bytes(eager_mode(lambda: self.eager(0)), device)
        out.update({"ours_peak_mb": ours_peak / 2**20, "eager_peak_mb": eager_peak / 2**20,
                    "eager_memory_ratio": ours_peak / eager_peak})
        return out


def figures(pad: Any, *, quick: bool, device: str) -> dict[str, Any]:
    """Every ``peers.*`` figure on a built Scratchpad (the ``wide`` one in ``benchmarks/run.py``)."""
    wide = _wide()
    cases = [(image, wide.PROMPT) for image in wide.images(1 if quick else 2, seed=21)]
    return Peers(pad, cases, k=4).figures(repeats=2 if quick else 3, device=device)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--json", dest="json_path", default=None)
    args = parser.parse_args(argv)
    dtype = torch.bfloat16 if args.device.startswith("cuda") else torch.float32
    result = figures(_wide().build(device=args.device, dtype=dtype), quick=args.quick, device=args.device)
    print(json.dumps(result, indent=1))
    if args.json_path:
        Path(args.json_path).write_text(json.dumps(result, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
