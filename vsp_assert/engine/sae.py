"""Sparse autoencoders in the SAELens on-disk format.

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
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

import torch
from torch import nn

from vsp_assert.engine.labels import ConceptLabels
from vsp_assert.errors import SAEError

Architecture = Literal["standard", "topk", "jumprelu"]
Normalize = Literal["none", "expected_average_only_in", "constant_norm_rescale", "layer_norm"]

ARCHITECTURES: tuple[str, ...] = ("standard", "topk", "jumprelu")
NORMALIZATIONS: tuple[str, ...] = ("none", "expected_average_only_in", "constant_norm_rescale", "layer_norm")
CFG_FILE = "cfg.json"
WEIGHTS_FILE = "sae_weights.safetensors"
SIDECAR_FILE = "vsp_assert.json"


@dataclass
class SAEConfig:
    """The subset of SAELens' ``cfg.json`` that determines what an SAE computes.

    Unknown keys of the file are kept in ``extra`` and written back unchanged, so a round trip through
    vsp-assert does not lose SAELens metadata.
    """

    architecture: Architecture
    d_in: int
    d_sae: int
    k: int | None = None
    apply_b_dec_to_input: bool = True
    normalize_activations: Normalize = "none"
    dtype: str = "float32"
    hook_name: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)
    source: str | None = None  # the file it came from, for error messages

    def __post_init__(self) -> None:
        where = self.source
        if self.architecture not in ARCHITECTURES:
            raise SAEError(
                "unsupported SAE architecture",
                file=where,
                field="architecture",
                received=self.architecture,
                allowed=", ".join(ARCHITECTURES),
            )
        for name in ("d_in", "d_sae"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
                raise SAEError("must be a positive integer", file=where, field=name, received=value)
        if self.architecture == "topk":
            if not isinstance(self.k, int) or isinstance(self.k, bool) or not 0 < self.k <= self.d_sae:
                raise SAEError(
                    "a topk SAE needs k with 0 < k <= d_sae",
                    file=where,
                    field="k",
                    received=self.k,
                    allowed=f"an integer in [1, {self.d_sae}]",
                )
        for name in ("dtype", "hook_name"):
            value = getattr(self, name)
            if not isinstance(value, str) and not (name == "hook_name" and value is None):
                raise SAEError("must be text", file=where, field=name, received=value,
                               allowed="float32, float16, bfloat16, float64" if name == "dtype" else "a module path")
        if self.normalize_activations not in NORMALIZATIONS:
            raise SAEError(
                "unsupported activation normalisation",
                file=where,
                field="normalize_activations",
                received=self.normalize_activations,
                allowed=", ".join(NORMALIZATIONS),
            )

    @classmethod
    def from_dict(cls, raw: dict[str, Any], source: str | None = None) -> SAEConfig:
        raw = dict(raw)
        missing = [key for key in ("architecture", "d_in", "d_sae") if key not in raw]
        if missing:
            raise SAEError(
                "cfg.json lacks required keys",
                file=source,
                field=", ".join(missing),
                allowed="architecture, d_in, d_sae (and k for topk)",
            )
        known = {f for f in cls.__dataclass_fields__ if f not in ("extra", "source")}
        kwargs = {key: raw.pop(key) for key in list(raw) if key in known}
        return cls(**kwargs, extra=raw, source=source)

    def to_dict(self) -> dict[str, Any]:
        out = {k: v for k, v in asdict(self).items() if k not in ("extra", "source")}
        if out["k"] is None:
            del out["k"]
        if out["hook_name"] is None:
            del out["hook_name"]
        out.update(self.extra)
        return out


@dataclass
class Sidecar:
    """vsp-assert metadata stored beside the SAELens files (``vsp_assert.json``)."""

    hook_layer: str | None = None
    model: str | None = None
    labels: str | None = None

    @classmethod
    def read(cls, folder: Path) -> Sidecar:
        path = folder / SIDECAR_FILE
        if not path.exists():
            return cls()
        raw = _read_json(path)
        unknown = sorted(set(raw) - {"hook_layer", "model", "labels"})
        if unknown:
            raise SAEError(
                "unknown keys in the sidecar",
                file=str(path),
                field=unknown[0],
                received=unknown,
                allowed="hook_layer, model, labels",
            )
        for key, value in raw.items():
            if value is not None and not isinstance(value, str):
                raise SAEError("must be text", file=str(path), field=key, received=value,
                               allowed="a string (module path, model name, or label file name)")
        return cls(**raw)


class SAE(nn.Module):
    """A sparse autoencoder on one layer of a vision encoder.

    ``encode(x[..., d_in]) -> f[..., d_sae]`` and ``decode(f[..., d_sae]) -> x̂[..., d_in]`` compute what SAELens
    computes for the same files. Parameters (SAELens names and shapes):

    - ``W_enc``: ``[d_in, d_sae]``, ``b_enc``: ``[d_sae]``
    - ``W_dec``: ``[d_sae, d_in]``, ``b_dec``: ``[d_in]``
    - ``threshold``: ``[d_sae]`` (jumprelu only)
    """

    W_enc: nn.Parameter
    W_dec: nn.Parameter
    b_enc: nn.Parameter
    b_dec: nn.Parameter
    threshold: nn.Parameter  # jumprelu only

    def __init__(
        self,
        cfg: SAEConfig,
        weights: dict[str, torch.Tensor],
        *,
        hook_layer: str | None = None,
        labels: ConceptLabels | None = None,
        model_name: str | None = None,
        path: Path | None = None,
    ) -> None:
        super().__init__()
        self.cfg = cfg
        self.hook_layer = hook_layer
        self.model_name = model_name
        self.path = path
        self.labels = labels if labels is not None else ConceptLabels.empty(cfg.d_sae)
        expected = _expected_shapes(cfg)
        where = str(path / WEIGHTS_FILE) if path else None
        for name, shape in expected.items():
            if name not in weights:
                raise SAEError(
                    f"tensor '{name}' is missing for a {cfg.architecture} SAE",
                    file=where,
                    field=name,
                    received=sorted(weights),
                    allowed=", ".join(expected),
                )
            got = tuple(weights[name].shape)
            if got != shape:
                raise SAEError(
                    f"tensor '{name}' has shape {list(got)} but cfg.json (d_in={cfg.d_in}, "
                    f"d_sae={cfg.d_sae}) implies {list(shape)}",
                    file=where,
                    field=name,
                    received=list(got),
                    allowed=str(list(shape)),
                    fix="use the cfg.json that was saved with these weights",
                )
        dtype = _dtype(cfg.dtype, cfg.source)
        for name in expected:
            self.register_parameter(
                name, nn.Parameter(weights[name].detach().to(dtype).clone(memory_format=torch.contiguous_format),
                                   requires_grad=False)
            )
        if self.labels.d_sae != cfg.d_sae:
            raise SAEError(
                f"the label file was made for d_sae={self.labels.d_sae}, this SAE has d_sae={cfg.d_sae}",
                file=self.labels.source,
            )

    # ------------------------------------------------------------------ sizes
    @property
    def d_in(self) -> int:
        return self.cfg.d_in

    @property
    def d_sae(self) -> int:
        return self.cfg.d_sae

    @property
    def architecture(self) -> str:
        return self.cfg.architecture

    # ------------------------------------------------------------------ maths
    def _norm_in(self, x: torch.Tensor) -> tuple[torch.Tensor, tuple[torch.Tensor, torch.Tensor] | None]:
        """Run-time normalisation of SAELens. Returns the normalised input and what undoes it (scale, shift)."""
        mode = self.cfg.normalize_activations
        if mode == "constant_norm_rescale":
            coeff = (self.d_in**0.5) / x.norm(dim=-1, keepdim=True)  # [..., 1]
            return x * coeff, (1.0 / coeff, torch.zeros_like(coeff))
        if mode == "layer_norm":
            mu = x.mean(dim=-1, keepdim=True)  # [..., 1]
            centred = x - mu
            std = centred.std(dim=-1, keepdim=True)  # [..., 1]
            return centred / (std + 1e-5), (std, mu)
        # "none"; "expected_average_only_in" is folded into the weights by SAELens at save time and is the
        # identity at inference when no scaling factor is known, which is what SAELens' loader does too.
        return x, None

    def pre_activations(self, x: torch.Tensor) -> torch.Tensor:
        """``x[..., d_in]`` → pre-activation ``[..., d_sae]`` (after normalisation and b_dec centring)."""
        sae_in, _ = self._norm_in(x.to(self.W_enc.dtype))
        if self.cfg.apply_b_dec_to_input:
            sae_in = sae_in - self.b_dec
        return sae_in @ self.W_enc + self.b_enc

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """Latent activations ``f[..., d_sae]`` for activations ``x[..., d_in]``."""
        self._check_input(x)
        pre = self.pre_activations(x)  # [..., d_sae]
        arch = self.cfg.architecture
        if arch == "standard":
            return torch.relu(pre)
        if arch == "jumprelu":
            return torch.relu(pre) * (pre > self.threshold).to(pre.dtype)
        assert self.cfg.k is not None
        top = torch.topk(pre, k=self.cfg.k, dim=-1)
        return torch.zeros_like(pre).scatter_(-1, top.indices, torch.relu(top.values))

    def decode(self, f: torch.Tensor, x: torch.Tensor | None = None) -> torch.Tensor:
        """Reconstruction ``x̂[..., d_in]`` of latents ``f[..., d_sae]``.

        With run-time normalisation (``constant_norm_rescale``, ``layer_norm``) the reconstruction is mapped
        back with the statistics of the *input* ``x`` it was encoded from, as SAELens does; pass ``x`` then.
        """
        out = f.to(self.W_dec.dtype) @ self.W_dec + self.b_dec  # [..., d_in]
        if self._normalises:
            if x is None:
                raise SAEError(
                    f"decode needs the original input x for normalize_activations="
                    f"'{self.cfg.normalize_activations}'",
                    fix="call sae.decode(f, x=x) with the activations f was encoded from",
                )
            _, undo = self._norm_in(x.to(self.W_dec.dtype))
            assert undo is not None
            scale, shift = undo
            out = out * scale + shift
        return out

    def decoder_delta(
        self, delta_f: torch.Tensor, x: torch.Tensor, latents: torch.Tensor | None = None
    ) -> torch.Tensor:
        """The change of the reconstruction, in the input space of ``x``, caused by changing latents by
        ``delta_f[..., d_sae]``. This is what an intervention adds to the hooked activations (the SAE error
        term is kept): ``z' = z + delta_f @ W_dec`` (times the normalisation scale where there is one).

        ``latents``: ``[u]`` long. When given, ``delta_f`` is ``[..., u]`` and holds the change of those latents
        only (every other latent unchanged); the product then reads ``u`` decoder rows instead of ``d_sae``.
        """
        w_dec = self.W_dec if latents is None else self.W_dec[latents.to(self.W_dec.device)]  # [d_sae | u, d_in]
        out = delta_f.to(w_dec.dtype) @ w_dec  # [..., d_in]
        if self._normalises:
            _, undo = self._norm_in(x.to(self.W_dec.dtype))
            assert undo is not None
            out = out * undo[0]
        return out

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.decode(self.encode(x), x=x)

    @property
    def _normalises(self) -> bool:
        return self.cfg.normalize_activations in ("constant_norm_rescale", "layer_norm")

    def _check_input(self, x: torch.Tensor) -> None:
        if x.shape[-1] != self.d_in:
            raise SAEError(
                f"activations have width {x.shape[-1]} but the SAE expects d_in={self.d_in}",
                file=str(self.path) if self.path else None,
                field="d_in",
                received=x.shape[-1],
                allowed=str(self.d_in),
                fix="use the SAE trained on this layer, or hook the layer whose width matches",
            )

    # ------------------------------------------------------------------ misc
    def resolve(self, concepts: Any) -> list[int]:
        """Latent ids for concept names / ``#id`` strings / ints (see :meth:`ConceptLabels.resolve_many`)."""
        return self.labels.resolve_many(concepts)

    def __repr__(self) -> str:
        return (
            f"SAE(architecture={self.architecture!r}, d_in={self.d_in}, d_sae={self.d_sae}, "
            f"k={self.cfg.k}, hook_layer={self.hook_layer!r}, concepts={len(self.labels.concepts)})"
        )


