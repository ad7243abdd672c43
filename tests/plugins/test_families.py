"""Every built-in VLM family on a tiny random-weight model of its real transformers classes and processor.

One parametrised suite per family (``vsp_assert.testing.families``): the SAE hook sees the image's patches, the
token ↔ patch map agrees with the processor's placement *and* with the model's own wiring (perturbing one patch
at the hooked layer changes exactly the LM image embeddings the map says carry it), captured attention equals
eager ``output_attentions`` with the rest of the model under sdpa, no-op interventions are bit-exact and an
ablation only changes logits from the first image token on, and batched runs equal single runs. Plus the
adapter registry: third-party adapters through the entry-point group, duplicates refused.
"""

from __future__ import annotations

import importlib.metadata
import textwrap

import numpy as np
import pytest
import torch

from vsp_assert import Intervention, Scratchpad
from vsp_assert.engine.adapter import ENTRY_POINT_GROUP, Adapter, adapter_for, register_adapter
from vsp_assert.engine.attention import CAPTURE_IMPLEMENTATION
from vsp_assert.engine.hooks import forward_hook
from vsp_assert.engine.interventions import make_edit, resolve
from vsp_assert.errors import ModelError
from vsp_assert.testing import random_sae
from vsp_assert.testing.families import FAMILIES, tiny_model

PROMPTS = ["what color is the square ?", "is there a red circle ?", "describe the image"]
# patches per LM image token (1 elsewhere; LLaVA-OneVision's bilinear pooling is checked on its own; the Idefics3
# adapter's models — Idefics3 ×2, SmolVLM ×3 — merge scale_factor² patches, read from the config)
MERGE = {"qwen2_vl": 4, "qwen2_5_vl": 4, "gemma3": 16}
_CACHE: dict[str, tuple] = {}


@pytest.fixture(scope="module")
def images():
    from PIL import Image

    rng = np.random.RandomState(3)
    return [Image.fromarray((rng.rand(h, w, 3) * 255).astype("uint8")) for h, w in ((40, 40), (32, 48), (64, 30))]


# variants of a family's processor run through the same suite: Gemma 3 with pan-and-scan crops (several views)
VARIANTS = {"gemma3+pan_and_scan": ("gemma3", {"pan_and_scan": True})}


@pytest.fixture(params=[*FAMILIES, *VARIANTS])
def family(request):
    """(loaded model, Scratchpad) of one family (or variant), built once per module."""
    name = request.param
    if name not in _CACHE:
        base, options = VARIANTS.get(name, (name, {}))
        loaded = tiny_model(base, **options)
        sae = random_sae(loaded.adapter.vision_width(), 64, k=8, hook_layer=loaded.adapter.default_hook_layer())
        _CACHE[name] = (loaded, Scratchpad(loaded, sae, max_new_tokens=3))
    return _CACHE[name]


def hooked_output(loaded, pad, inputs):
    seen = {}

    def grab(hidden):
        seen["z"] = hidden.detach().clone()

    with forward_hook(pad.hook_module, grab), torch.no_grad():
        loaded.model(**inputs)
    return seen["z"]


class _Stop(Exception):
    pass


def lm_input_embeds(loaded, pad, inputs, edit=None):
    """``inputs_embeds [B, L, d_text]`` the LM receives (image features scattered in), the LM itself not run."""
    seen = {}

    def grab(_module, _args, kwargs):
        seen["e"] = kwargs["inputs_embeds"].detach().clone()
        raise _Stop

    inner = loaded.model.model
    lm = inner.text_model if hasattr(inner, "text_model") else inner.language_model  # Idefics3 names it text_model
    handle = lm.register_forward_pre_hook(grab, with_kwargs=True)
    try:
        with torch.no_grad():
            if edit is None:
                loaded.model(**inputs)
            else:
                with forward_hook(pad.hook_module, edit):
                    loaded.model(**inputs)
    except _Stop:
        pass
    finally:
        handle.remove()
    return seen["e"]


# ---------------------------------------------------------------------- vision side
def test_hook_sees_every_patch_of_each_image(family, images):
    loaded, pad = family
    adapter = loaded.adapter
    inputs = adapter.prepare(images, PROMPTS)
    z = hooked_output(loaded, pad, inputs)
    patches = adapter.patches_of(z, len(images), inputs)  # [B, P_max, d]
    counts = [adapter.patch_map(inputs, b).n_patches for b in range(len(images))]
    assert patches.shape == (len(images), max(counts), adapter.vision_width())
    rows = z.reshape(-1, z.shape[-1])
    n_cls = z.shape[0] if family[0].model.config.model_type in ("llava", "llava_next") else 0  # one CLS per view
    assert sum(counts) == rows.shape[0] - n_cls  # every encoder patch is a patch of exactly one image
    for b, n in enumerate(counts):
        assert bool(patches[b, :n].abs().sum(-1).gt(0).all())
        assert not bool(patches[b, n:].any())  # padding only past the element's own patches
    # the rows read are rows of the hooked output, and writing them back is the identity
    assert torch.equal(adapter.with_patches(z, patches, inputs), z)


