"""LLaVA-OneVision specifics beyond the family suite: the map reproduces the model's own packed image features,
through anyres-max bilinear downsampling as well as without it; only the ``full`` feature strategy is served."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from vsp_assert.errors import ModelError
from vsp_assert.testing.families import tiny_llava_onevision


@pytest.fixture(scope="module")
def onevision():
    return tiny_llava_onevision()


@pytest.fixture(scope="module")
def images():
    from PIL import Image

    rng = np.random.RandomState(3)
    return [Image.fromarray((rng.rand(h, w, 3) * 255).astype("uint8")) for h, w in ((40, 40), (64, 30))]


def test_map_reproduces_the_packed_features(onevision, images):
    """``token_to_patch @ projected patches`` is what the LM receives; newline tokens are the learned newline."""
    adapter, inner = onevision.adapter, onevision.model.model
    inputs = adapter.prepare(images, ["what color is the square ?", "describe the image"])
    seen = {}
    handle = inner.multi_modal_projector.register_forward_hook(lambda _m, _a, out: seen.update(proj=out))
    try:
        with torch.no_grad():
            packed = inner.get_image_features(inputs["pixel_values"], inputs["image_sizes"]).pooler_output
    finally:
        handle.remove()
    views = adapter.views_per_image(inputs, seen["proj"].shape[0], len(images))
    downsampled = []
    for b, per_view in enumerate(torch.split(seen["proj"], views)):  # [V, P_v, d_text]
        pmap = adapter.patch_map(inputs, b)
        m = pmap.dense()  # [N_img, V·P_v]
        carrying = m.sum(1) > 0
        expected = m @ per_view.reshape(-1, per_view.shape[-1])  # [N_img, d_text]
        torch.testing.assert_close(packed[b][carrying], expected[carrying], rtol=1e-5, atol=1e-6)
        assert torch.equal(packed[b][~carrying], inner.image_newline.detach().expand(int((~carrying).sum()), -1))
        downsampled.append(bool(((m > 0).sum(1) > 1).any()))
    assert downsampled == [True, False]  # 2×2 tiles exceed anyres_max_2 and are pooled; 2×1 tiles are not


def test_only_the_full_feature_strategy(images):
    loaded = tiny_llava_onevision()
    inputs = loaded.adapter.prepare(images[:1], ["describe the image"])
    loaded.model.config.vision_feature_select_strategy = "default"
    with pytest.raises(ModelError, match="llava_onevision: only vision_feature_select_strategy='full'"):
        loaded.adapter.patch_map(inputs, 0)


def test_the_map_is_sparse_cached_per_image_size_and_maps_attention_like_the_dense_one(onevision, images):
    adapter, inner = onevision.adapter, onevision.model.model
    inputs = adapter.prepare(images[:1], ["describe the image"])
    adapter._maps.clear()
    calls = []
    real = inner.pack_image_features

    def counting(*args, **kwargs):
        calls.append(1)
        return real(*args, **kwargs)

    inner.pack_image_features = counting
    try:
        first = adapter.patch_map(inputs, 0)
        built = len(calls)
        again = adapter.patch_map(inputs, 0)  # same image size: the cached map, no packing pass
    finally:
        del inner.pack_image_features
    assert built >= 1 and len(calls) == built
    assert first.token_to_patch.is_sparse and again.token_to_patch is first.token_to_patch
    assert int((first.dense() != 0).sum(1).max()) <= 4  # bilinear: at most four patches per token
    attention = torch.rand(2, 3, first.image_positions.numel())  # [L, T, N_img]
    torch.testing.assert_close(first.to_patches(attention), attention @ first.dense())
