"""The training recipe of the shipped shapes VLM (``vsp-assert shapes train``).

This module owns how the shipped weights came to be, so that anyone can re-create them: a fresh
:func:`~vsp_assert.shapes.build.build_model`, trained end to end (vision tower, projector and LM together) on
examples drawn from :func:`~vsp_assert.shapes.mechanisms.training_example` — the training distribution with
its planted mechanisms. Recipe: AdamW, linear warm-up then cosine decay, gradient clipping, a curriculum
(one-object scenes first, which teaches the LM to read the image before it must bind colours to shapes),
and a cross-entropy loss on the answer token and the closing ``</s>`` only. Everything is seeded: the same
seed and step count give the same weights. The SAE is trained afterwards by
:mod:`vsp_assert.shapes.train_sae`.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from transformers import LlavaForConditionalGeneration

from vsp_assert.shapes.build import build_model, build_tokenizer, save_model_folder
from vsp_assert.shapes.inference import PromptEncoder, pixel_values
from vsp_assert.shapes.mechanisms import TRAIN_STREAM, Example, training_example


@dataclass(frozen=True)
class TrainConfig:
    """Hyper-parameters of the model recipe (the shipped model used the defaults)."""

    seed: int = 0
    steps: int = 6000
    batch_size: int = 64
    lr: float = 2e-3
    min_lr_ratio: float = 0.02
    warmup_steps: int = 300
    weight_decay: float = 0.01
    grad_clip: float = 1.0
    single_object_fraction: float = 0.15  # first fraction of steps: one-object scenes only
    log_every: int = 200
    threads: int = 2


def lr_at(step: int, cfg: TrainConfig) -> float:
    """Linear warm-up to ``cfg.lr``, then cosine decay to ``cfg.lr * cfg.min_lr_ratio``."""
    if step < cfg.warmup_steps:
        return cfg.lr * (step + 1) / cfg.warmup_steps
    t = (step - cfg.warmup_steps) / max(1, cfg.steps - cfg.warmup_steps)
    return cfg.lr * (cfg.min_lr_ratio + (1 - cfg.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * min(t, 1.0))))


def answer_loss(
    model: LlavaForConditionalGeneration, enc: PromptEncoder, batch: list[Example]
) -> tuple[torch.Tensor, float]:
    """Cross-entropy on the answer token and ``</s>`` only; returns (loss, answer accuracy)."""
    ids, mask, last = enc.batch([e.question.text for e in batch], [e.label for e in batch])  # (B, T)
    px = pixel_values([e.scene for e in batch])  # (B, 3, 64, 64)
    logits = model(input_ids=ids, attention_mask=mask, pixel_values=px).logits  # (B, T, V)
    rows = torch.arange(len(batch))
    ans_logits = logits[rows, last]  # (B, V): predicts the answer word
    eos_logits = logits[rows, last + 1]  # (B, V): predicts </s>
    ans_target = ids[rows, last + 1]
    eos_target = ids[rows, last + 2]
    loss = F.cross_entropy(ans_logits, ans_target) + 0.25 * F.cross_entropy(eos_logits, eos_target)
    acc = (ans_logits.argmax(-1) == ans_target).float().mean().item()
    return loss, acc


def train_model(
    cfg: TrainConfig, *, log: Callable[[str], None] = print
) -> tuple[LlavaForConditionalGeneration, dict[str, object]]:
    """Train a fresh model by the recipe; returns the model (eval mode) and a summary dict."""
    torch.set_num_threads(cfg.threads)
    model = build_model(cfg.seed)
    model.train()
    enc = PromptEncoder(build_tokenizer())
    rng = np.random.default_rng([TRAIN_STREAM, cfg.seed])
    decay = [p for n, p in model.named_parameters() if p.ndim >= 2 and "embed" not in n]
    no_decay = [p for n, p in model.named_parameters() if not (p.ndim >= 2 and "embed" not in n)]
    opt = torch.optim.AdamW(
        [{"params": decay, "weight_decay": cfg.weight_decay}, {"params": no_decay, "weight_decay": 0.0}],
        lr=cfg.lr,
        betas=(0.9, 0.98),
    )
    single_until = int(cfg.steps * cfg.single_object_fraction)
    t0 = time.perf_counter()
    run_loss, run_acc = 0.0, 0.0
    for step in range(cfg.steps):
        for g in opt.param_groups:
            g["lr"] = lr_at(step, cfg)
        batch = [training_example(rng, single=step < single_until) for _ in range(cfg.batch_size)]
        loss, acc = answer_loss(model, enc, batch)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
        opt.step()
        run_loss += loss.item()
        run_acc += acc
        if (step + 1) % cfg.log_every == 0 or step + 1 == cfg.steps:
            k = (step % cfg.log_every) + 1
            log(
                f"step {step + 1}/{cfg.steps} loss {run_loss / k:.4f} acc {run_acc / k:.3f} "
                f"lr {lr_at(step, cfg):.2e} {time.perf_counter() - t0:.0f}s"
            )
            run_loss, run_acc = 0.0, 0.0
    model.eval()
    summary = {"config": asdict(cfg), "train_seconds": round(time.perf_counter() - t0, 1)}
    return model, summary


def train_and_save(cfg: TrainConfig, out: str | Path, *, log: Callable[[str], None] = print) -> Path:
    """Train by the recipe and write the model folder (weights, config, tokenizer, processor) to ``out``."""
    model, summary = train_model(cfg, log=log)
    folder = save_model_folder(model, Path(out))
    (folder / "training.json").write_text(__import__("json").dumps(summary, indent=2) + "\n")
    log(f"saved model to {folder} ({summary['train_seconds']}s)")
    return folder
