"""Tiny in-process models of every supported VLM family, with their real processors (tests, notebooks).

:mod:`vsp_assert.testing` builds the tiny LLaVA the engine tests use; this module does the same for the other
families, so that each adapter in ``plugins/`` is proven on the real transformers classes: the model is built
from its config classes with random weights (nothing is downloaded), the image processor is the family's
``*Pil`` class with explicit arguments (no torchvision), and the tokenizer is the word-level
:func:`~vsp_assert.testing.word_tokenizer` carrying the family's special image tokens and a chat template, so
inputs go through the same processor code a real checkpoint uses.

Every config is small enough for a forward in a few milliseconds on one CPU core: 2 vision + 2 LM layers,
width 32, images of 16–32 pixels in patches of 4–8. ``tiny_model(family)`` is the entry point; ``FAMILIES``
lists the families it can build.

One deviation from a hub checkpoint: Qwen2-VL's, Qwen2.5-VL's and LLaVA-OneVision's processors require a video
processor, which needs torchvision; ``_ImageOnlyQwenProcessor`` / ``_ImageOnlyOnevisionProcessor`` are the real
processor classes with the video slot left empty (their ``__call__`` — the image code path — is unchanged).
SmolVLM's processor also insists on ``num2words`` (it spells video frame counts) and takes a video processor that
ProcessorMixin's class check only accepts with torchvision: ``_ImageOnlySmolVLMProcessor`` skips the first and holds
a real ``SmolVLMVideoProcessor`` (whose ``num_frames`` / ``fps`` its ``apply_chat_template`` reads) outside the check.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

from vsp_assert.engine.models import LoadedModel
from vsp_assert.testing import TINY_WORDS, word_tokenizer

FAMILIES: tuple[str, ...] = (
    "llava", "llava_next", "qwen2_vl", "qwen2_5_vl", "paligemma", "idefics3", "smolvlm", "gemma3", "llava_onevision",
)

_WIDTH = 32
_HEADS = 4


def _text_kwargs(tok: Any, **extra: Any) -> dict[str, Any]:
    """The tiny LM config shared by every family (Llama-like sizes, GQA 4 → 2 heads)."""
    return {
        "hidden_size": _WIDTH, "intermediate_size": 2 * _WIDTH, "num_hidden_layers": 2,
        "num_attention_heads": _HEADS, "num_key_value_heads": 2, "vocab_size": len(tok),
        "pad_token_id": tok.pad_token_id, "bos_token_id": tok.bos_token_id, "eos_token_id": tok.eos_token_id,
        **extra,
    }


def _chat_template(image: str) -> str:
    """``USER: <image block> prompt ASSISTANT:`` with the family's image placeholder."""
    return (
        "{% for message in messages %}{% if message['role'] == 'user' %}USER: "
        "{% for part in message['content'] %}{% if part['type'] == 'image' %}" + image + "{% else %}"
        "{{ part['text'] }}{% endif %}{% endfor %} {% else %}ASSISTANT: {{ message['content'][0]['text'] }}</s>"
        "{% endif %}{% endfor %}{% if add_generation_prompt %}ASSISTANT:{% endif %}"
    )


def _finish(model: Any, processor: Any, tok: Any, name: str) -> LoadedModel:
    model = model.eval()
    model.generation_config.eos_token_id = tok.eos_token_id
    model.generation_config.pad_token_id = tok.pad_token_id
    return LoadedModel.wrap(model, processor, name=name)


# ---------------------------------------------------------------------- LLaVA-NeXT
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


# ---------------------------------------------------------------------- Qwen2-VL / Qwen2.5-VL
_QWEN_SPECIALS = {
    "image_token": "<|image_pad|>", "video_token": "<|video_pad|>",
    "vision_start_token": "<|vision_start|>", "vision_end_token": "<|vision_end|>",
}


