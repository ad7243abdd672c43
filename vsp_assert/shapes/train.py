"""The training recipe of the shipped shapes VLM (``vsp-assert shapes train``).

This module owns how the shipped weights came to be, so that anyone can re-create them: a fresh
:func:`~vsp_assert.shapes.build.build_model`, trained end to end (vision tower, projector and LM together) on
examples drawn from :func:`~vsp_assert.shapes.mechanisms.training_example` — the training distribution with
its planted mechanisms. Recipe: AdamW, linear warm-up then cosine decay, gradient clipping, a curriculum
(one-object scenes first, which teaches the LM to read the image before it must bind colours to shapes),
and a cross-entropy loss on the answer token and the closing ``</s>`` only. An auxiliary linear head on the
hooked vision layer predicts every patch's ground-truth concepts (binary cross-entropy; the head is discarded
after training): without it the tower learns colour at once but shape only very slowly, because shape lives in
a few edge patches; with it every patch of an object carries its shape, which the LM needs for binding and the
SAE needs for clean shape latents. The probe supervises the *encoder* with the truth of the pixels only — it
never sees questions or the planted labels, so every planted mechanism lives in how the LM reads the encoder.
A second auxiliary linear head (also discarded) reads the LM's second-to-last layer at the question's *key
word* (the shape word of a colour/presence question, the colour word of a shape question) and predicts the
training label: it gives the first hop of the question→image lookup a direct gradient, which breaks the long
plateau a small LM otherwise sits on before it learns to bind a colour to a shape in multi-object scenes.
Everything is seeded: the same seed and step count give the same weights. The SAE is trained afterwards by
:mod:`vsp_assert.shapes.train_sae`.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from transformers import LlavaForConditionalGeneration

from vsp_assert.files import atomic_write_text
from vsp_assert.shapes.build import build_model, build_tokenizer, save_model_folder
from vsp_assert.shapes.inference import PromptEncoder, pixel_values
from vsp_assert.shapes.labelling import label_matrix
from vsp_assert.shapes.mechanisms import TRAIN_STREAM, Example, training_example
from vsp_assert.shapes.world import CONCEPTS, SHAPES


def hook_layer_path(model: LlavaForConditionalGeneration) -> str:
    """Module path of the last CLIP encoder layer (what ``vision_feature_layer=-1`` feeds the projector)."""
    config: Any = model.config  # transformers types sub-configs loosely
    n = config.vision_config.num_hidden_layers
    path = f"model.vision_tower.encoder.layers.{n - 1}"
    model.get_submodule(path)  # raises if the layout differs
    return path


@dataclass(frozen=True)
class TrainConfig:
    """Hyper-parameters of the model recipe (the shipped model used the defaults)."""

    seed: int = 0
    steps: int = 3000
    batch_size: int = 64
    lr: float = 2e-3
    min_lr_ratio: float = 0.02
    warmup_steps: int = 300
    weight_decay: float = 0.01
    grad_clip: float = 1.0
    single_object_fraction: float = 0.25  # first fraction of steps: one-object scenes only
    probe_weight: float = 1.0  # auxiliary patch-concept loss on the hooked vision layer (head discarded)
    lookup_weight: float = 0.5  # auxiliary answer loss at the question's key word, second-to-last LM layer
    log_every: int = 200
    threads: int = 1  # one thread: robust on a shared machine, and the reduction order of the shipped run


def lr_at(step: int, cfg: TrainConfig) -> float:
    """Linear warm-up to ``cfg.lr``, then cosine decay to ``cfg.lr * cfg.min_lr_ratio``."""
    if step < cfg.warmup_steps:
        return cfg.lr * (step + 1) / cfg.warmup_steps
    t = (step - cfg.warmup_steps) / max(1, cfg.steps - cfg.warmup_steps)
    return cfg.lr * (cfg.min_lr_ratio + (1 - cfg.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * min(t, 1.0))))


def patch_targets(batch: list[Example]) -> torch.Tensor:
    """Ground-truth concept membership of every patch, ``(B, 64, n_concepts)`` float32."""
    return torch.from_numpy(np.stack([label_matrix(e.scene.patch_labels()) for e in batch]))


_SHAPE_IDX = [CONCEPTS.index(s) for s in SHAPES]


def probe_loss(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Auxiliary patch-concept loss: BCE over all concepts ``(B, 64, C)`` plus a softmax CE over the three shapes
    on patches of exactly one object (the shape terms are few and subtle; the CE keeps them from being drowned by
    the easy colour and background terms)."""
    bce = F.binary_cross_entropy_with_logits(logits, targets)
    shape_t = targets[..., _SHAPE_IDX]  # (B, 64, 3)
    one = shape_t.sum(-1) == 1  # (B, 64)
    if not bool(one.any()):
        return bce
    return bce + F.cross_entropy(logits[..., _SHAPE_IDX][one], shape_t[one].argmax(-1))