def _expected_shapes(cfg: SAEConfig) -> dict[str, tuple[int, ...]]:
    shapes: dict[str, tuple[int, ...]] = {
        "W_enc": (cfg.d_in, cfg.d_sae),
        "W_dec": (cfg.d_sae, cfg.d_in),
        "b_enc": (cfg.d_sae,),
        "b_dec": (cfg.d_in,),
    }
    if cfg.architecture == "jumprelu":
        shapes["threshold"] = (cfg.d_sae,)
    return shapes


def _dtype(name: str, source: str | None) -> torch.dtype:
    table = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16,
             "float64": torch.float64}
    key = name.replace("torch.", "")
    if key not in table:
        raise SAEError("unsupported dtype", file=source, field="dtype", received=name, allowed=", ".join(table))
    return table[key]


def _read_json(path: Path) -> dict[str, Any]:
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise SAEError(f"invalid JSON ({exc.msg} at line {exc.lineno})", file=str(path), line=exc.lineno) from None
    except OSError as exc:
        raise SAEError(f"cannot read the file ({exc.strerror})", file=str(path)) from None
    except (ValueError, RecursionError) as exc:  # not UTF-8, an integer too long, nested too deeply
        raise SAEError(f"invalid JSON ({type(exc).__name__}: {str(exc)[:80]})", file=str(path)) from None
    if not isinstance(raw, dict):
        raise SAEError("expected a JSON object", file=str(path), received=type(raw).__name__)
    return raw


