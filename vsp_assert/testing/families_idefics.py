"""Tiny Idefics3 and SmolVLM (image splitting into tiles plus a global view, ``<row_r_col_c>`` tile tokens, a
pixel-shuffle connector): one builder for the common wiring, each family passing its own classes and specials.

Part of :mod:`vsp_assert.testing.families`. SmolVLM's processor insists on ``num2words`` (it spells video frame
counts) and takes a video processor that ProcessorMixin's class check only accepts with torchvision:
``_ImageOnlySmolVLMProcessor`` skips the first and holds a real ``SmolVLMVideoProcessor`` (whose ``num_frames`` /
``fps`` its ``apply_chat_template`` reads) outside the check.
"""

from __future__ import annotations

from typing import Any

import torch

from vsp_assert.engine.models import LoadedModel
from vsp_assert.testing import TINY_WORDS, word_tokenizer
from vsp_assert.testing._tiny import _HEADS, _WIDTH, _chat_template, _finish, _text_kwargs


def tiny_idefics3(*, seed: int = 0, image_size: int = 16, patch_size: int = 4, scale_factor: int = 2,
                  longest_edge: int = 32) -> LoadedModel:
    """Idefics3: SigLIP-style tower on ``image_size`` tiles, image splitting, pixel-shuffle connector."""
    from transformers import Idefics3Config, Idefics3ForConditionalGeneration
    from transformers.models.idefics3 import Idefics3Processor
    from transformers.models.idefics3.configuration_idefics3 import Idefics3VisionConfig
    from transformers.models.idefics3.image_processing_pil_idefics3 import Idefics3ImageProcessorPil

    specials = {"image_token": "<image>", "fake_image_token": "<fake_token_around_image>",
                "global_image_token": "<global-img>", "end_of_utterance_token": "<end_of_utterance>"}
    return _tiled_pixel_shuffle(
        Idefics3ImageProcessorPil, Idefics3Processor, Idefics3VisionConfig, Idefics3Config,
        Idefics3ForConditionalGeneration, specials=specials, name="tiny-idefics3", seed=seed, image_size=image_size,
        patch_size=patch_size, scale_factor=scale_factor, longest_edge=longest_edge,
    )


def _tiled_pixel_shuffle(image_processor_cls: Any, processor_cls: Any, vision_config_cls: Any, config_cls: Any,
                         model_cls: Any, *, specials: dict[str, str], name: str, seed: int, image_size: int,
                         patch_size: int, scale_factor: int, longest_edge: int) -> LoadedModel:
    """The Idefics3 wiring under a family's own classes: image splitting into tiles of ``image_size`` plus a
    global view, ``<row_r_col_c>`` tile tokens, a pixel-shuffle connector by ``scale_factor``, a Llama LM."""
    from transformers import LlamaConfig

    rows_cols = [f"<row_{r}_col_{c}>" for r in range(1, 7) for c in range(1, 7)]
    tok = word_tokenizer(list(TINY_WORDS) + rows_cols, extra_specials=specials)
    tok.add_special_tokens({"additional_special_tokens": rows_cols})
    seq_len = (image_size // patch_size) ** 2 // scale_factor**2
    image_processor = image_processor_cls(
        do_resize=True, size={"longest_edge": longest_edge}, max_image_size={"longest_edge": image_size},
        do_image_splitting=True, do_pad=True,
    )
    processor = processor_cls(image_processor=image_processor, tokenizer=tok, image_seq_len=seq_len,
                              chat_template=_chat_template("<image>"))
    vision = vision_config_cls(hidden_size=_WIDTH, intermediate_size=2 * _WIDTH, num_hidden_layers=2,
                               num_attention_heads=_HEADS, image_size=image_size, patch_size=patch_size)
    text = LlamaConfig(**_text_kwargs(tok, max_position_embeddings=4096))
    config = config_cls(vision_config=vision, text_config=text, image_token_id=tok.image_token_id,
                        scale_factor=scale_factor)
    torch.manual_seed(seed)
    model = model_cls(config)
    return _finish(model, processor, tok, name)


def _image_only_smolvlm_processor(base: type) -> type:
    """``SmolVLMProcessor`` without ``num2words`` and with its video processor held outside ProcessorMixin's
    sub-processors (both serve videos only; ``__call__`` and ``apply_chat_template`` are the real ones)."""
    from transformers.models.smolvlm.video_processing_smolvlm import SmolVLMVideoProcessor
    from transformers.processing_utils import ProcessorMixin

    class _ImageOnlySmolVLMProcessor(base):  # type: ignore[misc, valid-type]
        def __init__(self, image_processor: Any = None, tokenizer: Any = None, image_seq_len: int = 169,
                     chat_template: str | None = None) -> None:
            # SmolVLMProcessor.__init__ without its ImportError when num2words (spells video frame counts) is missing
            self.fake_image_token = tokenizer.fake_image_token
            self.image_token = tokenizer.image_token
            self.image_token_id = tokenizer.convert_tokens_to_ids(self.image_token)
            self.end_of_utterance_token = tokenizer.end_of_utterance_token
            self.global_image_token = tokenizer.global_image_token
            self.image_seq_len = image_seq_len
            self.video_token = tokenizer.video_token
            ProcessorMixin.__init__(self, image_processor, tokenizer, chat_template=chat_template)
            # apply_chat_template reads the video processor's num_frames / fps. Building one needs no torchvision,
            # but ProcessorMixin's class check of a video_processor argument does, so it is set here directly
            self.video_processor = SmolVLMVideoProcessor(max_image_size=image_processor.max_image_size)

    _ImageOnlySmolVLMProcessor.__name__ = base.__name__
    return _ImageOnlySmolVLMProcessor


def tiny_smolvlm(*, seed: int = 0, image_size: int = 24, patch_size: int = 4, scale_factor: int = 3,
                 longest_edge: int = 48) -> LoadedModel:
    """SmolVLM: Idefics3's architecture under its own classes; pixel shuffle ×3 (as SmolVLM-Instruct: 6×6 patches
    per tile → 2×2 tokens of 9 patches each), tokens placed by ``SmolVLMProcessor``."""
    from transformers import SmolVLMConfig, SmolVLMForConditionalGeneration
    from transformers.models.smolvlm import SmolVLMProcessor
    from transformers.models.smolvlm.configuration_smolvlm import SmolVLMVisionConfig
    from transformers.models.smolvlm.image_processing_pil_smolvlm import SmolVLMImageProcessorPil

    # SmolVLMProcessor reads its placeholders from the tokenizer (Idefics3Processor hard-codes and adds them)
    specials = {"fake_image_token": "<fake_token_around_image>", "global_image_token": "<global-img>",
                "end_of_utterance_token": "<end_of_utterance>", "video_token": "<video>"}
    return _tiled_pixel_shuffle(
        SmolVLMImageProcessorPil, _image_only_smolvlm_processor(SmolVLMProcessor), SmolVLMVisionConfig,
        SmolVLMConfig, SmolVLMForConditionalGeneration, specials=specials, name="tiny-smolvlm", seed=seed,
        image_size=image_size, patch_size=patch_size, scale_factor=scale_factor, longest_edge=longest_edge,
    )