def answer_loss(
    model: LlavaForConditionalGeneration,
    enc: PromptEncoder,
    batch: list[Example],
    probe: torch.nn.Linear | None = None,
    probe_weight: float = 0.0,
    lookup: torch.nn.Linear | None = None,
    lookup_weight: float = 0.0,
) -> tuple[torch.Tensor, list[bool]]:
    """Cross-entropy on the answer token and ``</s>``, plus (with ``probe``) the auxiliary patch-concept loss.

    Returns (loss, per-example correctness of the answer token).
    """
    ids, mask, last = enc.batch([e.question.text for e in batch], [e.label for e in batch])  # (B, T)
    px = pixel_values([e.scene for e in batch])  # (B, 3, 64, 64)
    grabbed: list[torch.Tensor] = []
    lm_grabbed: list[torch.Tensor] = []
    handles = []
    if probe is not None:
        layer = model.get_submodule(hook_layer_path(model))
        handles.append(layer.register_forward_hook(lambda _m, _i, out: grabbed.append(out[:, 1:])))  # (B, 64, d)
    if lookup is not None:
        lm_layer = model.model.language_model.layers[-2]
        handles.append(lm_layer.register_forward_hook(lambda _m, _i, out: lm_grabbed.append(out)))  # (B, T, d_lm)
    try:
        logits = model(input_ids=ids, attention_mask=mask, pixel_values=px).logits  # (B, T, V)
    finally:
        for h in handles:
            h.remove()
    rows = torch.arange(len(batch))
    ans_logits = logits[rows, last]  # (B, V): predicts the answer word
    eos_logits = logits[rows, last + 1]  # (B, V): predicts </s>
    ans_target = ids[rows, last + 1]
    eos_target = ids[rows, last + 2]
    loss = F.cross_entropy(ans_logits, ans_target) + 0.25 * F.cross_entropy(eos_logits, eos_target)
    if probe is not None and probe_weight > 0:
        loss = loss + probe_weight * probe_loss(probe(grabbed[0]), patch_targets(batch))
    if lookup is not None and lookup_weight > 0:
        # the key word: the colour word of a shape question, else the last word before "?"
        key = last - torch.tensor([4 if e.question.qtype == "shape" else 3 for e in batch])  # (B,)
        key_states = lm_grabbed[0][rows, key]  # (B, d_lm)
        loss = loss + lookup_weight * F.cross_entropy(lookup(key_states), ans_target)
    return loss, (ans_logits.argmax(-1) == ans_target).tolist()


def train_model(
    cfg: TrainConfig, *, log: Callable[[str], None] = print
) -> tuple[LlavaForConditionalGeneration, dict[str, object]]:
    """Train a fresh model by the recipe; returns the model (eval mode) and a summary dict."""
    torch.set_num_threads(cfg.threads)
    model = build_model(cfg.seed)
    model.train()
    enc = PromptEncoder(build_tokenizer())
    rng = np.random.default_rng([TRAIN_STREAM, cfg.seed])
    config: Any = model.config
    probe = torch.nn.Linear(config.vision_config.hidden_size, len(CONCEPTS))
    lookup = torch.nn.Linear(config.text_config.hidden_size, config.text_config.vocab_size)
    params = list(model.named_parameters()) + [(f"probe.{n}", p) for n, p in probe.named_parameters()]
    params += [(f"lookup.{n}", p) for n, p in lookup.named_parameters()]
    decay = [p for n, p in params if p.ndim >= 2 and "embed" not in n]
    no_decay = [p for n, p in params if not (p.ndim >= 2 and "embed" not in n)]
    opt = torch.optim.AdamW(
        [{"params": decay, "weight_decay": cfg.weight_decay}, {"params": no_decay, "weight_decay": 0.0}],
        lr=cfg.lr,
        betas=(0.9, 0.98),
    )
    single_until = int(cfg.steps * cfg.single_object_fraction)
    t0 = time.perf_counter()
    run_loss = 0.0
    correct: dict[str, list[bool]] = {}
    for step in range(cfg.steps):
        for g in opt.param_groups:
            g["lr"] = lr_at(step, cfg)
        batch = [training_example(rng, single=step < single_until) for _ in range(cfg.batch_size)]
        loss, ok = answer_loss(model, enc, batch, probe, cfg.probe_weight, lookup, cfg.lookup_weight)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_([p for _, p in params], cfg.grad_clip)
        opt.step()
        run_loss += loss.item()
        for e, o in zip(batch, ok, strict=True):
            correct.setdefault(e.question.qtype, []).append(o)
        if (step + 1) % cfg.log_every == 0 or step + 1 == cfg.steps:
            k = (step % cfg.log_every) + 1
            accs = " ".join(f"{t} {np.mean(v):.3f}" for t, v in sorted(correct.items()))
            log(
                f"step {step + 1}/{cfg.steps} loss {run_loss / k:.4f} train acc: {accs} "
                f"lr {lr_at(step, cfg):.2e} {time.perf_counter() - t0:.0f}s"
            )
            run_loss = 0.0
            correct = {}
    model.eval()
    summary = {"config": asdict(cfg), "train_seconds": round(time.perf_counter() - t0, 1)}
    return model, summary


def train_and_save(cfg: TrainConfig, out: str | Path, *, log: Callable[[str], None] = print) -> Path:
    """Train by the recipe and write the model folder (weights, config, tokenizer, processor) to ``out``."""
    model, summary = train_model(cfg, log=log)
    folder = save_model_folder(model, Path(out))
    atomic_write_text(folder / "training.json", json.dumps(summary, indent=2) + "\n")
    log(f"saved model to {folder} ({summary['train_seconds']}s)")
    return folder
