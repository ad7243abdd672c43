"""Analysis of a trace: top concepts per token, the clustered token × latent heatmap, sufficient sets.

The heatmap's columns are the latents that matter for some output token (the top-k of each row of
``Trace.scores``, plus any latents a caller asks to see). Columns are clustered with scipy's hierarchical
clustering (average linkage, cosine distance) on each latent's *contribution pattern* ``A[t, p] · f[p, k]``
over (output token, patch): latents that the same tokens read from the same places fall together. With several
output tokens this is the paper's "pattern across output tokens"; with a one-token answer it still separates
latents that fire on different image regions. A cluster is the unit to ablate, because correlated latents can
re-create a concept that a single-latent ablation removes.

The heatmap has two **views** of the same columns' kind: ``attended`` (the attention-weighted scores
``s[t, k]``, where the token looked) and ``attributed`` (``Trace.attribution``, what the token used: gradient ×
activation through the SAE). In the attributed view columns are clustered on their activation pattern ``f[:, k]``.

A **sufficient set** is a set of latents whose ablation changes the answer (or drops its probability by a
margin). :func:`find_sufficient_set` tries, in one batched intervention, the heatmap's clusters ranked by their
score for the token and growing unions of the top ones, every labelled concept active on the image (its firing
latents), and prefixes of the token's attribution ranking at doubling lengths; when a prefix works, a binary
search over the prefix length (each step one batched forward of a few lengths) finds the shortest. It returns the
smallest set that works and, when none does, says what was tried.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np
import torch

from vsp_assert.engine.trace import top_k as top_k_of

if TYPE_CHECKING:
    from vsp_assert.engine.interventions import Intervention, InterventionResult
    from vsp_assert.engine.scratchpad import Scratchpad
    from vsp_assert.engine.trace import Trace


@dataclass
class Heatmap:
    """A token × latent matrix with clustered, ordered columns.

    ``values [T, n]``: the view's values of the chosen latents — attention-weighted scores ``s[t, k]``, or the
    attribution ``a[t, k]`` (columns in dendrogram order); ``latents``: their ids; ``names``: display names
    (concept name or ``#id``); ``clusters``: cluster id per column (1-based, adjacent columns of one cluster
    share it).
    """

    tokens: list[str]
    latents: list[int]
    names: list[str]
    values: np.ndarray
    clusters: list[int]
    highlight_latents: set[int] = field(default_factory=set)
    highlight_tokens: set[int] = field(default_factory=set)
    view: str = "attended"  # attended: s[t, k] (attention-weighted) · attributed: Trace.attribution
    contrast: str | None = None  # attributed: the answer it is contrasted with (None: plain)

    def cluster_members(self) -> dict[int, list[int]]:
        out: dict[int, list[int]] = {}
        for latent, c in zip(self.latents, self.clusters):
            out.setdefault(c, []).append(latent)
        return out


VIEWS = ("attended", "attributed")


def view_values(trace: Trace, view: str = "attended", contrast: str | None = None) -> torch.Tensor:
    """``[T, d_sae]``: the values a view ranks latents by — ``attended``: ``trace.scores``; ``attributed``:
    ``trace.attribution`` (contrastive against ``contrast`` when given)."""
    if view == "attended":
        return trace.scores
    if view == "attributed":
        return trace.attribution_for(contrast)
    from vsp_assert.errors import InputError

    raise InputError("unknown heatmap view", field="view", received=view, allowed=", ".join(VIEWS))


def select_latents(trace: Trace, top_k: int = 5, extra: Sequence[int] = (), max_columns: int = 24,
                   values: torch.Tensor | None = None) -> list[int]:
    """The heatmap's columns, at most ``max_columns``: the top-``top_k`` latents of every output token (by
    ``values [T, d_sae]``, default the attention-weighted scores) and of the image (strongest first), then the
    strongest of ``extra`` (asserted latents) that are not among them, which keep up to a third of the columns
    so the evidence for an assertion is always on screen."""
    values = trace.scores if values is None else values
    found = [i for row in [*(values[t] for t in range(trace.n_tokens)), trace.image_scores]
             for i, _ in top_k_of(row, top_k, trace.hidden)]
    top = list(dict.fromkeys(found))
    strength = values.abs().max(0).values if trace.n_tokens else trace.image_scores  # [d_sae]
    asserted = sorted((i for i in dict.fromkeys(int(i) for i in extra) if i not in top),
                      key=lambda i: -float(strength[i]))
    picked = asserted[: min(len(asserted), max(1, max_columns // 3))]
    return top[: max(0, max_columns - len(picked))] + picked


def contribution_patterns(trace: Trace, latents: Sequence[int]) -> np.ndarray:
    """``[n, T·P]``: each latent's contribution ``A[t, p] · f[p, k]`` flattened over (token, patch).

    A one-token-less trace (empty answer) falls back to the plain activation pattern ``f[:, k]``.
    """
    ids = torch.tensor(list(latents), dtype=torch.long)
    f = trace.sparse_acts.columns(ids)  # [P, n], read from the sparse codes (no [P, d_sae])
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
    view: str = "attended",
    contrast: str | None = None,
) -> Heatmap:
    """The clustered token × latent heatmap of a trace, in the ``attended`` or the ``attributed`` view."""
    matrix = view_values(trace, view, contrast)
    latents = select_latents(trace, top_k=top_k, extra=extra, max_columns=max_columns, values=matrix)
    if not latents:
        return Heatmap(trace.output_tokens, [], [], np.zeros((trace.n_tokens, 0)), [],
                       set(extra), set(highlight_tokens), view, contrast if view == "attributed" else None)
    patterns = contribution_patterns(trace, latents) if view == "attended" else \
        trace.sparse_acts.columns(torch.tensor(latents)).T.numpy().astype(np.float64)
    order, clusters = cluster_latents(patterns, threshold=threshold)
    ordered = [latents[i] for i in order]
    values = matrix[:, torch.tensor(ordered)].numpy() if trace.n_tokens else np.zeros((0, len(ordered)))
    return Heatmap(
        tokens=list(trace.output_tokens),
        latents=ordered,
        names=[(trace.labels.name_of(i) if trace.labels else None) or f"#{i}" for i in ordered],
        values=values.astype(np.float64),
        clusters=[clusters[i] for i in order],
        highlight_latents=set(extra),
        highlight_tokens=set(highlight_tokens),
        view=view,
        contrast=contrast if view == "attributed" else None,
    )


def ranked_clusters(trace: Trace, token: str | int, hm: Heatmap | None = None) -> list[list[int]]:
    """Clusters of the heatmap ranked by their summed score for ``token`` (best first)."""
    hm = hm if hm is not None else heatmap(trace)
    t = trace.token_index(token)
    row = trace.scores[t]
    members = hm.cluster_members()
    return sorted(members.values(), key=lambda ids: -float(row[ids].sum()))


@dataclass
class Candidate:
    """One set the sufficient-set search tries: its latents and where it came from (``cluster 2``,
    ``clusters 1-3``, ``concept stripes``, ``attribution top 7``)."""

    latents: list[int]
    source: str


@dataclass
class SufficientSet:
    """The smallest candidate set whose ablation changed the answer (or dropped it by ``min_drop``).

    ``source`` says which candidate won; ``tried`` holds every result, ``candidates`` every set tried (same
    order); ``note`` says, when nothing worked, what was tried."""

    latents: list[int]
    result: InterventionResult | None
    tried: list[InterventionResult]
    source: str = ""
    candidates: list[Candidate] = field(default_factory=list)
    note: str = ""

    @property
    def found(self) -> bool:
        return self.result is not None


#: prefix lengths of the attribution ranking tried at once by the first batch (then refined by bisection)
PREFIX_GRID = (1, 2, 4, 8, 16, 32, 64, 128)
#: prefix lengths tried per bisection step (one batched forward each)
BISECT_WIDTH = 3


def active_latents(trace: Trace) -> torch.Tensor:
    """``[d_sae]`` bool: the latents that fire on some patch of the image."""
    return trace.image_scores > 0


def everything_ablated(trace: Trace) -> Intervention | None:
    """Every latent that fires on the image, ablated (None when none fires): the answer it gives is where
    ablations drift (on the shapes model "square" for any shape question), beside which a concept's ablation is
    read — one more row of the batch that checks them (``run_case``'s causal checks, ``explain_flip``)."""
    from vsp_assert.engine.interventions import Intervention

    ids = [int(i) for i in active_latents(trace).nonzero().flatten()]
    return Intervention.ablate(*ids) if ids else None


def concept_candidates(trace: Trace, token: int, values: torch.Tensor, limit: int = 6) -> list[Candidate]:
    """Every labelled concept with latents firing on the image, as its firing latents; the ``limit`` that rank
    highest for ``token`` by ``values [T, d_sae]`` (summed over their latents)."""
    if trace.labels is None:
        return []
    firing = active_latents(trace)
    out = []
    for name, ids in trace.labels.concepts.items():
        live = [int(i) for i in ids if bool(firing[int(i)])]
        if live:
            out.append((float(values[token, live].sum()), Candidate(live, f"concept {name}")))
    out.sort(key=lambda pair: -pair[0])
    return [c for _, c in out[:limit]]


def attribution_ranking(trace: Trace, token: int, contrast: str | None = None) -> list[int]:
    """The latents firing on the image that support ``token`` by attribution, strongest first (noise left out)."""
    row = trace.attribution_for(contrast)[token].clone()
    row[~active_latents(trace)] = 0.0
    return [i for i, _ in top_k_of(row, int(row.numel()), trace.hidden)]


def find_sufficient_set(
    scratchpad: Scratchpad,
    trace: Trace,
    token: str | int = 0,
    *,
    min_drop: float | None = None,
    max_clusters: int = 4,
    candidates: Sequence[Sequence[int]] | None = None,
    concepts: bool = True,
    attribution: bool = True,
    contrast: str | None = None,
) -> SufficientSet:
    """Search a small set whose ablation changes the answer (see the module docstring).

    Candidates (one batched intervention): each of the top ``max_clusters`` clusters alone and the unions of
    the top 2, 3, … clusters; with ``concepts``, the labelled concepts firing on the image; with ``attribution``,
    prefixes of the token's attribution ranking (contrastive against ``contrast`` when given) at the lengths of
    :data:`PREFIX_GRID`. When a prefix works, a bisection over the length (:data:`BISECT_WIDTH` lengths per
    batched forward) finds the shortest that does. ``candidates`` replaces all of these. A candidate succeeds
    when the answer changes, or (with ``min_drop``) when the probability of the original answer drops by at least
    ``min_drop``; the smallest successful one wins (ties: the first tried).
    """
    from vsp_assert.engine.interventions import Intervention

    t = trace.token_index(token) if trace.n_tokens else 0
    ranking: list[int] = []
    if candidates is None:
        ranked = ranked_clusters(trace, t)[:max_clusters]
        tries = [Candidate(list(members), f"cluster {i + 1}") for i, members in enumerate(ranked)]
        union: list[int] = []
        for i, members in enumerate(ranked):
            union = union + list(members)
            if len(union) > len(members):
                tries.append(Candidate(list(union), f"clusters 1-{i + 1}"))
        can_attribute = trace.can_attribute and trace.n_tokens > 0
        if concepts:
            tries += concept_candidates(trace, t, trace.attribution_for(contrast) if (
                attribution and can_attribute) else trace.scores)
        if attribution and can_attribute:
            ranking = attribution_ranking(trace, t, contrast)
            grid = sorted({n for n in PREFIX_GRID if n < len(ranking)} | ({len(ranking)} if ranking else set()))
            tries += [Candidate(ranking[:n], f"attribution top {n}") for n in grid]
    else:
        tries = [Candidate([int(i) for i in ids], f"candidate {j + 1}") for j, ids in enumerate(candidates)]
    seen: set[tuple[int, ...]] = set()
    unique = []
    for c in tries:
        key = tuple(sorted(c.latents))
        if key and key not in seen:
            seen.add(key)
            unique.append(c)
    if not unique:
        return SufficientSet([], None, [], note="no candidate: no cluster, concept or attributed latent")
    results = scratchpad.intervene(trace, [Intervention.ablate(*c.latents) for c in unique])

    def ok(r: InterventionResult) -> bool:
        return r.changed or (min_drop is not None and r.drop >= min_drop)

    tried, done = list(results), list(unique)
    prefix_ok = [len(c.latents) for c, r in zip(unique, results) if c.source.startswith("attribution") and ok(r)]
    if prefix_ok:  # bisection: the shortest working prefix lies in (longest failing shorter one, shortest working]
        hi = min(prefix_ok)
        lo = max([len(c.latents) for c, r in zip(unique, results) if c.source.startswith("attribution")
                  and not ok(r) and len(c.latents) < hi], default=0)
        while hi - lo > 1:
            lengths = sorted({lo + max(1, (hi - lo) * (j + 1) // (BISECT_WIDTH + 1)) for j in range(BISECT_WIDTH)}
                             - {hi})
            step = [Candidate(ranking[:n], f"attribution top {n}") for n in lengths]
            got = scratchpad.intervene(trace, [Intervention.ablate(*c.latents) for c in step])
            tried += got
            done += step
            working = [len(c.latents) for c, r in zip(step, got) if ok(r)]
            failing = [len(c.latents) for c, r in zip(step, got) if not ok(r)]
            hi = min(working, default=hi)
            lo = max([n for n in failing if n < hi], default=lo)
    winners = [(len(c.latents), i) for i, (c, r) in enumerate(zip(done, tried)) if ok(r)]
    if not winners:
        best = max(tried, key=lambda r: r.drop)
        kinds = sorted({c.source.split(" ")[0] for c in done})
        note = (f"none of {len(done)} candidates ({', '.join(kinds)}; the largest holds "
                f"{max(len(c.latents) for c in done)} latents) changed the answer; best drop {best.drop:+.3f}")
        return SufficientSet([], None, tried, candidates=done, note=note)
    _, i = min(winners)
    return SufficientSet(done[i].latents, tried[i], tried, source=done[i].source, candidates=done)
