"""Gemma 3 specifics beyond the family suite: the map is the projector's 4×4 average pool, and attention the
capture cannot reproduce (soft-capped logits) is refused with the alternative named."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from vsp_assert import Scratchpad
from vsp_assert.attention import CAPTURE_IMPLEMENTATION, _capture_attention_forward
from vsp_assert.errors import ModelError
from vsp_assert.testing import random_sae
from vsp_assert.testing_families import tiny_gemma3


@pytest.fixture(scope="module")
def gemma3():
    return tiny_gemma3()


@pytest.fixture(scope="module")
def image():
    from PIL import Image

    return Image.fromarray((np.random.RandomState(5).rand(36, 52, 3) * 255).astype("uint8"))


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
    pooled = seen["pooled"][0].flatten(1).T  # [4, d]: what the projector normalises and projects
    torch.testing.assert_close(pmap.token_to_patch @ seen["z"][0], pooled)


def test_pan_and_scan_is_off_so_every_image_is_one_view(gemma3):
    from PIL import Image

    wide = Image.new("RGB", (200, 40), (200, 30, 30))  # pan-and-scan would crop this one
    inputs = gemma3.adapter.prepare([wide], ["describe the image"])
    assert inputs["pixel_values"].shape[0] == 1
    assert int((inputs["input_ids"] == gemma3.model.config.image_token_id).sum()) == 4


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
    inputs = loaded.adapter.teacher_forced_inputs(trace._inputs, trace.output_ids)
    loaded.model.set_attn_implementation({"text_config": "eager"})
    try:
        with torch.no_grad():
            out = loaded.model(**inputs, output_attentions=True)
    finally:
        loaded.adapter.install_attention_capture()
    pmap = loaded.adapter.patch_map(inputs, 0)
    rows = torch.arange(trace._prompt_len - 1, trace._prompt_len - 1 + trace.n_tokens)
    att = torch.stack(out.attentions)[:, 0][:, :, rows][..., pmap.image_positions].mean(dim=(0, 1))  # [T, N_img]
    mapped = pmap.to_patches(att)
    torch.testing.assert_close(trace.attention, mapped / mapped.sum(-1, keepdim=True), rtol=1e-4, atol=1e-6)
