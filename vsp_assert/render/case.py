"""The failure report of a case: expected vs measured, then the evidence (heatmap and spatial maps).

Used by the pytest plugin for YAML items (``repr_failure``) and for Python tests (a report section added in
``pytest_runtest_makereport``), and by ``--vsp-show`` for passing cases; :func:`failure_line` is the one-line form
(pytest's short summary, ``--tb=line``). It only formats recorded results.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from tabulate import tabulate

from vsp_assert.render.style import Style
from vsp_assert.render.terminal import render_layer_rows, render_trace, terminal_width

if TYPE_CHECKING:
    from vsp_assert.checks.assertions import AssertionRecord
    from vsp_assert.engine.trace import Trace


def render_records(records: Sequence[AssertionRecord], style: Style) -> str:
    rows = []
    for r in records:
        mark = style.green("✔ pass") if r.passed else style.red("✘ FAIL")
        rows.append([mark, r.kind, r.description, r.expected, r.measured])
    return tabulate(rows, headers=["", "check", "assertion", "expected", "measured"], tablefmt="simple",
                    maxcolwidths=[None, None, 38, 30, 48])


def render_case(
    title: str,
    trace: Trace,
    records: Sequence[AssertionRecord],
    *,
    style: Style,
    top_k: int = 5,
    width: int | None = None,
    view: str | None = None,
    explanation: Any = None,
) -> str:
    """Title, the records table, and the trace view with asserted latents and tokens highlighted. ``view``: the
    heatmap's (``attended``, ``attributed``, ``both``); default both where an ``attributed`` check ran or the
    case computed a contrastive attribution for its failure (:func:`~vsp_assert.checks.assertions.explain_failure`),
    else attended. ``explanation``: why not the case's right answer (a ``FlipExplanation``,
    :func:`~vsp_assert.checks.assertions.why_not_correct`), shown under the records."""
    width = width or terminal_width()
    failing = [r for r in records if not r.passed]
    latents = list(dict.fromkeys(i for r in records for i in r.latents))
    tokens = sorted({t for r in (failing or records) for t in r.tokens if r.kind != "answer"})
    spatial = []
    focus = next((r for r in failing if r.latents and r.concept), None) or next(
        (r for r in records if r.latents and r.concept), None)
    if focus is not None:
        token = focus.tokens[0] if focus.tokens else (0 if trace.n_tokens else None)
        spatial.append((focus.concept or "concept", focus.latents, token))
    status = style.red("FAILED") if failing else style.green("passed")
    head = f"{style.bold(title)}  {status}  ({len(failing)} of {len(records)} checks failed)"
    if view is None:
        attributed = any(r.kind == "attributed" for r in records) or attribution_contrast(trace) is not None
        view = "both" if attributed and trace.can_attribute else "attended"
    body = render_trace(trace, style=style, width=width, top_k=top_k, highlight_latents=latents,
                        highlight_tokens=tokens, spatial=spatial, view=view, contrast=attribution_contrast(trace))
    layered = sorted({t for r in failing if r.kind == "attended" for t in r.tokens})
    if layered and trace.attention_by_layer.shape[0] > 1:  # which layer looked where, for the failing tokens
        body += "".join("\n\n" + render_layer_rows(trace, t, style=style, k=top_k) for t in layered[:2])
    why: list[str] = []
    if explanation is not None:
        from vsp_assert.render.compare import explanation_lines

        why = [*explanation_lines(explanation, style), ""]
    return "\n".join([head, "", render_records(records, style), "", *why, body])


def attribution_contrast(trace: Trace) -> str | None:
    """The contrast the trace's attribution checks used (the one computed contrastive attribution), if any."""
    return next((key for key in getattr(trace, "attributions", {}) if key is not None), None)


def failure_line(records: Sequence[AssertionRecord]) -> str:
    """One line for a failed case — its first failing check — as pytest's short summary and ``--tb=line`` show
    it: ``answer == 'square': measured 'triangle' (p=0.912)``."""
    failing = [r for r in records if not r.passed]
    if not failing:
        return f"all {len(records)} checks passed"
    first = failing[0]
    more = f" (+{len(failing) - 1} more failing)" if len(failing) > 1 else ""
    return " ".join(f"{first.description}: measured {first.measured}{more}".split())
