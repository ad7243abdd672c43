"""What the plugin's report hooks do: heatmap sections for Python cases, clean errors, the session summary.

- A Python test that fails a fluent concept assertion gets a ``vsp-assert`` report section with the records and
  the heatmap of the failing trace (``--vsp-show``: every trace of every test).
- A :class:`~vsp_assert.errors.VspError` raised in a test is shown as its one message, no torch traceback
  (unless ``--vsp-debug``).
- The terminal summary counts cases and model loads; ``session_finish`` writes the HTML report when asked.
"""

from __future__ import annotations

from typing import Any

import pytest

from .collect import VspCaseItem, style_for, terminal_width, vsp_config


def _pads(config: pytest.Config) -> list[Any]:
    return [v for k, v in vsp_config(config).cache.items() if k.startswith("pad::")]


def record_properties(item: pytest.Item, call: pytest.CallInfo[None]) -> None:
    """JUnit XML properties of a Python test whose concept assertion failed (YAML items record their own)."""
    from .assertions import ConceptAssertionError
    from .collect import trace_properties

    if call.excinfo is not None and isinstance(call.excinfo.value, ConceptAssertionError):
        trace = call.excinfo.value.trace
        item.user_properties.extend(trace_properties(trace, trace.records))


def decorate_report(item: pytest.Item, call: pytest.CallInfo[None], report: pytest.TestReport) -> None:
    from .assertions import ConceptAssertionError
    from .errors import VspError
    from .render.report import render_case

    cfg = vsp_config(item.config)
    history = [t for pad in _pads(item.config) for t in pad.take_history()]
    style = style_for(item.config)
    width = terminal_width(item.config)
    excinfo = call.excinfo
    store = item.config.stash.setdefault(RESULTS_KEY, [])
    if isinstance(item, VspCaseItem):
        if item.result is not None:
            store.append((item.nodeid, item.result.trace, item.result.records))
            if cfg.show and item.result.passed:
                report.sections.append(("vsp-assert", render_case(item.nodeid, item.result.trace,
                                                                  item.result.records, style=style,
                                                                  top_k=item.case.top_k, width=width)))
        return
    if excinfo is not None and isinstance(excinfo.value, ConceptAssertionError):
        trace = excinfo.value.trace
        report.sections.append(("vsp-assert: concept evidence",
                                render_case(item.nodeid, trace, trace.records, style=style, top_k=cfg.top_k,
                                            width=width)))
        store.append((item.nodeid, trace, trace.records))
    elif excinfo is not None and isinstance(excinfo.value, VspError) and not cfg.debug:
        report.longrepr = f"vsp-assert: {excinfo.value}"
    elif cfg.show:
        for trace in history:
            report.sections.append(("vsp-assert", render_case(item.nodeid, trace, trace.records, style=style,
                                                              top_k=cfg.top_k, width=width)))
    if cfg.report:
        store.extend((item.nodeid, t, t.records) for t in history if t.records)


RESULTS_KEY = pytest.StashKey[list]()


def terminal_summary(reporter: Any, config: pytest.Config) -> None:
    from .session import session_loads

    cfg = vsp_config(config)
    results = config.stash.get(RESULTS_KEY, [])
    if not results and not cfg.cache:
        return
    failed = sum(1 for _, _, records in results if any(not r.passed for r in records))
    reporter.write_sep("-", "vsp-assert")
    reporter.write_line(
        f"{len(results)} concept case(s) recorded, {failed} with failing checks; model {cfg.model!r}, "
        f"SAE {cfg.sae!r}; model loads this session: {session_loads(cfg)}"
    )
    from .collect import BASELINE_KEY

    store = config.stash.get(BASELINE_KEY, None)
    if store is not None and store.missing and not cfg.update_baseline:
        reporter.write_line(f"{len(store.missing)} case(s) have no baseline entry (drift not checked); "
                            "record them with --vsp-update-baseline")
    for path in config.stash.get(WRITTEN_KEY, []):
        reporter.write_line(f"baseline written: {path}")
    if cfg.report:
        reporter.write_line(f"HTML report: {cfg.report}/index.html")


WRITTEN_KEY = pytest.StashKey[list]()


def session_finish(session: pytest.Session) -> None:
    from .collect import BASELINE_KEY

    cfg = vsp_config(session.config)
    store = session.config.stash.get(BASELINE_KEY, None)
    if cfg.update_baseline and store is not None:
        session.config.stash[WRITTEN_KEY] = store.flush()
    if not cfg.report:
        return
    results = session.config.stash.get(RESULTS_KEY, [])
    from .html_report import write_report

    write_report(cfg.report, results, title="vsp-assert report", top_k=cfg.top_k)
