"""Tiny InternVL and Aya Vision (the GOT-OCR2 tiling: up to ``max_patches`` tiles of the encoder's size plus a
thumbnail view, every view stacked in ``pixel_values``, and a pixel shuffle folding 2×2 patches into one LM token).

Part of :mod:`vsp_assert.testing.families`. ``InternVLProcessor`` requires a torchvision-only video processor:
``_ImageOnlyInternVLProcessor`` is the real processor class with the video slot left empty (its ``__call__`` — the
image code path — is unchanged). The image processor is ``GotOcr2ImageProcessorPil``, the class both families'
checkpoints name, with a tile of 16 pixels instead of 448 / 364.
"""

from __future__ import annotations

import re
from typing import Any

import torch

from vsp_assert.engine.models import LoadedModel
from vsp_assert.testing import TINY_WORDS, word_tokenizer
from vsp_assert.testing._tiny import _HEADS, _WIDTH, _chat_template, _finish, _text_kwargs


def _image_only_internvl_processor() -> type:
    """``InternVLProcessor`` without its torchvision-only video processor (image path unchanged)."""
    from transformers.models.internvl import InternVLProcessor
    from transformers.processing_utils import ProcessorMixin

    class _ImageOnlyInternVLProcessor(InternVLProcessor):
        def __init__(self, image_processor: Any = None, tokenizer: Any = None, image_seq_length: int = 256,
                     chat_template: str | None = None) -> None:
            ProcessorMixin.__init__(self, image_processor, tokenizer, chat_template=chat_template)
            self.video_processor = None
            self.image_seq_length = image_seq_length
            self.start_image_token = tokenizer.start_image_token
            self.start_image_token_id = tokenizer.start_image_token_id
            self.end_image_token, self.end_image_token_id = tokenizer.end_image_token, tokenizer.end_image_token_id
            self.image_token, self.image_token_id = tokenizer.context_image_token, tokenizer.context_image_token_id
            self.video_token = tokenizer.video_token
            self.multimodal_pattern = re.compile(
                f"(?P<image>{re.escape(self.image_token)})|(?P<video>{re.escape(self.video_token)})")

    _ImageOnlyInternVLProcessor.__name__ = "InternVLProcessor"
    return _ImageOnlyInternVLProcessor


def _tiles(tile: int, max_patches: int) -> Any:
    from transformers.models.got_ocr2.image_processing_pil_got_ocr2 import GotOcr2ImageProcessorPil

    return GotOcr2ImageProcessorPil(size={"height": tile, "width": tile}, crop_to_patches=True, min_patches=1,
                                    max_patches=max_patches)


def tiny_internvl(*, seed: int = 0, tile: int = 16, patch_size: int = 4, max_patches: int = 4) -> LoadedModel:
    """InternVL: InternViT on 16-pixel tiles (4×4 patches, CLS first) + thumbnail; pixel shuffle ½ → 2×2 tokens per
    view; Qwen2 LM. The contract's 40×40 and 48×32 images get 4 tiles + thumbnail, 30×64 gets 2 + thumbnail."""
    from transformers import InternVLConfig, InternVLForConditionalGeneration, Qwen2Config
    from transformers.models.internvl.configuration_internvl import InternVLVisionConfig

    specials = {"start_image_token": "<img>", "end_image_token": "</img>", "context_image_token": "<IMG_CONTEXT>",
                "video_token": "<video>"}
    tok = word_tokenizer(extra_specials=specials)
    per_view = (tile // patch_size // 2) ** 2
    processor = _image_only_internvl_processor()(image_processor=_tiles(tile, max_patches), tokenizer=tok,
                                                 image_seq_length=per_view,
                                                 chat_template=_chat_template("<IMG_CONTEXT>\n"))
    vision = InternVLVisionConfig(hidden_size=_WIDTH, intermediate_size=2 * _WIDTH, num_hidden_layers=2,
                                  num_attention_heads=_HEADS, image_size=tile, patch_size=patch_size)
    text = Qwen2Config(**_text_kwargs(tok, max_position_embeddings=4096))
    config = InternVLConfig(vision_config=vision, text_config=text, image_token_id=tok.context_image_token_id,
                            image_seq_length=per_view)
    torch.manual_seed(seed)
    model = InternVLForConditionalGeneration(config)
    return _finish(model, processor, tok, "tiny-internvl")


def tiny_aya_vision(*, seed: int = 0, tile: int = 16, patch_size: int = 4, max_patches: int = 4,
                    sliding_window: int = 12) -> LoadedModel:
    """Aya Vision: SigLIP on 16-pixel tiles (4×4 patches) + global view; pixel shuffle ×2 → 2×2 tokens per view;
    Cohere2 LM with a sliding-window layer (window 12, shorter than the image block) and a global one."""
    from transformers import AyaVisionConfig, AyaVisionForConditionalGeneration, Cohere2Config, SiglipVisionConfig
    from transformers.models.aya_vision import AyaVisionProcessor

    specials = {"image_token": "<image>", "start_of_img_token": "<|START_OF_IMG|>",
                "end_of_img_token": "<|END_OF_IMG|>", "img_patch_token": "<|IMG_PATCH|>",
                "img_line_break_token": "<|IMG_LINE_BREAK|>", "tile_global_token": "TILE_GLOBAL"}
    tok = word_tokenizer((*TINY_WORDS, *(f"TILE_{i}" for i in range(1, max_patches + 1))), extra_specials=specials)
    processor = AyaVisionProcessor(image_processor=_tiles(tile, max_patches), tokenizer=tok, patch_size=patch_size,
                                   img_size=tile, downsample_factor=2, chat_template=_chat_template("<image>"))
    vision = SiglipVisionConfig(hidden_size=_WIDTH, intermediate_size=2 * _WIDTH, num_hidden_layers=2,
                                num_attention_heads=_HEADS, image_size=tile, patch_size=patch_size)
    text = Cohere2Config(**_text_kwargs(tok, max_position_embeddings=4096, sliding_window=sliding_window,
                                        layer_types=["sliding_attention", "full_attention"]))
    config = AyaVisionConfig(vision_config=vision, text_config=text, image_token_index=tok.img_patch_token_id,
                             downsample_factor=2, vision_feature_select_strategy="full", vision_feature_layer=-1)
    torch.manual_seed(seed)
    model = AyaVisionForConditionalGeneration(config)
    return _finish(model, processor, tok, "tiny-aya-vision")
