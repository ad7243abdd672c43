"""The pytest plugin (entry point ``pytest11: vsp_assert = vsp_assert.pytest_plugin.entry``): wiring only.

Options and ini twins (:mod:`.options`), the session object behind the fixtures (:mod:`.session`), YAML
collection (:mod:`.collect`), report sections and the summary (:mod:`.reporting`). Nothing here imports torch or
transformers at import time, so ``pytest --help`` stays fast in any project that has vsp-assert installed; the
heavy imports happen inside fixtures and when a case runs.
"""

from __future__ import annotations

from collections.abc import Generator
from pathlib import Path
from typing import Any

import pytest

from vsp_assert.pytest_plugin.options import OPTIONS, VspConfig
from vsp_assert.pytest_plugin.session import SESSION_KEY, VspSession, vsp_session

LISTENER = "vsp-assert-report-listener"


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("vsp-assert", "vsp-assert: concept-level tests of vision-language models")
    for opt in OPTIONS:
        group.addoption(opt.flag, dest=opt.dest, default=None, help=opt.help_text, **opt.argparse_kwargs())
        if opt.ini:
            parser.addini(opt.dest, help=opt.help_text, type=opt.ini_type,  # type: ignore[arg-type]
                          default=False if opt.kind == "flag" else None)


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "vsp: a vsp-assert concept case (YAML or Python)")
    config.stash[SESSION_KEY] = VspSession(VspConfig.from_pytest(config), config)
    config.pluginmanager.register(ReportListener(config), LISTENER)


def pytest_unconfigure(config: pytest.Config) -> None:
    listener = config.pluginmanager.get_plugin(LISTENER)
    if listener is not None:
        config.pluginmanager.unregister(listener)


def pytest_collect_file(file_path: Path, parent: pytest.Collector) -> pytest.Collector | None:
    from vsp_assert.checks.load import is_case_file

    if is_case_file(file_path):
        from vsp_assert.pytest_plugin.collect import VspCaseFile

        return VspCaseFile.from_parent(parent, path=file_path)
    return None


@pytest.fixture(scope="session")
def vsp_config(pytestconfig: pytest.Config) -> VspConfig:
    """The resolved ``--vsp-*`` options (command line beats ini)."""
    return vsp_session(pytestconfig).options


@pytest.fixture(scope="session")
def vsp_model(pytestconfig: pytest.Config) -> Any:
    """The VLM under test (``--vsp-model``), loaded once per session."""
    pytest.importorskip("torch", reason="vsp-assert needs torch to load models")
    return vsp_session(pytestconfig).model()


@pytest.fixture(scope="session")
def vsp_sae(pytestconfig: pytest.Config) -> Any:
    """The SAE on the model's vision layer (``--vsp-sae``), loaded once per session."""
    pytest.importorskip("torch", reason="vsp-assert needs torch to load SAEs")
    return vsp_session(pytestconfig).sae()


@pytest.fixture(scope="session")
def scratchpad(vsp_model: Any, vsp_sae: Any, pytestconfig: pytest.Config) -> Any:
    """A :class:`~vsp_assert.Scratchpad` over ``vsp_model`` and ``vsp_sae`` (shared with the YAML cases)."""
    return vsp_session(pytestconfig).scratchpad()


@pytest.hookimpl(wrapper=True)
def pytest_runtest_call(item: pytest.Item) -> Generator[None, Any, Any]:
    vsp_session(item.config).start_test()
    return (yield)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Generator[None, Any, Any]:
    from vsp_assert.pytest_plugin.reporting import decorate_report, record_properties

    results = None
    if call.when == "call":
        results = vsp_session(item.config).finish_test(item.nodeid)
        record_properties(item, results)  # before the report copies the item's user properties
    report = yield
    decorate_report(item, call, report, results)
    return report


class ReportListener:
    """Hooks that need the config but are not given it: counting what each report carries (in the controller
    under pytest-xdist: what the workers sent) and talking to xdist workers. Registered per config."""

    def __init__(self, config: pytest.Config) -> None:
        self.config = config

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        from vsp_assert.pytest_plugin.digest import ATTRIBUTE

        payload = getattr(report, ATTRIBUTE, None)
        if payload:
            vsp_session(self.config).tally.receive(report.nodeid, payload)

    @pytest.hookimpl(optionalhook=True)
    def pytest_configure_node(self, node: Any) -> None:
        """Workers are no TTY: they render with the controller's colour decision and width."""
        session = vsp_session(self.config)
        node.workerinput["vsp_colour"] = session.style.enabled
        node.workerinput["vsp_width"] = session.width

    @pytest.hookimpl(optionalhook=True)
    def pytest_testnodedown(self, node: Any, error: Any) -> None:
        """The baseline files a worker wrote."""
        written = (getattr(node, "workeroutput", None) or {}).get("vsp_written", [])
        vsp_session(self.config).tally.written.extend(written)


def pytest_terminal_summary(terminalreporter: Any, exitstatus: int, config: pytest.Config) -> None:
    from vsp_assert.pytest_plugin.reporting import terminal_summary

    terminal_summary(terminalreporter, config)


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    from vsp_assert.pytest_plugin.reporting import session_finish

    session_finish(session)
