"""What every importer shares: the imported SAE record, checkpoint reading, key checks and input-affine folding.

- :class:`ImportedSAE` is a format's SAE already mapped onto our parameterisation (SAELens names and shapes,
  see :class:`vsp_assert.engine.sae.SAE`), plus what the format recorded about its layer and model.
- :func:`load_torch` reads a ``torch.save`` file **weights-only** (plain tensors, dicts, lists, numbers). A file
  that holds pickled objects (a trainer's config class) is refused with an error naming ``--allow-pickle``; with
  ``allow_pickle`` it is unpickled, resolving only containers, numbers, torch's tensor-rebuild functions and
  torch/numpy dtypes and classes (never a function such as ``torch.load`` or ``exec``); every other name becomes
  an inert record of its fields, so the trainer's package need not be installed. Still: trusted files only.
- :func:`check_keys` gives the one error for a checkpoint whose tensors do not match the format.
- :func:`fold_input_affine` folds a data-side normalisation ``x' = (x - mean) / scale`` that the SAE was trained on
  into the weights, exactly, so the imported SAE reads raw activations.
"""

from __future__ import annotations

import io
import pickle
import re
import types
from dataclasses import dataclass, field
from typing import Any

import torch

from vsp_assert.engine.sae import Architecture, Normalize
from vsp_assert.errors import SAEError

ALLOW_PICKLE_FIX = ("pass --allow-pickle (allow_pickle=True) to unpickle it, only if you trust where the file "
                    "came from; unpickling can run code the file names")


@dataclass
class ImportedSAE:
    """A published SAE mapped onto our SAE: ``encode``/``decode`` of :class:`~vsp_assert.engine.sae.SAE` with these
    tensors and options compute what the format's own forward computes.

    Shapes: ``W_enc [d_in, d_sae]``, ``W_dec [d_sae, d_in]``, ``b_enc [d_sae]``, ``b_dec [d_in]``,
    ``threshold [d_sae]`` (jumprelu only).
    """

    W_enc: torch.Tensor
    W_dec: torch.Tensor
    b_enc: torch.Tensor
    b_dec: torch.Tensor
    architecture: Architecture
    k: int | None = None
    threshold: torch.Tensor | None = None
    apply_b_dec_to_input: bool = True
    normalize_activations: Normalize = "none"
    hook_name: str | None = None  # the format's own name for the layer it read (informational)
    model: str | None = None  # the model the format says it was trained on
    notes: list[str] = field(default_factory=list)  # caveats the user should read
    source: dict[str, Any] = field(default_factory=dict)  # format, file, and what was read; kept in cfg.json

    @property
    def d_in(self) -> int:
        return int(self.W_enc.shape[0])

    @property
    def d_sae(self) -> int:
        return int(self.W_enc.shape[1])


# ---------------------------------------------------------------------------------------------- reading files
_SAFE_MODULES = {"collections", "copyreg", "_codecs", "pathlib", "datetime", "enum"}
_SAFE_BUILTINS = {"set", "frozenset", "dict", "list", "tuple", "int", "float", "complex", "bool", "str", "bytes",
                  "bytearray", "slice", "range", "object", "NoneType"}
_TORCH_REBUILD_MODULES = {"torch._utils", "torch._tensor", "torch.storage", "torch.nn.parameter"}
_NUMPY_NAMES = {"_reconstruct", "scalar", "dtype", "ndarray"}


def _resolvable(module: str, name: str, found: Any) -> bool:
    """Whether the unpickler may hand out the real ``module.name``: containers, numbers, tensors' rebuild functions,
    dtypes and classes — never a function that could read files, import or run code (torch.load, torch.hub.load,
    numpy.load, builtins.exec …)."""
    top = module.split(".")[0]
    if top == "builtins":
        return name in _SAFE_BUILTINS
    if (module, name) in (("copyreg", "_reconstructor"), ("_codecs", "encode")):
        return True
    if module in _SAFE_MODULES or top in ("collections", "pathlib", "datetime"):
        return isinstance(found, type)
    if top == "numpy":
        return name in _NUMPY_NAMES or module.startswith("numpy.dtypes")
    if module in _TORCH_REBUILD_MODULES:
        return name.startswith("_rebuild") or isinstance(found, type)
    if module == "torch":
        return isinstance(found, (type, torch.dtype))
    return top == "torch" and module.startswith("torch.nn.") and isinstance(found, type)


class _Record:
    """Stands in for a class the checkpoint names but we do not import; keeps the fields it was pickled with."""

    _vsp_name = "?"

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self.__dict__["_args"] = args
        self.__dict__.update(kwargs)

    def __setstate__(self, state: Any) -> None:
        if isinstance(state, tuple) and len(state) == 2:  # (dict state, slot state)
            for part in state:
                if isinstance(part, dict):
                    self.__dict__.update(part)
        elif isinstance(state, dict):
            self.__dict__.update(state)
        else:
            self.__dict__["_state"] = state


