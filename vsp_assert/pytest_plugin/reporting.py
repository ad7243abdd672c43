"""What the plugin's report hooks do: evidence sections for Python tests, clean errors, the session summary.

- Every report carries a payload of plain data (:mod:`.digest`): model loads, case digests, missing baselines.
- A Python test that fails a fluent concept assertion gets a ``vsp-assert: concept evidence`` report section with
  the records and the heatmap of the failing trace; ``--vsp-show`` views of passing tests are printed in the
  terminal summary (no ``-rP`` needed), those of a failing test join its report sections.
- A :class:`~vsp_assert.errors.VspError` raised in a test or its setup is shown as its one message, no torch
  traceback (unless ``--vsp-debug``).
- The terminal summary counts cases and model loads; ``session_finish`` writes baselines and the HTML report.
  Both read the session's tally of received payloads, so under pytest-xdist the controller shows the workers'.

The case results come from the session object (:mod:`.session`); the text comes from :mod:`vsp_assert.render`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import pytest

from vsp_assert.pytest_plugin.collect import VspCaseItem
from vsp_assert.pytest_plugin.digest import ATTRIBUTE, digest, write_report
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
                    results: list[CaseResult] | None) -> None:
    """Any phase: the payload of the report (loads since the last report; in the call phase the digests of the
    test's cases and the baseline keys it found missing), evidence sections of a failed Python test, and a
    :class:`~vsp_assert.errors.VspError` as its one message."""
    from vsp_assert.errors import VspError

    session = vsp_session(item.config)
    payload: dict[str, Any] = {"loads": session.loads - session.loads_reported}
    session.loads_reported = session.loads
    if results is not None:
        payload["cases"] = _case_digests(item, call, report, results)
        payload["missing"] = session.new_missing()
        payload["incomparable"] = session.new_incomparable()
    setattr(report, ATTRIBUTE, payload)
    excinfo = call.excinfo
    if excinfo is not None and isinstance(excinfo.value, VspError) and not session.options.debug \
            and (call.when != "call" or not isinstance(item, VspCaseItem)):
        report.longrepr = f"vsp-assert: {excinfo.value}"


def _case_digests(item: pytest.Item, call: pytest.CallInfo[None], report: pytest.TestReport,
                  results: list[CaseResult]) -> list[dict[str, Any]]:
    """One digest per checked trace; ``--vsp-show`` views of a passing test go into the digests (printed in the
    terminal summary), those of a failing one into its report sections, with the failing trace's evidence."""
    from vsp_assert.checks.assertions import ConceptAssertionError
    from vsp_assert.render.case import render_case

    session = vsp_session(item.config)
    cfg = session.options
    style, width = session.style, session.width
    top_k = item.case.top_k if isinstance(item, VspCaseItem) else cfg.top_k
    excinfo = call.excinfo
    failing = excinfo.value.trace if excinfo is not None and isinstance(excinfo.value, ConceptAssertionError) \
        else None
    digests = []
    for result in results:
        show = None
        if result.trace is failing:
            report.sections.append(("vsp-assert: concept evidence",
                                    render_case(item.nodeid, result.trace, result.records, style=style,
                                                top_k=top_k, width=width)))
        elif cfg.show and report.passed:
            show = render_case(item.nodeid, result.trace, result.records, style=style, top_k=top_k, width=width)
        elif cfg.show and not isinstance(item, VspCaseItem):
            report.sections.append(("vsp-assert", render_case(item.nodeid, result.trace, result.records,
                                                              style=style, top_k=top_k, width=width)))
        digests.append(digest(item.nodeid, result, show=show, report=bool(cfg.report), top_k=top_k))
    return digests


def terminal_summary(reporter: Any, config: pytest.Config) -> None:
    """The ``--vsp-show`` views of passing cases, then one line of counts (cases, failures, model loads, missing
    baselines, files written) — all from what the reports carried, so the same under pytest-xdist."""
    session = vsp_session(config)
    cfg = session.options
    tally = session.tally
    shows = [d["show"] for d in tally.digests() if d.get("show")]
    if shows:
        reporter.write_sep("=", "vsp-assert: passing cases")
        for text in shows:
            reporter.write_line(text)
            reporter.write_line("")
    recorded = [d for d in tally.digests() if d["checked"]]
    if not recorded and not tally.loads:
        return
    failed = sum(1 for d in recorded if not d["passed"])
    reporter.write_sep("-", "vsp-assert")
    reporter.write_line(
        f"{len(recorded)} concept case(s) recorded, {failed} with failing checks; model {cfg.model!r}, "
        f"SAE {cfg.sae!r}; model loads this session: {tally.loads}"
    )
    fits = [float(d["sae_fit"]) for d in recorded if d.get("sae_fit") is not None]
    if fits:
        reporter.write_line(f"SAE fit (explained variance at the hooked layer): mean {sum(fits) / len(fits):.3f}, "
                            f"lowest {min(fits):.3f} over {len(fits)} case image(s)")
    if tally.incomparable and not cfg.update_baseline:
        reporter.write_line(f"{len(tally.incomparable)} case(s) have baselines recorded with another SAE (not "
                            "compared); record them with --vsp-update-baseline")
    if tally.missing and not cfg.update_baseline:
        reporter.write_line(f"{len(tally.missing)} case(s) have no baseline entry (drift not checked); "
                            "record them with --vsp-update-baseline")
    for path in dict.fromkeys([*map(str, session.written), *tally.written]):
        reporter.write_line(f"baseline written: {path}")
    if session.report_path is not None:
        reporter.write_line(f"HTML report: {session.report_path}")


def session_finish(session: pytest.Session) -> None:
    """Flush the baselines; an xdist worker sends the files it wrote to the controller, which (like a single
    process) writes the HTML report from the digests the reports carried."""
    state = vsp_session(session.config)
    cfg = state.options
    store = state.baselines_used
    if cfg.update_baseline and store is not None:
        state.written = store.flush()
    if state.is_worker:
        session.config.workeroutput["vsp_written"] = [str(p) for p in state.written]  # type: ignore[attr-defined]
        return
    if cfg.report:
        state.report_path = write_report(cfg.report, state.tally.digests())
