"""pytest collection nodes for YAML case files.

``VspCaseFile`` parses and validates a case file at collection time (a bad file is a collection error naming
file, line and field, reported before any model loads) and yields one ``VspCaseItem`` per case, with readable
ids (``cases/misleading.yaml::stripes-triangle``) and the case's ``xfail``/``skip`` marks. The item runs the case
through the session's Scratchpad, raises :class:`CaseFailure` with the recorded results when an expectation
fails, and renders it in ``repr_failure``. This module imports torch only when a case runs.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from .cases import Case, parse_case_file
from .config import VspConfig
from .errors import VspError

if TYPE_CHECKING:
    from .assertions import CaseResult


class CaseFailure(Exception):
    """A case ran and some expectation failed; carries the recorded :class:`CaseResult`."""

    def __init__(self, result: CaseResult) -> None:
        self.result = result
        super().__init__(f"{len(result.failures)} of {len(result.records)} checks failed")


def vsp_config(config: pytest.Config) -> VspConfig:
    from .plugin import CONFIG_KEY

    return config.stash[CONFIG_KEY]


def style_for(config: pytest.Config) -> Any:
    """The colour style of this session: ``--vsp-color`` if given, else pytest's own markup decision (TTY,
    ``--color``) unless ``NO_COLOR`` or ``TERM=dumb`` says no."""
    import os

    from .render.style import Style, colour_enabled

    setting = vsp_config(config).color
    if setting == "auto":
        allowed = "NO_COLOR" not in os.environ and os.environ.get("TERM") != "dumb"
        return Style(bool(config.get_terminal_writer().hasmarkup) and allowed)
    return Style(colour_enabled(setting))


def terminal_width(config: pytest.Config) -> int:
    return max(60, int(config.get_terminal_writer().fullwidth))


class VspCaseFile(pytest.File):
    def collect(self) -> Any:
        cfg = vsp_config(self.config)
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
        self.drift_text: str | None = None
        self.add_marker(pytest.mark.vsp)
        for name, reason in case.marks:
            if name == "xfail":
                self.add_marker(pytest.mark.xfail(reason=reason or "known failure", strict=True))
            elif name == "skip":
                self.add_marker(pytest.mark.skip(reason=reason or "skipped in the case file"))

    def runtest(self) -> None:
        from .assertions import run_case
        from .session import session_scratchpad

        cfg = vsp_config(self.config)
        pad = session_scratchpad(cfg, model_name=self.pinned_model, sae_name=self.pinned_sae)
        try:
            self.result = run_case(pad, self.case)
            from .baseline import check_result

            drift, self.drift_text = check_result(baseline_store(self.config), self.result,
                                                  update=cfg.update_baseline, style=style_for(self.config),
                                                  width=terminal_width(self.config))
        except VspError as exc:
            raise exc.with_context(file=self.case.file, line=self.case.line) from None
        self.result.records.extend(drift)
        for key, value in case_properties(self.result):
            self.user_properties.append((key, value))
        if not self.result.passed:
            raise CaseFailure(self.result)

    def repr_failure(self, excinfo: Any, style: Any = None) -> Any:  # type: ignore[override]
        from .render.report import render_case

        cfg = vsp_config(self.config)
        if isinstance(excinfo.value, CaseFailure):
            result = excinfo.value.result
            text = render_case(self.nodeid, result.trace, result.records, style=style_for(self.config),
                               top_k=self.case.top_k, width=terminal_width(self.config))
            return text + ("\n\n" + self.drift_text if self.drift_text else "")
        if isinstance(excinfo.value, VspError) and not cfg.debug:
            return f"vsp-assert: {excinfo.value}"
        return super().repr_failure(excinfo)

    def reportinfo(self) -> tuple[Path, int, str]:
        return self.path, self.case.line - 1, f"vsp case {self.case.id}"


BASELINE_KEY = pytest.StashKey[Any]()


def baseline_store(config: pytest.Config) -> Any:
    """The session's :class:`~vsp_assert.baseline.BaselineStore` (created on first use)."""
    from .baseline import BaselineStore

    if BASELINE_KEY not in config.stash:
        cfg = vsp_config(config)
        config.stash[BASELINE_KEY] = BaselineStore(model=cfg.model, sae=cfg.sae)
    return config.stash[BASELINE_KEY]


def case_properties(result: CaseResult) -> list[tuple[str, Any]]:
    """Key figures of a case for JUnit XML properties (``record_property``-style)."""
    return trace_properties(result.trace, result.records)


def trace_properties(trace: Any, records: list[Any]) -> list[tuple[str, Any]]:
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
