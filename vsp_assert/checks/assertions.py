"""Concept assertions: check, record, then (elsewhere) render.

Each check reads a :class:`~vsp_assert.engine.trace.Trace` (and, for causal checks, an intervention result) and returns
an :class:`AssertionRecord`: what was expected, what was measured, whether it passed, and which latents and
output tokens it concerns (so the heatmap can highlight them). Nothing here prints or re-runs the model except
the causal checks, which issue their interventions as one batch per case.

Two front ends share these checks:

- YAML cases (:func:`run_case`) evaluate *every* expectation of a case, then fail once with all records in a
  :class:`CaseResult`; a spec naming something the run cannot use (an unknown concept, say) fails its own
  record, naming its field and line, and the case's other checks still run;
- the fluent Python API (``trace.assert_answer(...)`` etc., :mod:`vsp_assert.checks.fluent`) records and raises
  :class:`ConceptAssertionError` at the first failing check.

"Same answer" has one rule everywhere (assertions, baselines, compare): :func:`same_answer`, case-insensitive
with runs of whitespace collapsed.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch

from vsp_assert.checks.ranked import check_attended, check_attributed
from vsp_assert.checks.records import (
    AssertionRecord,
    BadReference,
    ConceptAssertionError,
    _failed,
    _ids,
    _name,
    located,
    same_answer,
)
from vsp_assert.checks.schema import AnswerSpec, CapturedSpec, Case, CausalSpec
from vsp_assert.engine.trace import normalise_answer
from vsp_assert.errors import InputError, VspError

if TYPE_CHECKING:
    from vsp_assert.engine.interventions import InterventionResult
    from vsp_assert.engine.scratchpad import Scratchpad
    from vsp_assert.engine.trace import Trace

__all__ = ["AssertionRecord", "BadReference", "CaseResult", "ConceptAssertionError", "check_answer",
           "check_attended", "check_attributed", "check_captured", "check_causal", "check_causal_refs",
           "check_sufficient", "explain_failure", "located", "run_case", "same_answer", "why_not_correct"]


# ---------------------------------------------------------------------- checks
def check_answer(trace: Trace, spec: AnswerSpec) -> AssertionRecord:
    got = normalise_answer(trace.answer)
    if spec.equals is not None:
        ok, what = got == normalise_answer(spec.equals), f"answer == {spec.equals!r}"
    elif spec.contains is not None:
        ok, what = normalise_answer(spec.contains) in got, f"answer contains {spec.contains!r}"
    elif spec.one_of is not None:
        ok, what = got in {normalise_answer(a) for a in spec.one_of}, f"answer in {list(spec.one_of)!r}"
    else:
        assert spec.not_ is not None
        ok, what = got != normalise_answer(spec.not_), f"answer != {spec.not_!r}"
    if spec.correct is not None:
        what += f" (known failure; correct answer {spec.correct!r})"
    return AssertionRecord("answer", what, what.split(" ", 1)[1], f"{trace.answer!r} (p={trace.answer_prob:.3f})",
                           ok, tokens=list(range(trace.n_tokens)))


def image_rank(trace: Trace, ids: Sequence[int]) -> int:
    """1-based rank of a concept's best latent among all latents by image-level score."""
    order = torch.argsort(trace.image_scores, descending=True)
    ranks = torch.empty_like(order)
    ranks[order] = torch.arange(1, order.numel() + 1)
    return int(ranks[list(ids)].min())


def captured_threshold(trace: Trace, spec: CapturedSpec, min_score: float | None = None) -> tuple[float, str]:
    """The image-level score above which ``spec``'s concept counts as captured, and where it came from: the
    check's own ``min_score``, else the case file's default, else the concept's calibrated threshold from the
    label file (``vsp-assert concepts build``), else 0 (any activation)."""
    if spec.min_score is not None:
        return spec.min_score, ""
    if min_score is not None:
        return min_score, ""
    calibrated = trace.labels.threshold(spec.concept) \
        if trace.labels is not None and isinstance(spec.concept, str) and not spec.concept.startswith("#") else None
    if calibrated is not None:
        return calibrated, " calibrated"
    return 0.0, ""


