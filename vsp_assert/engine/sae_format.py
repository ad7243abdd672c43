"""SAEs on disk: the SAELens folder format (``cfg.json`` + ``sae_weights.safetensors``), the vsp-assert sidecar
(``vsp_assert.json``), and SAELens' pretrained registry (``"sae-lens:RELEASE:SAE_ID"``).

This module owns reading, validating and writing those files, so that SAEs trained with SAELens load unchanged
and what we write SAELens reads back; the SAE it builds is :class:`vsp_assert.engine.sae_model.SAE`. Weights are
loaded with safetensors only (never pickle); a ``.pt`` state dict is read with ``torch.load(weights_only=True)``.
Every file is written atomically. Import these names from :mod:`vsp_assert.engine.sae` (the public face).

Shapes on disk (SAELens names): ``W_enc [d_in, d_sae]``, ``W_dec [d_sae, d_in]``, ``b_enc [d_sae]``,
``b_dec [d_in]``, ``threshold [d_sae]`` (jumprelu only).
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from vsp_assert.engine.labels import ConceptLabels
from vsp_assert.engine.sae_model import CFG_FILE, SAE, SIDECAR_FILE, WEIGHTS_FILE, Architecture, Normalize, SAEConfig
from vsp_assert.errors import SAEError


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
             dtype: torch.dtype | None = None, hook_layer: str | None = None, labels: bool = True) -> SAE:
    """Load an SAE folder in the SAELens format (plus the optional ``vsp_assert.json`` sidecar).

    ``path`` may be ``"shapes"`` for the SAE shipped with the shapes-world model, or
    ``"sae-lens:RELEASE:SAE_ID"`` for an SAE of SAELens' pretrained registry (needs the optional ``sae-lens``
    extra and network access to its hub). ``hook_layer`` overrides the module path the SAE reads (needed for
    registry SAEs, whose hook names are TransformerLens names, not module paths). ``device="auto"`` (a model
    spread over several devices) leaves the SAE where it loads: the Scratchpad puts it beside the hooked layer.
    ``labels=False`` skips the label file the sidecar names (``concepts build``, which (re)writes it).
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
    concept_labels = None
    if sidecar.labels and labels:
        concept_labels = ConceptLabels.load(folder / sidecar.labels, d_sae=cfg.d_sae)
    sae = SAE(
        cfg,
        weights,
        hook_layer=hook_layer or sidecar.hook_layer or cfg.hook_name,
        labels=concept_labels,
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
