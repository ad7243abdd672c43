"""The training recipe of the shipped TopK SAE on the shapes model's vision layer.

This module owns how the shipped SAE came to be. Activations are the patch tokens (CLS dropped) of the *last*
CLIP encoder layer — exactly what LLaVA feeds its projector with ``vision_feature_layer=-1`` — so that an
ablation there reaches the LM. They are collected on scenes drawn *uniformly* from the world (every shape,
colour and background in every combination, unlike the model's training distribution), so that latent
labels are not confounded by the planted co-occurrences. The SAE is a TopK SAE in SAELens' formulation
(``b_dec`` subtracted from the input), trained with Adam on the normalised MSE, unit-norm decoder rows after
every step and an AuxK loss that lets latents dead for a while learn the residual — the training step is
:class:`vsp_assert.concepts.train.TopKStep`, the one ``vsp-assert sae train`` runs, here on activations held in
memory and sampled with replacement (this recipe's data and sampling, unchanged: same bytes as before the move).
Latents are then labelled on a separate set of scenes by :mod:`vsp_assert.shapes.labelling` and the folder is
written with :func:`vsp_assert.engine.sae.save_sae` (SAELens format + sidecar + ``concepts.json``). Dead latents
are reported.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from transformers import LlavaForConditionalGeneration

from vsp_assert.concepts.train import StepRecipe, TopKSAE, TopKStep, explained_variance
from vsp_assert.engine.sae import save_sae
from vsp_assert.files import atomic_write_text
from vsp_assert.shapes.inference import layer_activations
from vsp_assert.shapes.labelling import build_labels, concept_precision
from vsp_assert.shapes.train import hook_layer_path
from vsp_assert.shapes.world import Scene, random_scene

SAE_STREAM = 0x5AE0
LABEL_STREAM = 0x1AB3


@dataclass(frozen=True)
class SAETrainConfig:
    """Hyper-parameters of the SAE recipe (the shipped SAE used the defaults)."""

    seed: int = 0
    d_sae: int = 256
    k: int = 8
    steps: int = 4000
    batch_size: int = 2048
    lr: float = 2e-3
    warmup_steps: int = 100
    n_scenes: int = 6000  # activation scenes (× 64 patches)
    n_label_scenes: int = 2000  # labelling scenes (× 64 patches), a different stream
    aux_k: int = 32
    aux_coef: float = 1 / 32
    dead_after: int = 200_000  # a latent that has not fired on this many patches is "dead" for AuxK
    threads: int = 1
    log_every: int = 500


def uniform_scenes(stream: int, seed: int, n: int) -> list[Scene]:
    """``n`` scenes drawn uniformly over shapes, colours, backgrounds and 1–3 objects (held-out seed range)."""
    rng = np.random.default_rng([stream, seed])
    return [random_scene(rng, heldout=True) for _ in range(n)]


def recipe(cfg: SAETrainConfig) -> StepRecipe:
    """The step hyper-parameters of ``cfg``, for :class:`~vsp_assert.concepts.train.TopKStep`."""
    return StepRecipe(steps=cfg.steps, lr=cfg.lr, warmup_steps=cfg.warmup_steps, k=cfg.k, aux_k=cfg.aux_k,
                      aux_coef=cfg.aux_coef, dead_after=cfg.dead_after)


def train_topk_sae(
    x: torch.Tensor, cfg: SAETrainConfig, *, log: Callable[[str], None] = print
) -> tuple[TopKSAE, dict[str, Any]]:
    """Train a TopK SAE on activations ``x (N, d_in)``; returns it and training statistics."""
    torch.manual_seed(cfg.seed)
    gen = torch.Generator().manual_seed(cfg.seed)
    n, d_in = x.shape
    var = (x - x.mean(0)).pow(2).sum(-1).mean()  # scalar: mean squared distance to the mean
    sae = TopKSAE(d_in, cfg.d_sae, cfg.k, x.median(0).values)
    step_fn = TopKStep(sae, recipe(cfg), var)
    t0 = time.perf_counter()
    for step in range(cfg.steps):
        xb = x[torch.randint(0, n, (cfg.batch_size,), generator=gen)]  # (B, d_in)
        mse, dead = step_fn(step, xb)
        if (step + 1) % cfg.log_every == 0 or step + 1 == cfg.steps:
            log(
                f"sae step {step + 1}/{cfg.steps} nmse {mse.item():.4f} dead {int(dead.sum())} "
                f"{time.perf_counter() - t0:.0f}s"
            )
    with torch.no_grad():
        x_hat = torch.cat([sae.decode(sae.encode(x[i : i + 8192])) for i in range(0, n, 8192)])
    stats = {
        "explained_variance_train": round(explained_variance(x, x_hat), 4),
        "train_seconds": round(time.perf_counter() - t0, 1),
    }
    return sae, stats


def train_and_save_sae(
    model: LlavaForConditionalGeneration,
    out: str | Path,
    cfg: SAETrainConfig,
    *,
    log: Callable[[str], None] = print,
) -> tuple[Path, dict[str, Any]]:
    """Collect activations, train the SAE, label its latents and write the SAE folder to ``out``."""
    torch.set_num_threads(cfg.threads)
    model.eval()
    path = hook_layer_path(model)
    t0 = time.perf_counter()
    scenes = uniform_scenes(SAE_STREAM, cfg.seed, cfg.n_scenes)
    width = int(model.config.vision_config.hidden_size)  # type: ignore[union-attr]
    x = layer_activations(model, path, scenes).reshape(-1, width)  # (N·64, d)
    log(f"collected {tuple(x.shape)} activations at {path} in {time.perf_counter() - t0:.0f}s")
    sae, stats = train_topk_sae(x, cfg, log=log)

    label_scenes = uniform_scenes(LABEL_STREAM, cfg.seed, cfg.n_label_scenes)
    xl = layer_activations(model, path, label_scenes).reshape(-1, x.shape[1])  # (M·64, d)
    with torch.no_grad():
        fl = sae.encode(xl)  # (M·64, d_sae)
        stats["explained_variance"] = round(explained_variance(xl, sae.decode(fl)), 4)
    patch_labels = [lab for s in label_scenes for lab in s.patch_labels()]
    labels, lstats = build_labels(fl.numpy(), patch_labels, edges=[e for s in label_scenes for e in s.patch_edges()])
    stats["dead_fraction"] = round(len(labels.dead) / cfg.d_sae, 4)
    stats["dead"] = labels.dead
    stats["concept_precision"] = concept_precision(lstats)
    folder = save_sae(
        out,
        W_enc=sae.W_enc.detach(),
        W_dec=sae.W_dec.detach(),
        b_enc=sae.b_enc.detach(),
        b_dec=sae.b_dec.detach(),
        architecture="topk",
        k=cfg.k,
        apply_b_dec_to_input=True,
        hook_layer=path,
        model="shapes",
        labels=labels,
        extra_cfg={
            "metadata": {
                "hook_name": path,
                "model_name": "shapes",
                "recipe": asdict(cfg),
                "explained_variance": stats["explained_variance"],
            }
        },
    )
    atomic_write_text(Path(folder) / "training.json", json.dumps(stats, indent=2) + "\n")
    log(
        f"SAE: explained variance {stats['explained_variance']}, dead {len(labels.dead)}/{cfg.d_sae} "
        f"({stats['dead_fraction']:.1%}): {labels.dead}"
    )
    log("concept precision: " + ", ".join(f"{c} {p:.2f}" for c, p in stats["concept_precision"].items()))
    return Path(folder), stats
