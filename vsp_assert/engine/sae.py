"""Sparse autoencoders in the SAELens on-disk format: the public names of the SAE layer.

This module owns reading, validating, running and writing SAEs. We read the SAELens folder format as it is
(``cfg.json`` + ``sae_weights.safetensors``) so that SAEs trained with SAELens load unchanged, and we compute
exactly what SAELens computes for the three inference architectures we support (``standard``, ``topk``,
``jumprelu``), including its run-time activation normalisation. The core never imports ``sae_lens``: the
format is small and stable, and a test checks parity against the real library where it is installed.

What SAELens has no place for (which model layer the SAE reads, which model it was trained on, where the concept
label file is) lives in an optional **sidecar** ``vsp_assert.json`` next to the weights::

    {"hook_layer": "model.vision_tower.encoder.layers.2",  # module path in the VLM (LLaVA, transformers 5)
     "model": "shapes",                  # free text: what the SAE was trained on
     "labels": "concepts.json"}          # label file, relative to the folder (see labels.py)

Weights are loaded with safetensors only (never pickle); a ``.pt`` state dict is read with
``torch.load(weights_only=True)``.

This module is the stable import path; the code lives in two modules under the ~400-line house rule:
:mod:`vsp_assert.engine.sae_model` (``SAEConfig``, the ``SAE`` module: what an SAE computes, ``[..., d_in] ↔
[..., d_sae]``) and :mod:`vsp_assert.engine.sae_format` (the files: ``cfg.json``, weights, sidecar, SAELens'
registry; ``load_sae`` / ``save_sae``). ``load_sae(..., dtype=torch.bfloat16)`` keeps the weights in the model's
half precision when asked. Codes as a trace keeps them (what fired per patch) are
:class:`~vsp_assert.engine.sparse.SparseActs`, from ``SAE.encode_sparse`` (:mod:`vsp_assert.engine.sae_sparse`).
"""

from __future__ import annotations

from vsp_assert.engine.sae_format import (
    CFG_FILE,
    SAELENS_PREFIX,
    SIDECAR_FILE,
    WEIGHTS_FILE,
    Sidecar,
    load_sae,
    save_sae,
)
from vsp_assert.engine.sae_model import ARCHITECTURES, NORMALIZATIONS, SAE, Architecture, Normalize, SAEConfig
from vsp_assert.engine.sparse import SparseActs

__all__ = [
    "ARCHITECTURES", "CFG_FILE", "NORMALIZATIONS", "SAE", "SAELENS_PREFIX", "SIDECAR_FILE", "WEIGHTS_FILE",
    "Architecture", "Normalize", "SAEConfig", "Sidecar", "SparseActs", "load_sae", "save_sae",
]
