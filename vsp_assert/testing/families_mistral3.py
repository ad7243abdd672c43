"""Tiny Mistral 3 (Pixtral vision tower at each image's own resolution on one packed sequence, a 2×2 patch merger,
``[IMG_BREAK]`` closing every row of image tokens and ``[IMG_END]`` the last).

Part of :mod:`vsp_assert.testing.families`. The processor is the real ``PixtralProcessor`` class with the real
``PixtralImageProcessorPil`` (longest edge 32 pixels instead of 1540, patches of 4 instead of 14). Its module
imports one helper from the torchvision image processor at import time (``get_resize_output_image_size``, used only
to count tokens for a size without processing, not by ``__call__``); :func:`_pixtral_processor_class` imports the
module with that one name served by the PIL image processor's twin of it (the module of the torchvision processor
is left absent, as before), so the class's own code places the image tokens.
"""

from __future__ import annotations

import torch

from vsp_assert.engine.models import LoadedModel
from vsp_assert.testing import word_tokenizer
from vsp_assert.testing._tiny import _HEADS, _WIDTH, _chat_template, _finish, _text_kwargs


def _pixtral_processor_class() -> type:
    """``PixtralProcessor`` from its own module, imported without torchvision (see the module docstring)."""
    import importlib
    import sys
    import types

    from transformers.models.pixtral import image_processing_pil_pixtral as pil

    name = "transformers.models.pixtral.processing_pixtral"
    twin = "transformers.models.pixtral.image_processing_pixtral"
    if name not in sys.modules and twin not in sys.modules:
        stub = types.ModuleType(twin)
        stub.get_resize_output_image_size = pil.get_resize_output_image_size  # type: ignore[attr-defined]
        sys.modules[twin] = stub
        try:
            importlib.import_module(name)
        finally:
            del sys.modules[twin]
    return sys.modules[name].PixtralProcessor  # type: ignore[no-any-return]


def tiny_mistral3(*, seed: int = 0, longest_edge: int = 32, patch_size: int = 4) -> LoadedModel:
    """Mistral 3: Pixtral tower (no CLS, 2D RoPE), images scaled to a longest edge of 32 pixels in multiples of 8
    (the contract's 40×40 → 32×32, 48×32 → 24×32 grids of 8×8 and 6×8 patches), 2×2 merger, Mistral LM."""
    from transformers import Mistral3Config, Mistral3ForConditionalGeneration, MistralConfig, PixtralVisionConfig
    from transformers.models.pixtral.image_processing_pil_pixtral import PixtralImageProcessorPil

    specials = {"image_token": "[IMG]", "image_break_token": "[IMG_BREAK]", "image_end_token": "[IMG_END]"}
    tok = word_tokenizer(extra_specials=specials)
    image_processor = PixtralImageProcessorPil(size={"longest_edge": longest_edge},
                                               patch_size={"height": patch_size, "width": patch_size})
    processor = _pixtral_processor_class()(image_processor=image_processor, tokenizer=tok, patch_size=patch_size,
                                 spatial_merge_size=2, chat_template=_chat_template("[IMG]"))
    vision = PixtralVisionConfig(hidden_size=_WIDTH, intermediate_size=2 * _WIDTH, num_hidden_layers=2,
                                 num_attention_heads=_HEADS, image_size=longest_edge, patch_size=patch_size,
                                 head_dim=_WIDTH // _HEADS)
    text = MistralConfig(**_text_kwargs(tok, head_dim=_WIDTH // _HEADS, max_position_embeddings=4096))
    config = Mistral3Config(vision_config=vision, text_config=text, image_token_index=tok.image_token_id,
                            spatial_merge_size=2, vision_feature_layer=-1)
    torch.manual_seed(seed)
    model = Mistral3ForConditionalGeneration(config)
    return _finish(model, processor, tok, "tiny-mistral3")
