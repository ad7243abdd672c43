"""Tiny PaliGemma and Gemma 3 (Google's SigLIP + Gemma families: no class token; PaliGemma a prefix LM with
one token per patch, Gemma 3 a 4×4 average pool and bidirectional image blocks, optionally pan-and-scan crops).

Part of :mod:`vsp_assert.testing.families`; the shared sizes and template are in :mod:`vsp_assert.testing._tiny`.
"""

from __future__ import annotations

from typing import Any

import torch

from vsp_assert.engine.models import LoadedModel
from vsp_assert.testing import word_tokenizer
from vsp_assert.testing._tiny import _HEADS, _WIDTH, _chat_template, _finish, _text_kwargs


def tiny_paligemma(*, seed: int = 0, image_size: int = 16, patch_size: int = 4) -> LoadedModel:
    """PaliGemma: SigLIP tower (no CLS), linear projector, Gemma LM with a bidirectional prefix."""
    from transformers import GemmaConfig, PaliGemmaConfig, PaliGemmaForConditionalGeneration, SiglipVisionConfig
    from transformers.models.paligemma import PaliGemmaProcessor
    from transformers.models.siglip.image_processing_pil_siglip import SiglipImageProcessorPil

    tok = word_tokenizer()
    n_image = (image_size // patch_size) ** 2
    image_processor = SiglipImageProcessorPil(size={"height": image_size, "width": image_size}, do_resize=True)
    image_processor.image_seq_length = n_image  # type: ignore[attr-defined]  # read by PaliGemmaProcessor
    processor = PaliGemmaProcessor(image_processor=image_processor, tokenizer=tok)  # adds PaliGemma's loc/seg tokens
    vision = SiglipVisionConfig(hidden_size=_WIDTH, intermediate_size=2 * _WIDTH, num_hidden_layers=2,
                                num_attention_heads=_HEADS, image_size=image_size, patch_size=patch_size)
    text = GemmaConfig(**_text_kwargs(tok, head_dim=_WIDTH // _HEADS, max_position_embeddings=4096))
    config = PaliGemmaConfig(vision_config=vision, text_config=text, image_token_index=tok.image_token_id,
                             projection_dim=_WIDTH, hidden_size=_WIDTH)
    config.vision_config.projection_dim = _WIDTH  # type: ignore[union-attr]
    torch.manual_seed(seed)
    model = PaliGemmaForConditionalGeneration(config)
    return _finish(model, processor, tok, "tiny-paligemma")



def tiny_gemma3(*, seed: int = 0, image_size: int = 32, patch_size: int = 4, tokens_per_image: int = 4,
                sliding_window: int = 12, attn_logit_softcapping: float | None = None,
                pan_and_scan: bool = False) -> LoadedModel:
    """Gemma 3: SigLIP tower on an 8×8 patch grid, 4×4 average pool → 2×2 image tokens between begin/end-of-image.

    The LM's layer 0 is a sliding-window layer (window 12: during generation the window holds part of the image
    block, so the capture's window bookkeeping is exercised), layer 1 a global one.

    ``pan_and_scan``: the processor cuts images whose aspect ratio is at least 1.2 into 2–4 crops of at least
    16 pixels (a 200×40 image: the whole image + 4 crops of 50×40; 48×32: + 2 crops), each one more view. It is
    set on the image processor (as a checkpoint's ``preprocessor_config.json`` would) and on the processor's own
    ``images_kwargs``, which Gemma3Processor passes to the image processor on every call, overriding its
    attributes (class defaults: pan-and-scan off).
    """
    from transformers import Gemma3Config, Gemma3ForConditionalGeneration, Gemma3TextConfig, SiglipVisionConfig
    from transformers.models.gemma3 import Gemma3Processor
    from transformers.models.gemma3.image_processing_pil_gemma3 import Gemma3ImageProcessorPil

    specials = {"image_token": "<image_soft_token>", "boi_token": "<start_of_image>", "eoi_token": "<end_of_image>"}
    tok = word_tokenizer(extra_specials=specials)
    crops: dict[str, Any] = {"do_pan_and_scan": pan_and_scan}
    if pan_and_scan:
        crops.update(pan_and_scan_min_crop_size=16, pan_and_scan_max_num_crops=4,
                     pan_and_scan_min_ratio_to_activate=1.2)
    image_processor = Gemma3ImageProcessorPil(size={"height": image_size, "width": image_size}, **crops)
    processor = Gemma3Processor(image_processor=image_processor, tokenizer=tok, image_seq_length=tokens_per_image,
                                chat_template=_chat_template("<start_of_image>"))
    if pan_and_scan:  # an instance attribute: the class's defaults (shared by every Gemma3Processor) stay as they are
        processor.images_kwargs = {**Gemma3Processor.images_kwargs, **crops}
    vision = SiglipVisionConfig(hidden_size=_WIDTH, intermediate_size=2 * _WIDTH, num_hidden_layers=2,
                                num_attention_heads=_HEADS, image_size=image_size, patch_size=patch_size)
    text = Gemma3TextConfig(**_text_kwargs(
        tok, head_dim=_WIDTH // _HEADS, query_pre_attn_scalar=_WIDTH // _HEADS, max_position_embeddings=4096,
        sliding_window=sliding_window, layer_types=["sliding_attention", "full_attention"],
        attn_logit_softcapping=attn_logit_softcapping,
    ))
    config = Gemma3Config(vision_config=vision, text_config=text, mm_tokens_per_image=tokens_per_image,
                          image_token_index=tok.image_token_id, boi_token_index=tok.boi_token_id,
                          eoi_token_index=tok.eoi_token_id)
    torch.manual_seed(seed)
    model = Gemma3ForConditionalGeneration(config)
    with torch.no_grad():  # transformers zero-initialises the projection (a checkpoint loads it): make images count
        model.model.multi_modal_projector.mm_input_projection_weight.normal_(std=_WIDTH**-0.5)
    return _finish(model, processor, tok, "tiny-gemma3")
