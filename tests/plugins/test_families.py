"""Every built-in VLM family on a tiny random-weight model of its real transformers classes and processor.

Each family (``vsp_assert.testing.families``) runs the public adapter contract
(:mod:`vsp_assert.testing.contract`, one test per check): the SAE hook sees every patch, the token ↔ patch map
agrees with the processor's placement *and* with the model's own wiring, captured attention equals eager
``output_attentions`` with the rest of the model under sdpa, no-op interventions are bit-exact and an ablation
only changes logits from the first image token on, last-layer trimming is exact, batched runs equal single runs,
and a shared image is preprocessed once. What differs by design between the families' maps is declared in
``EXPECT``. Plus attribution and its confirming ablations on every family, and the adapter registry: third-party
adapters through the entry-point group, duplicates refused.
"""

from __future__ import annotations

import importlib.metadata
import textwrap

import pytest
import torch

from vsp_assert.engine.adapter import ENTRY_POINT_GROUP, Adapter, adapter_for, register_adapter
from vsp_assert.errors import ModelError
from vsp_assert.testing.contract import CHECK_NAMES, AdapterContract, MapExpectations
from vsp_assert.testing.families import FAMILIES, tiny_model

# variants of a family's processor run through the same suite: Gemma 3 with pan-and-scan crops (several views)
VARIANTS = {"gemma3+pan_and_scan": ("gemma3", {"pan_and_scan": True})}
# the maps' shapes: patches per LM image token (Qwen's 2×2 merge, Gemma 3's 4×4 pool, the Idefics3 adapter's pixel
# shuffle — Idefics3 ×2, SmolVLM ×3 — as its config says); LLaVA-NeXT's and LLaVA-OneVision's image-newline tokens
# carry no patch, and OneVision's bilinear downsampling mixes up to 2×2 patches and may leave some out
EXPECT = {
    "qwen2_vl": MapExpectations(patches_per_token=4),
    "qwen2_5_vl": MapExpectations(patches_per_token=4),
    "qwen3_vl": MapExpectations(patches_per_token=4),
    "qwen3_vl_moe": MapExpectations(patches_per_token=4),
    "internvl": MapExpectations(patches_per_token=4),
    "aya_vision": MapExpectations(patches_per_token=4),
    "mistral3": MapExpectations(patches_per_token=4),
    "glm4v": MapExpectations(patches_per_token=4),
    "glm4v_moe": MapExpectations(patches_per_token=4),
    "gemma3": MapExpectations(patches_per_token=16),
    "llava_next": MapExpectations(empty_tokens=True, every_patch_reaches=False),
    "llava_next_video": MapExpectations(empty_tokens=True, every_patch_reaches=False),
    "llava_onevision": MapExpectations(patches_per_token=None, max_patches_per_token=4, shared_patches=True,
                                       empty_tokens=True, every_patch_reaches=False),
}
_CACHE: dict[str, AdapterContract] = {}


def contract(name: str) -> AdapterContract:
    """The contract of one family (or variant) on its tiny model, built once per session."""
    if name not in _CACHE:
        base, options = VARIANTS.get(name, (name, {}))
        loaded = tiny_model(base, **options)
        expect = EXPECT.get(base)
        if loaded.adapter.family == "idefics3":  # Idefics3 and SmolVLM: pixel shuffle by the config's scale factor
            expect = MapExpectations(patches_per_token=loaded.model.config.scale_factor ** 2)
        _CACHE[name] = AdapterContract(loaded, expect=expect)
    return _CACHE[name]


@pytest.mark.parametrize("check", CHECK_NAMES)
@pytest.mark.parametrize("family", [*FAMILIES, *VARIANTS])
def test_family_keeps_the_adapter_contract(family, check):
    result = contract(family).run(check)
    assert result.passed, str(result)


def test_vision_towers_run_sdpa_beside_the_capture():
    """The eager comparison of the attention check is against a model whose other parts run sdpa."""
    for name in FAMILIES:
        config = contract(name).model.config
        assert config.vision_config._attn_implementation == "sdpa", name


def test_llava_onevision_base_view_is_a_bijection():
    """OneVision's base view reaches the LM patch for patch (only the tiles may be downsampled)."""
    c = contract("llava_onevision")
    inputs = c.adapter.prepare(c.images, c.prompts)
    for b in range(len(c.images)):
        pmap = c.adapter.patch_map(inputs, b)
        m = pmap.dense()  # [N_img, V·P_v]
        base = pmap.grid[0] * pmap.grid[1]
        assert torch.equal(m[:base, :base], torch.eye(base)) and not bool(m[:base, base:].any())


def test_packed_family_needs_the_forward_inputs():
    c = contract("qwen2_vl")
    loaded = c.loaded
    inputs = loaded.adapter.prepare(c.images[:1], c.prompts[:1])
    with pytest.raises(ModelError, match="qwen2_vl: the packed vision sequence needs the forward's image_grid_thw"):
        loaded.adapter.patches_of(torch.zeros(int(inputs["image_grid_thw"].prod()), 32), 1)


