"""Importer for ViT-Prisma SAEs (Prisma-Multimodal/ViT-Prisma, ``vit_prisma/sae/sae.py``, ``sae/config.py``).

Files: a ``.pt`` weights file (the Hugging Face repos name it ``weights.pt``; training writes
``n_images_<N>.pt``) and ``config.json`` in the same folder (``VisionModelSAERunnerConfig.save_config``). The
``.pt`` holds either the bare state dict, or ``{"cfg": VisionModelSAERunnerConfig, "state_dict": ...}``
(``save_model``), whose ``cfg`` is a pickled object: that form needs ``--allow-pickle``, and Prisma's own loader
then takes the config from it rather than from ``config.json``; we do the same. State dict keys
(``StandardSparseAutoencoder``)::

    W_enc [d_in, d_sae]   b_enc [d_sae]   W_dec [d_sae, d_in]   b_dec [d_in]

Config fields read: ``d_in``, ``expansion_factor`` (``d_sae = d_in * expansion_factor``), ``architecture``
(only ``standard``; ``gated`` has a gate path ours lacks), ``activation_fn_str`` (``relu``; ``topk`` with
``activation_fn_kwargs.k``, ReLU after the top k, as ours), ``normalize_activations`` (``layer_norm`` and
``constant_norm_rescale`` as SAELens — and as ours —, anything else is the identity; missing means the dataclass
default ``layer_norm``), ``is_transcoder`` (refused), ``hook_point_layer`` + ``layer_subtype`` (the hook
``blocks.{L}.{subtype}`` in Prisma's HookedViT) and ``model_name``.

Forward (``StandardSparseAutoencoder.encode``/``decode``): ``pre = (norm_in(x) - b_dec) @ W_enc + b_enc``,
``f = act(pre)``, ``x̂ = norm_out(f @ W_dec + b_dec)`` — our SAE with ``apply_b_dec_to_input=True``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

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

FORMAT = "prisma"
KEYS = ["W_enc", "b_enc", "W_dec", "b_dec"]
CONFIG_FILE = "config.json"


def read(path: Path, *, allow_pickle: bool = False) -> ImportedSAE:
    """Read a ViT-Prisma SAE: the weights ``.pt`` (its folder must hold ``config.json`` unless the ``.pt``
    carries its own pickled config), or the folder holding both."""
    weights = _weights_file(path)
    where = str(weights)
    obj, pickled = load_torch(weights.read_bytes(), file=where, fmt=FORMAT, allow_pickle=allow_pickle)
    cfg: dict[str, Any] | None = None
    cfg_from = str(weights.parent / CONFIG_FILE)
    if isinstance(obj, dict) and "state_dict" in obj and "cfg" in obj:
        state = obj["state_dict"]
        cfg, cfg_from = as_fields(obj["cfg"], file=where, what="pickled 'cfg'"), where + " ['cfg']"
    else:
        state = obj
    if cfg is None:
        cfg = _read_config(weights.parent / CONFIG_FILE, where)
    require_fields(cfg, ("d_in", "activation_fn_str"), file=cfg_from, fmt=FORMAT)
    check_keys(state, required=KEYS, file=where, fmt=FORMAT)
    d_in, d_sae = check_shapes(state["W_enc"], state["W_dec"], state["b_enc"], state["b_dec"], file=where)
    check_width(cfg.get("d_in"), d_in, name="d_in", file=cfg_from)
    if isinstance(cfg.get("expansion_factor"), int) and isinstance(cfg.get("d_in"), int):
        check_width(cfg["expansion_factor"] * cfg["d_in"], d_sae, name="d_in × expansion_factor", file=cfg_from)

    if cfg.get("is_transcoder"):
        raise SAEError("transcoders are not SAEs and cannot be imported", file=cfg_from, field="is_transcoder",
                       received=True, allowed="false")
    arch = cfg.get("architecture", "standard")
    if arch != "standard":
        raise SAEError("only standard Prisma SAEs can be imported", file=cfg_from, field="architecture",
                       received=arch, allowed="standard",
                       fix="gated SAEs gate with a separate path (b_gate, r_mag, b_mag) our SAE cannot express")
    notes: list[str] = []
    if pickled:
        notes.append("the checkpoint needed unpickling (--allow-pickle)")
    out = ImportedSAE(W_enc=state["W_enc"], W_dec=state["W_dec"], b_enc=state["b_enc"], b_dec=state["b_dec"],
                      architecture="standard", apply_b_dec_to_input=True, notes=notes,
                      source={"format": FORMAT, "file": where, "config": cfg_from})
    fn = cfg.get("activation_fn_str", "relu")
    kwargs = cfg.get("activation_fn_kwargs") or {}
    if fn == "topk":
        k = kwargs.get("k") if isinstance(kwargs, dict) else None
        if not isinstance(k, int) or isinstance(k, bool) or not 0 < k <= d_sae:
            raise SAEError("a topk Prisma SAE needs activation_fn_kwargs.k with 0 < k <= d_sae", file=cfg_from,
                           field="activation_fn_kwargs.k", received=k, allowed=f"an integer in [1, {d_sae}]")
        out.architecture, out.k = "topk", k
    elif fn != "relu":
        raise SAEError("unsupported Prisma activation function", file=cfg_from, field="activation_fn_str",
                       received=fn, allowed="relu, topk")
    if "normalize_activations" not in cfg:
        notes.append("config has no normalize_activations; Prisma's default 'layer_norm' applies")
    norm = cfg.get("normalize_activations", "layer_norm")
    out.normalize_activations = norm if norm in ("layer_norm", "constant_norm_rescale") else "none"
    layer, subtype = cfg.get("hook_point_layer"), cfg.get("layer_subtype")
    if layer is not None and subtype:
        out.hook_name = f"blocks.{layer}.{subtype}"
        if subtype != "hook_resid_post":
            notes.append(f"the SAE reads '{subtype}' of block {layer}; a hook on a whole encoder layer gives the "
                         "residual stream after the block (hook_resid_post) instead")
    model = cfg.get("model_name")
    out.model = model if isinstance(model, str) else None
    out.source.update({"hook_point": out.hook_name, "model_name": out.model,
                       "cls_token_only": cfg.get("cls_token_only"), "use_patches_only": cfg.get("use_patches_only")})
    return out


def _weights_file(path: Path) -> Path:
    if path.is_file():
        return path
    if path.is_dir():
        if (path / "weights.pt").is_file():
            return path / "weights.pt"
        found = sorted(p for p in path.glob("*.pt") if not p.name.endswith("_log_feature_sparsity.pt"))
        if len(found) == 1:
            return found[0]
        raise SAEError("cannot tell which .pt file holds the Prisma SAE weights", file=str(path),
                       received=[p.name for p in found], allowed="weights.pt, or exactly one .pt file",
                       fix="pass the weights file itself")
    raise SAEError("Prisma SAE not found", file=str(path), allowed="a weights .pt file, or the folder holding it "
                   "and config.json")


def _read_config(path: Path, weights: str) -> dict[str, Any]:
    if not path.is_file():
        raise SAEError(f"{CONFIG_FILE} is missing next to the weights", file=weights, field=CONFIG_FILE,
                       fix="download the repository's config.json into the same folder")
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, ValueError) as exc:
        raise SAEError(f"invalid JSON ({exc})", file=str(path)) from None
    if not isinstance(raw, dict):
        raise SAEError("expected a JSON object", file=str(path), received=type(raw).__name__)
    return raw
