"""Per-latent statistics and concept naming, computed in one streaming pass over a labelled image set.

This module owns the *numbers* of ``concepts build`` (docs/concepts.md defines each one), and nothing about files,
models or pixels. :class:`StatsAccumulator` takes one image at a time — its latent activations ``f [P, d_sae]``,
its patch labels ``[P, C]`` (from masks, possibly none) and its image labels — and keeps only sums of size
``d_sae × C`` (16 bytes per latent and concept) plus a top-N table ``[d_sae, N]``, so memory does not grow with
the number of images (except the bounded calibration sample: at most ``calibration_images`` sparse image-score
vectors, 8 bytes per latent active in an image). :meth:`finish` returns
:class:`LatentStats`; :func:`name_concepts` maps concept names to latents and :func:`calibrate` picks each
concept's ``captured`` threshold.

Definitions (``f[p, k]`` ≥ 0 is latent ``k`` on patch ``p``; an image's score ``s[i, k]`` is the mean of
``f[p, k]`` over its patches, exactly what the ``captured`` assertion scores):

- ``firing_rate[k]`` = fraction of patches with ``f[p, k] > 0``; ``mean_activation[k]`` = mean of ``f`` where > 0;
- ``dead[k]``: never fires; ``broad[k]``: ``firing_rate[k] > dense_rate`` (:data:`DENSE_RATE`); a broad latent
  that names no concept is *dense* (:func:`noise_flags`);
- precision, for a concept with masks (patch level): ``Σ_p f[p,k]·[c ∈ L_p] / Σ_{p ∉ E_c} f[p,k]`` (the share of
  the latent's activation mass on patches labelled ``c``), where ``E_c`` are the *edge* patches that the concept
  touches without carrying it (covered, but below the coverage rule): they count neither as hits nor as misses;
  for a concept with image labels only (image level): the same with images, ``Σ_i s[i,k]·[c ∈ L_i] / Σ_i s[i,k]``;
- ``image_precision[k, c]``: that image-level share for every concept (masks or not);
- recall = fraction of the concept's patches (images) on which the latent fires;
- ``label_entropy[k]`` (PatchSAE): entropy of the label distribution of the latent's top-N images (each image's
  labels share its unit weight), divided by ``log(n_labels)`` so that it lies in [0, 1]; ``None`` when none of
  its top images has a label.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import torch

from vsp_assert.concepts.defaults import DENSE_RATE, MIN_PRECISION

#: A latent must fire on at least this fraction of patches to be named (a handful of firings proves nothing).
MIN_FIRING_RATE = 0.002
#: The context rule of :func:`name_concepts`: a latent firing on at least this share of a concept's patches ...
CONTEXT_RECALL = 0.5
#: ... with at least this share of its activation mass on them (the rest on the rest of the concept's images).
CONTEXT_PRECISION = 0.5
#: Ties of precision within this margin are broken by lift over the concept's base rate (the more specific one).
TIE_MARGIN = 0.02
#: At most this many images' sparse score vectors are kept to calibrate the ``captured`` thresholds.
CALIBRATION_IMAGES = 5000


@dataclass
class LatentStats:
    """What :meth:`StatsAccumulator.finish` returns (arrays over latents ``k`` and concepts ``c``)."""

    concepts: list[str]  # C names; precision/recall columns follow this order
    level: list[str]  # per concept: "patch" (from masks) or "image" (from image labels)
    n_patches: int
    n_images: int
    firing_rate: np.ndarray  # (d_sae,)
    mean_activation: np.ndarray  # (d_sae,)
    max_activation: np.ndarray  # (d_sae,) largest f[p, k] seen
    precision: np.ndarray  # (d_sae, C)
    image_precision: np.ndarray  # (d_sae, C) share of the image-score mass on images labelled c
    recall: np.ndarray  # (d_sae, C)
    base_rate: np.ndarray  # (C,) fraction of patches (images) labelled c
    label_entropy: list[float | None]  # (d_sae,)
    best: np.ndarray  # (d_sae,) concept index of the best label (-1 without any concept)
    top_index: np.ndarray  # (d_sae, N) image indices, -1 where fewer images fired
    top_score: np.ndarray  # (d_sae, N) their image scores s[i, k]
    dense_rate: float = DENSE_RATE
    calibration: list[tuple[np.ndarray, np.ndarray, frozenset[str]]] = field(default_factory=list, repr=False)

    @property
    def dead(self) -> np.ndarray:
        return self.firing_rate == 0

    @property
    def broad(self) -> np.ndarray:
        """Fires on more than ``dense_rate`` of patches (*dense* unless it names a concept: :func:`noise_flags`)."""
        return self.firing_rate > self.dense_rate


class StatsAccumulator:
    """Streaming sums for :class:`LatentStats`; feed images with :meth:`add` in a fixed order."""

    def __init__(self, d_sae: int, concepts: Sequence[str], patch_concepts: Sequence[str] = (), *,
                 top_images: int = 8, calibration_images: int = CALIBRATION_IMAGES) -> None:
        self.d_sae = d_sae
        self.concepts = list(concepts)
        self.index = {c: i for i, c in enumerate(self.concepts)}
        self.patch_level = np.array([c in set(patch_concepts) for c in self.concepts], dtype=bool)
        self.pcols = torch.from_numpy(np.flatnonzero(self.patch_level))  # patch-level concepts' columns
        self.icols = torch.from_numpy(np.flatnonzero(~self.patch_level))  # image-level concepts' columns
        c, d, dt = len(self.concepts), d_sae, torch.float64
        cp, ci = len(self.pcols), len(self.icols)
        self.n_patches = 0
        self.n_images = 0
        self.fire = torch.zeros(d, dtype=dt)  # Σ_p [f > 0]
        self.mass = torch.zeros(d, dtype=dt)  # Σ_p f
        self.max = torch.zeros(d, dtype=dt)
        self.patch_mass = torch.zeros(d, cp, dtype=dt)  # Σ_p f·[c ∈ L_p], patch-level concepts
        self.patch_fire = torch.zeros(d, cp, dtype=dt)  # Σ_p [f > 0]·[c ∈ L_p]
        self.patch_edge_mass = torch.zeros(d, cp, dtype=dt)  # Σ_p f·[c touches p below the coverage]
        self.patch_count = torch.zeros(cp, dtype=dt)  # Σ_p [c ∈ L_p]
        self.image_mass = torch.zeros(d, dtype=dt)  # Σ_i s
        self.image_label_mass = torch.zeros(d, c, dtype=dt)  # Σ_i s·[c ∈ L_i], every concept
        self.image_label_fire = torch.zeros(d, ci, dtype=dt)  # Σ_i [s > 0]·[c ∈ L_i]
        self.image_count = torch.zeros(c, dtype=dt)  # every concept (the base rates)
        self.top_n = top_images
        self.top_score = torch.full((d, top_images), -math.inf, dtype=dt)
        self.top_index = torch.full((d, top_images), -1, dtype=torch.long)
        self.image_labels: dict[int, frozenset[str]] = {}  # labels of images still in a top list
        self.calibration_images = calibration_images
        self.calibration: list[tuple[np.ndarray, np.ndarray, frozenset[str]]] = []

    def add(self, f: torch.Tensor, patch_labels: torch.Tensor | None, labels: Sequence[str]) -> int:
        """One image: ``f [P, d_sae]`` activations, ``patch_labels [P, C]`` bool (or None), image labels.

        Returns the image's index (its position in the stream)."""
        return self.add_batch([f], [patch_labels], [labels])[0]

    def add_batch(self, fs: Sequence[torch.Tensor], patch_labels: Sequence[torch.Tensor | None],
                  labels: Sequence[Sequence[str]], edges: Sequence[torch.Tensor | None] | None = None) -> list[int]:
        """Several images at once (the same sums as :meth:`add` image by image, fewer tensor calls).

        ``edges[i] [P, C]`` bool (optional) marks the patches a concept touches without carrying it (its mask
        covers them, but below the coverage rule): precision leaves them out, neither hit nor miss."""
        b, d, c = len(fs), self.d_sae, len(self.concepts)
        if b == 0:
            return []
        first = self.n_images
        f_all = torch.cat([f.detach().to(torch.float64) for f in fs])  # [ΣP, d]
        fired = (f_all > 0).to(torch.float64)
        self.n_patches += f_all.shape[0]
        self.n_images += b
        self.fire += fired.sum(0)
        self.mass += f_all.sum(0)
        if f_all.shape[0]:
            self.max = torch.maximum(self.max, f_all.max(0).values)
        with_labels = [i for i, lab in enumerate(patch_labels) if lab is not None]
        if with_labels:
            offsets = np.cumsum([0] + [f.shape[0] for f in fs])
            rows = torch.from_numpy(np.concatenate([np.arange(offsets[i], offsets[i + 1]) for i in with_labels]))
            lab = torch.cat([patch_labels[i].to(torch.float64) for i in with_labels])[:, self.pcols]  # type: ignore[union-attr]
            self.patch_mass += f_all[rows].T @ lab
            self.patch_fire += fired[rows].T @ lab
            self.patch_count += lab.sum(0)
            if edges is not None and any(edges[i] is not None for i in with_labels):
                edge = torch.cat([_or_zeros(edges[i], patch_labels[i]).to(torch.float64)
                                  for i in with_labels])[:, self.pcols]
                self.patch_edge_mass += f_all[rows].T @ (edge * (1 - lab))
        s = torch.stack([f.detach().to(torch.float64).mean(0) if f.shape[0] else torch.zeros(d, dtype=torch.float64)
                         for f in fs])  # [B, d] image scores
        y = torch.zeros(b, c, dtype=torch.float64)  # [B, C] image labels
        for i, labs in enumerate(labels):
            for name in labs:
                if name in self.index:
                    y[i, self.index[name]] = 1.0
        self.image_mass += s.sum(0)
        self.image_label_mass += s.T @ y
        self.image_label_fire += (s > 0).to(torch.float64).T @ y[:, self.icols]
        self.image_count += y.sum(0)
        self._update_top(s, first, [frozenset(lab) for lab in labels])
        for i in range(b):
            if len(self.calibration) >= self.calibration_images:
                break
            nz = torch.nonzero(s[i]).flatten()
            self.calibration.append((nz.numpy().astype(np.int32), s[i, nz].numpy().astype(np.float32),
                                     frozenset(labels[i])))
        return list(range(first, self.n_images))

    def _update_top(self, s: torch.Tensor, first: int, labels: Sequence[frozenset[str]]) -> None:
        """Merge image scores ``s [B, d]`` (images ``first…``) into the top-N table (earlier images win ties)."""
        b = s.shape[0]
        score = torch.where(s > 0, s, torch.full_like(s, -math.inf)).T  # [d, B]
        enter = (score > self.top_score[:, -1:]).any(1)
        if not bool(enter.any()):
            return
        rows = torch.nonzero(enter).flatten()
        idx = torch.arange(first, first + b, dtype=torch.long).expand(len(rows), b)
        sc = torch.cat([self.top_score[rows], score[rows]], 1)  # [r, N+B]
        ix = torch.cat([self.top_index[rows], idx], 1)
        order = torch.sort(sc, dim=1, descending=True, stable=True).indices[:, : self.top_n]
        self.top_score[rows] = sc.gather(1, order)
        self.top_index[rows] = ix.gather(1, order).masked_fill(sc.gather(1, order) == -math.inf, -1)
        for i in range(b):
            self.image_labels[first + i] = labels[i]
        if (first + b) // 256 != first // 256:  # forget the labels of images that fell out of every top list
            keep = set(self.top_index.flatten().tolist())
            self.image_labels = {j: lab for j, lab in self.image_labels.items() if j in keep}

    def finish(self, dense_rate: float = DENSE_RATE) -> LatentStats:
        d, c = self.d_sae, len(self.concepts)
        n_p, n_i = max(self.n_patches, 1), max(self.n_images, 1)
        fire, mass = self.fire.numpy(), self.mass.numpy()
        firing_rate = fire / n_p
        mean_act = np.divide(mass, fire, out=np.zeros(d), where=fire > 0)
        pl = self.patch_level
        precision = np.zeros((d, c))
        recall = np.zeros((d, c))
        base = np.zeros(c)
        image_count = self.image_count.numpy()
        precision[:, pl] = _div(self.patch_mass.numpy(), mass[:, None] - self.patch_edge_mass.numpy())
        recall[:, pl] = _div(self.patch_fire.numpy(), self.patch_count.numpy()[None, :])
        image_precision = _div(self.image_label_mass.numpy(), self.image_mass.numpy()[:, None])
        precision[:, ~pl] = image_precision[:, ~pl]
        recall[:, ~pl] = _div(self.image_label_fire.numpy(), image_count[None, ~pl])
        base[pl] = self.patch_count.numpy() / n_p
        base[~pl] = image_count[~pl] / n_i
        top_index = self.top_index.numpy().copy()
        top_score = np.where(top_index >= 0, self.top_score.numpy(), 0.0)
        entropy = [label_entropy([self.image_labels[j] for j in row if j >= 0], c) for row in top_index]
        return LatentStats(
            concepts=list(self.concepts), level=["patch" if p else "image" for p in pl],
            n_patches=self.n_patches, n_images=self.n_images, firing_rate=firing_rate, mean_activation=mean_act,
            max_activation=self.max.numpy(), precision=precision, image_precision=image_precision, recall=recall,
            base_rate=base,
            label_entropy=entropy, best=best_concepts(precision, base), top_index=top_index, top_score=top_score,
            dense_rate=dense_rate, calibration=self.calibration,
        )