def check_captured(trace: Trace, spec: CapturedSpec, min_score: float | None = None) -> AssertionRecord:
    verb = "is not captured" if spec.absent else "is captured"
    try:
        ids = _ids(trace, spec.concept, spec.where, "concept")
    except BadReference as bad:
        return _failed("captured", f"{spec.concept} {verb}", "a concept the SAE knows", bad, spec.concept)
    score = float(trace.image_scores[ids].sum())
    rank = image_rank(trace, ids)
    name = _name(trace, spec.concept)
    if spec.max_rank is not None:
        present = rank <= spec.max_rank
        rule = f"rank <= {spec.max_rank}"
    else:
        threshold, source = captured_threshold(trace, spec, min_score)
        present = score > threshold
        rule = f"score > {threshold:.3g}{source}"
    ok = present != spec.absent
    expected = f"not captured ({rule} fails)" if spec.absent else f"captured ({rule})"
    return AssertionRecord("captured", f"{name} {verb}", expected, f"score {score:.3f}, rank {rank}", ok,
                           latents=ids, concept=name)


def causal_intervention(spec: CausalSpec) -> Any:
    from vsp_assert.engine.interventions import Intervention

    if spec.steer is not None:
        concepts, value, scale = spec.steer
        return Intervention.steer(*concepts, value=value, scale=scale, patches=spec.patches, label=spec.label)
    return Intervention.ablate(*spec.ablate, patches=spec.patches, label=spec.label)


def check_causal_refs(trace: Trace, spec: CausalSpec, labels: Any) -> AssertionRecord | None:
    """Resolve what a causal spec names (its concepts and patches) before its batch runs: None when all is
    usable, else the spec's failing record, so that one bad spec does not sink the others of its batch."""
    from vsp_assert.engine.interventions import resolve

    concepts, part = (spec.steer[0], "steer.concepts") if spec.steer is not None else (spec.ablate, "ablate")
    what = causal_intervention(spec).describe()
    try:
        for j, concept in enumerate(concepts):
            _ids(trace, concept, spec.where, part, j)
        try:
            resolve(causal_intervention(spec), labels, trace.n_patches)
        except VspError as exc:  # the patches: the concepts resolved above
            if spec.where is None:
                raise
            raise BadReference(located(exc, spec.where.of(exc.field))) from None
    except BadReference as bad:
        return _failed("causal", what, "an intervention on concepts the SAE knows", bad,
                       ", ".join(str(c) for c in concepts))
    return None


def check_causal(trace: Trace, spec: CausalSpec, result: InterventionResult,
                 everything: InterventionResult | None = None) -> AssertionRecord:
    """``everything``: the same case with every firing latent ablated (run in the same batch by :func:`run_case`).
    A changed answer that is also that one is said so: it is where ablations drift (on the shapes model "square"
    for any shape question), so the change may be the ablation's default more than the concept's effect."""
    parts_expected, ok = [], True
    if spec.changes is not None:
        parts_expected.append("answer changes" if spec.changes else "answer stays")
        ok &= result.changed == spec.changes
    if spec.answer is not None:
        parts_expected.append(f"answer becomes {spec.answer!r}")
        ok &= same_answer(result.answer_after, spec.answer)
    if spec.min_drop is not None:
        parts_expected.append(f"p(original) drops >= {spec.min_drop:g}")
        ok &= result.drop >= spec.min_drop
    measured = (f"answer {result.answer_before!r} → {result.answer_after!r}; p(original) {result.p_before:.3f} → "
                f"{result.p_after:.3f} (drop {result.drop:+.3f})")
    if everything is not None and result.changed and everything.changed \
            and same_answer(result.answer_after, everything.answer_after):
        measured += "; also the answer with every firing latent ablated"
    name = ", ".join(_name(trace, c) for c in (spec.steer[0] if spec.steer else spec.ablate))
    return AssertionRecord("causal", f"{result.intervention.describe()}", "; ".join(parts_expected), measured,
                           bool(ok), latents=list(result.latents), tokens=list(range(trace.n_tokens)),
                           concept=name, intervention=result)


def check_sufficient(pad: Scratchpad, trace: Trace, spec: CausalSpec) -> AssertionRecord:
    from vsp_assert.engine.analysis import find_sufficient_set

    if trace.n_tokens == 0:
        return AssertionRecord("sufficient", "a sufficient set exists", "a set whose ablation changes the answer",
                               "the answer is empty", False)
    try:
        t = trace.token_index(spec.token)
    except InputError as exc:
        if spec.where is None:
            raise
        return AssertionRecord("sufficient", "a sufficient set exists among the clusters",
                               f"an output token {spec.token!r}", located(exc, spec.where.of("token")), False)
    found = find_sufficient_set(pad, trace, t, min_drop=spec.min_drop)
    goal = "changes the answer" + (f" or drops p by >= {spec.min_drop:g}" if spec.min_drop is not None else "")
    if found.found and found.result is not None:
        names = ", ".join(_name(trace, i) for i in found.latents)
        r = found.result
        measured = (f"[{names}] → answer {r.answer_after!r}, p(original) {r.p_before:.3f} → {r.p_after:.3f}")
        return AssertionRecord("sufficient", "a sufficient set exists among the clusters", f"a set that {goal}",
                               measured, True, latents=list(found.latents), tokens=[t], concept=names,
                               intervention=r)
    best = max(found.tried, key=lambda r: r.drop, default=None)
    measured = "no candidate did" + (f" (best drop {best.drop:+.3f})" if best is not None else "")
    return AssertionRecord("sufficient", "a sufficient set exists among the clusters", f"a set that {goal}",
                           measured, False, tokens=[t])


