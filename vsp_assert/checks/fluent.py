"""The fluent spelling of the checks: ``trace.assert_answer(...).assert_attended(...)`` in Python tests.

The engine's :class:`~vsp_assert.engine.trace.Trace` is plain data and never imports the checks. This module
binds the checks to traces from above: :class:`Scratchpad` (exported as ``vsp_assert.Scratchpad``) is the
engine's Scratchpad whose traces are :class:`CheckedTrace` s — the same data plus the ``assert_*`` methods and a
link to the Scratchpad that made them (causal checks re-run the model through it).

Each assertion evaluates its checks, reports them to the Scratchpad's ``observer`` (the pytest plugin's session,
which keeps them in the test's case result; ``None`` outside pytest), and raises :class:`ConceptAssertionError`
at the first failing check with ``__tracebackhide__`` set, so pytest points at the user's line.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from vsp_assert.checks.assertions import (
    AssertionRecord,
    ConceptAssertionError,
    causal_intervention,
    check_answer,
    check_attended,
    check_attributed,
    check_captured,
    check_causal,
    check_sufficient,
)
from vsp_assert.checks.schema import AnswerSpec, AttendedSpec, AttributedSpec, CapturedSpec, CausalSpec
from vsp_assert.engine.interventions import InterventionResult
from vsp_assert.engine.scratchpad import Scratchpad as EngineScratchpad
from vsp_assert.engine.trace import Trace
from vsp_assert.errors import InputError


class Observer(Protocol):
    """Who is told about traces and checks (the pytest plugin's session implements it)."""

    def traced(self, trace: Trace) -> None: ...

    def checked(self, trace: Trace, records: Sequence[AssertionRecord]) -> list[AssertionRecord]:
        """Record ``records`` against ``trace``; return every record checked on that trace so far."""
        ...


class Scratchpad(EngineScratchpad):
    """The engine's :class:`~vsp_assert.engine.scratchpad.Scratchpad`, whose traces carry ``assert_*``.

    ``observer`` (set by the pytest plugin) hears of every trace and every check; it is ``None`` by default.
    """

    observer: Observer | None = None

    def run_many(self, rows: Any, **options: Any) -> list[Trace]:
        """One trace per row, rows batched into shared ``generate`` calls (:func:`vsp_assert.checks.many.run_many`;
        rate them with ``vsp_assert.assert_rate``)."""
        from vsp_assert.checks.many import run_many

        return run_many(self, rows, **options)

    def _new_trace(self, **fields: Any) -> Trace:
        trace = CheckedTrace(**fields, scratchpad=self)
        if self.observer is not None:
            self.observer.traced(trace)
        return trace


def _report(trace: Trace, records: list[AssertionRecord]) -> None:
    """Tell the observer, then raise at the first failing record."""
    __tracebackhide__ = True
    pad = getattr(trace, "scratchpad", None)
    observer = getattr(pad, "observer", None)
    every = observer.checked(trace, records) if observer is not None else records
    for record in records:
        if not record.passed:
            raise ConceptAssertionError(record, trace, every)


def _pad(trace: Trace) -> EngineScratchpad:
    pad = getattr(trace, "scratchpad", None)
    if pad is None:
        raise InputError("this trace has no Scratchpad to run interventions with", field="trace",
                         fix="use a trace returned by vsp_assert.Scratchpad.run (or the scratchpad fixture)")
    return pad


@dataclass
class CheckedTrace(Trace):
    """A :class:`~vsp_assert.engine.trace.Trace` with the fluent assertions. Each returns the trace (or, for
    causal checks, the intervention result) so that checks chain."""

    scratchpad: EngineScratchpad | None = field(default=None, repr=False, compare=False)

    def assert_answer(self, expected: str | None = None, *, contains: str | None = None,
                      one_of: Sequence[str] | None = None, not_: str | None = None,
                      correct: str | None = None) -> CheckedTrace:
        """Assert the answer equals / contains / is one of / is not the given text (case-insensitive)."""
        __tracebackhide__ = True
        given = [x is not None for x in (expected, contains, one_of, not_)]
        if sum(given) != 1:
            raise InputError("assert_answer takes exactly one of expected, contains, one_of, not_")
        spec = AnswerSpec(equals=expected, contains=contains, one_of=tuple(one_of) if one_of else None, not_=not_,
                          correct=correct)
        _report(self, [check_answer(self, spec)])
        return self

    def assert_captured(self, *concepts: Any, min_score: float | None = None, max_rank: int | None = None,
                        absent: bool = False) -> CheckedTrace:
        """Assert each concept is active in the vision encoder (image-level score or rank)."""
        __tracebackhide__ = True
        if not concepts:
            raise InputError("assert_captured needs at least one concept")
        _report(self, [check_captured(self, CapturedSpec(c, min_score, max_rank, absent)) for c in concepts])
        return self

    def assert_attended(self, token: str | int, *concepts: Any, top_k: int = 5,
                        absent: Sequence[Any] = ()) -> CheckedTrace:
        """Assert each concept is among ``token``'s top-k attention-weighted concepts (``absent``: is not)."""
        __tracebackhide__ = True
        if not concepts and not absent:
            raise InputError("assert_attended needs concepts (or absent=[...])")
        _report(self, check_attended(self, AttendedSpec(token, tuple(concepts), tuple(absent), top_k)))
        return self

    def assert_attributed(self, token: str | int, *concepts: Any, top_k: int = 5, absent: Sequence[Any] = (),
                          correct: str | None = None, confirm: bool | float = True) -> CheckedTrace:
        """Assert each concept is among ``token``'s top-k latents by attribution (what the answer *used*;
        ``absent``: is not); ``correct``: attribute this answer against that one (contrastive); ``confirm``
        (default ``True``): also ablate each named concept found in the top-k, which counts as used only when that
        lowers the token's objective (or lowers it by more than a number of nats) — one batched forward;
        ``False`` ranks only."""
        __tracebackhide__ = True
        if not concepts and not absent:
            raise InputError("assert_attributed needs concepts (or absent=[...])")
        if isinstance(confirm, bool):
            threshold = 0.0 if confirm else None
        elif isinstance(confirm, (int, float)) and confirm >= 0 and confirm == confirm:
            threshold = float(confirm)
        else:
            raise InputError("confirm must be True, False or a drop in nats >= 0", field="confirm", received=confirm)
        spec = AttributedSpec(token, tuple(concepts), tuple(absent), top_k, confirm=threshold)
        _report(self, check_attributed(self, spec, top_k, correct, self.scratchpad))
        return self

    def assert_causal(self, *, ablate: Sequence[Any] = (), steer: dict[str, Any] | None = None,
                      patches: Sequence[int] | None = None, changes: bool | None = None,
                      answer: str | None = None, min_drop: float | None = None) -> InterventionResult:
        """Ablate (or steer) concepts and assert the answer changes / stays / becomes ``answer`` / drops."""
        __tracebackhide__ = True
        pad = _pad(self)
        if changes is None and answer is None and min_drop is None:
            raise InputError("assert_causal needs changes=, answer= or min_drop=")
        steer_spec = None
        if steer is not None:
            steer_spec = (tuple(steer.get("concepts", ())), steer.get("value"), steer.get("scale"))
        spec = CausalSpec(ablate=tuple(ablate), steer=steer_spec, patches=tuple(patches) if patches else None,
                          changes=changes, answer=answer, min_drop=min_drop)
        result = pad.intervene(self, [causal_intervention(spec)])[0]
        _report(self, [check_causal(self, spec, result)])
        return result

    def assert_sufficient(self, token: str | int = 0, *, min_drop: float | None = None) -> AssertionRecord:
        """Assert a small set of heatmap clusters exists whose ablation changes the answer."""
        __tracebackhide__ = True
        record = check_sufficient(_pad(self), self, CausalSpec(sufficient=True, token=token, min_drop=min_drop))
        _report(self, [record])
        return record
