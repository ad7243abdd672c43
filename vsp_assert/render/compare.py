"""The text of ``vsp-assert compare``: per case the answers and concept churn, then the changed cases' table."""

from __future__ import annotations

from typing import Any

from tabulate import tabulate

from vsp_assert.checks.compare import CaseComparison, changed_cases


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
    changed = changed_cases(rows)
    table = tabulate(
        [[c.case_id, f"{c.base_answer} → {c.new_answer}", f"{c.new_prob - c.base_prob:+.3f}",
          sum(len(v) for v in c.gained.values()), sum(len(v) for v in c.lost.values()),
          f"{'pass' if c.base_passed else 'FAIL'} → {'pass' if c.new_passed else 'FAIL'}"] for c in changed],
        headers=["case", "answer", "Δp", "gained", "lost", "expectations"], tablefmt="simple", disable_numparse=True,
    )
    lines += ["", style.bold(f"{len(changed)} of {len(rows)} case(s) changed (most-changed first)"),
              table if changed else "  (none)"]
    return "\n".join(lines)
