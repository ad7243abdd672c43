"""Import published vision SAEs into our SAELens-format folder: a registry ``FORMAT → reader`` and
:func:`import_sae`.

Each reader (:mod:`.saev`, :mod:`.prisma`, :mod:`.patchsae`) reads its format's checkpoint weights-only (pickled
objects only with ``allow_pickle``), checks its keys and shapes, and maps it onto our
:class:`~vsp_assert.engine.sae.SAE` so that our ``encode``/``decode`` equal the format's own forward. Shared
pieces are in :mod:`._common`. :func:`import_sae` adds what the user knows and the file does not (the module path
of the layer in the VLM, the model, a training-time input normalisation) and writes the folder with
:func:`~vsp_assert.engine.sae.save_sae`. ``docs/sae-import.md`` lists each format's conventions and sources.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from vsp_assert.concepts.defaults import FORMATS
from vsp_assert.concepts.importers import patchsae, prisma, saev
from vsp_assert.concepts.importers._common import ImportedSAE, fold_input_affine, load_torch
from vsp_assert.errors import SAEError, did_you_mean

Reader = Callable[..., ImportedSAE]

IMPORTERS: dict[str, Reader] = {
    saev.FORMAT: saev.read,
    prisma.FORMAT: prisma.read,
    patchsae.FORMAT: patchsae.read,
}
assert tuple(IMPORTERS) == FORMATS, "concepts.defaults.FORMATS names the importers"

__all__ = ["FORMATS", "IMPORTERS", "ImportedSAE", "import_sae", "read_checkpoint"]


def read_checkpoint(fmt: str, path: str | os.PathLike[str], *, allow_pickle: bool = False,
                    subtract_b_dec: bool | None = None) -> ImportedSAE:
    """The checkpoint at ``path`` read by the ``fmt`` importer (nothing written)."""
    if fmt not in IMPORTERS:
        raise SAEError("unknown SAE format", field="format", received=fmt, allowed=", ".join(FORMATS),
                       fix=did_you_mean(fmt, FORMATS))
    if subtract_b_dec is not None and fmt != saev.FORMAT:
        raise SAEError("--subtract-b-dec applies to saev checkpoints only", field="subtract_b_dec",
                       received=fmt, allowed=saev.FORMAT, fix=f"{fmt} files state their own convention; drop it")
    source = Path(path)
    if not source.exists():
        raise SAEError("checkpoint not found", file=str(source), fix="pass the downloaded checkpoint file or folder")
    if fmt == saev.FORMAT:
        return saev.read(source, allow_pickle=allow_pickle, subtract_b_dec=subtract_b_dec)
    return IMPORTERS[fmt](source, allow_pickle=allow_pickle)


def import_sae(
    fmt: str,
    path: str | os.PathLike[str],
    out: str | os.PathLike[str],
    *,
    hook_layer: str | None = None,
    model: str | None = None,
    allow_pickle: bool = False,
    subtract_b_dec: bool | None = None,
    input_mean: torch.Tensor | str | os.PathLike[str] | None = None,
    input_scale: float | None = None,
) -> tuple[Path, ImportedSAE]:
    """Import the ``fmt`` checkpoint at ``path`` and write it as an SAE folder at ``out``.

    ``hook_layer`` is the module path in the VLM our hooks read (the format's own hook name is kept in
    ``cfg.json`` under ``import``); ``model`` overrides the model the file names. ``input_mean`` ``[d_in]``
    (a tensor, or a ``.pt``/``.npy`` file holding one) and ``input_scale`` describe a normalisation
    ``(x - mean) / scale`` the SAE was trained on; it is folded into the weights. Returns the folder and the
    imported record (its ``notes`` are caveats to show the user).
    """
    from vsp_assert.engine.sae import save_sae

    imported = read_checkpoint(fmt, path, allow_pickle=allow_pickle, subtract_b_dec=subtract_b_dec)
    mean = _vector(input_mean) if input_mean is not None else None
    fold_input_affine(imported, mean, input_scale)
    extra: dict[str, Any] = {"import": {**imported.source, "format_hook_name": imported.hook_name,
                                        "notes": list(imported.notes)}}
    folder = save_sae(
        out, W_enc=imported.W_enc, W_dec=imported.W_dec, b_enc=imported.b_enc, b_dec=imported.b_dec,
        architecture=imported.architecture, k=imported.k, threshold=imported.threshold,
        apply_b_dec_to_input=imported.apply_b_dec_to_input, normalize_activations=imported.normalize_activations,
        hook_layer=hook_layer, model=model or imported.model, extra_cfg=_jsonable(extra),
    )
    return folder, imported


def _vector(value: torch.Tensor | str | os.PathLike[str]) -> torch.Tensor:
    if isinstance(value, torch.Tensor):
        return value.detach().cpu()
    file = Path(value)
    if not file.is_file():
        raise SAEError("input mean file not found", file=str(file), field="input_mean",
                       allowed="a .pt file with one tensor [d_in] (torch.save), or a .npy file")
    if file.suffix == ".npy":
        import numpy as np

        try:
            return torch.from_numpy(np.load(file, allow_pickle=False)).to(torch.float64)
        except ValueError as exc:
            raise SAEError(f"cannot read the .npy file ({exc})", file=str(file), field="input_mean") from None
    obj, _ = load_torch(file.read_bytes(), file=str(file), fmt="input mean", allow_pickle=False)
    if not isinstance(obj, torch.Tensor):
        raise SAEError("the input mean file must hold one tensor", file=str(file), field="input_mean",
                       received=type(obj).__name__, allowed="a tensor [d_in]")
    return obj


def _jsonable(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    return str(value)