def test_patch_map_matches_processor_placement(family, images):
    loaded, _ = family
    adapter = loaded.adapter
    inputs = adapter.prepare(images, PROMPTS)
    image_id = loaded.model.config.image_token_id
    k = MERGE.get(adapter.family, 1)
    if adapter.family == "idefics3":  # Idefics3 and SmolVLM: pixel shuffle by the config's scale factor
        k = loaded.model.config.scale_factor**2
    for b in range(len(images)):
        pmap = adapter.patch_map(inputs, b)
        assert torch.equal(pmap.image_positions, torch.nonzero(inputs["input_ids"][b] == image_id).flatten())
        m = pmap.dense()  # [N_img, P]
        carrying = m.sum(1) > 0
        assert torch.allclose(m[carrying].sum(1), torch.ones(int(carrying.sum())))
        if adapter.family == "llava_onevision":  # base view a bijection; tiles may be bilinearly downsampled
            base = pmap.grid[0] * pmap.grid[1]
            assert torch.equal(m[:base, :base], torch.eye(base)) and not bool(m[:base, base:].any())
            assert bool(((m[carrying] > 0).sum(1) <= 4).all())  # at most 2×2 neighbours per token
        else:
            assert bool(((m[carrying] > 0).sum(1) == k).all())  # one patch, or the documented k-to-one merge
            assert bool((m.gt(0).sum(0) <= 1).all())  # no patch is carried by two tokens
        if adapter.family in ("llava_next", "llava_onevision"):  # zero rows are exactly the image-newline tokens
            rows_stitched = int((~carrying).sum())
            assert rows_stitched > 0 and pmap.views == m.shape[1] // (pmap.grid[0] * pmap.grid[1])
        else:
            assert bool(carrying.all()) and bool((m.sum(0) > 0).all())  # every patch reaches the LM


def test_patch_map_follows_the_model_wiring(family, images):
    """Perturb one patch at the hooked layer: exactly the image tokens the map names get new embeddings."""
    loaded, pad = family
    adapter = loaded.adapter
    single = adapter.element_inputs(adapter.prepare([images[1]], [PROMPTS[0]]), 0)
    pmap = adapter.patch_map(single, 0)
    chosen = torch.randperm(pmap.n_patches, generator=torch.Generator().manual_seed(0))[:6].tolist()
    batch = adapter.repeat_inputs(single, len(chosen))

    def bump(hidden):
        x = adapter.patches_of(hidden, len(chosen), batch)  # [R, P, d]
        x = x.clone()
        # a non-constant bump: a constant one is invisible through the LayerNorm after SigLIP's last layer
        x[torch.arange(len(chosen)), torch.tensor(chosen)] += 3.0 * torch.linspace(-1.0, 1.0, x.shape[-1])
        return adapter.with_patches(hidden, x, batch)

    plain = lm_input_embeds(loaded, pad, batch)  # [R, L, d_text]
    bumped = lm_input_embeds(loaded, pad, batch, bump)
    changed = (plain != bumped).any(-1)  # [R, L]
    for r, p in enumerate(chosen):
        expected = torch.zeros_like(changed[r])
        expected[pmap.image_positions[pmap.dense()[:, p] > 0]] = True
        assert torch.equal(changed[r], expected), f"patch {p}"


# ---------------------------------------------------------------------- attention
def eager_patch_attention(loaded, trace, layers):
    """Eager ``output_attentions`` rows that produced each output token, mapped to patches like the Trace."""
    adapter, model = loaded.adapter, loaded.model
    inputs = adapter.teacher_forced_inputs(trace.replay.inputs, trace.output_ids)
    model.set_attn_implementation({"text_config": "eager"})
    try:
        with torch.no_grad():
            out = model(**inputs, attention_mask=torch.ones_like(inputs["input_ids"]), output_attentions=True)
    finally:
        adapter.install_attention_capture()
    att = torch.stack([out.attentions[i] for i in layers])[:, 0]  # [L, H, S, S]
    pmap = adapter.patch_map(inputs, 0)
    rows = torch.arange(trace.replay.prompt_len - 1, trace.replay.prompt_len - 1 + trace.n_tokens)
    per_token = att[:, :, rows][..., pmap.image_positions].mean(dim=(0, 1))  # [T, N_img]
    mapped = pmap.to_patches(per_token)  # [T, P]
    return mapped / mapped.sum(-1, keepdim=True)


