"""InternVL and Aya Vision specifics beyond the family suite (both tile with GOT-OCR2's processor and pixel-shuffle
2×2 patches into one token): an element's views are the processor's tiles plus the thumbnail / global view, a
one-tile image has one view; the map is the model's own shuffle (a token's projector input is its patches'
features, concatenated); the feature strategies that would break the shuffle's grid are refused."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from vsp_assert.errors import ModelError
from vsp_assert.testing.families import tiny_aya_vision, tiny_internvl


@pytest.fixture(scope="module", params=["internvl", "aya_vision"])
def tiled(request):
    return tiny_internvl() if request.param == "internvl" else tiny_aya_vision()


def image(h, w, seed=0):
    from PIL import Image

    return Image.fromarray((np.random.RandomState(seed).rand(h, w, 3) * 255).astype("uint8"))


def test_views_are_the_processors_tiles_and_thumbnail(tiled):
    adapter = tiled.adapter
    images = [image(40, 40), image(30, 64), image(16, 16)]
    inputs = adapter.prepare(images, ["what color is the square ?"] * 3)
    assert adapter.element_views(inputs) == [5, 3, 1]  # 2×2 tiles + 1, 1×2 tiles + 1, one tile and no thumbnail
    assert inputs["pixel_values"].shape[0] == 9
    maps = [adapter.patch_map(inputs, b) for b in range(3)]
    assert [m.views for m in maps] == [5, 3, 1] and all(m.grid == (4, 4) for m in maps)


def test_a_tokens_projector_input_is_its_patches(tiled):
    """The model's shuffle concatenates each token's patches along the channels: every channel block of a token's
    shuffled feature is the hooked output of one patch the map names, and together they are all of them."""
    adapter, model = tiled.adapter, tiled.model
    inputs = adapter.element_inputs(adapter.prepare([image(30, 64, 1)], ["describe the image"]), 0)
    pmap = adapter.patch_map(inputs, 0)
    seen = {}
    fed = model.get_submodule(adapter.default_hook_layer())
    target = model.model.multi_modal_projector
    shuffled = target.layer_norm if tiled.adapter.family == "internvl" else target.layernorm
    hooks = [fed.register_forward_hook(lambda _m, _a, out: seen.update(z=out[0] if isinstance(out, tuple) else out)),
             shuffled.register_forward_pre_hook(lambda _m, args: seen.update(s=args[0]))]
    try:
        with torch.no_grad():
            model(**inputs)
    finally:
        for hook in hooks:
            hook.remove()
    patches = adapter.patches_of(seen["z"], 1, inputs)[0]  # [V·P_v, d]
    d = patches.shape[-1]
    tokens = seen["s"].reshape(-1, seen["s"].shape[-1])  # [N_img, 4·d]
    if adapter.family == "internvl":  # the InternViT's final norm (identity under mean pooling) sits in between
        assert isinstance(model.model.vision_tower.layernorm, torch.nn.Identity)
    for t in range(tokens.shape[0]):
        blocks = tokens[t].reshape(-1, d)  # [4, d]
        named = torch.nonzero(pmap.dense()[t]).flatten()
        matched = [int(torch.nonzero((patches == block).all(-1)).flatten()[0]) for block in blocks]
        assert sorted(matched) == named.tolist(), t


def test_feature_strategies_that_break_the_grid_are_refused():
    loaded = tiny_internvl()
    inputs = loaded.adapter.prepare([image(40, 40)], ["describe the image"])
    loaded.model.config.vision_feature_select_strategy = "full"
    with pytest.raises(ModelError, match="internvl: only vision_feature_select_strategy='default'"):
        loaded.adapter.patch_map(inputs, 0)
    loaded = tiny_aya_vision()
    loaded.model.config.vision_feature_select_strategy = "default"
    with pytest.raises(ModelError, match="aya_vision: only vision_feature_select_strategy='full'"):
        loaded.adapter.patch_map(inputs, 0)