_RECORDS: dict[tuple[str, str], type] = {}


def _record_class(module: str, name: str) -> type:
    key = (module, name)
    if key not in _RECORDS:
        _RECORDS[key] = type(name, (_Record,), {"__module__": module, "_vsp_name": f"{module}.{name}"})
    return _RECORDS[key]


class _LenientUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> Any:
        if module.split(".")[0] in ("builtins", "collections", "copyreg", "_codecs", "pathlib", "datetime", "enum",
                                    "numpy", "torch"):
            try:
                found = super().find_class(module, name)
            except (ImportError, AttributeError):
                return _record_class(module, name)
            if _resolvable(module, name, found):
                return found
        return _record_class(module, name)


_lenient_pickle = types.ModuleType("vsp_lenient_pickle")
_lenient_pickle.Unpickler = _LenientUnpickler  # type: ignore[attr-defined]
_lenient_pickle.load = lambda f, **kw: _LenientUnpickler(f, **kw).load()  # type: ignore[attr-defined]
_lenient_pickle.__name__ = "vsp_lenient_pickle"


def load_torch(data: bytes, *, file: str, fmt: str, allow_pickle: bool) -> tuple[Any, bool]:
    """The object a ``torch.save`` file holds, and whether reading it needed unpickling.

    Weights-only first; a file that names other globals is refused unless ``allow_pickle``.
    """
    try:
        return torch.load(io.BytesIO(data), map_location="cpu", weights_only=True), False
    except Exception as exc:  # torch raises UnpicklingError, RuntimeError, EOFError … for bad files
        message = str(exc)
    if "Unsupported global" not in message:
        detail = _first_line(message) or "empty file"
        raise SAEError(f"cannot read it as a torch checkpoint ({detail})", file=file,
                       allowed=f"a file written by torch.save, as {fmt} writes it",
                       fix=f"check that this is a {fmt} checkpoint and that it downloaded completely") from None
    found = re.search(r"GLOBAL ([\w.]+)", message)
    what = found.group(1) if found else "a Python object"
    if not allow_pickle:
        raise SAEError(f"the checkpoint holds pickled Python objects ({what}), not only tensors; refusing to "
                       "unpickle it", file=file, received=what, allowed="plain tensors, dicts, lists, numbers",
                       fix=ALLOW_PICKLE_FIX)
    try:
        obj = torch.load(io.BytesIO(data), map_location="cpu", weights_only=False,
                         pickle_module=_lenient_pickle)
    except Exception as exc:
        raise SAEError(f"cannot unpickle the checkpoint ({_first_line(str(exc)) or type(exc).__name__})",
                       file=file, fix=f"check that this is a {fmt} checkpoint") from None
    return obj, True


def _first_line(message: str) -> str:
    lines = [ln.strip() for ln in message.splitlines() if ln.strip()]
    return lines[0].split(". ")[0] if lines else ""


def as_fields(obj: Any, *, file: str, what: str) -> dict[str, Any]:
    """A config given as a dict, a dataclass, or an unpickled record, as a plain dict of its fields."""
    if isinstance(obj, dict):
        return dict(obj)
    if hasattr(obj, "__dict__"):
        return {k: v for k, v in vars(obj).items() if not k.startswith("_vsp")}
    raise SAEError(f"the {what} is neither a mapping nor an object with fields", file=file,
                   received=type(obj).__name__, allowed="a dict or a config object")


# ---------------------------------------------------------------------------------------------- checking
def check_keys(state: Any, *, required: list[str], optional: tuple[str, ...] = (), file: str, fmt: str) -> None:
    """One clear error when ``state`` is not a dict of tensors with exactly the format's keys."""
    if not isinstance(state, dict):
        raise SAEError(f"expected a state dict of tensors for a {fmt} SAE", file=file,
                       received=type(state).__name__, allowed=", ".join(required))
    missing = [k for k in required if k not in state]
    unexpected = sorted(k for k in state if k not in required and k not in optional)
    if missing or unexpected:
        parts = []
        if missing:
            parts.append(f"missing {missing}")
        if unexpected:
            parts.append(f"unexpected {unexpected}")
        raise SAEError(f"the tensors do not match a {fmt} SAE: " + "; ".join(parts), file=file,
                       field=(missing or unexpected)[0], received=sorted(map(str, state)),
                       allowed=", ".join(required + [f"{o} (optional)" for o in optional]),
                       fix="pick the importer of the format that wrote this file (vsp-assert sae import --help)")
    for key in list(required) + [o for o in optional if o in state]:
        if not isinstance(state[key], torch.Tensor):
            raise SAEError("must be a tensor", file=file, field=key, received=type(state[key]).__name__)


