"""The sparse autoencoder itself: its configuration (the part of SAELens' ``cfg.json`` that decides what it
computes) and the ``nn.Module`` that encodes and decodes exactly as SAELens does.

Split from :mod:`vsp_assert.engine.sae_format` (the files on disk) so that the arithmetic and its validation
read on their own; :mod:`vsp_assert.engine.sae` is the public face of both. We compute exactly what SAELens
computes for the three inference architectures we support (``standard``, ``topk``, ``jumprelu``), including its
run-time activation normalisation. The core never imports ``sae_lens``: a test checks parity against the real
library where it is installed.

Shapes: ``encode`` ``[..., d_in] → [..., d_sae]``, ``decode`` ``[..., d_sae] → [..., d_in]``; weights as named
on :class:`SAE`. The sparse paths (``encode_sparse`` → ``SparseActs [P, w]``, ``decode_sparse``, ``encode_columns``)
live in :mod:`vsp_assert.engine.sae_sparse`: no ``[P, d_sae]`` beyond one bounded tile.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

import torch
from torch import nn

from vsp_assert.engine.labels import ConceptLabels
from vsp_assert.engine.sae_sparse import decode_sparse, encode_columns, encode_sparse
from vsp_assert.engine.sparse import SparseActs
from vsp_assert.errors import SAEError

Architecture = Literal["standard", "topk", "jumprelu"]
Normalize = Literal["none", "expected_average_only_in", "constant_norm_rescale", "layer_norm"]

ARCHITECTURES: tuple[str, ...] = ("standard", "topk", "jumprelu")
NORMALIZATIONS: tuple[str, ...] = ("none", "expected_average_only_in", "constant_norm_rescale", "layer_norm")
# the SAELens folder's file names (read and written by sae_format; here because errors about weights name the file)
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

    def sae_input(self, x: torch.Tensor) -> torch.Tensor:
        """``x[..., d_in]`` → what the encoder multiplies, ``[..., d_in]``: in the weights' dtype, normalised
        and b_dec-centred."""
        sae_in, _ = self._norm_in(x.to(self.W_enc.dtype))
        if self.cfg.apply_b_dec_to_input:
            sae_in = sae_in - self.b_dec
        return sae_in

    def pre_activations(self, x: torch.Tensor) -> torch.Tensor:
        """``x[..., d_in]`` → pre-activation ``[..., d_sae]`` (after normalisation and b_dec centring)."""
        return self.sae_input(x) @ self.W_enc + self.b_enc

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

    def encode_sparse(self, x: torch.Tensor, *, chunk_bytes: int | None = None) -> SparseActs:
        """The codes of ``x[..., d_in]`` (rows flattened) as :class:`~vsp_assert.engine.sparse.SparseActs`,
        computed in tiles of at most ``chunk_bytes`` (default ``sae_sparse.ENCODE_CHUNK_BYTES``, 32 MiB): no
        ``[P, d_sae]`` tensor beyond one tile (see :mod:`vsp_assert.engine.sae_sparse`)."""
        return encode_sparse(self, x, chunk_bytes=chunk_bytes)

    def decode_sparse(self, codes: SparseActs, x: torch.Tensor | None = None) -> torch.Tensor:
        """``decode`` of sparse codes: ``x̂ [P, d_in]`` (pass ``x`` when the SAE normalises its input)."""
        return decode_sparse(self, codes, x)

    def encode_columns(self, x: torch.Tensor, latents: torch.Tensor,
                       member: torch.Tensor | None = None) -> torch.Tensor:
        """``encode(x)[..., latents]`` reading only those encoder columns (TopK: see :func:`.encode_columns`)."""
        return encode_columns(self, x, latents, member)

    def decode(self, f: torch.Tensor, x: torch.Tensor | None = None) -> torch.Tensor:
        """Reconstruction ``x̂[..., d_in]`` of latents ``f[..., d_sae]``.

        With run-time normalisation (``constant_norm_rescale``, ``layer_norm``) the reconstruction is mapped
        back with the statistics of the *input* ``x`` it was encoded from, as SAELens does; pass ``x`` then.
        """
        return self.undo_norm(f.to(self.W_dec.dtype) @ self.W_dec + self.b_dec, x)  # [..., d_in]

    def undo_norm(self, out: torch.Tensor, x: torch.Tensor | None) -> torch.Tensor:
        """A reconstruction ``[..., d_in]`` mapped back with the statistics of the input ``x`` it came from
        (the identity without run-time normalisation)."""
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
