"""What the explorer page shows of a trace, as JSON-ready data: HTML fragments from :mod:`vsp_assert.render` plus
the figures the page's controls need (clusters, token probabilities, intervention outcomes).

One place renders: the heatmap table, the latent cards (statistics, labels, reference images from the SAE's
atlas) and the attention overlays are :mod:`vsp_assert.render.html_case`'s, the same as in the static HTML report;
this module only picks what to render for the page's switches and filters:

- **ranking** ``attention`` (the default) ranks and clusters latents by the attention-weighted scores
  ``s[t, k] = Σ_p A[t, p] f[p, k]``; ``average`` by the plain patch average ``mean_p f[p, k]``, VisualScratchpad's
  unweighted view. The second is the same trace with the attention replaced by a uniform one (every token reads
  every patch alike), so the one heatmap function serves both.
- **noise filter**: latents whose firing rate (from the SAE's labelling run) is above ``max_rate`` or whose mean
  activation is below ``min_mean`` are hidden from rankings and the heatmap, as are dead latents; the defaults
  reproduce the SAE's own dead/dense filter.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import torch

from vsp_assert.errors import InputError

if TYPE_CHECKING:
    from vsp_assert.engine.analysis import SufficientSet
    from vsp_assert.engine.interventions import InterventionResult
    from vsp_assert.engine.trace import Trace

RANKINGS = ("attention", "average")
DEFAULT_DENSE_RATE = 0.25


def filter_defaults(trace: Trace) -> dict[str, float]:
    """Slider defaults: the SAE's own dense rate (from its labelling run) and no minimum mean activation."""
    build = trace.labels.build if trace.labels is not None else {}
    rate = build.get("dense_rate", DEFAULT_DENSE_RATE) if isinstance(build, dict) else DEFAULT_DENSE_RATE
    return {"max_rate": float(rate), "min_mean": 0.0}


def hidden_latents(trace: Trace, max_rate: float, min_mean: float) -> frozenset[int]:
    """Dead latents, and those whose recorded firing rate exceeds ``max_rate`` or mean activation is below
    ``min_mean`` (latents without statistics are kept)."""
    labels = trace.labels
    if labels is None:
        return frozenset()
    hidden = set(labels.dead)
    for latent, stats in labels.latents.items():
        rate, mean = stats.get("firing_rate"), stats.get("mean_activation")
        if isinstance(rate, (int, float)) and rate > max_rate:
            hidden.add(int(latent))
        elif isinstance(mean, (int, float)) and mean < min_mean:
            hidden.add(int(latent))
    # dense latents without a recorded rate stay hidden: the label file says they fire too often
    hidden |= {i for i in labels.dense if not isinstance(labels.latents.get(i, {}).get("firing_rate"), (int, float))}
    return frozenset(hidden)


def viewed(trace: Trace, ranking: str = "attention", max_rate: float | None = None,
           min_mean: float | None = None) -> Trace:
    """The trace as the page's switches show it (a copy; the original is untouched)."""
    if ranking not in RANKINGS:
        raise InputError("unknown ranking", field="ranking", received=ranking, allowed=", ".join(RANKINGS))
    defaults = filter_defaults(trace)
    rate = defaults["max_rate"] if max_rate is None else max_rate
    mean = defaults["min_mean"] if min_mean is None else min_mean
    changes: dict[str, Any] = {"hidden": hidden_latents(trace, rate, mean)}
    if ranking == "average" and trace.n_tokens:
        T, P = trace.n_tokens, trace.n_patches
        changes["attention"] = torch.full((T, P), 1.0 / P)
        changes["scores"] = trace.image_scores[None, :].expand(T, -1).clone()
    return dataclasses.replace(trace, **changes)


def trace_view(trace: Trace, *, ranking: str = "attention", max_rate: float | None = None,
               min_mean: float | None = None, top_k: int = 5, highlight: Sequence[int] = ()) -> dict[str, Any]:
    """Everything the page shows of a run."""
    from vsp_assert.engine.analysis import heatmap
    from vsp_assert.render.html_case import IMAGE_BOX, attention_html, fit_image, heatmap_html, png_data_uri

    shown = viewed(trace, ranking, max_rate, min_mean)
    hm = heatmap(shown, top_k=top_k, extra=list(highlight))
    clusters = [{"id": c, "latents": ids, "names": [shown.display(i) for i in ids]}
                for c, ids in hm.cluster_members().items()]
    attention = attention_html(trace, set(), max_overlays=8) if ranking == "attention" else ""
    return {
        "prompt": trace.prompt,
        "answer": trace.answer,
        "answer_prob": float(trace.answer_prob),
        "tokens": [{"text": t, "p": float(p)} for t, p in zip(trace.output_tokens, trace.token_probs.tolist())],
        "captured": [{"latent": i, "name": shown.display(i), "score": s} for i, s in shown.top_captured(8)],
        "top": [[{"latent": i, "name": shown.display(i), "score": s} for i, s in shown.top_concepts(t, top_k)]
                for t in range(trace.n_tokens)],
        "heatmap_html": heatmap_html(hm, shown),
        "clusters": clusters,
        "attention_html": attention,
        "image": png_data_uri(fit_image(trace.image, IMAGE_BOX)) if trace.image is not None else None,
        "sae_fit": trace.sae_fit,
        "ranking": ranking,
        "filters": {**filter_defaults(trace), **{k: v for k, v in (("max_rate", max_rate), ("min_mean", min_mean))
                                                 if v is not None}},
        "hidden": len(shown.hidden),
    }


def latent_view(trace: Trace, latent: Any) -> dict[str, Any]:
    """One latent's card (statistics, labels, reference images) and where it fires on this image."""
    from vsp_assert.render.html_case import OVERLAY_BOX, fit_image, grid_levels, latents_html, overlay, png_data_uri

    if isinstance(latent, bool) or not isinstance(latent, int):
        raise InputError("a latent id is an integer", field="latent", received=latent)
    if trace.labels is not None:
        trace.labels.stats(latent)  # range check, with the SAE's bounds in the message
    elif not 0 <= latent < trace.sparse_acts.d_sae:
        raise InputError("latent id out of range", field="latent", received=latent)
    fires = trace.sparse_acts.columns([latent])[:, 0].numpy()  # [P]
    levels = grid_levels(fires, trace.grid)
    where = None
    if trace.image is not None and levels is not None:
        where = png_data_uri(overlay(fit_image(trace.image, OVERLAY_BOX), levels))
    return {
        "latent": latent,
        "name": trace.display(latent),
        "card_html": latents_html(trace, [latent]),
        "fires": where,
        "peak": float(fires.max()) if fires.size else 0.0,
        "image_score": float(trace.image_scores[latent]),
        "stats": trace.labels.stats(latent) if trace.labels is not None else {},
    }


def result_view(trace: Trace, r: InterventionResult) -> dict[str, Any]:
    return {
        "intervention": r.intervention.describe(),
        "latents": [trace.display(i) for i in r.latents],
        "answer_before": r.answer_before,
        "answer_after": r.answer_after,
        "changed": r.changed,
        "p_before": r.p_before,
        "p_after": r.p_after,
        "drop": r.drop,
    }


def sufficient_view(trace: Trace, found: SufficientSet) -> dict[str, Any]:
    return {
        "found": found.found,
        "latents": [trace.display(i) for i in found.latents],
        "result": result_view(trace, found.result) if found.result is not None else None,
        "tried": len(found.tried),
    }
