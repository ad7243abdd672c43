"""The text of ``vsp-assert compare``: per case the answers, concept churn and, for a flipped answer, why (the
concepts that carry the change and the ablations that confirm them); then the changed cases' table."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from tabulate import tabulate

from vsp_assert.checks.compare import CaseComparison, changed_cases
from vsp_assert.engine.trace import same_answer

if TYPE_CHECKING:
    from vsp_assert.engine.flip import FlipExplanation


def explanation_lines(explanation: FlipExplanation, style: Any) -> list[str]:
    """Why an answer flipped, as lines: the concepts that carry the change, then the ablations that checked them."""
    side = "both models" if explanation.both_models else explanation.model
    tops = ", ".join(f"{name} {share:+.2f}" for name, share, _ in explanation.concepts[:5]) or "none"
    lines = [f"why {explanation.old_answer!r} → {explanation.new_answer!r} (attributed on {side}): carried by {tops}"]
    if explanation.weakened:
        lines.append("  read less than before: " + ", ".join(
            f"{name} {share:+.2f}" for name, share, _ in explanation.weakened[:3]))
    for c in explanation.confirmations:
        text = c.sentence(explanation.old_answer)
        lines.append("  " + (style.green(text) if c.restores else text))
    if explanation.all_ablated is not None:
        lines.append(style.dim(f"  every firing latent ablated gives {explanation.all_ablated!r} (where ablations "
                               "drift; `control: random` tells a concept's effect from it)"))
    if explanation.prior:
        lines.append("  " + style.yellow(explanation.prior_sentence()))
    elif explanation.blank_answer is not None and not same_answer(explanation.blank_answer, explanation.new_answer):
        old = f", the old model {explanation.old_blank_answer!r}" if explanation.old_blank_answer is not None else ""
        lines.append(style.dim(f"  on a blank image {explanation.model} answers {explanation.blank_answer!r}{old}, "
                               f"so {explanation.new_answer!r} comes from the image"))
    return lines


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
        if c.explanation is not None:
            lines += ["    " + line for line in explanation_lines(c.explanation, style)]
    changed = changed_cases(rows)
    table = tabulate(
        [[c.case_id, f"{c.base_answer} → {c.new_answer}", f"{c.new_prob - c.base_prob:+.3f}",
          sum(len(v) for v in c.gained.values()), sum(len(v) for v in c.lost.values()),
          f"{'pass' if c.base_passed else 'FAIL'} → {'pass' if c.new_passed else 'FAIL'}",
          c.explanation.sentence() if c.explanation is not None else "-"] for c in changed],
        headers=["case", "answer", "Δp", "gained", "lost", "expectations", "why"], tablefmt="simple",
        disable_numparse=True,
    )
    lines += ["", style.bold(f"{len(changed)} of {len(rows)} case(s) changed (most-changed first)"),
              table if changed else "  (none)"]
    return "\n".join(lines)
