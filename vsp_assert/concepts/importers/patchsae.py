"""Importer for PatchSAE checkpoints (dynamical-inference/patchsae, ``src/sae_training/sparse_autoencoder.py``).

File: one ``.pt`` (training writes ``{n_tokens}_sparse_autoencoder_{model}_{layer}_{module}_{d_sae}.pt`` or
``final_….pt``; the demo ships ``data/sae_weight/base/out.pt``) holding ``{"cfg": ViTSAERunnerConfig,
"state_dict": ...}`` (``save_model``); ``tasks/utils.load_sae`` also accepts ``"config"`` for the config. A
pickled ``ViTSAERunnerConfig`` needs ``--allow-pickle``; a plain dict config loads weights-only. State dict::

    W_enc [d_in, d_sae]   b_enc [d_sae]   W_dec [d_sae, d_in]   b_dec [d_in]
    r_mag [d_sae], b_mag [d_sae]   (gated_sae only: refused, PatchSAE's own gated forward is unimplemented)

Forward (``forward_standard``): ``pre = (x - b_dec) @ W_enc + b_enc``, ``f = relu(pre)``,
``x̂ = f @ W_dec + b_dec``, no input normalisation — our ``standard`` SAE with ``apply_b_dec_to_input=True``.
Config fields read: ``d_in``, ``expansion_factor`` (``d_sae = d_in * expansion_factor``), ``gated_sae``,
``model_name`` (a Hugging Face CLIP id), ``block_layer`` and ``module_name`` (``resid``: the output of
``vision_model.encoder.layers[block_layer]`` of a ``CLIPModel``; ``block_layer`` may be negative, e.g. ``-2``).
"""

from __future__ import annotations

from pathlib import Path

from vsp_assert.concepts.importers._common import (
    ImportedSAE,
    as_fields,
    check_keys,
    check_shapes,
    check_width,
    load_torch,
    require_fields,
)
from vsp_assert.errors import SAEError

FORMAT = "patchsae"
KEYS = ["W_enc", "b_enc", "W_dec", "b_dec"]


def read(path: Path, *, allow_pickle: bool = False) -> ImportedSAE:
    """Read a PatchSAE ``.pt`` checkpoint into an :class:`ImportedSAE`."""
    if not path.is_file():
        raise SAEError("PatchSAE checkpoint not found", file=str(path), allowed="a PatchSAE .pt file")
    where = str(path)
    obj, pickled = load_torch(path.read_bytes(), file=where, fmt=FORMAT, allow_pickle=allow_pickle)
    if not isinstance(obj, dict) or "state_dict" not in obj or not ("cfg" in obj or "config" in obj):
        got = sorted(map(str, obj)) if isinstance(obj, dict) else type(obj).__name__
        raise SAEError("not a PatchSAE checkpoint: it must hold 'state_dict' and 'cfg' (or 'config')", file=where,
                       received=got, allowed="{'cfg': ..., 'state_dict': {W_enc, b_enc, W_dec, b_dec}}",
                       fix="pick the importer of the format that wrote this file")
    cfg = as_fields(obj["cfg"] if "cfg" in obj else obj["config"], file=where, what="config")
    state = obj["state_dict"]
    require_fields(cfg, ("d_in", "block_layer"), file=where, fmt=FORMAT)
    if cfg.get("gated_sae") or (isinstance(state, dict) and "r_mag" in state):
        raise SAEError("gated PatchSAE checkpoints cannot be imported (PatchSAE's own gated forward is "
                       "unimplemented, so there is no formula to match)", file=where, field="gated_sae",
                       received=True, allowed="false")
    check_keys(state, required=KEYS, file=where, fmt=FORMAT)
    d_in, d_sae = check_shapes(state["W_enc"], state["W_dec"], state["b_enc"], state["b_dec"], file=where)
    check_width(cfg.get("d_in"), d_in, name="d_in", file=where)
    if isinstance(cfg.get("expansion_factor"), int) and isinstance(cfg.get("d_in"), int):
        check_width(cfg["expansion_factor"] * cfg["d_in"], d_sae, name="d_in × expansion_factor", file=where)
    notes = ["the checkpoint needed unpickling (--allow-pickle)"] if pickled else []
    out = ImportedSAE(W_enc=state["W_enc"], W_dec=state["W_dec"], b_enc=state["b_enc"], b_dec=state["b_dec"],
                      architecture="standard", apply_b_dec_to_input=True, notes=notes,
                      source={"format": FORMAT, "file": where})
    layer, module = cfg.get("block_layer"), cfg.get("module_name", "resid")
    if isinstance(layer, int) and not isinstance(layer, bool):
        out.hook_name = f"vision_model.encoder.layers[{layer}]"
        if module != "resid":
            notes.append(f"module_name '{module}' is not 'resid'; PatchSAE only hooks whole encoder layers")
        if layer < 0:
            notes.append(f"block_layer {layer} counts from the end: layer {layer} of the CLIP vision encoder "
                         "(e.g. 10 of 12 for -2 on ViT-B); give --hook-layer with the positive index")
    model = cfg.get("model_name")
    out.model = model if isinstance(model, str) else None
    if cfg.get("custom_clip_ckpt_path"):
        notes.append("trained on a custom CLIP checkpoint (custom_clip_ckpt_path), not model_name's weights")
    out.source.update({"block_layer": layer, "module_name": module, "model_name": out.model,
                       "class_token": cfg.get("class_token")})
    return out