def _or_zeros(edges: torch.Tensor | None, like: torch.Tensor | None) -> torch.Tensor:
    """An image's edge-patch mask [P, C], or zeros shaped like its labels [P, C] when it has none."""
    assert like is not None
    return edges if edges is not None else torch.zeros_like(like)


def _div(num: np.ndarray, den: np.ndarray) -> np.ndarray:
    """``num / den`` (broadcast), 0 where the denominator is 0."""
    den = np.broadcast_to(den, num.shape)
    return np.divide(num, den, out=np.zeros(num.shape), where=den > 0)


def best_concepts(precision: np.ndarray, base: np.ndarray, margin: float = TIE_MARGIN) -> np.ndarray:
    """Per latent, the concept of highest precision; ties within ``margin`` go to the highest lift
    (precision over the concept's base rate: the more specific concept). ``(d_sae,)``, -1 without concepts."""
    if precision.shape[1] == 0:
        return np.full(precision.shape[0], -1)
    lift = np.divide(precision, base[None, :], out=np.zeros_like(precision), where=base[None, :] > 0)
    near = precision >= precision.max(1, keepdims=True) - margin
    return np.where(near, lift, -1.0).argmax(1)


def label_entropy(image_labels: Sequence[frozenset[str]], n_labels: int) -> float | None:
    """Normalised entropy (in [0, 1]) of the labels of a latent's top images; each image's labels share its
    unit weight. ``None`` when no image has a label; 0 with fewer than two label names."""
    weights: dict[str, float] = {}
    for labels in image_labels:
        for lab in labels:
            weights[lab] = weights.get(lab, 0.0) + 1.0 / len(labels)
    total = sum(weights.values())
    if total == 0:
        return None
    if n_labels < 2:
        return 0.0
    q = np.array(list(weights.values())) / total
    return float(max(-(q * np.log(q)).sum() / math.log(n_labels), 0.0))