def _image_only_qwen_processor(base: type) -> type:
    """``base`` (Qwen2VLProcessor / Qwen2_5_VLProcessor) without its torchvision-only video processor."""
    from transformers.processing_utils import ProcessorMixin

    class _ImageOnlyQwenProcessor(base):  # type: ignore[misc, valid-type]
        def __init__(self, image_processor: Any = None, tokenizer: Any = None, chat_template: str | None = None,
                     **kwargs: Any) -> None:
            self.image_token = tokenizer.image_token
            self.video_token = tokenizer.video_token
            self.image_token_id = tokenizer.image_token_id
            self.video_token_id = tokenizer.video_token_id
            self.video_processor = None
            ProcessorMixin.__init__(self, image_processor, tokenizer, chat_template=chat_template)

    _ImageOnlyQwenProcessor.__name__ = base.__name__
    return _ImageOnlyQwenProcessor


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
    processor = _image_only_qwen_processor(Processor)(
        image_processor=image_processor, tokenizer=tok,
        chat_template=_chat_template("<|vision_start|><|image_pad|><|vision_end|>"),
    )
    return _finish(model, processor, tok, f"tiny-qwen{version}-vl")


def tiny_qwen2_vl(*, seed: int = 0, patch_size: int = 4, max_pixels: int = 32 * 32) -> LoadedModel:
    """Qwen2-VL: dynamic resolution (≤ ``max_pixels``), 2×2 merge, M-RoPE."""
    return _tiny_qwen("2", seed=seed, patch_size=patch_size, max_pixels=max_pixels)


def tiny_qwen2_5_vl(*, seed: int = 0, patch_size: int = 4, max_pixels: int = 32 * 32) -> LoadedModel:
    """Qwen2.5-VL: as Qwen2-VL plus windowed vision attention (layer 0 windowed, layer 1 full)."""
    return _tiny_qwen("2.5", seed=seed, patch_size=patch_size, max_pixels=max_pixels)


# ---------------------------------------------------------------------- PaliGemma
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


# ---------------------------------------------------------------------- Idefics3 / SmolVLM
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


# ---------------------------------------------------------------------- Gemma 3
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


# ---------------------------------------------------------------------- LLaVA-OneVision
def _image_only_onevision_processor(base: type) -> type:
    """``LlavaOnevisionProcessor`` without its torchvision-only video processor (image path unchanged)."""
    from transformers.processing_utils import ProcessorMixin

    class _ImageOnlyOnevisionProcessor(base):  # type: ignore[misc, valid-type]
        def __init__(self, image_processor: Any = None, tokenizer: Any = None, *, num_image_tokens: int,
                     vision_feature_select_strategy: str, vision_aspect_ratio: str,
                     chat_template: str | None = None) -> None:
            self.num_image_tokens = num_image_tokens
            self.vision_feature_select_strategy = vision_feature_select_strategy
            self.vision_aspect_ratio = vision_aspect_ratio
            self.image_token, self.image_token_id = tokenizer.image_token, tokenizer.image_token_id
            self.video_token, self.video_token_id = tokenizer.video_token, tokenizer.video_token_id
            self.video_processor = None
            ProcessorMixin.__init__(self, image_processor, tokenizer, chat_template=chat_template)

    _ImageOnlyOnevisionProcessor.__name__ = base.__name__
    return _ImageOnlyOnevisionProcessor


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
    processor = _image_only_onevision_processor(LlavaOnevisionProcessor)(
        image_processor=image_processor, tokenizer=tok, num_image_tokens=(s // patch_size) ** 2,
        vision_feature_select_strategy="full", vision_aspect_ratio=aspect, chat_template=_chat_template("<image>\n"),
    )
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


def _tiny_llava(**kw: Any) -> LoadedModel:
    from vsp_assert.testing import tiny_llava

    return tiny_llava(**kw)


BUILDERS: dict[str, Callable[..., LoadedModel]] = {
    "llava": _tiny_llava,
    "llava_next": tiny_llava_next,
    "qwen2_vl": tiny_qwen2_vl,
    "qwen2_5_vl": tiny_qwen2_5_vl,
    "paligemma": tiny_paligemma,
    "idefics3": tiny_idefics3,
    "smolvlm": tiny_smolvlm,
    "gemma3": tiny_gemma3,
    "llava_onevision": tiny_llava_onevision,
}


def tiny_model(family: str, **kw: Any) -> LoadedModel:
    """A tiny random-weight model of ``family`` (one of :data:`FAMILIES`) with its processor and adapter."""
    if family not in BUILDERS:
        from vsp_assert.errors import InputError

        raise InputError("no tiny builder for this family", field="family", received=family,
                         allowed=", ".join(FAMILIES))
    return BUILDERS[family](**kw)
