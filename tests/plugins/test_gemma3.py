"""Gemma 3 specifics beyond the family suite: the map is the projector's 4×4 average pool; pan-and-scan follows
the processor's own setting, and its crops are views mapped, wired, intervened on and batched like the model does;
attention the capture cannot reproduce (soft-capped logits) is refused with the alternative named."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from vsp_assert import Intervention, Scratchpad
from vsp_assert.engine.attention import CAPTURE_IMPLEMENTATION, _capture_attention_forward
from vsp_assert.engine.hooks import forward_hook
from vsp_assert.engine.interventions import make_edit, resolve
from vsp_assert.errors import ModelError
from vsp_assert.testing import random_sae
from vsp_assert.testing.contract_checks import lm_input_embeds
from vsp_assert.testing.families import tiny_gemma3


@pytest.fixture(scope="module")
def gemma3():
    return tiny_gemma3()


@pytest.fixture(scope="module")
def image():
    from PIL import Image

    return Image.fromarray((np.random.RandomState(5).rand(36, 52, 3) * 255).astype("uint8"))


def tower_and_pool(model, inputs):
    """One forward's tower output (``z``, ``[ΣV, P, d]``) and the projector's pooled grid (``pooled``)."""
    seen = {}
    handles = [
        model.model.vision_tower.register_forward_hook(lambda _m, _a, out: seen.update(z=out.last_hidden_state)),
        model.model.multi_modal_projector.avg_pool.register_forward_hook(lambda _m, _a, out: seen.update(pooled=out)),
    ]
    try:
        with torch.no_grad():
            model(**inputs)
    finally:
        for handle in handles:
            handle.remove()
    return seen


def test_map_is_the_projectors_pool_of_the_hooked_patches(gemma3, image):
    adapter, model = gemma3.adapter, gemma3.model
    inputs = adapter.prepare([image], ["what color is the square ?"])
    pmap = adapter.patch_map(inputs, 0)
    rows, cols = pmap.grid
    assert (rows, cols) == (8, 8) and pmap.token_to_patch.shape == (4, 64)
    for token in range(4):  # each token: one 4×4 block of the grid, 1/16 each, blocks in row-major order
        patches = torch.nonzero(pmap.token_to_patch[token]).flatten()
        assert torch.equal(pmap.token_to_patch[token, patches], torch.full((16,), 1 / 16))
        r, c = patches // cols, patches % cols
        assert set(r.tolist()) == set(range(4 * (token // 2), 4 * (token // 2) + 4))
        assert set(c.tolist()) == set(range(4 * (token % 2), 4 * (token % 2) + 4))
    seen = tower_and_pool(model, inputs)
    pooled = seen["pooled"][0].flatten(1).T  # [4, d]: what the projector normalises and projects
    torch.testing.assert_close(pmap.token_to_patch @ seen["z"][0], pooled)


STRIPES = [(220, 30, 30), (30, 200, 40), (40, 50, 230), (230, 220, 40)]


@pytest.fixture(scope="module")
def scanning():
    """The tiny Gemma 3 whose processor has pan-and-scan on, with a Scratchpad on its default hook layer."""
    loaded = tiny_gemma3(pan_and_scan=True)
    sae = random_sae(loaded.adapter.vision_width(), 64, k=8, hook_layer=loaded.adapter.default_hook_layer())
    return loaded, Scratchpad(loaded, sae, max_new_tokens=3)


@pytest.fixture(scope="module")
def wide():
    """200×40, four 50-pixel stripes: pan-and-scan cuts it into 4 crops, one stripe each."""
    from PIL import Image

    pixels = np.zeros((40, 200, 3), dtype="uint8")
    for k, color in enumerate(STRIPES):
        pixels[:, 50 * k : 50 * (k + 1)] = color
    pixels[::7, ::9] = 255  # some texture, so no patch is constant
    return Image.fromarray(pixels)


@pytest.fixture(scope="module")
def square():
    from PIL import Image

    return Image.fromarray((np.random.RandomState(6).rand(40, 40, 3) * 255).astype("uint8"))


def test_the_adapter_preprocesses_as_the_processor_does_without_forcing_pan_and_scan(gemma3, scanning, wide):
    chat = gemma3.adapter._chat("describe the image")
    for loaded, views in ((gemma3, 1), (scanning[0], 5)):
        inputs = loaded.adapter.prepare([wide], ["describe the image"])
        plain = loaded.processor(images=[[wide]], text=[chat], return_tensors="pt", padding=True)
        assert inputs.keys() == plain.keys()
        for key in inputs:
            assert torch.equal(inputs[key], plain[key]), key
        assert inputs["pixel_values"].shape[0] == views
        assert int((inputs["input_ids"] == loaded.model.config.image_token_id).sum()) == 4 * views
    # the tiny's processor-level setting gives what a deployment asking for pan-and-scan per call gets
    options = {k: v for k, v in scanning[0].processor.images_kwargs.items() if "pan_and_scan" in k}
    per_call = gemma3.processor(images=[[wide]], text=[chat], return_tensors="pt", padding=True, **options)
    scanned = scanning[0].adapter.prepare([wide], ["describe the image"])
    assert all(torch.equal(per_call[key], scanned[key]) for key in scanned) and per_call.keys() == scanned.keys()


def test_pan_and_scan_views_and_map_follow_the_processor(scanning, wide):
    """The whole image, then its crops left to right; view k's tokens are the k-th image block's and carry the
    projector's pool of view k's patches."""
    loaded, _ = scanning
    adapter, model, processor = loaded.adapter, loaded.model, loaded.processor
    inputs = adapter.prepare([wide], ["describe the image"])
    options = {k: v for k, v in processor.images_kwargs.items() if "pan_and_scan" in k}
    assert processor.image_processor([wide], **options)["num_crops"] == [4]
    pixels = inputs["pixel_values"]  # [5, 3, 32, 32]
    whole = processor.image_processor([wide], do_pan_and_scan=False, return_tensors="pt")["pixel_values"]
    assert torch.equal(pixels[0], whole[0])
    for k in range(4):
        crop = wide.crop((50 * k, 0, 50 * (k + 1), 40))
        alone = processor.image_processor([crop], do_pan_and_scan=False, return_tensors="pt")["pixel_values"]
        torch.testing.assert_close(pixels[1 + k], alone[0])

    ids = inputs["input_ids"][0]
    config = model.config
    pmap = adapter.patch_map(inputs, 0)
    assert pmap.views == 5 and pmap.grid == (8, 8) and pmap.n_patches == 5 * 64
    assert torch.equal(pmap.image_positions, torch.nonzero(ids == config.image_token_id).flatten())
    starts = torch.nonzero(ids == config.boi_token_id).flatten()
    ends = torch.nonzero(ids == config.eoi_token_id).flatten()
    assert len(starts) == len(ends) == 5
    m = pmap.dense()  # [20, 320]
    pooling = adapter.pooling()  # [4, 64]
    for v in range(5):
        rows = slice(4 * v, 4 * (v + 1))
        assert torch.equal(pmap.image_positions[rows], torch.arange(int(starts[v]) + 1, int(ends[v])))
        assert torch.equal(m[rows, 64 * v : 64 * (v + 1)], pooling)
        assert int(m[rows].count_nonzero()) == 64  # nothing outside view v's patches
    seen = tower_and_pool(model, inputs)
    assert seen["z"].shape[0] == 5
    pooled = seen["pooled"].flatten(2).transpose(1, 2).reshape(20, -1)  # [5 views · 4 tokens, d]
    patches = adapter.patches_of(seen["z"], 1, inputs)[0]  # [320, d]
    torch.testing.assert_close(m @ patches, pooled)
    assert torch.equal(pmap.to_patches(torch.eye(20)), m)  # the sparse map maps like the dense one


def test_pan_and_scan_map_follows_the_model_wiring(scanning, wide):
    """Perturb one patch of one view at the hooked layer: exactly the LM image embeddings the map names change."""
    loaded, pad = scanning
    adapter = loaded.adapter
    single = adapter.element_inputs(adapter.prepare([wide], ["describe the image"]), 0)
    pmap = adapter.patch_map(single, 0)
    chosen = [5, 64 + 17, 2 * 64 + 40, 3 * 64 + 63, 4 * 64 + 30]  # one patch of the whole image and of each crop
    batch = adapter.repeat_inputs(single, len(chosen))

    def bump(hidden):
        assert hidden.shape[0] == 5 * len(chosen)  # every row's five views
        x = adapter.patches_of(hidden, len(chosen), batch).clone()  # [R, 320, d]
        x[torch.arange(len(chosen)), torch.tensor(chosen)] += 3.0 * torch.linspace(-1.0, 1.0, x.shape[-1])
        return adapter.with_patches(hidden, x, batch)

    plain = lm_input_embeds(loaded.model, batch)
    bumped = lm_input_embeds(loaded.model, batch, pad.hook_module, bump)
    changed = (plain != bumped).any(-1)  # [R, L]
    for r, p in enumerate(chosen):
        expected = torch.zeros_like(changed[r])
        expected[pmap.image_positions[pmap.dense()[:, p] > 0]] = True
        assert int(expected.sum()) == 1 and torch.equal(changed[r], expected), f"patch {p}"
        view_tokens = pmap.image_positions[4 * (p // 64) : 4 * (p // 64 + 1)]
        assert bool(changed[r, view_tokens].any())  # the token is one of its own view's block


def test_scratchpad_runs_and_intervenes_on_pan_and_scan_images(scanning, wide, square):
    loaded, pad = scanning
    trace = pad.run(wide, "describe the image")
    assert trace.grid == (8, 8) and trace.n_patches == 5 * 64
    assert trace.acts.shape == (5 * 64, 64) and trace.attention.shape == (trace.n_tokens, 5 * 64)
    assert trace.replay.inputs["pixel_values"].shape[0] == 5

    # a no-op edit is bit-identical; an ablation on crop 3's patches leaves every logit before its block alone
    inputs = trace.replay.inputs
    pmap = loaded.adapter.patch_map(inputs, 0)
    crop3 = list(range(3 * 64, 4 * 64))
    top = int(trace.acts[crop3].sum(0).argmax())  # the latent most active on crop 3
    noop = resolve(Intervention.ablate(), pad.labels, trace.n_patches)
    ablation = resolve(Intervention.ablate(top, patches=crop3), pad.labels, trace.n_patches)
    with torch.no_grad():
        plain = loaded.model(**inputs).logits
        with forward_hook(pad.hook_module, make_edit(pad.sae, loaded.adapter, [noop], inputs)):
            same = loaded.model(**inputs).logits
        with forward_hook(pad.hook_module, make_edit(pad.sae, loaded.adapter, [ablation], inputs)):
            ablated = loaded.model(**inputs).logits
    assert torch.equal(plain, same)
    first = int(pmap.image_positions[3 * 4])
    assert torch.equal(plain[:, :first], ablated[:, :first])
    assert not torch.allclose(plain[:, first:], ablated[:, first:])

    # the batched intervention forward runs the tower on every row's five views (no shared tower pass); an
    # uncropped image still shares one tower pass (vision_once)
    tower_rows = []
    handle = loaded.model.model.vision_tower.register_forward_pre_hook(
        lambda _m, args, kwargs: tower_rows.append((args or [kwargs.get("pixel_values")])[0].shape[0]),
        with_kwargs=True)
    try:
        specs = [Intervention.ablate(), Intervention.ablate(top, patches=crop3), Intervention.ablate(top)]
        results = pad.intervene(trace, specs)
        assert tower_rows[0] == (1 + len(specs)) * 5  # the reference row and one per intervention, 5 views each
        square_trace = pad.run(square, "what color is the square ?")
        tower_rows.clear()
        pad.intervene(square_trace, [Intervention.ablate(), Intervention.ablate(top)])
        assert tower_rows[0] == 1
    finally:
        handle.remove()
    assert results[0].p_after == results[0].p_before and not results[0].changed
    assert results[2].p_after != results[2].p_before
    alone = pad.intervene(trace, [specs[1]])[0]
    assert alone.p_after == pytest.approx(results[1].p_after, rel=1e-5, abs=1e-9)
    assert alone.changed == results[1].changed


def test_pan_and_scan_batched_run_equals_single_runs(scanning, wide, square):
    _, pad = scanning
    prompts = ["describe the image", "what color is the square ?"]
    together = pad.run_batch([wide, square], prompts)
    assert [t.n_patches for t in together] == [5 * 64, 64]
    for image, prompt, joint in zip([wide, square], prompts, together):
        alone = pad.run(image, prompt)
        assert torch.equal(alone.output_ids, joint.output_ids)
        assert alone.grid == joint.grid and alone.n_patches == joint.n_patches
        torch.testing.assert_close(joint.acts, alone.acts, rtol=1e-4, atol=1e-5)
        torch.testing.assert_close(joint.attention, alone.attention, rtol=1e-4, atol=1e-5)
        for key, value in alone.replay.inputs.items():
            assert torch.equal(joint.replay.inputs[key], value), key


def test_soft_capped_attention_is_refused_with_the_alternative(gemma3):
    attention = gemma3.model.model.language_model.layers[0].self_attn
    q = k = v = torch.randn(1, 4, 3, 8)
    with pytest.raises(ModelError, match=r"Gemma3Attention soft-caps its attention logits") as raised:
        _capture_attention_forward(attention, q, k, v, None, scaling=0.3, softcap=50.0)
    assert "attn_logit_softcapping=None" in str(raised.value) and "eager" in str(raised.value)


def test_configured_softcapping_is_captured_as_eager_runs_it(image):
    """transformers 5.24's Gemma 3 attention does not pass ``attn_logit_softcapping`` to its kernels (eager
    ignores it too), so the capture still equals eager; a version that applies it gets the ModelError above."""
    loaded = tiny_gemma3(attn_logit_softcapping=50.0)
    pad = Scratchpad(loaded, random_sae(loaded.adapter.vision_width(), 64, k=8), max_new_tokens=3)
    assert loaded.model.config.text_config._attn_implementation == CAPTURE_IMPLEMENTATION
    try:
        trace = pad.run(image, "what color is the square ?")
    except ModelError as error:
        assert "attn_logit_softcapping=None" in str(error)
        return
    inputs = loaded.adapter.teacher_forced_inputs(trace.replay.inputs, trace.output_ids)
    loaded.model.set_attn_implementation({"text_config": "eager"})
    try:
        with torch.no_grad():
            out = loaded.model(**inputs, output_attentions=True)
    finally:
        loaded.adapter.install_attention_capture()
    pmap = loaded.adapter.patch_map(inputs, 0)
    rows = torch.arange(trace.replay.prompt_len - 1, trace.replay.prompt_len - 1 + trace.n_tokens)
    att = torch.stack(out.attentions)[:, 0][:, :, rows][..., pmap.image_positions].mean(dim=(0, 1))  # [T, N_img]
    mapped = pmap.to_patches(att)
    torch.testing.assert_close(trace.attention, mapped / mapped.sum(-1, keepdim=True), rtol=1e-4, atol=1e-6)
