"""Importer for ``saev`` checkpoints (OSU-NLP-Group/saev, ``sae.pt``).

File layout (``saev/nn/modeling.py`` ``dump``/``load``, all versions): one line of JSON (the header), ``\\n``, then
a ``torch.save`` of the module's state dict — plain tensors, so it loads weights-only. State dict keys::

    W_enc [d_model, d_sae]   b_enc [d_sae]   W_dec [d_sae, d_model]   b_dec [d_model]
    activation.threshold []  (BatchTopK only, since Nov 2025: the inference threshold)

The header changed over time; what it tells us, and what the encoder computed when the file was written:

==========  ======================================================  =================================
schema      header                                                  encoder input
==========  ======================================================  =================================
(none)      flat config: ``d_vit``, ``exp_factor``, … (ReLU)        ``x - b_dec``
1           ``cls`` (``Relu``/``TopK``/``BatchTopK``) + ``cfg``      ``x - b_dec``
2           ``cfg.activation = {cls, params}``, ``d_vit``            ``x - b_dec`` before saev commit
                                                                    654befb (2025-09-05), ``x`` after
3, 4, 5     ``cfg.d_model`` (+ ``d_sae`` from 4), activation        ``x``
==========  ======================================================  =================================

``pre = enc_in @ W_enc + b_enc``; ReLU → ``standard``; TopK keeps the top k pre-activations *as they are* (no ReLU,
``k = min(top_k, d_sae)``); BatchTopK at inference is ``pre if pre > threshold else 0`` (→ ``jumprelu`` with
that threshold on every latent; ReLU when the threshold is <= 0). Decode is ``f @ W_dec + b_dec`` (Matryoshka
prefixes only matter in training; the full reconstruction is this one). A schema-2 file does not say which
side of 654befb wrote it: the caller must say (``subtract_b_dec``).

saev checkpoints do not record the ViT or the layer (they live in the activation shards' metadata). The
2024/early-2025 releases trained on activations normalised with dataset statistics (``scale_mean``,
``scale_norm``: ``(x - mean) / scalar``) that are not in the file either: pass them as the input mean and
scale when you have them; they are folded into the weights.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch

from vsp_assert.concepts.importers._common import ImportedSAE, check_keys, check_shapes, check_width, load_torch
from vsp_assert.errors import SAEError

FORMAT = "saev"
KEYS = ["W_enc", "b_enc", "W_dec", "b_dec"]
THRESHOLD_KEY = "activation.threshold"
CHANGE_COMMIT = "654befb (2025-09-05)"


def read(path: Path, *, allow_pickle: bool = False, subtract_b_dec: bool | None = None) -> ImportedSAE:
    """Read a saev ``sae.pt`` (or a folder holding one) into an :class:`ImportedSAE`."""
    file = path / "sae.pt" if path.is_dir() else path
    where = str(file)
    if not file.is_file():
        raise SAEError("saev checkpoint not found", file=where, allowed="a saev sae.pt file, or a folder holding one")
    raw = file.read_bytes()
    header, body = _split(raw, where)
    state, pickled = load_torch(body, file=where, fmt=FORMAT, allow_pickle=allow_pickle)
    check_keys(state, required=KEYS, optional=(THRESHOLD_KEY,), file=where, fmt=FORMAT)
    d_in, d_sae = check_shapes(state["W_enc"], state["W_dec"], state["b_enc"], state["b_dec"], file=where)

    schema, cfg, activation, params = _parse_header(header, where)
    check_width(cfg.get("d_model", cfg.get("d_vit")), d_in, name="d_model" if "d_model" in cfg else "d_vit",
                file=where)
    if "d_sae" in cfg:
        check_width(cfg["d_sae"], d_sae, name="d_sae", file=where)
    elif isinstance(cfg.get("exp_factor"), int):
        check_width(cfg["exp_factor"] * d_in, d_sae, name="exp_factor × d_model", file=where)

    subtract = _subtracts_b_dec(schema, subtract_b_dec, where)
    notes: list[str] = []
    if pickled:
        notes.append("the checkpoint needed unpickling (--allow-pickle)")
    out = ImportedSAE(W_enc=state["W_enc"], W_dec=state["W_dec"], b_enc=state["b_enc"], b_dec=state["b_dec"],
                      architecture="standard", apply_b_dec_to_input=subtract, notes=notes,
                      source={"format": FORMAT, "file": where, "schema": schema, "activation": activation,
                              "commit": header.get("commit"), "lib": header.get("lib")})
    if THRESHOLD_KEY in state and activation != "BatchTopK":
        raise SAEError(f"'{THRESHOLD_KEY}' belongs to a BatchTopK SAE, but the header says {activation}",
                       file=where, field=THRESHOLD_KEY, received=activation, allowed="BatchTopK")
    if activation == "Relu":
        pass
    elif activation == "TopK":
        top_k = params.get("top_k", 32)
        if not isinstance(top_k, int) or isinstance(top_k, bool) or top_k <= 0:
            raise SAEError("top_k must be a positive integer", file=where, field="top_k", received=top_k)
        out.architecture, out.k = "topk", min(top_k, d_sae)
        notes.append("saev's TopK keeps the k largest pre-activations even when negative; ours zeroes negative "
                     "ones (the two agree whenever at least k pre-activations are positive)")
    elif activation == "BatchTopK":
        if THRESHOLD_KEY not in state:
            raise SAEError("a BatchTopK checkpoint without an inference threshold is batch-dependent at inference "
                           "and cannot be imported", file=where, field=THRESHOLD_KEY, received=sorted(state),
                           fix="re-save it with a saev version that stores activation.threshold (Nov 2025 on)")
        theta = state[THRESHOLD_KEY].reshape(-1)
        if theta.numel() != 1:
            raise SAEError("the BatchTopK threshold must be one number", file=where, field=THRESHOLD_KEY,
                           received=list(state[THRESHOLD_KEY].shape), allowed="[] (a scalar)")
        t = float(theta[0])
        if t > 0:
            out.architecture = "jumprelu"
            out.threshold = torch.full((d_sae,), t, dtype=state["W_enc"].dtype)
        out.source["threshold"] = t
    else:
        raise SAEError("unsupported saev activation", file=where, field="activation", received=activation,
                       allowed="Relu, TopK, BatchTopK (with activation.threshold)")
    notes.append("saev checkpoints do not name the ViT or the layer: pass --hook-layer and --model")
    return out


def _split(raw: bytes, where: str) -> tuple[dict[str, Any], bytes]:
    newline = raw.find(b"\n")
    head = raw[:newline] if newline >= 0 else b""
    try:
        header = json.loads(head.decode("utf-8")) if head else None
    except (UnicodeDecodeError, ValueError):
        header = None
    if not isinstance(header, dict):
        raise SAEError("not a saev checkpoint: the first line is not a JSON header", file=where,
                       received=head[:40].decode("utf-8", "replace") if head else "(no first line)",
                       allowed="a JSON object on the first line, then a torch.save state dict (saev nn.dump)",
                       fix="pick the importer of the format that wrote this file")
    return header, raw[newline + 1:]


def _parse_header(header: dict[str, Any], where: str) -> tuple[int | None, dict[str, Any], str, dict[str, Any]]:
    """``(schema, cfg, activation class name, activation params)``."""
    if "schema" not in header:
        return None, header, "Relu", {}
    schema = header["schema"]
    cfg = header.get("cfg")
    if schema not in (1, 2, 3, 4, 5) or not isinstance(cfg, dict):
        raise SAEError("unknown saev header", file=where, field="schema", received=schema,
                       allowed="no schema (2024), or 1-5 with a 'cfg' object")
    if schema == 1 and header.get("cls", "SparseAutoencoderConfig") in ("Relu", "TopK", "BatchTopK"):
        return schema, cfg, header["cls"], {"top_k": cfg.get("top_k", 32)}
    act = cfg.get("activation")
    if act is None and schema == 1:
        return schema, cfg, "Relu", {}
    if not isinstance(act, dict) or not isinstance(act.get("cls"), str) or not isinstance(act.get("params"), dict):
        raise SAEError("the header's activation must be {\"cls\": NAME, \"params\": {...}}", file=where,
                       field="cfg.activation", received=act)
    return schema, cfg, act["cls"], act["params"]


def _subtracts_b_dec(schema: int | None, given: bool | None, where: str) -> bool:
    known = None if schema == 2 else (schema is None or schema == 1)
    if given is None:
        if known is None:
            raise SAEError(f"a schema-2 saev checkpoint may come from before or after saev commit {CHANGE_COMMIT}, "
                           "which stopped subtracting b_dec before encoding; the file does not say which",
                           file=where, field="schema", received=2,
                           fix="pass --subtract-b-dec yes (written before) or no (after); the header's 'commit' "
                               "names the saev commit that wrote it")
        return known
    return given
