"""Tiny LLaVA-NeXT, LLaVA-NeXT-Video and LLaVA-OneVision (the anyres families: a base view plus tiles of the
encoder's size, stitched and unpadded with image-newline tokens; OneVision adds anyres-max bilinear downsampling;
NeXT-Video and OneVision also take video, every frame pooled 2×2).

Part of :mod:`vsp_assert.testing.families` (which lists and builds every family); the shared sizes and template
are in :mod:`vsp_assert.testing._tiny`. The OneVision and NeXT-Video processors require a torchvision-only video
processor: ``_image_only`` builds the real classes without it (their ``__call__`` unchanged), and the slot is then
filled with the torchvision-free stand-in :class:`~vsp_assert.plugins._llava_video.FrameVideoProcessor` (which the
adapter would also install).
"""

from __future__ import annotations

from typing import Any

import torch

from vsp_assert.engine.models import LoadedModel
from vsp_assert.testing import word_tokenizer
from vsp_assert.testing._tiny import _HEADS, _WIDTH, _chat_template, _finish, _text_kwargs


def tiny_llava_next(*, seed: int = 0, image_size: int = 16, patch_size: int = 4,
                    pinpoints: tuple[tuple[int, int], ...] | None = None, text_layers: int = 2,
                    max_positions: int = 4096, text_hidden: int | None = None) -> LoadedModel:
    """LLaVA-NeXT: CLIP tower on ``image_size`` views; anyres tiles from ``pinpoints`` (default 1×2, 2×1, 2×2)."""
    from transformers import CLIPVisionConfig, LlamaConfig, LlavaNextConfig, LlavaNextForConditionalGeneration
    from transformers.models.llava_next import LlavaNextProcessor
    from transformers.models.llava_next.image_processing_pil_llava_next import LlavaNextImageProcessorPil

    s = image_size
    grid = [list(p) for p in (pinpoints or ((s, 2 * s), (2 * s, s), (2 * s, 2 * s)))]
    tok = word_tokenizer()
    vision = CLIPVisionConfig(hidden_size=_WIDTH, intermediate_size=2 * _WIDTH, num_hidden_layers=2,
                              num_attention_heads=_HEADS, image_size=s, patch_size=patch_size)
    width = {"hidden_size": text_hidden, "intermediate_size": 4 * text_hidden} if text_hidden else {}
    text = LlamaConfig(**_text_kwargs(tok, num_hidden_layers=text_layers, max_position_embeddings=max_positions,
                                      **width))
    config = LlavaNextConfig(vision_config=vision, text_config=text, image_grid_pinpoints=grid,
                             image_token_index=tok.image_token_id, vision_feature_layer=-1,
                             vision_feature_select_strategy="default")
    torch.manual_seed(seed)
    model = LlavaNextForConditionalGeneration(config)
    image_processor = LlavaNextImageProcessorPil(
        size={"shortest_edge": s}, crop_size={"height": s, "width": s}, image_grid_pinpoints=grid,
        do_center_crop=True, do_pad=True,
    )
    processor = LlavaNextProcessor(image_processor=image_processor, tokenizer=tok, patch_size=patch_size,
                                   vision_feature_select_strategy="default", num_additional_image_tokens=1,
                                   chat_template=_chat_template("<image>\n"))
    return _finish(model, processor, tok, "tiny-llava-next")


def _image_only(base: type) -> type:
    """``base`` (``LlavaNextVideoProcessor``, ``LlavaOnevisionProcessor``) built without its torchvision-only video
    processor: the keyword arguments become its attributes, as its own ``__init__`` sets them (``__call__``
    unchanged)."""
    from transformers.processing_utils import ProcessorMixin

    class ImageOnly(base):  # type: ignore[misc, valid-type]
        def __init__(self, image_processor: Any = None, tokenizer: Any = None, *, chat_template: str | None = None,
                     **attributes: Any) -> None:
            for name, value in attributes.items():
                setattr(self, name, value)
            self.image_token, self.image_token_id = tokenizer.image_token, tokenizer.image_token_id
            self.video_token, self.video_token_id = tokenizer.video_token, tokenizer.video_token_id
            self.video_processor = None
            ProcessorMixin.__init__(self, image_processor, tokenizer, chat_template=chat_template)

    ImageOnly.__name__ = ImageOnly.__qualname__ = base.__name__
    return ImageOnly


