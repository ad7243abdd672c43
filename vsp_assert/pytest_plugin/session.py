"""The one per-session object of the pytest plugin: :class:`VspSession`.

It holds what a pytest session of vsp-assert accumulates — loaded models, SAEs and Scratchpads (one load per
distinct model however many cases run), the load count, the case results of every test, the baseline store, the
baselines written and the terminal style — so that no other module keeps session state. It is created in
``pytest_configure`` and kept in the config's stash (so two in-process pytest sessions never share a model, and
each xdist worker has its own).

It is also the Scratchpads' observer (:class:`vsp_assert.checks.fluent.Observer`): every trace a test makes and
every fluent check on it land in that test's :class:`~vsp_assert.checks.assertions.CaseResult` s.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import pytest

from vsp_assert.pytest_plugin.options import VspConfig

if TYPE_CHECKING:
    from vsp_assert.checks.assertions import AssertionRecord, CaseResult
    from vsp_assert.checks.baseline import BaselineStore
    from vsp_assert.engine.trace import Trace
    from vsp_assert.render.style import Style


class VspSession:
    """State of one pytest session (see the module docstring)."""

    def __init__(self, options: VspConfig, config: pytest.Config | None = None) -> None:
        self.options = options
        self._config = config
        self.models: dict[tuple[str, str, str], Any] = {}
        self.saes: dict[tuple[str, str], Any] = {}
        self.pads: dict[tuple[str, str], Any] = {}
        self.loads = 0
        #: case results per test node id, in run order; a rerun of a test replaces its results
        self.results: dict[str, list[CaseResult]] = {}
        self.written: list[Any] = []
        self._baselines: BaselineStore | None = None
        self._running: list[CaseResult] = []  # results of the test that is running now

    # ------------------------------------------------------------------ loaded objects
    def model(self, name: str | None = None) -> Any:
        from vsp_assert.engine.models import load_model

        o = self.options
        key = (name or o.model, o.device, o.dtype)
        if key not in self.models:
            self.models[key] = load_model(key[0], device=o.device, dtype=o.dtype)
            self.loads += 1
        return self.models[key]

    def sae(self, name: str | None = None) -> Any:
        from vsp_assert.engine.sae import load_sae

        key = (name or self.options.sae, self.options.device)
        if key not in self.saes:
            self.saes[key] = load_sae(key[0], device=self.options.device)
        return self.saes[key]

    def scratchpad(self, model_name: str | None = None, sae_name: str | None = None) -> Any:
        """The Scratchpad over a model and an SAE (the session's, or those a case file pins), made once."""
        from vsp_assert.checks.fluent import Scratchpad

        key = (model_name or self.options.model, sae_name or self.options.sae)
        if key not in self.pads:
            pad = Scratchpad(self.model(model_name), self.sae(sae_name),
                             attention_layers=self.options.attention_layers(),
                             max_new_tokens=self.options.max_new_tokens)
            pad.observer = self
            self.pads[key] = pad
        return self.pads[key]

    @property
    def baselines(self) -> BaselineStore:
        from vsp_assert.checks.baseline import BaselineStore

        if self._baselines is None:
            self._baselines = BaselineStore(model=self.options.model, sae=self.options.sae)
        return self._baselines

    @property
    def baselines_used(self) -> BaselineStore | None:
        return self._baselines

    # ------------------------------------------------------------------ style
    @property
    def style(self) -> Style:
        """``--vsp-color`` if given, else pytest's own markup decision (TTY, ``--color``) unless ``NO_COLOR`` or
        ``TERM=dumb`` says no."""
        from vsp_assert.render.style import Style, colour_enabled

        setting = self.options.color
        if setting == "auto":
            if self._config is None:
                return Style(False)
            allowed = "NO_COLOR" not in os.environ and os.environ.get("TERM") != "dumb"
            return Style(bool(self._config.get_terminal_writer().hasmarkup) and allowed)
        return Style(colour_enabled(setting))

    @property
    def width(self) -> int:
        if self._config is None:
            return 100
        return max(60, int(self._config.get_terminal_writer().fullwidth))

    # ------------------------------------------------------------------ results
    def start_test(self) -> None:
        self._running = []

    def add_result(self, result: CaseResult) -> None:
        """A YAML case's result (the item records it itself)."""
        self._running.append(result)

    def finish_test(self, nodeid: str) -> list[CaseResult]:
        """The results of the test that just ran, kept under its node id (a rerun replaces the earlier run)."""
        taken, self._running = self._running, []
        if taken:
            self.results[nodeid] = taken
        else:
            self.results.pop(nodeid, None)
        return taken

    def all_results(self) -> list[tuple[str, CaseResult]]:
        return [(nodeid, r) for nodeid, results in self.results.items() for r in results]

    # ------------------------------------------------------------------ the Scratchpads' observer
    def traced(self, trace: Trace) -> None:
        from vsp_assert.checks.assertions import CaseResult

        self._running.append(CaseResult(None, trace, []))

    def checked(self, trace: Trace, records: Sequence[AssertionRecord]) -> list[AssertionRecord]:
        from vsp_assert.checks.assertions import CaseResult

        result = next((r for r in self._running if r.trace is trace), None)
        if result is None:  # a trace made before this test (a module-scoped fixture, say)
            result = CaseResult(None, trace, [])
            self._running.append(result)
        result.records.extend(records)
        return list(result.records)


SESSION_KEY = pytest.StashKey[VspSession]()


def vsp_session(config: pytest.Config) -> VspSession:
    """The session object of a pytest run (created in ``pytest_configure``)."""
    return config.stash[SESSION_KEY]
