"""vsp-assert's per-case cost on the full-size LLaVA-1.5-7B architecture, with random weights.

No checkpoint is downloaded: the model is LLaVA-1.5-7B's architecture built from transformers' config classes
(``CLIPVisionConfig`` + ``LlamaConfig`` + ``LlavaConfig``) with random weights, created directly in the
requested dtype on the requested device (a 7B model never exists in float32 on the host). The processor is the
real ``LlavaProcessor`` over a ``CLIPImageProcessorPil`` built from arguments (336 px) and the project's offline
word-level tokenizer; the SAE is a random TopK SAE (k = 32, expansion 16: 16,384 latents on the 1,024-wide
tower) on the layer the LM reads (``vision_feature_layer`` -2). Random weights do not change the shapes, so the
timings are those of a real checkpoint of this architecture: each image puts (336 / 14)² = 576 tokens in the
prompt.

Architecture: vision CLIP ViT-L/14 at 336 px (24 layers, 1,024 wide, MLP 4,096, 16 heads, quick-gelu), GELU
projector, LM Llama-2-7B (32 layers, 4,096 wide, MLP 11,008, 32 heads, 32 KV heads, vocab 32,064, 4,096
positions, RMS eps 1e-5).

Figures (reusing ``benchmarks/run.py``'s ``overhead`` and ``batching``; every timing is the best of repeats):

- ``per_case_seconds``: ``Scratchpad.run`` + one batched ``intervene`` of 16 single-latent ablations, per case,
  averaged over ``--cases`` random 336×336 images with the prompt "what color is the square ?".
- ``overhead_ratio``: the same ÷ the bare model doing the same forward passes (``generate`` + one batched
  teacher-forced forward, sdpa, no hooks).
- ``batching_ratio``: the 16 ablations (the latents most active on the image) as one batched call ÷ one by one;
  the median of ``--rounds`` rounds, with the spread in ``batching_ratio_range``.
- ``image_tokens``: image tokens in one prompt (576 at every ``--scale``: only widths and depths shrink).

On a GPU (7.06 B parameters: 13.2 GiB of weights in bfloat16, built on the device; the build, with its
finiteness check, took 2.5 minutes on 2 CPU cores and 14.1 GiB peak RSS, so a GPU needs far less)::

    python benchmarks/full_size.py --device cuda --dtype bfloat16 --json full-size.json

CPU smoke test of the same code path (widths, head counts and layer counts × 1/16; well under a minute)::

    python benchmarks/full_size.py --scale 0.0625 --cases 2 --repeats 1 --rounds 1

``--scale F`` (0 < F ≤ 1) multiplies every width, head count and layer count by F (head widths 64 and 128 are
kept, at least one head and two layers per tower); image size, patch size, vocabulary, the 16 ablations and the
SAE's expansion factor do not change. Its timings say nothing about the full model: figures are recorded in the
README only when measured on a GPU at ``--scale 1``, with the device (``device`` in the JSON) named beside them.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import math
import os
import sys
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from types import ModuleType
from typing import Any

import torch

HERE = Path(__file__).resolve().parent
PROMPT = "what color is the square ?"
K = 16  # ablations per batched intervene, as in benchmarks/run.py
DTYPES: dict[str, torch.dtype] = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def _run_module() -> ModuleType:
    """``benchmarks/run.py`` imported from its path (``benchmarks`` is not a package), under a unique name."""
    name = "vsp_benchmarks_run"
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, HERE / "run.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


@dataclass(frozen=True)
class Architecture:
    """The sizes of a LLaVA-1.5 model (defaults: LLaVA-1.5-7B)."""

    vision_hidden: int = 1024
    vision_intermediate: int = 4096
    vision_layers: int = 24
    vision_heads: int = 16
    image_size: int = 336
    patch_size: int = 14
    text_hidden: int = 4096
    text_intermediate: int = 11008
    text_layers: int = 32
    text_heads: int = 32
    text_kv_heads: int = 32
    vocab_size: int = 32064
    max_positions: int = 4096

    def scaled(self, factor: float) -> Architecture:
        """Widths, head counts and layer counts × ``factor`` (head widths kept); 1 returns the architecture."""
        if not 0 < factor <= 1:
            raise ValueError(f"--scale must be in (0, 1], got {factor}")
        if factor == 1:
            return self

        def count(n: int, least: int) -> int:
            return max(least, round(n * factor))

        v_heads, t_heads = count(self.vision_heads, 1), count(self.text_heads, 1)
        kv = max(1, math.gcd(t_heads, count(self.text_kv_heads, 1)))  # a divisor of the query heads
        return replace(
            self,
            vision_hidden=v_heads * (self.vision_hidden // self.vision_heads),
            vision_intermediate=count(self.vision_intermediate, 1),
            vision_layers=count(self.vision_layers, 2),  # vision_feature_layer -2 needs two layers
            vision_heads=v_heads,
            text_hidden=t_heads * (self.text_hidden // self.text_heads),
            text_intermediate=count(self.text_intermediate, 1),
            text_layers=count(self.text_layers, 2),
            text_heads=t_heads,
            text_kv_heads=kv,
        )

    def describe(self, factor: float) -> str:
        what = "llava-1.5-7b architecture" if factor == 1 else f"llava-1.5-7b architecture scaled ×{factor:g}"
        return (f"{what}, random weights: vision {self.vision_layers} layers × {self.vision_hidden} "
                f"(MLP {self.vision_intermediate}, heads {self.vision_heads}, {self.image_size} px / "
                f"{self.patch_size}), LM {self.text_layers} layers × {self.text_hidden} (MLP "
                f"{self.text_intermediate}, heads {self.text_heads}, KV heads {self.text_kv_heads}), vocab "
                f"{self.vocab_size}")


def build(arch: Architecture, *, device: str, dtype: torch.dtype, seed: int = 0,
          vision_feature_layer: int = -2) -> tuple[Any, str]:
    """A random-weight LLaVA of ``arch`` on ``device`` in ``dtype``, wrapped for the engine, and how it was
    initialised. Parameters are created where and as they stay: no float32 copy on the host.
    ``vision_feature_layer``: the tower layer the LM reads (LLaVA-1.5: -2)."""
    from transformers import (
        CLIPImageProcessorPil,
        CLIPVisionConfig,
        LlamaConfig,
        LlavaConfig,
        LlavaForConditionalGeneration,
        LlavaProcessor,
    )

    from vsp_assert.engine.models import LoadedModel
    from vsp_assert.testing import CHAT_TEMPLATE, word_tokenizer

    tok = word_tokenizer()
    if arch.vocab_size < len(tok):
        raise ValueError(f"vocab_size {arch.vocab_size} is below the tokenizer's {len(tok)} tokens")
    vision = CLIPVisionConfig(
        hidden_size=arch.vision_hidden, intermediate_size=arch.vision_intermediate,
        num_hidden_layers=arch.vision_layers, num_attention_heads=arch.vision_heads, image_size=arch.image_size,
        patch_size=arch.patch_size, hidden_act="quick_gelu", projection_dim=768,
    )
    text = LlamaConfig(
        hidden_size=arch.text_hidden, intermediate_size=arch.text_intermediate, num_hidden_layers=arch.text_layers,
        num_attention_heads=arch.text_heads, num_key_value_heads=arch.text_kv_heads, vocab_size=arch.vocab_size,
        max_position_embeddings=arch.max_positions, rms_norm_eps=1e-5, tie_word_embeddings=False,
        pad_token_id=tok.pad_token_id, bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id,
    )
    image_tokens = (arch.image_size // arch.patch_size) ** 2
    config = LlavaConfig(
        vision_config=vision, text_config=text, image_token_index=tok.image_token_id,
        vision_feature_layer=vision_feature_layer,
        vision_feature_select_strategy="default", projector_hidden_act="gelu", image_seq_length=image_tokens,
    )
    torch.manual_seed(seed)
    with torch.device(device):
        model = LlavaForConditionalGeneration._from_config(config, dtype=dtype)
    model.eval()
    model.generation_config.eos_token_id = tok.eos_token_id
    model.generation_config.pad_token_id = tok.pad_token_id
    image_processor = CLIPImageProcessorPil(
        size={"shortest_edge": arch.image_size}, crop_size={"height": arch.image_size, "width": arch.image_size},
        do_center_crop=True, do_resize=True,
    )
    processor = LlavaProcessor(
        image_processor=image_processor, tokenizer=tok, patch_size=arch.patch_size,
        vision_feature_select_strategy="default", num_additional_image_tokens=1, chat_template=CHAT_TEMPLATE,
    )
    loaded = LoadedModel.wrap(model, processor, name=f"llava-1.5-7b-architecture-random-{arch.text_layers}L")
    init = "transformers default"
    if not _finite_forward(loaded):
        # a random init that overflows in a low-precision dtype: redraw every weight matrix with a small std
        std = float(config.text_config.initializer_range)
        _reinit(model, std)
        init = f"normal(std={std:g}), norms 1, biases 0"
        if not _finite_forward(loaded):
            raise RuntimeError(f"the random model's logits are not finite in {dtype} even with std {std:g}")
    return loaded, init


def _finite_forward(loaded: Any) -> bool:
    """Whether one prefill forward on a random image gives finite logits ``[1, S, vocab]``."""
    inputs = loaded.adapter.prepare([_images(1, seed=99)[0]], [PROMPT])
    inputs = {key: v.to(loaded.device, loaded.dtype) if v.is_floating_point() else v.to(loaded.device)
              for key, v in inputs.items() if isinstance(v, torch.Tensor)}
    with torch.inference_mode():
        logits = loaded.model(**inputs).logits  # [1, S, vocab]
    return bool(torch.isfinite(logits).all())


@torch.no_grad()
def _reinit(model: torch.nn.Module, std: float) -> None:
    for module in model.modules():
        if isinstance(module, (torch.nn.Linear, torch.nn.Embedding, torch.nn.Conv2d)):
            module.weight.normal_(0.0, std)
        elif hasattr(module, "weight") and isinstance(module.weight, torch.Tensor):  # LayerNorm, RMSNorm
            module.weight.fill_(1.0)
        bias = getattr(module, "bias", None)
        if isinstance(bias, torch.Tensor):
            bias.zero_()


def _images(n: int, seed: int, size: int = 336) -> list[Any]:
    """``n`` random RGB images, ``size`` × ``size`` (uniform noise from numpy's RNG)."""
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(seed)
    return [Image.fromarray(rng.integers(0, 256, (size, size, 3), dtype=np.uint8)) for _ in range(n)]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    cuda = torch.cuda.is_available()
    parser.add_argument("--device", default="cuda" if cuda else "cpu")
    parser.add_argument("--dtype", choices=sorted(DTYPES), default=None,
                        help="default: bfloat16 on cuda, float32 on cpu")
    parser.add_argument("--cases", type=int, default=8, help="random (image, prompt) cases per timing")
    parser.add_argument("--scale", type=float, default=1.0,
                        help="multiply widths, heads and layers by this (e.g. 0.0625 for a CPU smoke test)")
    parser.add_argument("--d-sae", type=int, default=None, help="SAE latents (default 16 × vision width)")
    parser.add_argument("--max-new-tokens", type=int, default=4)
    parser.add_argument("--repeats", type=int, default=3, help="timings per figure (the best is kept)")
    parser.add_argument("--rounds", type=int, default=3, help="batching-ratio rounds (the median is reported)")
    parser.add_argument("--json", dest="json_path", default=None, help="write the figures to this JSON file")
    args = parser.parse_args(argv)
    if not 0 < args.scale <= 1:
        parser.error(f"--scale must be in (0, 1], got {args.scale}")
    if min(args.cases, args.repeats, args.rounds, args.max_new_tokens) < 1:
        parser.error("--cases, --repeats, --rounds and --max-new-tokens must be at least 1")
    from tabulate import tabulate

    from vsp_assert import Scratchpad
    from vsp_assert.testing import random_sae

    run = _run_module()
    dtype_name = args.dtype or ("bfloat16" if args.device.startswith("cuda") else "float32")
    dtype = DTYPES[dtype_name]
    arch = Architecture().scaled(args.scale)
    load_before = os.getloadavg()[0]

    start = time.perf_counter()
    loaded, init = build(arch, device=args.device, dtype=dtype)
    d_sae = args.d_sae or 16 * arch.vision_hidden
    sae = random_sae(arch.vision_hidden, d_sae, k=32, hook_layer=loaded.adapter.default_hook_layer())
    pad = Scratchpad(loaded, sae, max_new_tokens=args.max_new_tokens)
    run._sync()
    build_seconds = time.perf_counter() - start

    cases = [(image, PROMPT) for image in _images(args.cases, seed=7, size=arch.image_size)]
    inputs = loaded.adapter.prepare([cases[0][0]], [PROMPT])
    figures: dict[str, Any] = {
        "device": run._device_name(args.device),
        "dtype": dtype_name,
        "model": arch.describe(args.scale),
        "scale": args.scale,
        "architecture": asdict(arch),
        "parameters": sum(p.numel() for p in loaded.model.parameters()),
        "init": init,
        "sae": {"d_in": arch.vision_hidden, "d_sae": d_sae, "k": 32, "hook_layer": sae.hook_layer},
        "image_tokens": int((inputs["input_ids"] == loaded.model.config.image_token_id).sum()),
        "sequence_length": int(inputs["input_ids"].shape[1]),
        "cases": args.cases,
        "ablations": K,
        "max_new_tokens": args.max_new_tokens,
        "build_seconds": build_seconds,
    }
    if args.device.startswith("cuda"):
        torch.cuda.reset_peak_memory_stats(args.device)
    timed = run.overhead(pad, cases, k=K, repeats=args.repeats)
    figures["per_case_seconds"] = timed["case_seconds"]
    figures["bare_case_seconds"] = timed["bare_case_seconds"]
    figures["overhead_ratio"] = timed["overhead_ratio"]
    figures.update(run.batching(pad, *cases[0], k=K, repeats=args.repeats, rounds=args.rounds))
    if args.device.startswith("cuda"):
        figures["peak_gpu_memory_gib"] = torch.cuda.max_memory_allocated(args.device) / 2**30
    figures["load_average"] = [round(load_before, 2), round(os.getloadavg()[0], 2)]

    rows = [
        ["model", figures["model"]],
        ["dtype, parameters", f"{dtype_name}, {figures['parameters'] / 1e9:.2f} B"],
        ["image tokens (sequence length)", f"{figures['image_tokens']} ({figures['sequence_length']})"],
        ["SAE", f"{d_sae} latents, k = 32, on {sae.hook_layer}"],
        [f"seconds per case (run + {K} batched ablations)", f"{figures['per_case_seconds']:.3f} s"],
        ["bare seconds per case (generate + batched forward)", f"{figures['bare_case_seconds']:.3f} s"],
        ["overhead ratio (ours ÷ bare)", f"{figures['overhead_ratio']:.2f}"],
        [f"batching ratio ({K} batched ÷ one by one)",
         "{:.2f} ({:.2f}–{:.2f})".format(figures["batching_ratio"], *figures["batching_ratio_range"])],
        ["build seconds (model + SAE)", f"{build_seconds:.1f} s"],
    ]
    if "peak_gpu_memory_gib" in figures:
        rows.append(["peak GPU memory", f"{figures['peak_gpu_memory_gib']:.1f} GiB"])
    rows.append(["machine load average (before, after)", "{:.2f}, {:.2f}".format(*figures["load_average"])])
    print(tabulate(rows, headers=["figure", f"value ({figures['device']})"], tablefmt="github"))
    if args.json_path:
        Path(args.json_path).write_text(json.dumps(figures, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
