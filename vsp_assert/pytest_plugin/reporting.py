"""What the plugin's report hooks do: evidence sections for Python tests, clean errors, the session summary.

- A Python test that fails a fluent concept assertion gets a ``vsp-assert: concept evidence`` report section with
  the records and the heatmap of the failing trace (``--vsp-show``: every checked trace of every test).
- A :class:`~vsp_assert.errors.VspError` raised in a test is shown as its one message, no torch traceback
  (unless ``--vsp-debug``).
- The terminal summary counts cases and model loads; ``session_finish`` writes baselines and the HTML report.

The case results come from the session object (:mod:`.session`); the text comes from :mod:`vsp_assert.render`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import pytest

from vsp_assert.pytest_plugin.collect import VspCaseItem
from vsp_assert.pytest_plugin.session import vsp_session

if TYPE_CHECKING:
    from vsp_assert.checks.assertions import AssertionRecord, CaseResult
    from vsp_assert.engine.trace import Trace


def trace_properties(trace: Trace, records: list[AssertionRecord]) -> list[tuple[str, Any]]:
    """Key figures of a trace and its assertion records, as JUnit XML properties."""
    props: list[tuple[str, Any]] = [
        ("vsp_answer", trace.answer),
        ("vsp_answer_prob", float(f"{trace.answer_prob:.6g}")),
        ("vsp_checks", len(records)),
        ("vsp_failed_checks", sum(1 for r in records if not r.passed)),
    ]
    if trace.n_tokens:
        top = trace.top_concepts(0, 3)
        props.append(("vsp_top_concepts", ", ".join(trace.display(i) for i, _ in top)))
    for r in records:
        if r.intervention is not None:
            props.append((f"vsp_drop[{r.description}]", float(f"{r.intervention.drop:.6g}")))
    return props


def record_properties(item: pytest.Item, results: list[CaseResult]) -> None:
    """JUnit XML properties of each checked trace of a test (``record_property``-style)."""
    for result in results:
        if result.records:
            item.user_properties.extend(trace_properties(result.trace, result.records))


def decorate_report(item: pytest.Item, call: pytest.CallInfo[None], report: pytest.TestReport,
                    results: list[CaseResult]) -> None:
    from vsp_assert.checks.assertions import ConceptAssertionError
    from vsp_assert.errors import VspError
    from vsp_assert.render.case import render_case

    session = vsp_session(item.config)
    cfg = session.options
    style, width = session.style, session.width
    excinfo = call.excinfo
    if isinstance(item, VspCaseItem):
        if cfg.show and item.result is not None and item.result.passed:
            report.sections.append(("vsp-assert", render_case(item.nodeid, item.result.trace,
                                                              item.result.records, style=style,
                                                              top_k=item.case.top_k, width=width)))
        return
    failing = excinfo.value.trace if excinfo is not None and isinstance(excinfo.value, ConceptAssertionError) \
        else None
    for result in results:
        if result.trace is failing:
            report.sections.append(("vsp-assert: concept evidence",
                                    render_case(item.nodeid, result.trace, result.records, style=style,
                                                top_k=cfg.top_k, width=width)))
        elif cfg.show:
            report.sections.append(("vsp-assert", render_case(item.nodeid, result.trace, result.records,
                                                              style=style, top_k=cfg.top_k, width=width)))
    if excinfo is not None and isinstance(excinfo.value, VspError) and not cfg.debug:
        report.longrepr = f"vsp-assert: {excinfo.value}"


def terminal_summary(reporter: Any, config: pytest.Config) -> None:
    session = vsp_session(config)
    cfg = session.options
    results = [r for _, r in session.all_results() if r.records]
    if not results and not session.loads:
        return
    failed = sum(1 for r in results if not r.passed)
    reporter.write_sep("-", "vsp-assert")
    reporter.write_line(
        f"{len(results)} concept case(s) recorded, {failed} with failing checks; model {cfg.model!r}, "
        f"SAE {cfg.sae!r}; model loads this session: {session.loads}"
    )
    store = session.baselines_used
    if store is not None and store.missing and not cfg.update_baseline:
        reporter.write_line(f"{len(store.missing)} case(s) have no baseline entry (drift not checked); "
                            "record them with --vsp-update-baseline")
    for path in session.written:
        reporter.write_line(f"baseline written: {path}")
    if cfg.report:
        from pathlib import Path

        reporter.write_line(f"HTML report: {Path(cfg.report) / 'index.html'}")


def session_finish(session: pytest.Session) -> None:
    state = vsp_session(session.config)
    cfg = state.options
    store = state.baselines_used
    if cfg.update_baseline and store is not None:
        state.written = store.flush()
    if not cfg.report:
        return
    from vsp_assert.render.html import write_report

    results = [(nodeid, r.trace, r.records) for nodeid, r in state.all_results() if r.records]
    write_report(cfg.report, results, title="vsp-assert report", top_k=cfg.top_k)
