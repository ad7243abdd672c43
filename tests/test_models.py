"""Model loading: device placement, including a model spread with ``device_map="auto"``."""

from __future__ import annotations

import pytest

from vsp_assert import Intervention, Scratchpad, load_model, load_sae

PROMPT = "what color is the square ?"


def test_device_auto_places_with_accelerate_and_gives_the_same_results(saved, monkeypatch):
    pytest.importorskip("accelerate")
    from vsp_assert.engine.adapter import adapter_for

    plain = Scratchpad(load_model(saved["model"], device="cpu"), load_sae(saved["sae"], device="cpu"))
    adapter = adapter_for("llava")
    real_load, seen = adapter.load.__func__, {}

    def spy(cls, name, **kwargs):
        seen.update(kwargs)
        return real_load(cls, name, **kwargs)

    monkeypatch.setattr(adapter, "load", classmethod(spy))
    spread = Scratchpad(load_model(saved["model"], device="auto"), load_sae(saved["sae"], device="auto"))
    assert seen.get("device_map") == "auto"
    assert spread.sae.W_dec.device == next(spread.hook_module.parameters()).device
    a, b = plain.run(saved["image"], PROMPT), spread.run(saved["image"], PROMPT)
    assert (a.answer, a.output_ids.tolist()) == (b.answer, b.output_ids.tolist())
    assert (a.acts - b.acts).abs().max() < 1e-5
    ablate = [Intervention.ablate(saved["top_latent"])]
    ra, rb = plain.intervene(a, ablate)[0], spread.intervene(b, ablate)[0]
    assert ra.changed == rb.changed and ra.p_after == pytest.approx(rb.p_after, rel=1e-4, abs=1e-7)


def test_device_auto_without_accelerate_says_what_to_install(saved, monkeypatch):
    import importlib.util

    from vsp_assert.errors import ModelError

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "accelerate" else real(name, *a))
    with pytest.raises(ModelError, match="accelerate") as info:
        load_model(saved["model"], device="auto")
    assert "pip install accelerate" in str(info.value)