def qualifying(stats: LatentStats, min_precision: float = MIN_PRECISION,
               min_firing_rate: float = MIN_FIRING_RATE) -> np.ndarray:
    """``(d_sae, C)`` bool: which latents name which concepts (see :func:`name_concepts`)."""
    live = (stats.firing_rate >= min_firing_rate) & ~stats.dead
    local = stats.precision >= min_precision
    patch = np.array([lvl == "patch" for lvl in stats.level], dtype=bool)
    context = ((stats.image_precision >= min_precision) & (stats.precision >= CONTEXT_PRECISION)
               & (stats.recall >= CONTEXT_RECALL) & patch[None, :])
    return live[:, None] & (local | context)


def name_concepts(stats: LatentStats, min_precision: float = MIN_PRECISION,
                  min_firing_rate: float = MIN_FIRING_RATE) -> dict[str, list[int]]:
    """Concept name → the latents that name it, best (highest precision) first.

    A latent that is not dead and fires on ≥ ``min_firing_rate`` of patches names a concept when

    - its precision for it is ≥ ``min_precision`` (it fires on the concept, patches the concept only touches
      counting neither way), or
    - for a concept with masks, it *carries the concept into its image*: it fires on at least
      :data:`CONTEXT_RECALL` of the concept's patches, puts at least :data:`CONTEXT_PRECISION` of its mass on
      them, and ≥ ``min_precision`` of its image-score mass is on images that show the concept. A vision
      transformer spreads an object's presence into the other patches of its image; such a latent is the
      object's main carrier, and its patch precision alone undersells it.

    A latent may serve two concepts (a "red triangle" latent is both ``red`` and ``triangle``). Concepts without
    a latent are left out."""
    ok = qualifying(stats, min_precision, min_firing_rate)
    out: dict[str, list[int]] = {}
    for ci, name in enumerate(stats.concepts):
        ids = [int(k) for k in np.flatnonzero(ok[:, ci])]
        ids.sort(key=lambda k: (-float(stats.precision[k, ci]), k))
        if ids:
            out[name] = ids
    return out


