"""From statistics to a label file: the one place a latent gets its name (shapes world and real models alike).

:func:`make_labels` turns :class:`~vsp_assert.concepts.stats.LatentStats` into a
:class:`~vsp_assert.engine.labels.ConceptLabels`: concept names → latents (:func:`~vsp_assert.concepts.stats.
name_concepts`), per concept the latents' precision/recall and the calibrated ``captured`` threshold
(:func:`~vsp_assert.concepts.stats.calibrate_concepts`), per latent its statistics (every live latent, named or
not) and the dead and dense lists. ``concepts build`` and the shapes recipe (:mod:`vsp_assert.shapes.labelling`)
both call it.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from vsp_assert.concepts.stats import (
    MIN_FIRING_RATE,
    MIN_PRECISION,
    LatentStats,
    calibrate_concepts,
    name_concepts,
    noise_flags,
)
from vsp_assert.engine.labels import ConceptLabels


def _r(x: float, nd: int = 4) -> float:
    return round(float(x), nd)


def latent_record(stats: LatentStats, k: int, dense: bool = False) -> dict[str, Any]:
    """The statistics of latent ``k`` as stored in the label file (``label``: its best concept, named or not)."""
    rec: dict[str, Any] = {}
    b = int(stats.best[k])
    if b >= 0 and stats.firing_rate[k] > 0:
        rec["label"] = stats.concepts[b]
        rec["precision"] = _r(stats.precision[k, b])
        rec["recall"] = _r(stats.recall[k, b])
    rec["firing_rate"] = _r(stats.firing_rate[k], 5)
    rec["mean_activation"] = _r(stats.mean_activation[k])
    ent = stats.label_entropy[k]
    rec["label_entropy"] = None if ent is None else _r(ent)
    if dense:
        rec["dense"] = True
    return rec


def make_labels(stats: LatentStats, *, min_precision: float = MIN_PRECISION,
                min_firing_rate: float = MIN_FIRING_RATE, calibrate: bool = True,
                build: dict[str, Any] | None = None, atlas: str | None = None) -> ConceptLabels:
    """The label file of one labelling run (see docs/concepts.md for every field)."""
    d_sae = len(stats.firing_rate)
    concepts = name_concepts(stats, min_precision, min_firing_rate)
    dead = [int(k) for k in np.flatnonzero(stats.dead)]
    flags = noise_flags(stats, concepts)
    dense = [int(k) for k in np.flatnonzero(flags)]
    latents = {k: latent_record(stats, k, bool(flags[k])) for k in range(d_sae) if not stats.dead[k]}
    thresholds = calibrate_concepts(stats, concepts) if calibrate else {}
    col = {c: i for i, c in enumerate(stats.concepts)}
    info: dict[str, dict[str, Any]] = {}
    for name, ids in concepts.items():
        ci = col[name]
        entry: dict[str, Any] = {
            "level": stats.level[ci],
            "precision": {str(k): _r(stats.precision[k, ci]) for k in ids},
            "recall": {str(k): _r(stats.recall[k, ci]) for k in ids},
        }
        cal = thresholds.get(name)
        if cal is not None:
            entry["threshold"] = _r(cal["threshold"], 6)
            entry["balanced_accuracy"] = _r(cal["balanced_accuracy"])
            entry["tpr"] = _r(cal["tpr"])
            entry["fpr"] = _r(cal["fpr"])
        info[name] = entry
    meta = {"min_precision": min_precision, "min_firing_rate": min_firing_rate, "dense_rate": stats.dense_rate,
            "n_images": stats.n_images, "n_patches": stats.n_patches,
            "calibration_images": len(stats.calibration), **(build or {})}
    return ConceptLabels(d_sae=d_sae, concepts=concepts, latents=latents, dead=dead, dense=dense,
                         concept_info=info, build=meta, atlas=atlas)


def best_precision(stats: LatentStats, min_firing_rate: float = MIN_FIRING_RATE) -> dict[str, float]:
    """Per concept, the best precision of any latent firing on at least ``min_firing_rate`` of patches."""
    ok = stats.firing_rate >= min_firing_rate
    out: dict[str, float] = {}
    for ci, c in enumerate(stats.concepts):
        vals = stats.precision[ok, ci]
        out[c] = _r(vals.max() if vals.size else 0.0)
    return out