def test_captured_attention_equals_eager(family, images):
    loaded, pad = family
    config = loaded.model.config
    assert config.text_config._attn_implementation == CAPTURE_IMPLEMENTATION
    assert config.vision_config._attn_implementation == "sdpa"
    for image, prompt in zip(images[:2], PROMPTS[:2]):
        trace = pad.run(image, prompt)
        assert trace.n_tokens > 0
        expected = eager_patch_attention(loaded, trace, pad.layers)
        torch.testing.assert_close(trace.attention, expected, rtol=1e-4, atol=1e-6)


# ---------------------------------------------------------------------- interventions
def test_noop_intervention_is_bit_identical(family, images):
    loaded, pad = family
    inputs = loaded.adapter.prepare(images[:2], PROMPTS[:2])
    n = max(loaded.adapter.patch_map(inputs, b).n_patches for b in range(2))
    rows = [resolve(Intervention.ablate(), pad.labels, n), resolve(Intervention.steer(3, scale=1.0), pad.labels, n)]
    with torch.no_grad():
        plain = loaded.model(**inputs).logits
        with forward_hook(pad.hook_module, make_edit(pad.sae, loaded.adapter, rows, inputs)):
            patched = loaded.model(**inputs).logits
    assert torch.equal(plain, patched)


def test_ablation_changes_logits_only_from_the_image_on(family, images):
    loaded, pad = family
    trace = pad.run(images[0], PROMPTS[0])
    inputs = trace.replay.inputs
    top = int(trace.image_scores.argmax())
    edit = make_edit(pad.sae, loaded.adapter, [resolve(Intervention.ablate(top), pad.labels, trace.n_patches)],
                     inputs)
    with torch.no_grad():
        plain = loaded.model(**inputs).logits
        with forward_hook(pad.hook_module, edit):
            patched = loaded.model(**inputs).logits
    first = int(loaded.adapter.patch_map(inputs, 0).image_positions[0])
    assert torch.equal(plain[:, :first], patched[:, :first])
    assert not torch.allclose(plain[:, first:], patched[:, first:])
    result = pad.ablate(trace, top)
    assert result.p_after != result.p_before


def test_last_layer_trimmed_to_the_read_positions_gives_the_same_logits_and_results(family, images):
    from vsp_assert.engine.hooks import count_hooks, last_positions_only

    loaded, pad = family
    layer = loaded.adapter.lm_last_layer()
    assert layer is not None, "the adapter finds the LM's last decoder layer"
    trace = pad.run(images[1], PROMPTS[1])
    inputs = trace.replay.inputs
    hooks = count_hooks(loaded.model)
    with torch.no_grad():
        full = loaded.model(**inputs).logits  # [1, L, V]
        for n in (1, 3):
            with last_positions_only(layer, n):
                trimmed = loaded.model(**inputs, logits_to_keep=n).logits  # [1, n, V]
            torch.testing.assert_close(trimmed, full[:, -n:], rtol=1e-5, atol=1e-5)
    assert count_hooks(loaded.model) == hooks
    specs = [Intervention.ablate(int(i)) for i in trace.image_scores.topk(3).indices]
    pad.trim_last_layer = False
    try:
        reference = pad.intervene(trace, specs)
    finally:
        pad.trim_last_layer = True
    for ref, got in zip(reference, pad.intervene(trace, specs)):
        assert got.changed == ref.changed
        assert got.p_after == pytest.approx(ref.p_after, rel=1e-4, abs=1e-7)


# ---------------------------------------------------------------------- batching
def test_batched_run_equals_single_runs(family, images):
    _, pad = family
    together = pad.run_batch(images, PROMPTS)
    for image, prompt, joint in zip(images, PROMPTS, together):
        alone = pad.run(image, prompt)
        assert torch.equal(alone.output_ids, joint.output_ids)
        assert alone.grid == joint.grid and alone.n_patches == joint.n_patches
        torch.testing.assert_close(joint.acts, alone.acts, rtol=1e-4, atol=1e-5)
        torch.testing.assert_close(joint.attention, alone.attention, rtol=1e-4, atol=1e-5)


def test_packed_family_needs_the_forward_inputs(images):
    loaded, pad = _CACHE.get("qwen2_vl") or (tiny_model("qwen2_vl"), None)
    inputs = loaded.adapter.prepare(images[:1], PROMPTS[:1])
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


def test_a_shared_image_is_preprocessed_once_with_the_same_inputs(family, images):
    loaded, pad = family
    cache = pad.image_cache
    cache.clear()
    uncached = [loaded.adapter.prepare([images[1]], [p]) for p in PROMPTS[:2]]
    hits = cache.hits
    cached = []
    for prompt in PROMPTS[:2]:
        with cache.serving(loaded.adapter.processor):
            cached.append(loaded.adapter.prepare([images[1]], [prompt]))
    assert cache.hits - hits == 1, "the second prompt about the same image reuses its preprocessing"
    for plain, served in zip(uncached, cached):
        assert plain.keys() == served.keys()
        for key in plain:
            assert torch.equal(torch.as_tensor(plain[key]), torch.as_tensor(served[key])), key