# ---------------------------------------------------------------------- registry
def test_third_party_adapter_found_through_entry_point(tmp_path, monkeypatch):
    import vsp_assert.engine.adapter as adapters

    (tmp_path / "thirdparty_vlm.py").write_text(textwrap.dedent("""
        from vsp_assert.plugins.llava import LlavaAdapter

        class ThirdPartyAdapter(LlavaAdapter):
            family = "thirdparty"
            model_types = ("thirdparty_vlm",)
    """))
    monkeypatch.syspath_prepend(str(tmp_path))
    point = importlib.metadata.EntryPoint(name="thirdparty", value="thirdparty_vlm:ThirdPartyAdapter",
                                          group=ENTRY_POINT_GROUP)
    real = importlib.metadata.entry_points

    def fake(**kw):
        return [point] if kw.get("group") == ENTRY_POINT_GROUP else real(**kw)

    monkeypatch.setattr(importlib.metadata, "entry_points", fake)
    monkeypatch.setattr(adapters, "_ENTRY_POINTS_LOADED", False)
    monkeypatch.setattr(adapters, "_REGISTRY", dict(adapters._REGISTRY))
    found = adapter_for("thirdparty_vlm")
    assert found.__name__ == "ThirdPartyAdapter" and found.family == "thirdparty"
    assert adapter_for("llava_next").family == "llava_next"  # built-ins still there


def test_duplicate_registration_is_refused(monkeypatch):
    import vsp_assert.engine.adapter as adapters

    monkeypatch.setattr(adapters, "_REGISTRY", dict(adapters.registered()))

    class Impostor(Adapter):
        family = "impostor"
        model_types = ("qwen2_vl",)

    with pytest.raises(ModelError, match="model_type 'qwen2_vl' already has an adapter"):
        register_adapter(Impostor)
    assert adapters._REGISTRY["qwen2_vl"].family == "qwen2_vl"


@pytest.mark.parametrize("family", FAMILIES)
def test_family_attributes_and_confirms_by_ablation(family):
    """What an ``attributed:`` check runs (now confirmed by default) works on every family: the attribution is
    finite and ``[T, d_sae]``, and the confirming drop of each ablated latent equals the drop in the answer's
    log-odds that the family's own batched intervention gives (a separate code path), with no hook left behind."""
    import math

    from vsp_assert import Intervention
    from vsp_assert.engine.attribution import ablation_effects
    from vsp_assert.engine.hooks import count_hooks

    c = contract(family)
    trace = c.pad.run(c.images[0], c.prompts[0])
    attribution = trace.attribution
    assert attribution.shape == (trace.n_tokens, c.pad.sae.d_sae) and bool(torch.isfinite(attribution).all())
    assert float(attribution.abs().sum()) > 0
    top = [int(i) for i in torch.argsort(trace.image_scores, descending=True)[:3]]
    drops = ablation_effects(c.pad, trace, [[i] for i in top])[:, 0]  # [3]: token 0
    p0 = float(trace.token_probs[0])
    for latent, drop, result in zip(top, drops, c.pad.intervene(trace, [Intervention.ablate(i) for i in top])):
        p1 = result.token_p_after[0]
        want = (math.log(p0) - math.log1p(-p0)) - (math.log(p1) - math.log1p(-p1))
        assert float(drop) == pytest.approx(want, abs=1e-3), (family, latent)
    assert count_hooks(c.model) == 0


@pytest.mark.parametrize("family", FAMILIES)
def test_family_answers_about_a_blank_input_when_no_concept_explains_a_flip(family):
    """A flip no ablation explains is checked against the question's prior (engine/flip.py): the family's input is
    blanked — a still image, tiles or views, or a video frame by frame — and asked about once, through the same
    processor, with no hook left behind."""
    from vsp_assert.engine.flip import explain_flip
    from vsp_assert.engine.hooks import count_hooks
    from vsp_assert.engine.images import blank_like

    c = contract(family)
    trace = c.pad.run(c.images[0], c.prompts[0], max_new_tokens=2)  # cut short: the blank answer is cut alike
    before = c.pad.stats["generate"]
    why = explain_flip(c.pad, trace, "zebra", model="this model")
    assert not why.confirmed and c.pad.stats["generate"] == before + 1
    blank = blank_like(trace.image)
    assert why.blank_answer == c.pad.run(blank, c.prompts[0], max_new_tokens=2).answer
    frames = getattr(blank, "frames", (blank,))
    assert len(frames) == len(getattr(trace.image, "frames", (trace.image,)))
    assert all(len(set(f.getcolors(1 << 24) or [])) == 1 for f in frames)
    assert count_hooks(c.model) == 0
