"""Per-session model, SAE and Scratchpad, loaded once however many cases run.

Python fixtures and YAML items share one cache, kept on the session's :class:`~vsp_assert.config.VspConfig`
(so two in-process pytest sessions never share a model, and an xdist worker loads its own). A case file that
pins another model or SAE gets its own cache entry. ``session_loads`` counts the loads of this session.
"""

from __future__ import annotations

from typing import Any

from .config import VspConfig


def session_model(config: VspConfig, name: str | None = None) -> Any:
    from .models import load_model

    key = f"model::{name or config.model}::{config.device}::{config.dtype}"
    if key not in config.cache:
        config.cache[key] = load_model(name or config.model, device=config.device, dtype=config.dtype)
        config.cache["loads"] = config.cache.get("loads", 0) + 1
    return config.cache[key]


def session_loads(config: VspConfig) -> int:
    """How many models this session loaded (the plugin promises one per distinct model)."""
    return int(config.cache.get("loads", 0))


def session_sae(config: VspConfig, name: str | None = None) -> Any:
    from .sae import load_sae

    key = f"sae::{name or config.sae}::{config.device}"
    if key not in config.cache:
        config.cache[key] = load_sae(name or config.sae, device=config.device)
    return config.cache[key]


def session_scratchpad(config: VspConfig, model: Any = None, sae: Any = None,
                       model_name: str | None = None, sae_name: str | None = None) -> Any:
    from .scratchpad import Scratchpad

    key = f"pad::{model_name or config.model}::{sae_name or config.sae}"
    if key not in config.cache:
        model = model if model is not None else session_model(config, model_name)
        sae = sae if sae is not None else session_sae(config, sae_name)
        pad = Scratchpad(model, sae, attention_layers=config.attention_layers(),
                         max_new_tokens=config.max_new_tokens)
        pad.history = [] if (config.show or config.report) else None
        config.cache[key] = pad
    return config.cache[key]
