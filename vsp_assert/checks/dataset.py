"""Running a dataset case: rows through shared model calls, per-row checks, rates with Wilson intervals, and the
random controls of causal claims.

:func:`run_dataset_case` fills each row's ``{field}`` templates, answers the rows ``batch`` at a time with one
batched ``generate`` (:meth:`~vsp_assert.engine.scratchpad.Scratchpad.run_batch`, same results as one by one),
then per row runs every causal ablation of the case *and* its random control sets in one batched forward
(:meth:`~vsp_assert.engine.scratchpad.Scratchpad.intervene`). Each :class:`~.dataset_schema.RowCheck` becomes
one aggregate :class:`~.assertions.AssertionRecord`: its rate over the rows with the Wilson 95% interval and
count, against ``min_rate`` / ``max_rate`` (no bound: every row must pass). A controlled check adds a
``specificity`` record: how often the controls achieved the claimed effect, ``1 −`` that rate, and the one-sided
two-proportion p-value of the target's rate against the controls'; with ``specific: true`` it fails unless the
target's rate is above the controls' with p < 0.05.

Only the traces of the worst rows are kept (those counting against a failing bound, ``show_rows`` per check), so a
suite of thousands of rows holds a few traces, not thousands.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any

import numpy as np

from vsp_assert.checks.assertions import (
    AssertionRecord,
    CaseResult,
    causal_intervention,
    check_answer,
    check_attended,
    check_attributed,
    check_captured,
    check_causal,
    check_causal_refs,
    check_sufficient,
)
from vsp_assert.checks.controls import draw_controls
from vsp_assert.checks.dataset_schema import SPECIFIC_ALPHA, DatasetCase, Row, RowCheck
from vsp_assert.checks.load_dataset import fill
from vsp_assert.checks.rates import Rate, bound_text, rate_passes, two_proportion_p

#: the longest side of the thumbnail kept per row, px
THUMBNAIL = 48

if TYPE_CHECKING:
    from vsp_assert.engine.scratchpad import Scratchpad
    from vsp_assert.engine.trace import Trace


@dataclass
class RowOutcome:
    """One row's results: per check, whether it passed and its records; controls' hits ``(achieved, run)``."""

    row: Row
    prompt: str
    answer: str
    answer_prob: float
    passed: list[bool]
    records: list[list[AssertionRecord]]
    controls: list[tuple[int, int, int] | None]  # per check: (achieved, run, mass-matched), None: no control
    sae_fit: float | None = None
    trace: Trace | None = None  # kept for the worst rows only
    thumbnail: Any = None  # the row's image, at most THUMBNAIL px a side (PIL), for the report's rows table


@dataclass
class CheckSummary:
    """One check over the rows."""

    check: RowCheck
    description: str
    rate: Rate
    passed: bool
    control_rate: Rate | None = None
    p_value: float | None = None
    matched: int = 0
    specific_passed: bool = True
    worst: list[int] = field(default_factory=list)  # row indices counting against the bound, worst first


@dataclass
class DatasetResult(CaseResult):
    """A dataset case's result: ``records`` are the aggregate records (one per check, plus specificity and
    source notes); ``trace`` is a representative row's (the first worst row's, else the first row's)."""

    summaries: list[CheckSummary] = field(default_factory=list)
    rows: list[RowOutcome] = field(default_factory=list)
    source: str = ""
    missing: list[tuple[str, str]] = field(default_factory=list)

    @property
    def dataset(self) -> DatasetResult:
        return self


def describe_check(check: RowCheck) -> str:
    """The check as text, templates unfilled (``answer == '{color}'``, ``ablate [stripes] → answer '{shape}'``)."""
    s = check.spec
    if check.kind == "answer":
        if s.equals is not None:
            return f"answer == {s.equals!r}"
        if s.contains is not None:
            return f"answer contains {s.contains!r}"
        if s.one_of is not None:
            return f"answer in {list(s.one_of)!r}"
        return f"answer != {s.not_!r}"
    if check.kind == "captured":
        return f"{s.concept} {'is not' if s.absent else 'is'} captured"
    if check.kind in ("attended", "attributed"):
        verb = "attends" if check.kind == "attended" else "uses"
        parts = [f"{verb} {list(map(str, s.concepts))}"] if s.concepts else []
        parts += [f"not {list(map(str, s.absent))}"] if s.absent else []
        confirmed = " (confirmed by ablation)" if getattr(s, "confirm", None) is not None else ""
        return f"token {s.token!r} " + ", ".join(parts) + confirmed
    if check.kind == "sufficient":
        return "a sufficient set exists among the clusters"
    goal = []
    if s.changes is not None:
        goal.append("answer changes" if s.changes else "answer stays")
    if s.answer is not None:
        goal.append(f"answer becomes {s.answer!r}")
    if s.min_drop is not None:
        goal.append(f"p drops >= {s.min_drop:g}")
    return f"{causal_intervention(s).describe()}: {'; '.join(goal)}"


