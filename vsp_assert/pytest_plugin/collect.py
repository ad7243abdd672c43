"""pytest collection nodes for YAML case files.

``VspCaseFile`` parses and validates a case file at collection time (a bad file is a collection error naming
file, line and field, reported before any model loads) and yields one ``VspCaseItem`` per case, with readable
ids (``cases/misleading.yaml::stripes-triangle``) and the case's ``xfail``/``skip`` marks. The item gets the
session's Scratchpad in its setup phase (so a model load is charged to setup, as for a Python test's fixtures),
runs the case, raises :class:`CaseFailure` with the recorded results when an expectation fails, and renders it in
``repr_failure``: the full view as the traceback, the first failing check as the crash line (pytest's short
summary, ``--tb=line``). An exception vsp-assert does not handle shows only the item's and vsp-assert's frames
and the frame that raised. This module imports torch only when a case runs.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from vsp_assert.checks.load import parse_case_file
from vsp_assert.checks.schema import Case
from vsp_assert.errors import VspError
from vsp_assert.pytest_plugin.dataset_item import dataset_failure_text, is_dataset, run_dataset_item
from vsp_assert.pytest_plugin.session import vsp_session

if TYPE_CHECKING:
    from vsp_assert.checks.assertions import CaseResult


class CaseFailure(Exception):
    """A case ran and some expectation failed; carries the recorded :class:`CaseResult`."""

    def __init__(self, result: CaseResult) -> None:
        self.result = result
        super().__init__(f"{len(result.failures)} of {len(result.records)} checks failed")


class VspCaseFile(pytest.File):
    def collect(self) -> Any:
        cfg = vsp_session(self.config).options
        try:
            parsed = parse_case_file(self.path, root=self.config.rootpath,
                                     allow_outside_root=cfg.allow_outside_root)
        except VspError as exc:
            raise CaseCollectError(str(exc)) from None
        for case in parsed.cases:
            yield VspCaseItem.from_parent(self, name=case.id, case=case, model=parsed.model, sae=parsed.sae)

    def repr_failure(self, excinfo: Any, style: Any = None) -> Any:  # type: ignore[override]
        if isinstance(excinfo.value, CaseCollectError):
            return f"vsp-assert: invalid case file\n{excinfo.value}"
        return super().repr_failure(excinfo)


class CaseCollectError(Exception):
    """A case file failed validation (message already names file, line and field)."""


class VspCaseItem(pytest.Item):
    def __init__(self, *, case: Case, model: str | None, sae: str | None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.case = case
        self.pinned_model = model
        self.pinned_sae = sae
        self.result: CaseResult | None = None
        self.pad: Any = None
        self.add_marker(pytest.mark.vsp)
        for name, reason in case.marks:
            if name == "xfail":
                self.add_marker(pytest.mark.xfail(reason=reason or "known failure", strict=True))
            elif name == "skip":
                self.add_marker(pytest.mark.skip(reason=reason or "skipped in the case file"))

    def setup(self) -> None:
        self.pad = vsp_session(self.config).scratchpad(model_name=self.pinned_model, sae_name=self.pinned_sae)

    def runtest(self) -> None:
        from vsp_assert.checks.assertions import run_case, why_not_correct
        from vsp_assert.checks.baseline import check_result
        from vsp_assert.engine.fit import sae_identity

        session = vsp_session(self.config)
        try:
            if is_dataset(self.case):  # each: rows, rates, controls (pytest_plugin/dataset_item.py)
                self.result = run_dataset_item(self.pad, self.case, session)
            else:
                self.result = run_case(self.pad, self.case)
                self.result.records.extend(check_result(session.baselines, self.result,
                                                        update=session.options.update_baseline,
                                                        sae_id=sae_identity(self.pad.sae)))
                why_not_correct(self.pad, self.result)
        except VspError as exc:
            raise exc.with_context(file=self.case.file, line=self.case.line) from None
        session.add_result(self.result)
        if not self.result.passed:
            raise CaseFailure(self.result)

    def repr_failure(self, excinfo: Any, style: Any = None) -> Any:  # type: ignore[override]
        from vsp_assert.checks.dataset import DatasetResult
        from vsp_assert.render.case import failure_line, render_case
        from vsp_assert.render.drift import render_drift

        session = vsp_session(self.config)
        cfg = session.options
        if isinstance(excinfo.value, CaseFailure):
            result = excinfo.value.result
            style, width = session.style, session.width
            if isinstance(result, DatasetResult):
                return self._case_repr(dataset_failure_text(self.nodeid, result, session), failure_line(result.records))
            text = render_case(self.nodeid, result.trace, result.records, style=style, top_k=self.case.top_k,
                               width=width, explanation=result.explanation)
            if result.drift is not None and any(not r.passed for r in result.records if r.kind == "drift"):
                text += "\n\n" + render_drift(result.drift, result.trace, style, width)
            return self._case_repr(text, failure_line(result.records))
        if isinstance(excinfo.value, VspError) and not cfg.debug:
            return f"vsp-assert: {excinfo.value}"
        if self.config.getoption("tbstyle", "auto") == "auto":
            style = "short"
        return self._repr_failure_py(excinfo, style=style)

    def _case_repr(self, text: str, line: str) -> Any:
        """The failure view as pytest's own exception repr (one native entry, none with ``--tb=line``; the crash
        line names the case's file and line and its first failing check): the short summary and ``--tb=line``
        read the crash line, and pytest-xdist serialises it like any test's traceback."""
        from _pytest._code.code import ReprEntryNative, ReprExceptionInfo, ReprFileLocation, ReprTraceback

        crash = ReprFileLocation(path=self.location[0], lineno=self.case.line, message=line)
        view = [] if self.config.getoption("tbstyle", "auto") == "line" else [ReprEntryNative([text + "\n"])]
        entries = ReprTraceback(reprentries=view, extraline=None, style="native")
        return ReprExceptionInfo(reprtraceback=entries, reprcrash=crash)

    def _traceback_filter(self, excinfo: Any) -> Any:
        """From this item's frame on, the frames of vsp-assert and the one that raised (all of them, torch's
        included, with ``--vsp-debug``); pytest's and pluggy's frames above the item are cut."""
        from _pytest._code.code import Traceback

        traceback = excinfo.traceback
        cut = traceback.cut(path=Path(__file__))
        if cut != traceback:
            traceback = cut
        traceback = traceback.filter(excinfo)  # __tracebackhide__
        if vsp_session(self.config).options.debug or len(traceback) < 2:
            return traceback
        package = Path(__file__).resolve().parents[1]
        kept = [e for e in traceback[:-1] if Path(str(e.path)).resolve().is_relative_to(package)]
        return Traceback([*kept, traceback[-1]])

    def reportinfo(self) -> tuple[Path, int, str]:
        return self.path, self.case.line - 1, f"vsp case {self.case.id}"
