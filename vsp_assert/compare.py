"""``vsp-assert compare``: the same cases on two checkpoints, side by side.

For a model update (a fine-tune, a new release) that keeps the vision encoder, and so the SAE, this runs every
case of the given case files on the base and the new model, and reports per case the answer before/after, the
change of its probability, and the concepts each output token gained or lost in its top-k — then a summary
table of the cases that changed, most-changed first. It reuses the baseline machinery (:func:`profile`,
:func:`diff_profiles`): comparing two checkpoints is a drift check whose baseline is computed on the fly.
"""

from __future__ import annotations

import argparse
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tabulate import tabulate

from .errors import CaseError


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

    @property
    def answer_changed(self) -> bool:
        return self.base_answer.strip().lower() != self.new_answer.strip().lower()

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
        }


def case_files(paths: list[str]) -> list[Path]:
    from .cases import is_case_file

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
    """Run every case of ``files`` on the two Scratchpads ``base`` and ``new``."""
    from .assertions import run_case
    from .baseline import diff_profiles, profile
    from .cases import parse_case_file

    out = []
    for path in files:
        parsed = parse_case_file(path, allow_outside_root=True)
        for case in parsed.cases:
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
            ))
    return out


def render_comparison(rows: list[CaseComparison], style: Any) -> str:
    lines = []
    for c in rows:
        verdict = style.red("answer changed") if c.answer_changed else style.green("same answer")
        lines.append(f"{style.bold(c.case_id)} ({c.file}): {c.base_answer!r} → {c.new_answer!r} [{verdict}], "
                     f"p {c.base_prob:.3f} → {c.new_prob:.3f}")
        for t in sorted(set(c.gained) | set(c.lost)):
            gained = ", ".join(c.gained.get(t, [])) or "-"
            lost = ", ".join(c.lost.get(t, [])) or "-"
            lines.append(f"    token {t}: {style.green('+ ' + gained)}   {style.red('- ' + lost)}")
    changed = sorted((c for c in rows if c.change > 0.01), key=lambda c: -c.change)
    table = tabulate(
        [[c.case_id, f"{c.base_answer} → {c.new_answer}", f"{c.new_prob - c.base_prob:+.3f}",
          sum(len(v) for v in c.gained.values()), sum(len(v) for v in c.lost.values()),
          f"{'pass' if c.base_passed else 'FAIL'} → {'pass' if c.new_passed else 'FAIL'}"] for c in changed],
        headers=["case", "answer", "Δp", "gained", "lost", "expectations"], tablefmt="simple", disable_numparse=True,
    )
    lines += ["", style.bold(f"{len(changed)} of {len(rows)} case(s) changed (most-changed first)"),
              table if changed else "  (none)"]
    return "\n".join(lines)


def add_commands(sub: Any) -> None:
    p = sub.add_parser("compare", help="run the same cases on two checkpoints and diff their concepts")
    p.add_argument("cases", nargs="+", help="case files or folders")
    p.add_argument("--base", required=True, help="the old model (folder, offline hub id, or 'shapes')")
    p.add_argument("--new", required=True, help="the new model (same vision encoder as --base)")
    p.add_argument("--sae", default="shapes", help="SAE folder (SAELens format) or 'shapes'")
    p.add_argument("--device", default=None, help="torch device")
    p.add_argument("--json", dest="json_path", default=None, help="also write the comparison as JSON here")
    p.add_argument("--fail-on-change", action="store_true", help="exit 1 when any answer changed")
    p.add_argument("--color", default="auto", choices=["auto", "yes", "no"], help="colour output")
    p.set_defaults(func=_cmd_compare)


def _cmd_compare(args: argparse.Namespace) -> int:
    from . import Scratchpad, load_model, load_sae
    from .io import atomic_write_text
    from .render.style import Style, colour_enabled

    files = case_files(args.cases)
    sae = load_sae(args.sae)
    base = Scratchpad(load_model(args.base, device=args.device), sae)
    new = Scratchpad(load_model(args.new, device=args.device), sae)
    rows = compare(base, new, files)
    print(render_comparison(rows, Style(colour_enabled(args.color))))
    if args.json_path:
        atomic_write_text(args.json_path, json.dumps([r.to_dict() for r in rows], indent=1) + "\n")
    return 1 if args.fail_on_change and any(r.answer_changed for r in rows) else 0
