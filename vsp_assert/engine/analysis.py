"""Analysis of a trace: top concepts per token, the clustered token × latent heatmap, sufficient sets.

The heatmap's columns are the latents that matter for some output token (the top-k of each row of
``Trace.scores``, plus any latents a caller asks to see). Columns are clustered with scipy's hierarchical
clustering (average linkage, cosine distance) on each latent's *contribution pattern* ``A[t, p] · f[p, k]``
over (output token, patch): latents that the same tokens read from the same places fall together. With several
output tokens this is the paper's "pattern across output tokens"; with a one-token answer it still separates
latents that fire on different image regions. A cluster is the unit to ablate, because correlated latents can
re-create a concept that a single-latent ablation removes.

A **sufficient set** is a set of latents whose ablation changes the answer (or drops its probability by a
margin). :func:`find_sufficient_set` tries clusters ranked by their score for a target token, then growing
unions of the top ones, all candidates in one batched intervention, and returns the smallest that works.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np
import torch

from vsp_assert.engine.trace import top_k as top_k_of

if TYPE_CHECKING:
    from vsp_assert.engine.interventions import InterventionResult
    from vsp_assert.engine.scratchpad import Scratchpad
    from vsp_assert.engine.trace import Trace


@dataclass
class Heatmap:
    """A token × latent matrix with clustered, ordered columns.

    ``values [T, n]``: attention-weighted scores ``s[t, k]`` of the chosen latents (columns in dendrogram
    order); ``latents``: their ids; ``names``: display names (concept name or ``#id``); ``clusters``: cluster id
    per column (1-based, adjacent columns of one cluster share it).
    """

    tokens: list[str]
    latents: list[int]
    names: list[str]
    values: np.ndarray
    clusters: list[int]
    highlight_latents: set[int] = field(default_factory=set)
    highlight_tokens: set[int] = field(default_factory=set)

    def cluster_members(self) -> dict[int, list[int]]:
        out: dict[int, list[int]] = {}
        for latent, c in zip(self.latents, self.clusters):
            out.setdefault(c, []).append(latent)
        return out


def select_latents(trace: Trace, top_k: int = 5, extra: Sequence[int] = (), max_columns: int = 24) -> list[int]:
    """The heatmap's columns, at most ``max_columns``: the top-``top_k`` latents of every output token and of the
    image (strongest first), then the strongest of ``extra`` (asserted latents) that are not among them, which
    keep up to a third of the columns so the evidence for an assertion is always on screen."""
    found = [i for row in [*(trace.scores[t] for t in range(trace.n_tokens)), trace.image_scores]
             for i, _ in top_k_of(row, top_k, trace.hidden)]
    top = list(dict.fromkeys(found))
    strength = trace.scores.max(0).values if trace.n_tokens else trace.image_scores  # [d_sae]
    asserted = sorted((i for i in dict.fromkeys(int(i) for i in extra) if i not in top),
                      key=lambda i: -float(strength[i]))
    picked = asserted[: min(len(asserted), max(1, max_columns // 3))]
    return top[: max(0, max_columns - len(picked))] + picked


def contribution_patterns(trace: Trace, latents: Sequence[int]) -> np.ndarray:
    """``[n, T·P]``: each latent's contribution ``A[t, p] · f[p, k]`` flattened over (token, patch).

    A one-token-less trace (empty answer) falls back to the plain activation pattern ``f[:, k]``.
    """
    ids = torch.tensor(list(latents), dtype=torch.long)
    f = trace.acts[:, ids]  # [P, n]
    if trace.n_tokens == 0:
        return f.T.numpy().astype(np.float64)
    contrib = trace.attention[:, :, None] * f[None, :, :]  # [T, P, n]
    return contrib.permute(2, 0, 1).reshape(len(ids), -1).numpy().astype(np.float64)


def cluster_latents(patterns: np.ndarray, threshold: float = 0.5) -> tuple[list[int], list[int]]:
    """Order and cluster rows of ``patterns [n, D]``: returns (dendrogram order, cluster id per row).

    Average-linkage hierarchical clustering on cosine distance; clusters are cut at ``threshold``
    (cosine distance; 0.5 ≈ patterns at 60° apart stay separate).
    """
    from scipy.cluster.hierarchy import fcluster, leaves_list, linkage

    n = patterns.shape[0]
    if n == 0:
        return [], []
    if n == 1:
        return [0], [1]
    norms = np.linalg.norm(patterns, axis=1, keepdims=True)
    safe = np.where(norms > 0, patterns / np.where(norms > 0, norms, 1.0), 0.0)
    # an all-zero pattern gets a private direction so that it clusters alone instead of producing NaNs
    zero = (norms[:, 0] == 0).nonzero()[0]
    if zero.size:
        pad = np.zeros((n, zero.size))
        pad[zero, np.arange(zero.size)] = 1.0
        safe = np.concatenate([safe, pad], axis=1)
    Z = linkage(safe, method="average", metric="cosine")
    order = [int(i) for i in leaves_list(Z)]
    ids = fcluster(Z, t=threshold, criterion="distance")
    # renumber clusters in column order so they read 1, 2, 3 … left to right
    renum: dict[int, int] = {}
    for i in order:
        renum.setdefault(int(ids[i]), len(renum) + 1)
    return order, [renum[int(c)] for c in ids]


def heatmap(
    trace: Trace,
    *,
    top_k: int = 5,
    extra: Sequence[int] = (),
    highlight_tokens: Sequence[int] = (),
    max_columns: int = 24,
    threshold: float = 0.5,
) -> Heatmap:
    """The clustered token × latent heatmap of a trace."""
    latents = select_latents(trace, top_k=top_k, extra=extra, max_columns=max_columns)
    if not latents:
        return Heatmap(trace.output_tokens, [], [], np.zeros((trace.n_tokens, 0)), [],
                       set(extra), set(highlight_tokens))
    order, clusters = cluster_latents(contribution_patterns(trace, latents), threshold=threshold)
    ordered = [latents[i] for i in order]
    values = trace.scores[:, torch.tensor(ordered)].numpy() if trace.n_tokens else np.zeros((0, len(ordered)))
    return Heatmap(
        tokens=list(trace.output_tokens),
        latents=ordered,
        names=[(trace.labels.name_of(i) if trace.labels else None) or f"#{i}" for i in ordered],
        values=values.astype(np.float64),
        clusters=[clusters[i] for i in order],
        highlight_latents=set(extra),
        highlight_tokens=set(highlight_tokens),
    )


def ranked_clusters(trace: Trace, token: str | int, hm: Heatmap | None = None) -> list[list[int]]:
    """Clusters of the heatmap ranked by their summed score for ``token`` (best first)."""
    hm = hm if hm is not None else heatmap(trace)
    t = trace.token_index(token)
    row = trace.scores[t]
    members = hm.cluster_members()
    return sorted(members.values(), key=lambda ids: -float(row[ids].sum()))


@dataclass
class SufficientSet:
    """The smallest candidate set whose ablation changed the answer (or dropped it by ``min_drop``)."""

    latents: list[int]
    result: InterventionResult | None
    tried: list[InterventionResult]

    @property
    def found(self) -> bool:
        return self.result is not None


def find_sufficient_set(
    scratchpad: Scratchpad,
    trace: Trace,
    token: str | int = 0,
    *,
    min_drop: float | None = None,
    max_clusters: int = 4,
    candidates: Sequence[Sequence[int]] | None = None,
) -> SufficientSet:
    """Search a small sufficient set among the heatmap's clusters (one batched intervention for all tries).

    Candidates: each of the top ``max_clusters`` clusters alone, then the unions of the top 2, 3, …
    clusters. A candidate succeeds when the answer changes, or (with ``min_drop``) when the probability of the
    original answer drops by at least ``min_drop``. The smallest successful candidate wins (ties: best rank).
    """
    from vsp_assert.engine.interventions import Intervention

    if candidates is None:
        ranked = ranked_clusters(trace, token)[:max_clusters]
        tries: list[list[int]] = [list(c) for c in ranked]
        union: list[int] = []
        for c in ranked:
            union = union + list(c)
            if len(union) > len(c) and union not in tries:
                tries.append(list(union))
    else:
        tries = [list(c) for c in candidates]
    if not tries:
        return SufficientSet([], None, [])
    results = scratchpad.intervene(trace, [Intervention.ablate(*ids) for ids in tries])

    def ok(r: InterventionResult) -> bool:
        return r.changed or (min_drop is not None and r.drop >= min_drop)

    winners = [(len(ids), i) for i, (ids, r) in enumerate(zip(tries, results)) if ok(r)]
    if not winners:
        return SufficientSet([], None, results)
    _, best = min(winners)
    return SufficientSet(tries[best], results[best], results)
