"""vsp-assert: test vision-language models at the level of the visual concepts they use.

Public entry points (imported lazily so that ``import vsp_assert`` — and so pytest's plugin loading — does not
import torch or transformers):

- :func:`load_model` — a VLM and the adapter of its family (``"shapes"`` for the shipped shapes-world model);
- :func:`load_sae` — an SAE in the SAELens folder format (``"shapes"`` for the shipped one);
- :class:`Scratchpad` — runs (image, prompt), returns a :class:`Trace` (answer, latents per patch, attention per
  output token, attention-weighted concept scores) and runs interventions on it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

_LAZY = {
    "load_model": ("vsp_assert.models", "load_model"),
    "LoadedModel": ("vsp_assert.models", "LoadedModel"),
    "load_sae": ("vsp_assert.sae", "load_sae"),
    "save_sae": ("vsp_assert.sae", "save_sae"),
    "SAE": ("vsp_assert.sae", "SAE"),
    "ConceptLabels": ("vsp_assert.labels", "ConceptLabels"),
    "Scratchpad": ("vsp_assert.scratchpad", "Scratchpad"),
    "Trace": ("vsp_assert.trace", "Trace"),
    "Intervention": ("vsp_assert.interventions", "Intervention"),
    "InterventionResult": ("vsp_assert.interventions", "InterventionResult"),
    "VspError": ("vsp_assert.errors", "VspError"),
}

__all__ = sorted(_LAZY) + ["__version__"]

if TYPE_CHECKING:
    from .errors import VspError
    from .interventions import Intervention, InterventionResult
    from .labels import ConceptLabels
    from .models import LoadedModel, load_model
    from .sae import SAE, load_sae, save_sae
    from .scratchpad import Scratchpad
    from .trace import Trace


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        module, attr = _LAZY[name]
        value = getattr(importlib.import_module(module), attr)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'vsp_assert' has no attribute {name!r}")
