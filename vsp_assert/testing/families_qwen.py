"""Tiny Qwen2-VL and Qwen2.5-VL (packed dynamic-resolution sequences, 2×2 merge, M-RoPE; 2.5 adds windowed
vision attention).

Part of :mod:`vsp_assert.testing.families`. Their processors require a torchvision-only video processor: the real
processor class is built with its video slot left empty (:func:`vsp_assert.plugins._qwen_video.image_only`, the
same fallback ``load_model`` uses without torchvision), and the adapter installs the torchvision-free
``FrameVideoProcessor`` there.
"""

from __future__ import annotations

from typing import Any

import torch

from vsp_assert.engine.models import LoadedModel
from vsp_assert.plugins._qwen_video import image_only
from vsp_assert.testing import word_tokenizer
from vsp_assert.testing._tiny import _HEADS, _WIDTH, _chat_template, _finish, _text_kwargs

_QWEN_SPECIALS = {
    "image_token": "<|image_pad|>", "video_token": "<|video_pad|>",
    "vision_start_token": "<|vision_start|>", "vision_end_token": "<|vision_end|>",
}


def _tiny_qwen(version: str, *, seed: int, patch_size: int, max_pixels: int) -> LoadedModel:
    from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import Qwen2VLImageProcessorPil

    if version == "2":
        from transformers import Qwen2VLConfig, Qwen2VLForConditionalGeneration, Qwen2VLProcessor

        Config: Any = Qwen2VLConfig
        Model: Any = Qwen2VLForConditionalGeneration
        Processor: Any = Qwen2VLProcessor

        vision: dict[str, Any] = {"depth": 2, "embed_dim": _WIDTH, "hidden_size": _WIDTH, "num_heads": _HEADS}
    else:
        from transformers import Qwen2_5_VLConfig, Qwen2_5_VLForConditionalGeneration, Qwen2_5_VLProcessor

        Config = Qwen2_5_VLConfig
        Model = Qwen2_5_VLForConditionalGeneration
        Processor = Qwen2_5_VLProcessor

        # window 2 merged tokens = 4 patches: windows are smaller than the tiny images, so windowing is exercised
        vision = {"depth": 2, "hidden_size": _WIDTH, "intermediate_size": 2 * _WIDTH, "num_heads": _HEADS,
                  "out_hidden_size": _WIDTH, "window_size": 4 * patch_size, "fullatt_block_indexes": [1]}
    tok = word_tokenizer(extra_specials=_QWEN_SPECIALS)
    vision.update(patch_size=patch_size, spatial_merge_size=2, temporal_patch_size=2)
    text = _text_kwargs(tok, max_position_embeddings=4096,
                        rope_parameters={"rope_type": "default", "rope_theta": 10000.0, "mrope_section": [2, 1, 1]})
    config = Config(vision_config=vision, text_config=text, image_token_id=tok.image_token_id,
                    video_token_id=tok.video_token_id, vision_start_token_id=tok.vision_start_token_id,
                    vision_end_token_id=tok.vision_end_token_id)
    torch.manual_seed(seed)
    model = Model(config)
    image_processor = Qwen2VLImageProcessorPil(min_pixels=(2 * patch_size) ** 2 * 4, max_pixels=max_pixels,
                                               patch_size=patch_size, temporal_patch_size=2, merge_size=2)
    processor = image_only(Processor)(
        image_processor=image_processor, tokenizer=tok,
        chat_template=_chat_template("<|vision_start|><|image_pad|><|vision_end|>",
                                     "<|vision_start|><|video_pad|><|vision_end|>"),
    )
    return _finish(model, processor, tok, f"tiny-qwen{version}-vl")


def tiny_qwen2_vl(*, seed: int = 0, patch_size: int = 4, max_pixels: int = 32 * 32) -> LoadedModel:
    """Qwen2-VL: dynamic resolution (≤ ``max_pixels``), 2×2 merge, M-RoPE."""
    return _tiny_qwen("2", seed=seed, patch_size=patch_size, max_pixels=max_pixels)


def tiny_qwen2_5_vl(*, seed: int = 0, patch_size: int = 4, max_pixels: int = 32 * 32) -> LoadedModel:
    """Qwen2.5-VL: as Qwen2-VL plus windowed vision attention (layer 0 windowed, layer 1 full)."""
    return _tiny_qwen("2.5", seed=seed, patch_size=patch_size, max_pixels=max_pixels)