def _seed(case: DatasetCase, row: Row, check_index: int) -> np.random.Generator:
    return np.random.default_rng([zlib.crc32(f"{case.file}::{case.id}".encode()), row.index, check_index])


def check_row(pad: Scratchpad, case: DatasetCase, row: Row, trace: Trace) -> RowOutcome:
    """Every check of ``case`` on one row's trace; the causal ablations and their controls in one forward."""
    from vsp_assert.engine.interventions import Intervention

    checks = [fill(c.spec, row.fields) if case.templated else c.spec for c in case.checks]
    records: list[list[AssertionRecord]] = [[] for _ in checks]
    controls: list[tuple[int, int, int] | None] = [None for _ in checks]
    batch: list[Any] = []
    plans: list[tuple[int, int, int]] = []  # (check index, first row in batch, number of controls)
    draws = {}
    # attributed checks are contrastive against the row's correct answer, when the case's answer names one
    correct = next((s.correct for c, s in zip(case.checks, checks) if c.kind == "answer"), None)
    for i, (check, spec) in enumerate(zip(case.checks, checks, strict=True)):
        if check.kind == "answer":
            records[i] = [check_answer(trace, spec)]
        elif check.kind == "captured":
            records[i] = [check_captured(trace, spec, case.min_score)]
        elif check.kind == "attended":
            records[i] = check_attended(trace, spec, case.top_k)
        elif check.kind == "attributed":
            records[i] = check_attributed(trace, spec, case.top_k, correct, pad)
        elif check.kind == "sufficient":
            records[i] = [check_sufficient(pad, trace, spec)]
        else:
            bad = check_causal_refs(trace, spec, pad.sae.labels)
            if bad is not None:
                records[i] = [bad]
                continue
            n_controls = 0
            if check.control is not None:
                claimed = trace.resolve(list(spec.ablate))
                draw = draw_controls(trace, claimed, check.control.n, _seed(case, row, i),
                                     tolerance=check.control.tolerance, patches=spec.patches)
                draws[i] = draw
                batch += [Intervention.ablate(*s, patches=spec.patches, label=f"control {j}")
                          for j, s in enumerate(draw.sets)]
                n_controls = draw.n
            plans.append((i, len(batch) - n_controls, n_controls))
            batch.insert(len(batch) - n_controls, causal_intervention(spec))
            plans[-1] = (i, len(batch) - n_controls - 1, n_controls)
    results = pad.intervene(trace, batch) if batch else []
    for i, start, n_controls in plans:
        records[i] = [check_causal(trace, checks[i], results[start])]
        if case.checks[i].control is not None:
            hits = sum(check_causal(trace, checks[i], r).passed for r in results[start + 1: start + 1 + n_controls])
            controls[i] = (hits, n_controls, draws[i].matched)
    thumb = None
    if trace.image is not None:
        thumb = trace.image.copy()
        thumb.thumbnail((THUMBNAIL, THUMBNAIL))
    return RowOutcome(row, trace.prompt, trace.answer, float(trace.answer_prob),
                      [all(r.passed for r in recs) and bool(recs) for recs in records], records, controls,
                      trace.sae_fit, thumbnail=thumb)


def run_rows(pad: Scratchpad, case: DatasetCase, *, on_trace: Any = None) -> list[tuple[RowOutcome, Trace]]:
    """Answer and check every row, ``case.batch`` rows per ``generate``; ``on_trace(trace)`` sees each trace
    (the plugin's SAE-fit check). Yields traces too; the caller keeps the few it needs."""
    out = []
    rows = list(case.rows)
    for start in range(0, len(rows), max(1, case.batch)):
        chunk = rows[start: start + case.batch]
        images = [replace(case, image=r.image).load_image() for r in chunk]
        prompts = [fill(case.prompt, r.fields) if case.templated else case.prompt for r in chunk]
        traces = pad.run_batch(images, prompts, max_new_tokens=case.max_new_tokens)
        for row, trace in zip(chunk, traces, strict=True):
            if on_trace is not None:
                on_trace(trace)
            out.append((check_row(pad, case, row, trace), trace))
    return out


