"""Tiny Qwen3-VL and Qwen3-VL-MoE (Qwen2-VL's packed dynamic-resolution sequence and 2×2 merge, plus DeepStack:
features of chosen vision blocks added to the first LM layers' hidden states at the image tokens).

Part of :mod:`vsp_assert.testing.families`. ``Qwen3VLProcessor`` requires a torchvision-only video processor: it is
built with the video slot left empty (:func:`vsp_assert.plugins._qwen_video.image_only`), where the adapter installs
the torchvision-free ``FrameVideoProcessor``. The image processor is ``Qwen2VLImageProcessorPil``, the class
Qwen3-VL's checkpoints name (with ``patch_size`` 4 instead of 16 here).
"""

from __future__ import annotations

from typing import Any

import torch

from vsp_assert.engine.models import LoadedModel
from vsp_assert.plugins._qwen_video import image_only
from vsp_assert.testing import word_tokenizer
from vsp_assert.testing._tiny import _HEADS, _WIDTH, _chat_template, _finish, _text_kwargs
from vsp_assert.testing.families_qwen import _QWEN_SPECIALS


def tiny_qwen3_vl(*, seed: int = 0, patch_size: int = 4, max_pixels: int = 32 * 32, moe: bool = False,
                  vision_layers: int = 3, deepstack: tuple[int, ...] = (0, 1)) -> LoadedModel:
    """Qwen3-VL (``moe``: Qwen3-VL-MoE, 4 experts, top-2): ``vision_layers`` blocks, DeepStack taps at
    ``deepstack`` (default blocks 0 and 1, added after LM layers 0 and 1; the last block feeds the main merger
    only, as in the released checkpoints where the taps come before the last block).

    The MoE LM runs ``experts_implementation="batched_mm"`` (each token's experts on their own): transformers'
    default ``grouped_mm`` multiplies all tokens routed to an expert as one matrix, so an ablation that reroutes
    image tokens changes the rounding (not the value) of the text tokens' expert outputs before the image, and
    the contract's "nothing changes before the first image token" holds only to ~1e-7 there."""
    if moe:
        from transformers import Qwen3VLMoeConfig as Config
        from transformers import Qwen3VLMoeForConditionalGeneration as Model
    else:
        from transformers import Qwen3VLConfig as Config  # type: ignore[assignment]
        from transformers import Qwen3VLForConditionalGeneration as Model  # type: ignore[assignment]
    from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import Qwen2VLImageProcessorPil

    tok = word_tokenizer(extra_specials=_QWEN_SPECIALS)
    vision = {"depth": vision_layers, "hidden_size": _WIDTH, "intermediate_size": 2 * _WIDTH, "num_heads": _HEADS,
              "out_hidden_size": _WIDTH, "patch_size": patch_size, "spatial_merge_size": 2, "temporal_patch_size": 2,
              "num_position_embeddings": 16, "deepstack_visual_indexes": list(deepstack)}
    rope = {"rope_type": "default", "rope_theta": 10000.0, "mrope_section": [2, 1, 1], "mrope_interleaved": True}
    experts = {"num_experts": 4, "num_experts_per_tok": 2, "moe_intermediate_size": _WIDTH} if moe else {}
    text = _text_kwargs(tok, head_dim=_WIDTH // _HEADS, max_position_embeddings=4096, rope_parameters=rope,
                        **experts)
    config = Config(vision_config=vision, text_config=text, image_token_id=tok.image_token_id,
                    video_token_id=tok.video_token_id, vision_start_token_id=tok.vision_start_token_id,
                    vision_end_token_id=tok.vision_end_token_id)
    torch.manual_seed(seed)
    model = Model(config)
    if moe:  # per-token expert matmuls: see the note on MoE in docs/adapters.md (grouped ones round by batch)
        model.set_experts_implementation("batched_mm")
    image_processor = Qwen2VLImageProcessorPil(min_pixels=(2 * patch_size) ** 2 * 4, max_pixels=max_pixels,
                                               patch_size=patch_size, temporal_patch_size=2, merge_size=2)
    from transformers.models.qwen3_vl import Qwen3VLProcessor

    processor = image_only(Qwen3VLProcessor)(
        image_processor=image_processor, tokenizer=tok,
        chat_template=_chat_template("<|vision_start|><|image_pad|><|vision_end|>",
                                     "<|vision_start|><|video_pad|><|vision_end|>"),
    )
    return _finish(model, processor, tok, "tiny-qwen3-vl-moe" if moe else "tiny-qwen3-vl")


def tiny_qwen3_vl_moe(**kw: Any) -> LoadedModel:
    """Qwen3-VL-MoE: :func:`tiny_qwen3_vl` with a mixture-of-experts LM."""
    return tiny_qwen3_vl(moe=True, **kw)
