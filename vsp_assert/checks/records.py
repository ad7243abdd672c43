"""The record every check returns, and how a check reads what a spec names.

:class:`AssertionRecord` is what a check measured against what it expected; the renderers, baselines and reports
read it and nothing else. A spec from a case file knows its place, so a name the run cannot use becomes that
check's failing record (:class:`BadReference`, :func:`located`) rather than an exception. Split from
:mod:`vsp_assert.checks.assertions` so that the ranked checks (:mod:`vsp_assert.checks.ranked`) share it without a
cycle.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from vsp_assert.checks.schema import Where
from vsp_assert.engine.trace import same_answer  # noqa: F401  (re-exported: the checks' one answer rule)
from vsp_assert.errors import VspError

if TYPE_CHECKING:
    from vsp_assert.engine.interventions import InterventionResult
    from vsp_assert.engine.trace import Trace


@dataclass
class AssertionRecord:
    """One checked expectation (expected vs measured) and the latents / tokens it concerns."""

    kind: str  # answer | captured | attended | attributed | causal | sufficient | drift
    description: str
    expected: str
    measured: str
    passed: bool
    latents: list[int] = field(default_factory=list)
    tokens: list[int] = field(default_factory=list)
    concept: str | None = None
    intervention: InterventionResult | None = None

    def to_dict(self) -> dict[str, Any]:
        out = {
            "kind": self.kind, "description": self.description, "expected": self.expected,
            "measured": self.measured, "passed": self.passed, "latents": list(self.latents),
            "tokens": list(self.tokens),
        }
        if self.intervention is not None:
            out["intervention"] = self.intervention.to_dict()
        return out


class ConceptAssertionError(AssertionError):
    """A concept assertion failed; carries the failing record, the trace and every record checked on it."""

    def __init__(self, record: AssertionRecord, trace: Trace, records: Sequence[AssertionRecord] = ()) -> None:
        self.record = record
        self.trace = trace
        self.records = list(records) or [record]
        super().__init__(f"{record.description}: expected {record.expected}, measured {record.measured}")




def _name(trace: Trace, ref: Any) -> str:
    return trace.display(ref) if isinstance(ref, int) else str(ref)


# ---------------------------------------------------------------------- what a spec names, checked at run time
# A spec from a case file knows its place (``spec.where``): something it names that the run cannot use (an
# unknown concept, a latent or patch out of range, an output token that is not there) is that check's failure,
# naming the field and line, and the case's other checks still run. A spec built in Python has no place: the
# error is raised to its caller, whose own line is the place.
class BadReference(Exception):
    """A located spec names something the run cannot use; ``text`` says what, with the closest known names and
    the spec's field and line. Internal: the checks turn it into a failing record."""

    def __init__(self, text: str) -> None:
        self.text = text
        super().__init__(text)


def located(exc: VspError, where: Where | None) -> str:
    """A run-time problem with a spec, as one line: the problem, the hint (closest names) or what is allowed,
    and where the case file says it (``at cases[0].expect.captured[1], line 7``)."""
    text = exc.message
    if exc.fix:
        text += f" ({exc.fix})"
    elif exc.allowed:
        allowed = exc.allowed if len(exc.allowed) <= 160 else exc.allowed[:157] + "…"
        text += f" (allowed: {allowed})"
    if where is not None:
        text += f" at {where.field}" + (f", line {where.line}" if where.line is not None else "")
    return text


def _ids(trace: Trace, ref: Any, where: Where | None, part: str | None = None, index: int | None = None) -> list[int]:
    """The latent ids of one concept of a spec, or :class:`BadReference` naming the spec's place (the error
    itself for a spec without one)."""
    try:
        return trace.resolve(ref)
    except VspError as exc:
        if where is None:
            raise
        raise BadReference(located(exc, where.of(part, index))) from None


def _failed(kind: str, description: str, expected: str, problem: BadReference, concept: Any = None) -> AssertionRecord:
    return AssertionRecord(kind, description, expected, problem.text, False,
                           concept=None if concept is None else str(concept))
