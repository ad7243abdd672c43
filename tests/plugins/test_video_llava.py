"""Video in LLaVA-OneVision and LLaVA-NeXT-Video: the adapter contract on clips, maps that reproduce the models' own
pooled video features, traces that name their frames, and the torchvision-free video processor's pixels.

The contract (one test per check) runs on clips of 1, 2 and 3 frames of different sizes. LLaVA-NeXT-Video takes
them in one batch; LLaVA-OneVision's model stacks a batch's clips and closes each with one newline, so its clips of
one batch share a frame count: its contract runs once per frame count, the Scratchpad splits a mixed batch by
frame count (the adapter's batch_group), and ``prepare`` refuses one by name.
(LLaVA-NeXT-Video's still-image contract runs in ``test_families.py`` with every family.)
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from vsp_assert.engine.video import Video
from vsp_assert.errors import ModelError
from vsp_assert.testing.contract import CHECK_NAMES, AdapterContract, MapExpectations
from vsp_assert.testing.families import tiny_llava_next_video, tiny_llava_onevision, tiny_model

SIZES = ((40, 40), (32, 48), (64, 30))  # (height, width) of each clip's frames: square, wide, tall
# name → (family, frames of each clip, pixel seed); seeds chosen so that the random models answer the first two
# prompts with at least one token (the attention check needs an answer)
CONTRACTS = {
    "llava_next_video[1,2,3 frames]": ("llava_next_video", (1, 2, 3), 0),
    "llava_onevision[1 frame]": ("llava_onevision", (1, 1, 1), 2),
    "llava_onevision[2 frames]": ("llava_onevision", (2, 2, 2), 0),
    "llava_onevision[3 frames]": ("llava_onevision", (3, 3, 3), 0),
}
# every pooled token averages a 2×2 window of one frame (the tiny 4×4 grids pool evenly); OneVision's newline token
# carries no patch
EXPECT = {"llava_next_video": MapExpectations(patches_per_token=4),
          "llava_onevision": MapExpectations(patches_per_token=4, empty_tokens=True)}
_CACHE: dict[str, AdapterContract] = {}


def clip(frames: int, height: int, width: int, rng: np.random.RandomState) -> Video:
    return Video(tuple(Image.fromarray((rng.rand(height, width, 3) * 255).astype("uint8")) for _ in range(frames)))


def clips(frames: tuple[int, ...], seed: int = 0) -> list[Video]:
    rng = np.random.RandomState(seed)
    return [clip(n, h, w, rng) for n, (h, w) in zip(frames, SIZES)]


def contract(name: str) -> AdapterContract:
    if name not in _CACHE:
        family, frames, seed = CONTRACTS[name]
        _CACHE[name] = AdapterContract(tiny_model(family), images=clips(frames, seed), expect=EXPECT[family])
    return _CACHE[name]


@pytest.mark.parametrize("check", CHECK_NAMES)
@pytest.mark.parametrize("name", list(CONTRACTS))
def test_video_keeps_the_adapter_contract(name, check):
    result = contract(name).run(check)
    assert result.passed, str(result)


@pytest.fixture(scope="module")
def next_video():
    return tiny_llava_next_video()


@pytest.fixture(scope="module")
def onevision():
    return tiny_llava_onevision()


# ---------------------------------------------------------------------- maps against the models' own features
def _frame_features(loaded, inputs):
    """The tower's patch features of every frame at the layer the LM reads: ``[ΣF, P_f, d]``."""
    inner = loaded.model.model
    pixels = inputs["pixel_values_videos"]
    out = inner.vision_tower(pixels.reshape(-1, *pixels.shape[2:]), output_hidden_states=True)
    hidden = out.hidden_states[loaded.model.config.vision_feature_layer]  # [ΣF, S, d]
    return hidden[:, loaded.adapter.patch_token_index(hidden.shape[1])]


@pytest.mark.parametrize("image_size", [16, 20])  # 4×4 patches pool evenly; 5×5 pool to 3×3 with uneven weights
def test_onevision_map_reproduces_the_pooled_video_features(image_size):
    """``token_to_patch @ projected patches`` is the model's ``get_video_features``, frame by frame, and the last
    token is the learned newline."""
    loaded = tiny_llava_onevision(image_size=image_size)
    adapter, inner = loaded.adapter, loaded.model.model
    inputs = adapter.prepare(clips((3,)), ["describe the video"])
    pmap = adapter.patch_map(inputs, 0)
    with torch.no_grad():
        packed = inner.get_video_features(inputs["pixel_values_videos"]).pooler_output[0]  # [3·t + 1, d_text]
        projected = inner.multi_modal_projector(_frame_features(loaded, inputs))  # [3, P_f, d_text]
    m = pmap.dense()  # [3·t + 1, 3·P_f]
    assert pmap.views == 3 and pmap.frames_per_view == 1 and m.shape == (packed.shape[0], 3 * projected.shape[1])
    torch.testing.assert_close(m[:-1] @ projected.reshape(-1, projected.shape[-1]), packed[:-1], rtol=1e-5,
                               atol=1e-6)
    assert not bool(m[-1].any()) and torch.equal(packed[-1], inner.image_newline.detach())
    if image_size == 20:  # an odd grid: edge tokens carry fewer than four patches
        assert sorted(set((m[:-1] > 0).sum(1).tolist())) == [1, 2, 4]


