"""vsp-assert: test vision-language models at the level of the visual concepts they use.

Public entry points (imported lazily so that ``import vsp_assert`` — and so pytest's plugin loading — does not
import torch or transformers):

- :func:`load_model` — a VLM and the adapter of its family (``"shapes"`` for the shipped shapes-world model);
- :func:`load_sae` — an SAE in the SAELens folder format (``"shapes"`` for the shipped one);
- :class:`Scratchpad` — runs (image, prompt), returns a :class:`Trace` (answer, latents per patch, attention per
  output token, attention-weighted concept scores) with the fluent ``assert_*`` checks, and runs interventions;
- :func:`load_video` — a clip (:class:`Video`) from frames or a file, which ``Scratchpad.run`` takes in place of an
  image for families that take video.

The package follows the flow case → adapter → trace → analysis → checks → report: ``engine/`` (models, adapters,
SAE, tracing, interventions, analysis), ``checks/`` (case schema, assertions, baselines), ``render/`` (terminal
and HTML), ``pytest_plugin/``, ``cli/``, ``shapes/`` and ``testing/``; docs/architecture.md walks through it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

_LAZY = {
    "load_model": ("vsp_assert.engine.models", "load_model"),
    "LoadedModel": ("vsp_assert.engine.models", "LoadedModel"),
    "load_sae": ("vsp_assert.engine.sae", "load_sae"),
    "save_sae": ("vsp_assert.engine.sae", "save_sae"),
    "SAE": ("vsp_assert.engine.sae", "SAE"),
    "ConceptLabels": ("vsp_assert.engine.labels", "ConceptLabels"),
    "Scratchpad": ("vsp_assert.checks.fluent", "Scratchpad"),
    "Trace": ("vsp_assert.engine.trace", "Trace"),
    "Video": ("vsp_assert.engine.video", "Video"),
    "load_video": ("vsp_assert.engine.video", "load_video"),
    "CheckedTrace": ("vsp_assert.checks.fluent", "CheckedTrace"),
    "Intervention": ("vsp_assert.engine.interventions", "Intervention"),
    "InterventionResult": ("vsp_assert.engine.interventions", "InterventionResult"),
    "ConceptAssertionError": ("vsp_assert.checks.assertions", "ConceptAssertionError"),
    "assert_rate": ("vsp_assert.checks.many", "assert_rate"),
    "RateAssertionError": ("vsp_assert.checks.many", "RateAssertionError"),
    "VspError": ("vsp_assert.errors", "VspError"),
    "CaseError": ("vsp_assert.errors", "CaseError"),
    "SAEError": ("vsp_assert.errors", "SAEError"),
    "ModelError": ("vsp_assert.errors", "ModelError"),
    "InputError": ("vsp_assert.errors", "InputError"),
}

__all__ = sorted(_LAZY) + ["__version__"]

if TYPE_CHECKING:
    from vsp_assert.checks.assertions import ConceptAssertionError
    from vsp_assert.checks.fluent import CheckedTrace, Scratchpad
    from vsp_assert.checks.many import RateAssertionError, assert_rate
    from vsp_assert.engine.interventions import Intervention, InterventionResult
    from vsp_assert.engine.labels import ConceptLabels
    from vsp_assert.engine.models import LoadedModel, load_model
    from vsp_assert.engine.sae import SAE, load_sae, save_sae
    from vsp_assert.engine.trace import Trace
    from vsp_assert.engine.video import Video, load_video
    from vsp_assert.errors import CaseError, InputError, ModelError, SAEError, VspError


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        module, attr = _LAZY[name]
        value = getattr(importlib.import_module(module), attr)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'vsp_assert' has no attribute {name!r}")