def check_shapes(W_enc: torch.Tensor, W_dec: torch.Tensor, b_enc: torch.Tensor, b_dec: torch.Tensor, *,
                 file: str) -> tuple[int, int]:
    """``(d_in, d_sae)`` from ``W_enc [d_in, d_sae]``, after checking the other three agree with it."""
    if W_enc.dim() != 2:
        raise SAEError("W_enc must be a matrix [d_in, d_sae]", file=file, field="W_enc", received=list(W_enc.shape))
    d_in, d_sae = (int(n) for n in W_enc.shape)
    want = {"W_dec": (d_sae, d_in), "b_enc": (d_sae,), "b_dec": (d_in,)}
    for name, tensor in (("W_dec", W_dec), ("b_enc", b_enc), ("b_dec", b_dec)):
        if tuple(tensor.shape) != want[name]:
            raise SAEError(f"tensor '{name}' has shape {list(tensor.shape)}, but W_enc {[d_in, d_sae]} implies "
                           f"{list(want[name])}", file=file, field=name, received=list(tensor.shape),
                           allowed=str(list(want[name])), fix="the file is damaged or not of this format")
    return d_in, d_sae


def check_width(cfg_value: Any, actual: int, *, name: str, file: str) -> None:
    """A width the config states must agree with the tensors."""
    if cfg_value is None:
        return
    if not isinstance(cfg_value, int) or isinstance(cfg_value, bool) or cfg_value != actual:
        raise SAEError(f"the config says {name}={cfg_value!r} but the tensors have {actual}", file=file,
                       field=name, received=cfg_value, allowed=str(actual),
                       fix="use the config that was saved with these weights")


# ---------------------------------------------------------------------------------------------- folding
def fold_input_affine(sae: ImportedSAE, mean: torch.Tensor | None, scale: float | None) -> ImportedSAE:
    """Fold ``x' = (x - mean) / scale`` (what the SAE was trained on) into the weights, exactly.

    With ``s = scale``, ``m = mean [d_in]``: ``W_enc/s``, ``W_dec·s``, ``b_dec·s + m``; with b_dec subtracted before
    encoding, ``b_enc`` is unchanged, otherwise it becomes ``b_enc - (m/s) @ W_enc``. Pre-activations are then
    identical, so thresholds and k keep their meaning; the reconstruction is mapped back to raw activations.
    """
    if mean is None and scale is None:
        return sae
    if sae.normalize_activations != "none":
        raise SAEError("an input mean/scale cannot be combined with the format's run-time normalisation",
                       field="normalize_activations", received=sae.normalize_activations, allowed="none",
                       fix="drop --input-mean/--input-scale; the SAE normalises its input itself")
    s = 1.0 if scale is None else float(scale)
    if not s > 0 or s != s or s == float("inf"):
        raise SAEError("the input scale must be a positive finite number", field="input_scale", received=scale)
    dtype = sae.W_enc.dtype
    m = torch.zeros(sae.d_in, dtype=torch.float64) if mean is None else mean.to(torch.float64).reshape(-1)
    if m.shape != (sae.d_in,):
        raise SAEError(f"the input mean has {m.numel()} values, the SAE has d_in={sae.d_in}", field="input_mean",
                       received=list(mean.shape) if mean is not None else None, allowed=f"[{sae.d_in}]")
    W_enc = sae.W_enc.to(torch.float64)
    sae.b_enc = sae.b_enc if sae.apply_b_dec_to_input else (sae.b_enc.to(torch.float64) - (m / s) @ W_enc).to(dtype)
    sae.W_enc = (W_enc / s).to(dtype)
    sae.b_dec = (sae.b_dec.to(torch.float64) * s + m).to(dtype)
    sae.W_dec = (sae.W_dec.to(torch.float64) * s).to(dtype)
    sae.source["input_affine"] = {"mean": mean is not None, "scale": s}
    sae.notes.append(f"folded the training-time input normalisation (x - mean) / {s:g} into the weights")
    return sae


def require_fields(cfg: dict[str, Any], names: tuple[str, ...], *, file: str, fmt: str) -> None:
    """The config must carry the fields every config of ``fmt`` carries (tells one format's file from another's)."""
    missing = [n for n in names if n not in cfg]
    if missing:
        raise SAEError(f"the config does not look like a {fmt} config: missing {missing}", file=file,
                       field=missing[0], received=sorted(map(str, cfg))[:12], allowed=", ".join(names),
                       fix="pick the importer of the format that wrote this file (vsp-assert sae import --help)")