def _read_weights(folder: Path) -> dict[str, torch.Tensor]:
    st = folder / WEIGHTS_FILE
    if st.exists():
        from safetensors.torch import load_file

        try:
            return load_file(str(st))
        except Exception as exc:  # safetensors raises its own error types
            raise SAEError(f"cannot read the safetensors file ({exc})", file=str(st)) from None
    pt = folder / "sae_weights.pt"
    if pt.exists():
        try:
            state = torch.load(str(pt), map_location="cpu", weights_only=True)
        except Exception as exc:
            lines = [ln.strip() for ln in str(exc).splitlines() if ln.strip()] or [type(exc).__name__]
            detail = next((ln for ln in lines if "Unsupported global" in ln), lines[0]).split(". ")[0]
            raise SAEError(
                f"refusing to load ({detail}); only plain tensors are accepted, never pickled objects",
                file=str(pt),
                fix="re-save the weights with safetensors",
            ) from None
        if not isinstance(state, dict):
            raise SAEError("expected a dict of tensors", file=str(pt), received=type(state).__name__)
        return state
    raise SAEError(
        f"no weights found in {folder}",
        file=str(folder),
        allowed=f"{WEIGHTS_FILE} (or sae_weights.pt with plain tensors)",
    )


SAELENS_PREFIX = "sae-lens:"