# ---------------------------------------------------------------------- running a YAML case
@dataclass
class CaseResult:
    """A checked run: the trace and every record checked on it. ``case`` is the YAML case (None for a Python
    test's trace); ``drift`` the baseline comparison, when one was made (see :mod:`vsp_assert.checks.baseline`)."""

    case: Case | None
    trace: Trace
    records: list[AssertionRecord]
    drift: Any = None
    explanation: Any = None  # why not the right answer (a FlipExplanation), for a failure that names it

    @property
    def passed(self) -> bool:
        return all(r.passed for r in self.records)

    @property
    def failures(self) -> list[AssertionRecord]:
        return [r for r in self.records if not r.passed]


def run_case(pad: Scratchpad, case: Case, image: Any = None) -> CaseResult:
    """Run one case and evaluate all its expectations (interventions of the case in one batch)."""
    trace = pad.run(image if image is not None else case.load_image(), case.prompt,
                    max_new_tokens=case.max_new_tokens)
    exp = case.expect
    records: list[AssertionRecord] = []
    if exp.answer is not None:
        records.append(check_answer(trace, exp.answer))
    for cap in exp.captured:
        records.append(check_captured(trace, cap, case.min_score))
    for att in exp.attended:
        records.extend(check_attended(trace, att, case.top_k))
    for att in exp.attributed:  # contrastive against the answer the case calls correct, when it names one
        records.extend(check_attributed(trace, att, case.top_k, exp.answer.correct if exp.answer else None, pad))
    # causal checks: resolved up front, then the usable ones in one batch; records keep the case file's order
    causal: list[AssertionRecord | None] = [
        None if c.sufficient else check_causal_refs(trace, c, pad.sae.labels) for c in exp.causal]
    plain = [i for i, c in enumerate(exp.causal) if not c.sufficient and causal[i] is None]
    if plain:  # one more row in the batch: every firing latent ablated, where ablations drift
        from vsp_assert.engine.analysis import everything_ablated

        specs = [causal_intervention(exp.causal[i]) for i in plain]
        drift = everything_ablated(trace)
        results = pad.intervene(trace, [*specs, *([drift] if drift is not None else [])])
        everything = results[len(specs)] if drift is not None else None
        for i, r in zip(plain, results):
            causal[i] = check_causal(trace, exp.causal[i], r, everything)
    records.extend(r for r in causal if r is not None)
    for suff in (c for c in exp.causal if c.sufficient):
        records.append(check_sufficient(pad, trace, suff))
    return CaseResult(case, trace, records)


def explain_failure(trace: Trace, spec: AnswerSpec | None, records: Sequence[AssertionRecord]) -> str | None:
    """On a failing case whose right answer is known (``correct:``, else ``equals:``) and is not the model's, compute
    the attribution contrasted with it: the failure view shows it beside attention, since on the zoo of fine-tuned
    shortcuts it was the view that found the cause (docs/truth.md). Returns the contrast, or None. Called where a
    failure is shown (the pytest item), not by :func:`run_case`, so ``compare`` and passing runs pay no backward."""
    other = (spec.correct or spec.equals) if spec is not None else None
    if not other or all(r.passed for r in records) or not trace.can_attribute or not trace.n_tokens:
        return None
    if same_answer(other, trace.answer):
        return None
    try:
        trace.attribution_for(other)
    except VspError:
        return None
    return other


def why_not_correct(pad: Scratchpad, result: CaseResult) -> Any:
    """For a failing case whose right answer is known and not given: the contrastive attribution of
    :func:`explain_failure`, then the concepts that carry the wrong answer against the right one, the top three
    ablated in one batched intervention (:func:`vsp_assert.engine.flip.explain_flip` on this one model) — the
    failure view's "ablating stripes on this model restores 'square'". Stored on ``result.explanation``; None
    (nothing computed) for a passing case or one without a right answer."""
    spec = result.case.expect.answer if result.case is not None else None
    contrast = explain_failure(result.trace, spec, result.records)
    if contrast is None:
        return None
    from vsp_assert.engine.flip import explain_flip

    result.explanation = explain_flip(pad, result.trace, contrast, model="this model")
    return result.explanation
