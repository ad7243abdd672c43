"""The shapes world's concept labels: the generic labelling path fed with the world's own ground truth.

This module owns only how the shapes world hands its truth to :mod:`vsp_assert.concepts` — there is one
labelling path (:mod:`vsp_assert.concepts.stats` computes, :mod:`vsp_assert.concepts.labelling` names), and the
shipped ``concepts.json`` is its output. Each labelling scene is one image of ``64`` patches: a patch's labels are
:meth:`~vsp_assert.shapes.world.Scene.patch_labels` (a concept covers ≥ ``LABEL_COVERAGE`` of the patch), every
concept is patch level, and an image's labels are the union of its patches' labels. ``vsp-assert concepts build``
on a shapes export (``vsp-assert shapes export``) reads the same truth from the exported masks.

Definitions (precision, recall, firing rate, label entropy, dead/dense) are in :mod:`vsp_assert.concepts.stats`;
a concept maps to every live, non-dense latent whose precision for it is at least :data:`CONCEPT_PRECISION` and
that fires on at least :data:`MIN_FIRING_RATE` of patches, best first.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from vsp_assert.concepts.labelling import best_precision, make_labels
from vsp_assert.concepts.stats import MIN_FIRING_RATE, MIN_PRECISION, LatentStats, StatsAccumulator
from vsp_assert.engine.labels import ConceptLabels
from vsp_assert.shapes.world import CONCEPTS, GRID, LABEL_COVERAGE

CONCEPT_PRECISION = MIN_PRECISION
PATCHES = GRID * GRID  # patches per scene
__all__ = ["CONCEPT_PRECISION", "MIN_FIRING_RATE", "build_labels", "concept_precision", "label_matrix",
           "shapes_statistics"]


def label_matrix(patch_labels: Sequence[set[str]], concepts: Sequence[str] = CONCEPTS) -> np.ndarray:
    """One-hot concept membership ``(n_patches, n_concepts)`` float32 from per-patch label sets."""
    index = {c: i for i, c in enumerate(concepts)}
    m = np.zeros((len(patch_labels), len(concepts)), dtype=np.float32)
    for p, labels in enumerate(patch_labels):
        for c in labels:
            m[p, index[c]] = 1.0
    return m


def shapes_statistics(f: np.ndarray, patch_labels: Sequence[set[str]], concepts: Sequence[str] = CONCEPTS, *,
                      patches: int = PATCHES, top_images: int = 8,
                      edges: Sequence[set[str]] | None = None) -> LatentStats:
    """Statistics of activations ``f (n_scenes·patches, d_sae)`` with the scenes' patch label sets (and the
    concepts each patch only touches, :meth:`~vsp_assert.shapes.world.Scene.patch_edges`, left out of precision)."""
    if len(f) % patches or len(f) != len(patch_labels):
        raise ValueError(f"{len(f)} activation rows and {len(patch_labels)} label sets are not whole scenes "
                         f"of {patches} patches")
    acc = StatsAccumulator(f.shape[1], concepts, concepts, top_images=top_images)
    ft = torch.from_numpy(np.asarray(f, dtype=np.float32))
    lab = torch.from_numpy(label_matrix(patch_labels, concepts)) > 0
    edge = torch.from_numpy(label_matrix(edges, concepts)) > 0 if edges is not None else None
    step = patches * 64  # 64 scenes per call
    for start in range(0, len(f), step):
        cut = range(start, min(start + step, len(f)), patches)
        acc.add_batch([ft[i : i + patches] for i in cut], [lab[i : i + patches] for i in cut],
                      [sorted(set().union(*patch_labels[i : i + patches])) for i in cut],
                      edges=[edge[i : i + patches] for i in cut] if edge is not None else None)
    return acc.finish()


def build_labels(f: np.ndarray, patch_labels: Sequence[set[str]], concepts: Sequence[str] = CONCEPTS, *,
                 edges: Sequence[set[str]] | None = None) -> tuple[ConceptLabels, LatentStats]:
    """Label every latent from activations ``f (n_patches, d_sae)``, the patches' true label sets and the
    concepts they only touch."""
    stats = shapes_statistics(f, patch_labels, concepts, edges=edges)
    labels = make_labels(stats, min_precision=CONCEPT_PRECISION, min_firing_rate=MIN_FIRING_RATE,
                         build={"source": "shapes labelling scenes", "mask_coverage": LABEL_COVERAGE})
    return labels, stats


def concept_precision(stats: LatentStats, concepts: Sequence[str] = CONCEPTS) -> dict[str, float]:
    """Per concept, the best precision of any latent firing on at least ``MIN_FIRING_RATE`` of patches."""
    best = best_precision(stats, MIN_FIRING_RATE)
    return {c: best.get(c, 0.0) for c in concepts}
