"""The pytest plugin (entry point ``pytest11: vsp_assert = vsp_assert.plugin``): wiring only.

Options, ini twins, session fixtures, YAML collection and report hooks, each a few lines calling into the
engine. Nothing here imports torch or transformers at import time, so ``pytest --help`` stays fast in any
project that has vsp-assert installed; the heavy imports happen inside the fixtures.
"""

from __future__ import annotations

from typing import Any

import pytest

from .config import OPTIONS, VspConfig


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("vsp-assert", "vsp-assert: concept-level tests of vision-language models")
    for opt in OPTIONS:
        group.addoption(opt.flag, dest=opt.dest, default=None, help=opt.help, **opt.argparse_kwargs())
        if opt.ini:
            parser.addini(opt.dest, help=opt.help, default=opt.ini_default)


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "vsp: a vsp-assert concept case (YAML or Python)")
    config.stash[CONFIG_KEY] = VspConfig.from_pytest(config)


CONFIG_KEY = pytest.StashKey[VspConfig]()


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
    """A :class:`~vsp_assert.Scratchpad` over ``vsp_model`` and ``vsp_sae``."""
    from .session import session_scratchpad

    return session_scratchpad(vsp_config, vsp_model, vsp_sae)
