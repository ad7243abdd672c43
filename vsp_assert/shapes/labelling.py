"""Automatic concept labels for SAE latents, from the shapes world's ground-truth patch labels.

This module owns how a latent gets its name. Every patch of a labelling scene carries a set of true concepts
(:meth:`~vsp_assert.shapes.world.Scene.patch_labels`). For latent ``k`` and concept ``c``:

- ``firing_rate``: fraction of patches where ``f[p, k] > 0``;
- ``mean_activation``: mean of ``f[p, k]`` over the patches where it fires;
- ``precision(k, c)``: activation-weighted fraction of its firing mass on patches labelled ``c``
  (``Σ_p f[p,k]·[c ∈ L_p] / Σ_p f[p,k]``), so a few weak firings cannot dominate;
- ``label``: the concept of highest precision (ties within 0.02 broken by lift over the concept's base rate,
  which prefers the more specific concept);
- ``label_entropy``: entropy in bits of the latent's firing mass spread over concepts, each patch's mass split
  evenly among its labels (0 = one concept only).

A concept maps to every live latent whose precision for it is at least :data:`CONCEPT_PRECISION` and that
fires on at least :data:`MIN_FIRING_RATE` of patches, best first — a latent may serve two concepts (a latent for
"red triangle" interiors is both ``red`` and ``triangle``). Latents that never fire are listed as dead.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from vsp_assert.engine.labels import ConceptLabels
from vsp_assert.shapes.world import CONCEPTS

CONCEPT_PRECISION = 0.8
MIN_FIRING_RATE = 0.002


def label_matrix(patch_labels: Sequence[set[str]], concepts: Sequence[str] = CONCEPTS) -> np.ndarray:
    """One-hot concept membership ``(n_patches, n_concepts)`` float32 from per-patch label sets."""
    index = {c: i for i, c in enumerate(concepts)}
    m = np.zeros((len(patch_labels), len(concepts)), dtype=np.float32)
    for p, labels in enumerate(patch_labels):
        for c in labels:
            m[p, index[c]] = 1.0
    return m


def latent_statistics(f: np.ndarray, labels: np.ndarray, concepts: Sequence[str] = CONCEPTS) -> dict[str, np.ndarray]:
    """Per-latent statistics.

    ``f``: latent activations ``(n_patches, d_sae)``; ``labels``: membership ``(n_patches, n_concepts)``.
    Returns arrays: ``firing_rate (d_sae,)``, ``mean_activation (d_sae,)``, ``precision (d_sae, n_concepts)``,
    ``label_entropy (d_sae,)``, ``best (d_sae,)`` (concept index), ``lift (d_sae, n_concepts)``.
    """
    f = f.astype(np.float64)
    firing = f > 0
    n_fire = firing.sum(0)  # (d_sae,)
    mass = f.sum(0)  # (d_sae,)
    firing_rate = n_fire / max(len(f), 1)
    mean_act = np.divide(mass, n_fire, out=np.zeros_like(mass), where=n_fire > 0)
    precision = np.divide(
        f.T @ labels, mass[:, None], out=np.zeros((f.shape[1], labels.shape[1])), where=mass[:, None] > 0
    )  # (d_sae, C)
    base = labels.mean(0)  # (C,)
    lift = np.divide(precision, base[None, :], out=np.zeros_like(precision), where=base[None, :] > 0)
    top = precision.max(1, keepdims=True)
    near = precision >= top - 0.02
    best = np.where(near, lift, -1.0).argmax(1)  # (d_sae,)
    per_patch = labels / np.maximum(labels.sum(1, keepdims=True), 1.0)  # split each patch's mass
    spread = f.T @ per_patch  # (d_sae, C)
    tot = spread.sum(1, keepdims=True)
    q = np.divide(spread, tot, out=np.zeros_like(spread), where=tot > 0)
    with np.errstate(divide="ignore", invalid="ignore"):
        ent = np.maximum(-np.nansum(np.where(q > 0, q * np.log2(q), 0.0), axis=1), 0.0)  # no -0.0 for one label
    return {
        "firing_rate": firing_rate,
        "mean_activation": mean_act,
        "precision": precision,
        "lift": lift,
        "best": best,
        "label_entropy": ent,
    }


def build_labels(
    f: np.ndarray, patch_labels: Sequence[set[str]], concepts: Sequence[str] = CONCEPTS
) -> tuple[ConceptLabels, dict[str, np.ndarray]]:
    """Label every latent from activations ``f (n_patches, d_sae)`` and the patches' true label sets."""
    stats = latent_statistics(f, label_matrix(patch_labels, concepts), concepts)
    d_sae = f.shape[1]
    dead = [int(k) for k in np.flatnonzero(stats["firing_rate"] == 0)]
    live = [k for k in range(d_sae) if k not in set(dead)]
    latents: dict[int, dict[str, object]] = {}
    for k in live:
        b = int(stats["best"][k])
        latents[k] = {
            "label": concepts[b],
            "precision": round(float(stats["precision"][k, b]), 4),
            "firing_rate": round(float(stats["firing_rate"][k]), 5),
            "mean_activation": round(float(stats["mean_activation"][k]), 4),
            "label_entropy": round(float(stats["label_entropy"][k]), 4),
        }
    concept_map: dict[str, list[int]] = {}
    for ci, c in enumerate(concepts):
        ids = [
            k
            for k in live
            if stats["precision"][k, ci] >= CONCEPT_PRECISION and stats["firing_rate"][k] >= MIN_FIRING_RATE
        ]
        ids.sort(key=lambda k: -float(stats["precision"][k, ci]))
        if ids:
            concept_map[c] = ids
    return ConceptLabels(d_sae=d_sae, concepts=concept_map, latents=latents, dead=dead), stats


def concept_precision(stats: dict[str, np.ndarray], concepts: Sequence[str] = CONCEPTS) -> dict[str, float]:
    """Per concept, the best precision of any latent firing on at least ``MIN_FIRING_RATE`` of patches."""
    ok = stats["firing_rate"] >= MIN_FIRING_RATE
    out: dict[str, float] = {}
    for ci, c in enumerate(concepts):
        vals = stats["precision"][ok, ci]
        out[c] = round(float(vals.max()) if vals.size else 0.0, 4)
    return out