def noise_flags(stats: LatentStats, concepts: dict[str, list[int]]) -> np.ndarray:
    """``(d_sae,)`` bool: the *dense* latents — firing on more than ``stats.dense_rate`` of patches and naming no
    concept (a latent that names a concept is a concept, however often its concept appears)."""
    named = np.zeros(len(stats.firing_rate), dtype=bool)
    for ids in concepts.values():
        named[ids] = True
    return (stats.firing_rate > stats.dense_rate) & ~named & ~stats.dead


def calibrate(scores: np.ndarray, present: np.ndarray) -> dict[str, float] | None:
    """The threshold ``t`` for which ``score > t`` best separates present from absent images (Youden's J,
    i.e. the highest balanced accuracy); ``t`` is the midpoint between the two neighbouring scores, so that the
    margin is symmetric; when no gap separates better than chance the highest score is returned (nothing counts
    as present). None without both present and absent images.

    Returns ``threshold``, ``balanced_accuracy``, ``tpr``, ``fpr``."""
    scores = np.asarray(scores, dtype=np.float64)
    present = np.asarray(present, dtype=bool)
    n_pos, n_neg = int(present.sum()), int((~present).sum())
    if n_pos == 0 or n_neg == 0:
        return None
    values = np.unique(scores)  # ascending
    cand = np.concatenate([(values[:-1] + values[1:]) / 2, values[-1:]])  # the gaps, then "never" (J = 0)
    pos, neg = np.sort(scores[present]), np.sort(scores[~present])
    tpr = (n_pos - np.searchsorted(pos, cand, side="right")) / n_pos  # fraction of present with score > t
    fpr = (n_neg - np.searchsorted(neg, cand, side="right")) / n_neg
    j = int(np.argmax(tpr - fpr))
    return {"threshold": float(cand[j]), "balanced_accuracy": float((1 + tpr[j] - fpr[j]) / 2),
            "tpr": float(tpr[j]), "fpr": float(fpr[j])}


def concept_scores(stats: LatentStats, latents: Sequence[int]) -> np.ndarray:
    """Image-level scores ``Σ_{k ∈ latents} s[i, k]`` of the calibration images ``(n_cal,)``."""
    want = np.asarray(sorted(set(latents)), dtype=np.int32)
    return np.array([float(v[np.isin(idx, want)].sum()) for idx, v, _ in stats.calibration])


def calibrate_concepts(stats: LatentStats, concepts: dict[str, list[int]]) -> dict[str, dict[str, float] | None]:
    """Per named concept, :func:`calibrate` on the calibration images (present = the image carries the label)."""
    out: dict[str, dict[str, float] | None] = {}
    for name, ids in concepts.items():
        present = np.array([name in labels for _, _, labels in stats.calibration], dtype=bool)
        out[name] = calibrate(concept_scores(stats, ids), present)
    return out