def _from_saelens_registry(ref: str, hook_layer: str | None) -> SAE:
    """An SAE from SAELens' pretrained registry (``"sae-lens:RELEASE:SAE_ID"``), via the optional extra."""
    release, _, sae_id = ref.partition(":")
    source = SAELENS_PREFIX + ref
    if not release or not sae_id:
        raise SAEError("a registry reference names a release and an SAE id", file=source, received=ref,
                       allowed="sae-lens:RELEASE:SAE_ID")
    try:
        import sae_lens
    except ImportError:
        raise SAEError("loading from the SAELens registry needs the optional 'sae-lens' extra", file=source,
                       fix="pip install 'vsp-assert[sae-lens]', or save the SAE as a folder") from None
    try:
        loaded = sae_lens.SAE.from_pretrained(release, sae_id, device="cpu")
    except Exception as exc:  # SAELens raises its own and hub errors; one line is what the user needs
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise SAEError(f"SAELens could not load it ({reason})", file=source, received=ref,
                       fix="check the release and SAE id against SAELens' pretrained SAE list") from None
    their = loaded[0] if isinstance(loaded, tuple) else loaded  # older SAELens returns (sae, cfg, sparsity)
    raw = their.cfg.to_dict()
    cfg = SAEConfig.from_dict(raw, source=source)
    weights = {name: tensor.detach().cpu() for name, tensor in their.state_dict().items()}
    metadata = raw.get("metadata") or {}
    return SAE(cfg, weights, hook_layer=hook_layer or metadata.get("hook_name") or cfg.hook_name,
               model_name=metadata.get("model_name"))


