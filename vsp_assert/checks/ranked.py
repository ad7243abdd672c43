"""The ranked checks, ``attended:`` and ``attributed:``: is a concept among an output token's top-k latents?

One grammar, two rankings ``[T, d_sae]``: attention-weighted activation (``Trace.scores``) and attribution
(``Trace.attribution``, contrastive against the case's ``correct:`` answer when it names one). An ``attributed``
check can also be **confirmed by ablation** (``confirm:``): attribution is a first-order estimate of what
ablating a concept does to the token's objective, and the zoo of fine-tuned shortcuts (docs/truth.md) found it
naming a concept that is present but works *against* the answer (its ablation raises the objective). With
``confirm: d`` a named concept also needs its true ablation — all of its latents, on every patch, teacher-forced,
one batched forward for the whole item (:func:`vsp_assert.engine.attribution.ablation_effects`) — to lower the
same objective by more than ``d`` (``confirm: true`` is ``d = 0``: the sign agrees); an ``absent`` concept passes
when it is outside the top-k or its ablation does not lower the objective by more than ``d``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import torch

from vsp_assert.checks.records import AssertionRecord, BadReference, _failed, _ids, _name, located
from vsp_assert.checks.schema import AttendedSpec
from vsp_assert.errors import InputError, VspError

if TYPE_CHECKING:
    from vsp_assert.engine.scratchpad import Scratchpad
    from vsp_assert.engine.trace import Trace

__all__ = ["check_attended", "check_attributed"]


def check_attended(trace: Trace, spec: AttendedSpec, top_k: int = 5) -> list[AssertionRecord]:
    """One record per concept of the spec; a concept the SAE does not know fails its own record only."""
    return _check_ranked(trace, spec, top_k, "attended", trace.scores)


def check_attributed(trace: Trace, spec: AttendedSpec, top_k: int = 5, contrast: str | None = None,
                     pad: Scratchpad | None = None) -> list[AssertionRecord]:
    """``attributed``: as :func:`check_attended`, ranked by ``trace.attribution`` (contrastive against
    ``contrast``, the case's ``answer.correct``, when given). A spec with ``confirm`` set also ablates each
    concept it names (``pad``: the Scratchpad that made the trace; its own when not given)."""
    try:
        scores = trace.attribution_for(contrast)
    except VspError as exc:
        return [AssertionRecord("attributed", f"token {spec.token!r} uses {[str(c) for c in spec.concepts]}",
                                "an attribution", f"no attribution: {exc.message}", False)]
    confirm = getattr(spec, "confirm", None)
    if confirm is None:
        return _check_ranked(trace, spec, top_k, "attributed", scores)
    pad = pad if pad is not None else getattr(trace, "scratchpad", None)
    if pad is None:
        return [AssertionRecord("attributed", f"token {spec.token!r} uses {[str(c) for c in spec.concepts]}",
                                "a confirmation by ablation", "no Scratchpad made this trace: nothing to ablate "
                                "with (use a trace returned by Scratchpad.run)", False)]
    return _check_ranked(trace, spec, top_k, "attributed", scores,
                         confirm=lambda t, sets: _ablation_drops(pad, trace, t, sets, contrast), threshold=confirm)


def _ablation_drops(pad: Scratchpad, trace: Trace, token: int, latent_sets: list[list[int]],
                    contrast: str | None) -> list[float]:
    """The true drop of token ``token``'s objective (the one attributed) when each set is ablated: one batch."""
    from vsp_assert.engine.attribution import ablation_effects

    drops = ablation_effects(pad, trace, latent_sets, contrast)  # [K, T]
    return [float(d) for d in drops[:, token]]


def _check_ranked(trace: Trace, spec: AttendedSpec, top_k: int, kind: str, scores: torch.Tensor,
                  confirm: Any = None, threshold: float = 0.0) -> list[AssertionRecord]:
    """The top-k check of ``attended`` / ``attributed`` on the ranking ``scores [T, d_sae]``; with ``confirm``
    (``(token, latent_sets) -> drops``), each concept's ablation must also lower the objective by > ``threshold``
    to count as used."""
    from vsp_assert.engine.trace import top_k as top_of

    verbs = {"attended": ("attends", "does not attend"), "attributed": ("uses", "does not use")}[kind]
    k = spec.top_k or top_k
    wanted = [(c, False, "concepts", j) for j, c in enumerate(spec.concepts)]
    wanted += [(c, True, "absent", j) for j, c in enumerate(spec.absent)]
    resolved: list[tuple[Any, bool, list[int] | BadReference]] = []
    for concept, absent, part, j in wanted:
        try:
            resolved.append((concept, absent, _ids(trace, concept, spec.where, part, j)))
        except BadReference as bad:
            resolved.append((concept, absent, bad))
    try:
        t = trace.token_index(spec.token)
    except InputError as exc:
        what = f"token {spec.token!r} {verbs[0]} {[str(c) for c in spec.concepts]}"
        place = spec.where.of("token") if spec.where is not None else None
        measured = located(exc, place) if isinstance(spec.token, int) else f"answer tokens {trace.output_tokens!r}"
        if place is not None and not isinstance(spec.token, int):
            measured += f" at {place.field}, line {place.line}"
        known = [i for _, _, ids in resolved if not isinstance(ids, BadReference) for i in ids]
        return [AssertionRecord(kind, what, f"an output token {spec.token!r}", measured, False,
                                latents=known)]
    top = [i for i, _ in top_of(scores[t], k, trace.hidden)]
    shown = ", ".join(_name(trace, i) for i in top) or "-"
    token_text = trace.output_tokens[t].strip()
    # the ablations that confirm: only concepts in the top-k need one (outside it, the check is decided already)
    # (one row per distinct concept: one named under both concepts and absent is ablated once)
    usable = list({tuple(ids): ids for _, _, ids in resolved
                   if not isinstance(ids, BadReference) and set(ids) & set(top)}.values())
    drops = dict(zip(map(tuple, usable), confirm(t, usable))) if confirm is not None and usable else {}
    records = []
    for concept, absent, ids in resolved:
        verb = verbs[1] if absent else verbs[0]
        if isinstance(ids, BadReference):
            records.append(_failed(kind, f"token {token_text!r} {verb} {concept}", "a concept the SAE knows",
                                   ids, concept))
            continue
        hit = [i for i in ids if i in top]
        used = bool(hit)
        name = _name(trace, concept)
        score = float(scores[t, ids].sum())
        measure = "attribution" if kind == "attributed" else "score"
        measured = f"top-{k}: {shown}; {name} {measure} {score:.3f}"
        expected = f"{name} {'outside' if absent else 'in'} top-{k}"
        if confirm is not None:
            expected = (f"{name} outside top-{k}, or ablating it lowers the objective by ≤ {threshold:g}" if absent
                        else f"{name} in top-{k}, and ablating it lowers the objective by > {threshold:g}")
            if used:
                drop = drops[tuple(ids)]
                used = drop > threshold
                side = "lowers" if drop >= 0 else "raises"
                measured += (f"; ablating {name} {side} the objective by {abs(drop):.3f} "
                             f"({'confirmed' if used else 'not confirmed'})")
        ok = used != absent
        what = f"token {token_text!r} {verb} {name} (top-{k}{' attributed' if kind == 'attributed' else ''}" \
               f"{', confirmed by ablation' if confirm is not None else ''})"
        records.append(AssertionRecord(kind, what, expected, measured, ok, latents=ids, tokens=[t], concept=name))
    return records