@pytest.mark.parametrize("mode", ["average", "max"])
def test_next_video_map_reproduces_the_resampled_video_features(mode):
    """Average pooling: ``projector(token_to_patch @ patches)`` is the model's video features. Max pooling: each
    pooled channel is the largest of the patches the map names for that token."""
    loaded = tiny_llava_next_video(pool_mode=mode)
    adapter, inner = loaded.adapter, loaded.model.model
    inputs = adapter.prepare(clips((3,), seed=1), ["describe the video"])
    pmap = adapter.patch_map(inputs, 0)
    m = pmap.dense()  # [3·t, 3·P_f]
    with torch.no_grad():
        features = _frame_features(loaded, inputs).reshape(-1, adapter.vision_width())  # [3·P_f, d]
        packed = inner.get_video_features(inputs["pixel_values_videos"]).pooler_output[0]  # [3·t, d_text]
        if mode == "average":
            torch.testing.assert_close(inner.multi_modal_projector(m @ features), packed, rtol=1e-5, atol=1e-5)
        else:
            pooled = inner.vision_resampler(features.reshape(3, -1, features.shape[-1])).reshape(-1, features.shape[-1])
            window_max = torch.stack([features[row > 0].max(0).values for row in m])  # [3·t, d]
            torch.testing.assert_close(window_max, pooled)
    assert pmap.image_positions.numel() == m.shape[0] == packed.shape[0]


def test_next_video_refuses_conv_pooling():
    adapter = tiny_llava_next_video().adapter
    adapter.model.config.spatial_pool_mode = "conv"
    with pytest.raises(ModelError, match="average or max pooling only") as err:
        adapter.patch_map(adapter.prepare(clips((1,)), ["describe the video"]), 0)
    assert err.value.field == "spatial_pool_mode"


# ---------------------------------------------------------------------- batches of clips
def test_onevision_refuses_a_batch_of_clips_of_different_lengths(onevision):
    with pytest.raises(ModelError, match="the clips of one batch must have the same number of frames") as err:
        onevision.adapter.prepare(clips((1, 2)), ["a", "b"])
    assert err.value.field == "video" and err.value.received == [1, 2]


@pytest.mark.parametrize("family", ["llava_onevision", "llava_next_video"])
def test_a_scratchpad_batch_of_clips_of_different_lengths_equals_one_by_one(family):
    """OneVision's model stacks clips, so the Scratchpad runs each frame count as its own batch (the adapter's
    batch_group); NeXT-Video packs a ragged batch itself. Either way the traces are those of single runs."""
    from vsp_assert import Scratchpad
    from vsp_assert.testing import random_sae

    loaded = tiny_model(family)
    sae = random_sae(loaded.adapter.vision_width(), 64, k=8, hook_layer=loaded.adapter.default_hook_layer())
    pad = Scratchpad(loaded, sae, max_new_tokens=2)
    videos, prompts = clips((2, 1, 3), seed=4) + clips((2,), seed=6), ["what happens ?", "describe the video",
                                                                       "is it red ?", "why ?"]
    together = pad.run_batch(videos, prompts)
    for video, prompt, joint in zip(videos, prompts, together):
        alone = pad.run(video, prompt)
        assert joint.frames == alone.frames == tuple(f"frame {i + 1}" for i in range(len(video)))
        assert joint.answer == alone.answer
        assert torch.allclose(joint.acts, alone.acts, atol=1e-5)


def test_next_video_packs_a_ragged_batch_as_the_processor_would(next_video):
    """The clip-by-clip path gives, on clips of one length, exactly what the processor gives; on a ragged batch
    each element's inputs are what that clip gives alone."""
    adapter = next_video.adapter
    prompts = ["what is moving ?", "describe the video", "is it red ?"]
    same = clips((2, 2, 2))
    texts = [adapter._chat(p, kind="video") for p in prompts]
    by_processor, by_clip = adapter.prepare_videos(same, texts), adapter.pack_ragged(same, texts)
    assert by_processor.keys() == by_clip.keys()
    for key in ("input_ids", "attention_mask"):
        assert torch.equal(by_processor[key], by_clip[key]), key
    assert torch.equal(by_processor["pixel_values_videos"].flatten(0, 1), by_clip["pixel_values_videos"][0])
    ragged = clips((1, 2, 3))
    batch = adapter.prepare(ragged, prompts)
    assert batch["pixel_values_videos"].shape[:2] == (1, 6)  # [1, ΣF, C, H, W]
    for b, (video, prompt) in enumerate(zip(ragged, prompts)):
        alone = adapter.element_inputs(adapter.prepare([video], [prompt]), 0)
        element = adapter.element_inputs(batch, b)
        assert element.keys() == alone.keys()
        for key in alone:
            assert torch.equal(element[key], alone[key]), (b, key)


