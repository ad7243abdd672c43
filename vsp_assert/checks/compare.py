"""``vsp-assert compare``: the same cases on two checkpoints, side by side.

For a model update (a fine-tune, a new release) that keeps the vision encoder, and so the SAE, this runs every
case of the given case files on the base and the new model, and reports per case the answer before/after, the
change of its probability, and the concepts each output token gained or lost in its top-k — then a summary
table of the cases that changed, most-changed first (:func:`changed_cases`). A case whose answer flipped is
explained (:func:`vsp_assert.engine.flip.explain_flip`): the old answer is attributed against the new one on both
models, the concepts that carry the difference are listed, and the top ones are confirmed by ablation on the new
model ("ablating stripes on the new model restores 'red'"). It reuses the baseline machinery
(:func:`profile`, :func:`diff_profiles`): comparing two checkpoints is a drift check whose baseline is computed on
the fly. The text is :mod:`vsp_assert.render.compare`; the command :mod:`vsp_assert.cli.compare`.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from vsp_assert.checks.assertions import same_answer
from vsp_assert.errors import CaseError

if TYPE_CHECKING:
    from vsp_assert.engine.flip import FlipExplanation


@dataclass
class CaseComparison:
    case_id: str
    file: str
    base_answer: str
    new_answer: str
    base_prob: float
    new_prob: float
    gained: dict[int, list[str]]
    lost: dict[int, list[str]]
    base_passed: bool
    new_passed: bool
    explanation: FlipExplanation | None = None  # why the answer flipped (only for a changed answer)

    @property
    def answer_changed(self) -> bool:
        return not same_answer(self.base_answer, self.new_answer)

    @property
    def change(self) -> float:
        """How much the case changed: an answer change dominates, then concept churn, then Δp."""
        churn = sum(len(v) for v in self.gained.values()) + sum(len(v) for v in self.lost.values())
        return 10.0 * self.answer_changed + 10.0 * (self.base_passed != self.new_passed) + churn + abs(
            self.new_prob - self.base_prob)

    def to_dict(self) -> dict[str, Any]:
        return {
            "case": self.case_id, "file": self.file, "answer": [self.base_answer, self.new_answer],
            "answer_prob": [round(self.base_prob, 4), round(self.new_prob, 4)],
            "gained": {str(k): v for k, v in self.gained.items()}, "lost": {str(k): v for k, v in self.lost.items()},
            "passed": [self.base_passed, self.new_passed], "change": round(self.change, 4),
            "explanation": self.explanation.to_dict() if self.explanation is not None else None,
        }


def case_files(paths: list[str]) -> list[Path]:
    from vsp_assert.checks.load import is_case_file

    found: list[Path] = []
    for raw in paths:
        p = Path(raw)
        if p.is_dir():
            found += sorted(f for f in p.rglob("*") if f.is_file() and is_case_file(f))
        elif p.is_file():
            found.append(p)
        else:
            raise CaseError("no such case file or folder", file=raw)
    if not found:
        raise CaseError("no case files found", received=paths, allowed="YAML files with a top-level 'cases:' key")
    return found


def compare(base: Any, new: Any, files: list[Path]) -> list[CaseComparison]:
    """Run every case of ``files`` on the two Scratchpads ``base`` and ``new`` (dataset cases, ``each:``, are
    left out: they are rates over rows, not one image)."""
    from vsp_assert.checks.assertions import run_case
    from vsp_assert.checks.baseline import diff_profiles, profile
    from vsp_assert.checks.load import parse_case_file

    out = []
    for path in files:
        parsed = parse_case_file(path, allow_outside_root=True)
        for case in parsed.cases:
            if hasattr(case, "rows"):  # a dataset case (each:): rates over rows, not one image to compare
                continue
            image = case.load_image()
            r0 = run_case(base, case, image=image)
            r1 = run_case(new, case, image=image)
            p0, p1 = profile(r0.trace, r0.records), profile(r1.trace, r1.records)
            drift = diff_profiles(p0, p1, r1.trace, case.tolerance.top_k)  # the same rule as the drift check
            out.append(CaseComparison(
                case_id=case.id, file=str(path), base_answer=r0.trace.answer, new_answer=r1.trace.answer,
                base_prob=r0.trace.answer_prob, new_prob=r1.trace.answer_prob,
                gained={t.index: t.gained for t in drift.tokens if t.gained},
                lost={t.index: t.lost for t in drift.tokens if t.lost},
                base_passed=r0.passed, new_passed=r1.passed,
                explanation=explain(base, new, r0.trace, r1.trace) if not same_answer(
                    r0.trace.answer, r1.trace.answer) else None,
            ))
    return out


def explain(base: Any, new: Any, old_trace: Any, new_trace: Any) -> FlipExplanation | None:
    """Why the answer flipped between the two runs of a case (None when the traces cannot be attributed)."""
    from vsp_assert.engine.flip import explain_flip
    from vsp_assert.errors import VspError

    if not new_trace.can_attribute:
        return None
    try:
        return explain_flip(new, new_trace, old_trace.answer, old_pad=base, old_trace=old_trace)
    except VspError:
        return None


def changed_cases(rows: list[CaseComparison], threshold: float = 0.01) -> list[CaseComparison]:
    """The cases whose :attr:`CaseComparison.change` exceeds ``threshold``, most-changed first."""
    return sorted((c for c in rows if c.change > threshold), key=lambda c: -c.change)
