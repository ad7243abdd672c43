"""Tiny GLM-4V (GLM-4.1V: Qwen2-VL's packed dynamic-resolution sequence, a stride-2 convolution merging 2×2 patches,
3D rotary positions in the LM).

Part of :mod:`vsp_assert.testing.families`. ``Glm4vProcessor`` requires a torchvision-only video processor:
``_ImageOnlyGlm4vProcessor`` is the real processor class with the video slot left empty (its ``__call__`` — the
image code path — is unchanged). The image processor is the real ``Glm4vImageProcessorPil`` (patches of 4 pixels
instead of 14).
"""

from __future__ import annotations

from typing import Any

import torch

from vsp_assert.engine.models import LoadedModel
from vsp_assert.testing import word_tokenizer
from vsp_assert.testing._tiny import _HEADS, _WIDTH, _chat_template, _finish, _text_kwargs


def _image_only_glm4v_processor() -> type:
    """``Glm4vProcessor`` without its torchvision-only video processor (image path unchanged)."""
    from transformers.models.glm4v import Glm4vProcessor
    from transformers.processing_utils import ProcessorMixin

    class _ImageOnlyGlm4vProcessor(Glm4vProcessor):
        def __init__(self, image_processor: Any = None, tokenizer: Any = None, chat_template: str | None = None,
                     **kwargs: Any) -> None:
            self.image_token, self.image_token_id = tokenizer.image_token, tokenizer.image_token_id
            self.video_token, self.video_token_id = tokenizer.video_token, tokenizer.video_token_id
            self.video_processor = None
            ProcessorMixin.__init__(self, image_processor, tokenizer, chat_template=chat_template)
            self.video_start_id = tokenizer.convert_tokens_to_ids("<|begin_of_video|>")
            self.video_end_id = tokenizer.convert_tokens_to_ids("<|end_of_video|>")

    _ImageOnlyGlm4vProcessor.__name__ = "Glm4vProcessor"
    return _ImageOnlyGlm4vProcessor


def tiny_glm4v(*, seed: int = 0, patch_size: int = 4, max_pixels: int = 32 * 32, moe: bool = False) -> LoadedModel:
    """GLM-4.1V: dynamic resolution (≤ ``max_pixels``), 2 vision blocks, 2×2 convolutional merge; GLM-4 LM with
    half-rotary 3D positions. ``moe``: GLM-4.5V (``glm4v_moe``), its LM's second layer a mixture of 4 experts (top 2)
    plus a shared one, run per token (``batched_mm``, as the tiny Qwen3-VL-MoE: see families_qwen3)."""
    if moe:
        from transformers import Glm4vMoeConfig as Glm4vConfig
        from transformers import Glm4vMoeForConditionalGeneration as Glm4vForConditionalGeneration
    else:
        from transformers import Glm4vConfig, Glm4vForConditionalGeneration  # type: ignore[assignment]
    from transformers.models.glm4v.image_processing_pil_glm4v import Glm4vImageProcessorPil

    specials = {"image_token": "<|image|>", "video_token": "<|video|>", "boi_token": "<|begin_of_image|>",
                "eoi_token": "<|end_of_image|>", "bov_token": "<|begin_of_video|>", "eov_token": "<|end_of_video|>"}
    tok = word_tokenizer(extra_specials=specials)
    vision = {"depth": 2, "hidden_size": _WIDTH, "intermediate_size": 2 * _WIDTH, "num_heads": _HEADS,
              "out_hidden_size": _WIDTH, "patch_size": patch_size, "spatial_merge_size": 2, "temporal_patch_size": 2,
              "image_size": 16}
    rope = {"rope_type": "default", "rope_theta": 10000.0, "mrope_section": [1, 1, 0], "partial_rotary_factor": 0.5}
    experts = {"n_routed_experts": 4, "num_experts_per_tok": 2, "n_shared_experts": 1, "moe_intermediate_size": _WIDTH,
               "first_k_dense_replace": 1} if moe else {}
    text = _text_kwargs(tok, max_position_embeddings=4096, rope_parameters=rope, **experts)
    config = Glm4vConfig(vision_config=vision, text_config=text, image_token_id=tok.image_token_id,
                         video_token_id=tok.video_token_id, image_start_token_id=tok.boi_token_id,
                         image_end_token_id=tok.eoi_token_id)
    torch.manual_seed(seed)
    model = Glm4vForConditionalGeneration(config)
    if moe:
        model.set_experts_implementation("batched_mm")
    image_processor = Glm4vImageProcessorPil(size={"shortest_edge": (2 * patch_size) ** 2 * 4,
                                                   "longest_edge": max_pixels},
                                             patch_size=patch_size, temporal_patch_size=2, merge_size=2)
    processor = _image_only_glm4v_processor()(
        image_processor=image_processor, tokenizer=tok,
        chat_template=_chat_template("<|begin_of_image|><|image|><|end_of_image|>"),
    )
    return _finish(model, processor, tok, "tiny-glm4v-moe" if moe else "tiny-glm4v")


def tiny_glm4v_moe(**kw: Any) -> LoadedModel:
    """GLM-4.5V: :func:`tiny_glm4v` with a mixture-of-experts LM."""
    return tiny_glm4v(moe=True, **kw)
