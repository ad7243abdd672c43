"""The pytest plugin (entry point ``pytest11: vsp_assert = vsp_assert.plugin``): wiring only.

Options and ini twins (:mod:`vsp_assert.config`), session fixtures (:mod:`vsp_assert.session`), YAML collection
(:mod:`vsp_assert.collect`), report sections for Python cases (:mod:`vsp_assert.render.report`). Nothing here
imports torch or transformers at import time, so ``pytest --help`` stays fast in any project that has
vsp-assert installed; the heavy imports happen inside fixtures and when a case runs.
"""

from __future__ import annotations

from collections.abc import Generator
from pathlib import Path
from typing import Any

import pytest

from .config import OPTIONS, VspConfig

CONFIG_KEY = pytest.StashKey[VspConfig]()


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("vsp-assert", "vsp-assert: concept-level tests of vision-language models")
    for opt in OPTIONS:
        group.addoption(opt.flag, dest=opt.dest, default=None, help=opt.help, **opt.argparse_kwargs())
        if opt.ini:
            parser.addini(opt.dest, help=opt.help, default=None)


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "vsp: a vsp-assert concept case (YAML or Python)")
    config.stash[CONFIG_KEY] = VspConfig.from_pytest(config)


def pytest_collect_file(file_path: Path, parent: pytest.Collector) -> pytest.Collector | None:
    from .cases import is_case_file

    if is_case_file(file_path):
        from .collect import VspCaseFile

        return VspCaseFile.from_parent(parent, path=file_path)
    return None


@pytest.fixture(scope="session")
def vsp_config(pytestconfig: pytest.Config) -> VspConfig:
    """The resolved ``--vsp-*`` options (command line beats ini)."""
    return pytestconfig.stash[CONFIG_KEY]


@pytest.fixture(scope="session")
def vsp_model(vsp_config: VspConfig) -> Any:
    """The VLM under test (``--vsp-model``), loaded once per session."""
    pytest.importorskip("torch", reason="vsp-assert needs torch to load models")
    from .session import session_model

    return session_model(vsp_config)


@pytest.fixture(scope="session")
def vsp_sae(vsp_config: VspConfig) -> Any:
    """The SAE on the model's vision layer (``--vsp-sae``), loaded once per session."""
    pytest.importorskip("torch", reason="vsp-assert needs torch to load SAEs")
    from .session import session_sae

    return session_sae(vsp_config)


@pytest.fixture(scope="session")
def scratchpad(vsp_model: Any, vsp_sae: Any, vsp_config: VspConfig) -> Any:
    """A :class:`~vsp_assert.Scratchpad` over ``vsp_model`` and ``vsp_sae`` (shared with the YAML cases)."""
    from .session import session_scratchpad

    return session_scratchpad(vsp_config, vsp_model, vsp_sae)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Generator[None, Any, Any]:
    if call.when == "call":
        from .report_hooks import record_properties

        record_properties(item, call)  # before the report copies the item's user properties
    report = yield
    if call.when == "call":
        from .report_hooks import decorate_report

        decorate_report(item, call, report)
    return report


def pytest_terminal_summary(terminalreporter: Any, exitstatus: int, config: pytest.Config) -> None:
    from .report_hooks import terminal_summary

    terminal_summary(terminalreporter, config)


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    from .report_hooks import session_finish

    session_finish(session)