def summarise(case: DatasetCase, outcomes: list[RowOutcome]) -> tuple[list[CheckSummary], list[AssertionRecord]]:
    """The aggregate record of each check (and the specificity record of each controlled one)."""
    summaries, records = [], []
    for i, check in enumerate(case.checks):
        k = sum(o.passed[i] for o in outcomes)
        rate = Rate(k, len(outcomes))
        lo = check.min_rate if check.has_rate else 1.0
        ok = rate_passes(rate, lo, check.max_rate, check.on_interval)
        against = [o for o in outcomes if (not o.passed[i]) == (check.min_rate is not None or not check.has_rate)]
        against.sort(key=lambda o: -o.answer_prob)
        summary = CheckSummary(check, describe_check(check), rate, ok, worst=[o.row.index for o in against])
        expected = bound_text(lo, check.max_rate, check.on_interval)
        measured = f"rate {rate.text()}"
        latents = sorted({x for o in outcomes[:1] for r in o.records[i] for x in r.latents})
        records.append(AssertionRecord(check.kind, f"{summary.description} over {len(outcomes)} rows", expected,
                                       measured, ok, latents=latents, concept=_concept(outcomes, i)))
        if check.control is not None:
            done = [c for o in outcomes if (c := o.controls[i]) is not None]
            hits, runs, matched = (sum(c[j] for c in done) for j in range(3))
            summary.control_rate, summary.matched = Rate(hits, runs), matched
            summary.p_value = two_proportion_p(k, len(outcomes), hits, runs)
            specific = runs > 0 and summary.control_rate.value < rate.value and summary.p_value < SPECIFIC_ALPHA
            summary.specific_passed = specific or not check.control.specific
            spec_text = (f"controls {summary.control_rate.text()} vs target {rate.value:.3f}; specificity "
                         f"{1 - summary.control_rate.value:.3f}; p={summary.p_value:.2g}; "
                         f"{matched}/{runs} mass-matched")
            want = (f"target above controls (p < {SPECIFIC_ALPHA:g})" if check.control.specific
                    else "reported (specific: true asserts it)")
            records.append(AssertionRecord("specificity", f"{summary.description}: random controls "
                                           f"({check.control.n} per row)", want, spec_text, summary.specific_passed))
        summaries.append(summary)
    return summaries, records


def _concept(outcomes: list[RowOutcome], i: int) -> str | None:
    for o in outcomes[:1]:
        for r in o.records[i]:
            if r.concept:
                return r.concept
    return None


def run_dataset_case(pad: Scratchpad, case: DatasetCase, *, on_trace: Any = None) -> DatasetResult:
    """Run a dataset case (see the module docstring)."""
    pairs = run_rows(pad, case, on_trace=on_trace)
    outcomes = [o for o, _ in pairs]
    summaries, records = summarise(case, outcomes)
    if case.missing:
        names = ", ".join(p for p, _ in case.missing[:5]) + (" …" if len(case.missing) > 5 else "")
        total = len(case.missing) + len(case.rows)
        records.append(AssertionRecord("source", f"rows skipped: missing or unreadable images ({names})",
                                       f"at most {case.max_missing:g} of the rows",
                                       f"{len(case.missing)} of {total} skipped", True))
    keep: set[int] = set()
    for s in summaries:
        if not (s.passed and s.specific_passed):
            keep.update(s.worst[: case.show_rows])
    for outcome, trace in pairs:
        if outcome.row.index in keep:
            outcome.trace = trace
    first_bad = next((o for s in summaries if not s.passed for o in outcomes if o.row.index in s.worst[:1]), None)
    representative = (first_bad or outcomes[0]).row.index if outcomes else 0
    trace = next(t for o, t in pairs if o.row.index == representative)
    return DatasetResult(case, trace, records, summaries=summaries, rows=outcomes, source=case.source,
                         missing=list(case.missing))