# ---------------------------------------------------------------------- traces
@pytest.mark.parametrize("family", ["llava_onevision", "llava_next_video"])
def test_a_trace_of_a_video_names_its_frames(family):
    from vsp_assert import Scratchpad
    from vsp_assert.testing import random_sae

    loaded = tiny_model(family)
    sae = random_sae(loaded.adapter.vision_width(), 64, k=8, hook_layer=loaded.adapter.default_hook_layer())
    trace = Scratchpad(loaded, sae, max_new_tokens=2).run(clips((3,))[0], "what happens ?")
    rows, cols = trace.grid
    assert trace.frames == ("frame 1", "frame 2", "frame 3")
    assert (rows, cols) == loaded.adapter.grid() and trace.n_patches == 3 * rows * cols


# ---------------------------------------------------------------------- the stand-in video processor
def _frame(height: int, width: int, seed: int = 5) -> Image.Image:
    return Image.fromarray((np.random.RandomState(seed).rand(height, width, 3) * 255).astype("uint8"))


@pytest.mark.parametrize("size", [(40, 40), (40, 60), (33, 47)])
def test_onevision_one_frame_clip_gets_the_image_base_view(onevision, size):
    """OneVision resizes a frame as it resizes an image's base view (to the encoder's size, aspect not kept)."""
    processor = onevision.adapter.processor
    frame = _frame(*size)
    video = processor.video_processor([[frame]], return_tensors="pt")["pixel_values_videos"]  # [1, 1, C, H, W]
    image = processor.image_processor([frame], return_tensors="pt")["pixel_values"]  # [1, V, C, H, W]
    assert video.dtype == torch.float32 and torch.equal(video[0, 0], image[0, 0])


def test_next_video_one_square_frame_gets_the_image_base_view(next_video):
    """A square frame: the video path (shortest edge, centre crop) and the image base view (resize) agree."""
    processor = next_video.adapter.processor
    frame = _frame(40, 40)
    video = processor.video_processor([[frame]], return_tensors="pt")["pixel_values_videos"]
    image = processor.image_processor([frame], return_tensors="pt")["pixel_values"]
    assert torch.equal(video[0, 0], image[0, 0])


@pytest.mark.parametrize("size", [(40, 60), (33, 47), (61, 30)])
def test_next_video_frames_are_resized_by_shortest_edge_and_centre_cropped(next_video, size):
    """Not meant to agree with the image base view (which squeezes the whole frame): the output is the real video
    processor's — key, ``[B, F, C, crop, crop]`` float32 — and each frame is transformers' own shortest-edge resize,
    centre crop, rescale and normalisation (``image_transforms``, the numpy twins of the torchvision steps)."""
    from transformers.image_transforms import center_crop, get_resize_output_image_size, normalize, rescale, resize
    from transformers.image_utils import ChannelDimension, PILImageResampling

    processor = next_video.adapter.processor
    ip = processor.image_processor
    frames = [_frame(*size, seed=s) for s in range(2)]
    out = processor.video_processor([frames], return_tensors="pt")
    assert list(out.keys()) == ["pixel_values_videos"]
    crop = (ip.crop_size["height"], ip.crop_size["width"])
    pixels = out["pixel_values_videos"]
    assert pixels.shape == (1, 2, 3, *crop) and pixels.dtype == torch.float32
    first = ChannelDimension.FIRST
    for f, frame in enumerate(frames):
        array = np.asarray(frame).transpose(2, 0, 1)  # [C, H, W]
        target = get_resize_output_image_size(array, size=ip.size["shortest_edge"], default_to_square=False,
                                              input_data_format=first)
        x = resize(array, target, resample=PILImageResampling.BICUBIC, data_format=first, input_data_format=first)
        x = center_crop(x, crop, data_format=first, input_data_format=first)
        x = rescale(x, ip.rescale_factor, data_format=first, input_data_format=first)
        x = normalize(x, ip.image_mean, ip.image_std, data_format=first, input_data_format=first)
        assert torch.equal(pixels[0, f], torch.from_numpy(np.ascontiguousarray(x))), f
