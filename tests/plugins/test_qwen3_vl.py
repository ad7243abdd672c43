"""Qwen3-VL specifics beyond the family suite: the DeepStack taps (vision blocks whose features are added to the first
LM layers' hidden states) carry the same 2×2-merge token ↔ patch map as the main path, each tap reads exactly its
own block, and the taps before a hooked layer bypass its edits (``taps_bypassing`` names them)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from vsp_assert.engine.hooks import forward_hook
from vsp_assert.testing.families import tiny_qwen3_vl


@pytest.fixture(scope="module")
def qwen3():
    return tiny_qwen3_vl()


@pytest.fixture(scope="module")
def single(qwen3):
    from PIL import Image

    image = Image.fromarray((np.random.RandomState(4).rand(32, 48, 3) * 255).astype("uint8"))
    adapter = qwen3.adapter
    return adapter.element_inputs(adapter.prepare([image], ["what color is the square ?"]), 0)


def lm_deepstack(model, inputs, edits=()):
    """The LM's ``visual_pos_masks [B, L]`` and ``deepstack_visual_embeds`` (one ``[N_img, d_text]`` per tap) of one
    forward, with ``edits`` (``(module, edit)`` pairs) on vision blocks."""
    seen = {}

    def grab(_module, _args, kwargs):
        seen["mask"] = kwargs["visual_pos_masks"].clone()
        seen["taps"] = [t.detach().clone() for t in kwargs["deepstack_visual_embeds"]]

    handle = model.model.language_model.register_forward_pre_hook(grab, with_kwargs=True)
    try:
        with torch.no_grad():
            if not edits:
                model(**inputs)
            else:
                module, edit = edits[0]
                with forward_hook(module, edit):
                    model(**inputs)
    finally:
        handle.remove()
    return seen["mask"], seen["taps"]


def test_taps_are_listed_with_the_lm_layer_they_feed(qwen3):
    adapter = qwen3.adapter
    paths = adapter.vision_layer_paths()
    assert adapter.deepstack_taps() == [(paths[0], 0), (paths[1], 1)]
    assert adapter.default_hook_layer() == paths[-1]  # the main path's block, after every tap
    assert adapter.taps_bypassing(paths[0]) == []
    assert adapter.taps_bypassing(paths[1]) == [(paths[0], 0)]
    assert adapter.taps_bypassing(paths[2]) == [(paths[0], 0), (paths[1], 1)]


def test_each_tap_carries_the_patches_the_map_names(qwen3, single):
    """Perturb one patch at a tap's block: that tap's features change exactly at the tokens the map names."""
    adapter, model = qwen3.adapter, qwen3.model
    pmap = adapter.patch_map(single, 0)
    m = pmap.dense()  # [N_img, P]
    mask, plain = lm_deepstack(model, single)
    assert torch.equal(torch.nonzero(mask[0]).flatten(), pmap.image_positions)  # tap rows = the image tokens
    chosen = torch.randperm(pmap.n_patches, generator=torch.Generator().manual_seed(1))[:4].tolist()
    for tap, (path, _layer) in enumerate(adapter.deepstack_taps()):
        module = model.get_submodule(path)
        for p in chosen:
            def bump(hidden, p=p):
                x = adapter.patches_of(hidden, 1, single).clone()  # [1, P, d]
                x[0, p] += 3.0
                return adapter.with_patches(hidden, x, single)

            _, taps = lm_deepstack(model, single, [(module, bump)])
            changed = (taps[tap] != plain[tap]).any(-1)  # [N_img]
            assert torch.equal(changed, m[:, p] > 0), (path, p)


def test_taps_before_the_hooked_block_bypass_its_edit(qwen3, single):
    """An edit at block 1 changes tap 1 (block 1) and the main path, never tap 0 (block 0 ran before it)."""
    adapter, model = qwen3.adapter, qwen3.model
    paths = adapter.vision_layer_paths()
    _, plain = lm_deepstack(model, single)

    def zero(hidden):
        return torch.zeros_like(hidden)

    _, edited = lm_deepstack(model, single, [(model.get_submodule(paths[1]), zero)])
    assert torch.equal(edited[0], plain[0])
    assert not torch.equal(edited[1], plain[1])


def test_grouped_expert_kernels_round_text_tokens_by_batch():
    """Why the tiny MoE runs ``batched_mm``: under the default ``grouped_mm`` an ablation that reroutes image tokens
    moves the logits before the image, at rounding level only (see families_qwen3)."""
    from vsp_assert.testing.contract import AdapterContract, MapExpectations
    from vsp_assert.testing.families import tiny_qwen3_vl_moe

    loaded = tiny_qwen3_vl_moe()
    assert loaded.model.config.text_config._experts_implementation == "batched_mm"
    loaded.model.set_experts_implementation("grouped_mm")
    result = AdapterContract(loaded, expect=MapExpectations(patches_per_token=4)).run(
        "ablation_from_first_image_token")
    assert result.figure < 1e-6, str(result)
