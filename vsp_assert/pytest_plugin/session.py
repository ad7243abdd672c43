"""The one per-session object of the pytest plugin: :class:`VspSession`.

It holds what a pytest session of vsp-assert accumulates — loaded models, SAEs and Scratchpads (one load per
distinct model however many cases run), the load count, the case results of every test, the baseline store, the
baselines written and the terminal style — so that no other module keeps session state. It is created in
``pytest_configure`` and kept in the config's stash (so two in-process pytest sessions never share a model, and
each xdist worker has its own).

It is also the Scratchpads' observer (:class:`vsp_assert.checks.fluent.Observer`): every trace a test makes and
every fluent check on it land in that test's :class:`~vsp_assert.checks.assertions.CaseResult` s. In a hypothesis
test only the last example's traces are kept (one test, one set of cases, however many examples ran).

What the terminal summary and the HTML report show is not read from these local results but from the
:attr:`tally`: the plain-data digests every test report carries (:mod:`.digest`), received in
``pytest_runtest_logreport``. In one process that is the same data; under pytest-xdist the reports are the only
thing that reaches the controller, so its summary, its load count and its report come from the workers.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import pytest

from vsp_assert.pytest_plugin.devices import worker_device
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
        self._example: object = None  # the hypothesis example the running results belong to
        self._missing_before: set[str] = set()
        self._incomparable_before: set[str] = set()
        self.loads_reported = 0  # loads already sent in a report (the next report carries the rest)
        self.tally = Tally()
        self.report_path: Any = None  # the HTML report written at session finish

    # ------------------------------------------------------------------ loaded objects
    def model(self, name: str | None = None) -> Any:
        from vsp_assert.engine.models import load_model

        o = self.options
        key = (name or o.model, o.device, o.dtype)
        if key not in self.models:
            self.models[key] = load_model(key[0], device=worker_device(o.device), dtype=o.dtype)
            self.loads += 1
        return self.models[key]

    def sae(self, name: str | None = None) -> Any:
        from vsp_assert.engine.sae import load_sae

        key = (name or self.options.sae, self.options.device)
        if key not in self.saes:
            self.saes[key] = load_sae(key[0], device=worker_device(self.options.device))
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
            pad.filter_noise = not self.options.keep_noise
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
        ``TERM=dumb`` says no. An xdist worker (never a TTY) takes the controller's decision from its
        ``workerinput``."""
        from vsp_assert.render.style import Style, colour_enabled

        told = self._worker_input().get("vsp_colour")
        if told is not None:
            return Style(bool(told))
        setting = self.options.color
        if setting == "auto":
            if self._config is None:
                return Style(False)
            allowed = "NO_COLOR" not in os.environ and os.environ.get("TERM") != "dumb"
            return Style(bool(self._config.get_terminal_writer().hasmarkup) and allowed)
        return Style(colour_enabled(setting))

    @property
    def width(self) -> int:
        told = self._worker_input().get("vsp_width")
        if told is not None:
            return int(told)
        if self._config is None:
            return 100
        return max(60, int(self._config.get_terminal_writer().fullwidth))

    def _worker_input(self) -> dict[str, Any]:
        return dict(getattr(self._config, "workerinput", None) or {})

    @property
    def is_worker(self) -> bool:
        """Whether this process is a pytest-xdist worker (the controller prints and writes the report)."""
        return self._config is not None and hasattr(self._config, "workerinput")

    # ------------------------------------------------------------------ results
    def start_test(self) -> None:
        self._running = []
        self._example = None
        store = self._baselines
        self._missing_before = set(store.missing) if store is not None else set()
        self._incomparable_before = set(store.incomparable) if store is not None else set()

    def new_missing(self) -> list[str]:
        """Baseline keys that the running test found missing (they travel in its report)."""
        store = self._baselines
        return sorted(store.missing - self._missing_before) if store is not None else []

    def new_incomparable(self) -> list[str]:
        """Baseline keys of the running test recorded with another SAE, so not compared (they travel too)."""
        store = self._baselines
        return sorted(store.incomparable - self._incomparable_before) if store is not None else []

    def add_result(self, result: CaseResult) -> None:
        """A YAML case's result (the item records it itself; it replaces what the observer heard of its trace)."""
        self._running = [r for r in self._running if r.trace is not result.trace]
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

        self.check_fit(trace)
        example = _hypothesis_example()
        if example is not self._example:  # a new hypothesis example: the earlier ones' traces are dropped
            if self._example is not None:
                self._running = []
            self._example = example
        self._running.append(CaseResult(None, trace, []))

    def check_fit(self, trace: Trace) -> None:
        """A case whose SAE no longer reconstructs the hooked layer is an error, never reported as drift."""
        floor = self.options.min_sae_fit
        if trace.sae_fit is None or trace.sae_fit >= floor:
            return
        from vsp_assert.errors import SAEError

        raise SAEError(
            f"the SAE does not fit this model: it explains {trace.sae_fit:.3f} of the variance of the hooked "
            f"layer on this case's image, below --vsp-min-sae-fit {floor:g}; its concepts would be noise",
            field="sae", received=f"SAE {self.options.sae!r} on model {self.options.model!r}",
            fix="the update may have changed the vision tower: train an SAE on it (vsp-assert sae train) or import "
                "one (vsp-assert sae import), or pass the SAE made for this model with --vsp-sae")

    def checked(self, trace: Trace, records: Sequence[AssertionRecord]) -> list[AssertionRecord]:
        from vsp_assert.checks.assertions import CaseResult

        result = next((r for r in self._running if r.trace is trace), None)
        if result is None:  # a trace made before this test (a module-scoped fixture, say)
            result = CaseResult(None, trace, [])
            self._running.append(result)
        result.records.extend(records)
        return list(result.records)


class Tally:
    """What the reports of a session carried (:mod:`.digest`): case digests per node id (a rerun replaces the
    earlier run), the model loads, the baseline keys found missing (a set: a rerun case counts once) and the
    baseline files written (an xdist worker sends those when it finishes)."""

    def __init__(self) -> None:
        self.cases: dict[str, list[dict[str, Any]]] = {}
        self.loads = 0
        self.missing: set[str] = set()
        self.incomparable: set[str] = set()
        self.written: list[str] = []

    def receive(self, nodeid: str, payload: dict[str, Any]) -> None:
        self.loads += int(payload.get("loads", 0))
        self.missing.update(payload.get("missing", ()))
        self.incomparable.update(payload.get("incomparable", ()))
        if "cases" in payload:
            if payload["cases"]:
                self.cases[nodeid] = list(payload["cases"])
            else:
                self.cases.pop(nodeid, None)

    def digests(self) -> list[dict[str, Any]]:
        return [d for digests in self.cases.values() for d in digests]


def _hypothesis_example() -> object:
    """The running hypothesis example (its build context), or None outside hypothesis; hypothesis is not
    imported here."""
    import sys

    control = sys.modules.get("hypothesis.control")
    if control is None:
        return None
    try:
        return control.current_build_context()
    except Exception:  # no example is running
        return None


SESSION_KEY = pytest.StashKey[VspSession]()


def vsp_session(config: pytest.Config) -> VspSession:
    """The session object of a pytest run (created in ``pytest_configure``)."""
    return config.stash[SESSION_KEY]