def tiny_llava_next_video(*, seed: int = 0, image_size: int = 16, patch_size: int = 4,
                          pinpoints: tuple[tuple[int, int], ...] | None = None, pool_mode: str = "average"
                          ) -> LoadedModel:
    """LLaVA-NeXT-Video: LLaVA-NeXT's images (CLIP on ``image_size`` views, anyres tiles 1×2, 2×1, 2×2) and video
    frames of ``image_size`` (shortest edge, centre crop) pooled by ``spatial_pool_mode`` with stride 2."""
    from transformers import CLIPVisionConfig, LlamaConfig, LlavaNextVideoConfig, LlavaNextVideoForConditionalGeneration
    from transformers.models.llava_next.image_processing_pil_llava_next import LlavaNextImageProcessorPil
    from transformers.models.llava_next_video import LlavaNextVideoProcessor

    s = image_size
    grid = [list(p) for p in (pinpoints or ((s, 2 * s), (2 * s, s), (2 * s, 2 * s)))]
    tok = word_tokenizer(extra_specials={"video_token": "<video>"})
    vision = CLIPVisionConfig(hidden_size=_WIDTH, intermediate_size=2 * _WIDTH, num_hidden_layers=2,
                              num_attention_heads=_HEADS, image_size=s, patch_size=patch_size)
    text = LlamaConfig(**_text_kwargs(tok, max_position_embeddings=4096))
    config = LlavaNextVideoConfig(vision_config=vision, text_config=text, image_grid_pinpoints=grid,
                                  image_token_index=tok.image_token_id, video_token_index=tok.video_token_id,
                                  vision_feature_layer=-1, vision_feature_select_strategy="default",
                                  spatial_pool_mode=pool_mode, spatial_pool_stride=2)
    torch.manual_seed(seed)
    model = LlavaNextVideoForConditionalGeneration(config)
    image_processor = LlavaNextImageProcessorPil(
        size={"shortest_edge": s}, crop_size={"height": s, "width": s}, image_grid_pinpoints=grid,
        do_center_crop=True, do_pad=True,
    )
    processor = _image_only(LlavaNextVideoProcessor)(
        image_processor=image_processor, tokenizer=tok, patch_size=patch_size,
        vision_feature_select_strategy="default", num_additional_image_tokens=1,
        chat_template=_chat_template("<image>\n", "<video>\n"),
    )
    from vsp_assert.plugins import _llava_video

    _llava_video.install(processor, "llava_next_video")
    return _finish(model, processor, tok, "tiny-llava-next-video")


def tiny_llava_onevision(*, seed: int = 0, image_size: int = 16, patch_size: int = 4, max_views: int = 2,
                         pinpoints: tuple[tuple[int, int], ...] | None = None) -> LoadedModel:
    """LLaVA-OneVision: SigLIP tower on ``image_size`` views, anyres tiles (1×2, 2×1, 2×2) under
    ``anyres_max_<max_views>``: a 2×2 tile grid is bilinearly downsampled, a 2×1 or 1×2 one is not."""
    from transformers import (
        LlavaOnevisionConfig,
        LlavaOnevisionForConditionalGeneration,
        Qwen2Config,
        SiglipVisionConfig,
    )
    from transformers.models.llava_onevision import LlavaOnevisionProcessor
    from transformers.models.llava_onevision.image_processing_pil_llava_onevision import (
        LlavaOnevisionImageProcessorPil,
    )

    s = image_size
    grid = [list(p) for p in (pinpoints or ((s, 2 * s), (2 * s, s), (2 * s, 2 * s)))]
    aspect = f"anyres_max_{max_views}"
    tok = word_tokenizer(extra_specials={"video_token": "<video>"})
    image_processor = LlavaOnevisionImageProcessorPil(size={"height": s, "width": s}, image_grid_pinpoints=grid,
                                                      do_pad=True)
    processor = _image_only(LlavaOnevisionProcessor)(
        image_processor=image_processor, tokenizer=tok, num_image_tokens=(s // patch_size) ** 2,
        vision_feature_select_strategy="full", vision_aspect_ratio=aspect,
        chat_template=_chat_template("<image>\n", "<video>\n"),
    )
    from vsp_assert.plugins import _llava_video

    _llava_video.install(processor, "llava_onevision")
    vision = SiglipVisionConfig(hidden_size=_WIDTH, intermediate_size=2 * _WIDTH, num_hidden_layers=2,
                                num_attention_heads=_HEADS, image_size=s, patch_size=patch_size)
    text = Qwen2Config(**_text_kwargs(tok, max_position_embeddings=4096))
    config = LlavaOnevisionConfig(vision_config=vision, text_config=text, image_grid_pinpoints=grid,
                                  image_token_index=tok.image_token_id, video_token_index=tok.video_token_id,
                                  vision_feature_layer=-1, vision_feature_select_strategy="full",
                                  vision_aspect_ratio=aspect)
    torch.manual_seed(seed)
    model = LlavaOnevisionForConditionalGeneration(config)
    return _finish(model, processor, tok, "tiny-llava-onevision")
