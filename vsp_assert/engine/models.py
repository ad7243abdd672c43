"""Loading a VLM together with the adapter of its family.

``load_model`` reads the checkpoint's ``config.json`` to learn its ``model_type``, asks the adapter registry for
the family, lets the adapter load (model, processor) with ``from_pretrained``, and switches the LM to the
capturing attention implementation. ``"shapes"`` names the small model shipped inside the package. Models
built in-process (tests, notebooks) are wrapped with :meth:`LoadedModel.wrap`.

``trust_remote_code`` is passed only when the caller passes it; nothing here turns it on.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from vsp_assert.engine.adapter import Adapter, adapter_for
from vsp_assert.errors import ModelError

_DTYPES: dict[str, torch.dtype | str] = {
    "float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16, "auto": "auto",
}


@dataclass
class LoadedModel:
    """A model, its processor and its family adapter, ready for :class:`~vsp_assert.Scratchpad`."""

    model: Any  # the transformers model (an nn.Module whose submodules are reached by family-specific names)
    processor: Any
    adapter: Adapter
    name: str

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    @property
    def dtype(self) -> torch.dtype:
        return next(self.model.parameters()).dtype

    @classmethod
    def wrap(cls, model: nn.Module, processor: Any, name: str | None = None) -> LoadedModel:
        model_type = getattr(model.config, "model_type", None)
        adapter_cls = adapter_for(str(model_type))
        adapter = adapter_cls(model, processor)
        adapter.install_attention_capture()
        model.eval()
        return cls(model=model, processor=processor, adapter=adapter, name=name or model.__class__.__name__)


def resolve_dtype(dtype: str | torch.dtype | None) -> torch.dtype | str | None:
    if dtype is None or isinstance(dtype, torch.dtype):
        return dtype
    if dtype not in _DTYPES:
        raise ModelError("unsupported dtype", field="dtype", received=dtype, allowed=", ".join(_DTYPES))
    return _DTYPES[dtype]


def load_model(
    name_or_path: str | os.PathLike[str],
    *,
    device: str | torch.device | None = None,
    dtype: str | torch.dtype | None = None,
    **from_pretrained_kwargs: Any,
) -> LoadedModel:
    """Load a VLM checkpoint (folder or hub id) or ``"shapes"`` and its family adapter.

    ``device="auto"`` spreads the model over the visible GPUs (``device_map="auto"``, needs ``accelerate``);
    ``from_pretrained_kwargs`` go to the model class's ``from_pretrained`` unchanged (``trust_remote_code=True``
    only if you want it).
    """
    if str(device) == "auto":
        import importlib.util

        if importlib.util.find_spec("accelerate") is None:
            raise ModelError("device 'auto' places the model with accelerate, which is not installed",
                             field="device", received="auto", allowed="cpu, cuda, cuda:N, or auto with accelerate",
                             fix="pip install accelerate")
        from_pretrained_kwargs.setdefault("device_map", "auto")
        device = None
    name = str(name_or_path)
    if name == "shapes":
        from vsp_assert.shapes import MODEL_DIR

        name_or_path = MODEL_DIR
    from transformers import AutoConfig
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    try:
        config = AutoConfig.from_pretrained(
            str(name_or_path), trust_remote_code=from_pretrained_kwargs.get("trust_remote_code", False)
        )
    except (OSError, ValueError) as exc:
        local = Path(str(name_or_path))
        raise ModelError(
            f"cannot read the model config ({str(exc).splitlines()[0]})",
            file=str(local) if local.exists() else None,
            received=name,
            fix="pass a folder saved with save_pretrained, a hub id available offline, or 'shapes'",
        ) from None
    try:
        adapter_cls = adapter_for(config.model_type)
    except ModelError as exc:
        local = Path(str(name_or_path)) / "config.json"
        raise exc.with_context(file=str(local) if local.exists() else None) from None
    torch_dtype = resolve_dtype(dtype)
    if torch_dtype is not None:
        from_pretrained_kwargs.setdefault("dtype", torch_dtype)
    model, processor = adapter_cls.load(str(name_or_path), **from_pretrained_kwargs)
    if device is not None and "device_map" not in from_pretrained_kwargs:
        model = model.to(device)
    loaded = LoadedModel.wrap(model, processor, name=name)
    return loaded