def load_sae(path: str | os.PathLike[str], *, device: str | torch.device | None = None,
             dtype: torch.dtype | None = None, hook_layer: str | None = None) -> SAE:
    """Load an SAE folder in the SAELens format (plus the optional ``vsp_assert.json`` sidecar).

    ``path`` may be ``"shapes"`` for the SAE shipped with the shapes-world model, or
    ``"sae-lens:RELEASE:SAE_ID"`` for an SAE of SAELens' pretrained registry (needs the optional ``sae-lens``
    extra and network access to its hub). ``hook_layer`` overrides the module path the SAE reads (needed for
    registry SAEs, whose hook names are TransformerLens names, not module paths). ``device="auto"`` (a model
    spread over several devices) leaves the SAE where it loads: the Scratchpad puts it beside the hooked layer.
    """
    if str(device) == "auto":
        device = None
    if str(path).startswith(SAELENS_PREFIX):
        sae = _from_saelens_registry(str(path)[len(SAELENS_PREFIX):], hook_layer)
        if device is not None or dtype is not None:
            sae = sae.to(device=device, dtype=dtype)
        return sae.eval()
    if str(path) == "shapes":
        from vsp_assert.shapes import SAE_DIR

        path = SAE_DIR
    folder = Path(path)
    if not folder.is_dir():
        raise SAEError(
            "SAE folder not found",
            file=str(folder),
            fix=f"pass a folder holding {CFG_FILE} and {WEIGHTS_FILE} (SAELens format), or 'shapes'",
        )
    cfg_path = folder / CFG_FILE
    if not cfg_path.exists():
        raise SAEError(f"{CFG_FILE} is missing", file=str(folder), fix="save the SAE with SAELens' save format")
    cfg = SAEConfig.from_dict(_read_json(cfg_path), source=str(cfg_path))
    weights = _read_weights(folder)
    sidecar = Sidecar.read(folder)
    labels = None
    if sidecar.labels:
        labels = ConceptLabels.load(folder / sidecar.labels, d_sae=cfg.d_sae)
    sae = SAE(
        cfg,
        weights,
        hook_layer=hook_layer or sidecar.hook_layer or cfg.hook_name,
        labels=labels,
        model_name=sidecar.model,
        path=folder,
    )
    if device is not None or dtype is not None:
        sae = sae.to(device=device, dtype=dtype)
    return sae.eval()


def save_sae(
    folder: str | os.PathLike[str],
    *,
    W_enc: torch.Tensor,
    W_dec: torch.Tensor,
    b_enc: torch.Tensor,
    b_dec: torch.Tensor,
    architecture: Architecture = "topk",
    k: int | None = None,
    threshold: torch.Tensor | None = None,
    apply_b_dec_to_input: bool = True,
    normalize_activations: Normalize = "none",
    hook_layer: str | None = None,
    model: str | None = None,
    labels: ConceptLabels | None = None,
    extra_cfg: dict[str, Any] | None = None,
) -> Path:
    """Write an SAE folder in the SAELens format (+ sidecar and label file). Every file is written atomically."""
    from safetensors.torch import save_file

    from vsp_assert.files import atomic_write_bytes, atomic_write_text

    out = Path(folder)
    out.mkdir(parents=True, exist_ok=True)
    d_in, d_sae = W_enc.shape
    cfg = SAEConfig(
        architecture=architecture,
        d_in=int(d_in),
        d_sae=int(d_sae),
        k=k,
        apply_b_dec_to_input=apply_b_dec_to_input,
        normalize_activations=normalize_activations,
        dtype=str(W_enc.dtype).replace("torch.", ""),
        hook_name=hook_layer,
        extra={"device": "cpu", "metadata": {"hook_name": hook_layer, "model_name": model}, **(extra_cfg or {})},
    )
    tensors = {"W_enc": W_enc, "W_dec": W_dec, "b_enc": b_enc, "b_dec": b_dec}
    if architecture == "jumprelu":
        if threshold is None:
            raise SAEError("a jumprelu SAE needs a threshold tensor", field="threshold")
        tensors["threshold"] = threshold
    tensors = {name: t.detach().contiguous().cpu() for name, t in tensors.items()}
    SAE(cfg, tensors)  # validates shapes before anything is written
    import tempfile

    with tempfile.TemporaryDirectory(dir=out) as tmp:
        tmp_file = Path(tmp) / WEIGHTS_FILE
        save_file(tensors, str(tmp_file))
        atomic_write_bytes(out / WEIGHTS_FILE, tmp_file.read_bytes())
    atomic_write_text(out / CFG_FILE, json.dumps(cfg.to_dict(), indent=2) + "\n")
    sidecar: dict[str, Any] = {"hook_layer": hook_layer, "model": model}
    if labels is not None:
        labels.save(out / "concepts.json")
        sidecar["labels"] = "concepts.json"
    atomic_write_text(out / SIDECAR_FILE, json.dumps({k: v for k, v in sidecar.items() if v}, indent=2) + "\n")
    return out
