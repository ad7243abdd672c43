"""Build the shapes model's architecture, tokenizer and processor in-process (nothing is downloaded).

This module owns the *shape* of the shipped VLM: a real ``LlavaForConditionalGeneration`` (CLIP vision tower,
Llama LM), a real word-level ``tokenizers`` tokenizer over the world's closed vocabulary wrapped as a
``PreTrainedTokenizerFast``, the PIL CLIP image processor (no torchvision) and a ``LlavaProcessor`` whose
``<image>`` expansion (one token per patch, CLS dropped) agrees with the model. The training recipe starts
from :func:`build_model`; :func:`save_model_folder` writes the folder that ``from_pretrained`` and
``AutoProcessor.from_pretrained`` load.
"""

from __future__ import annotations

from pathlib import Path

import torch
from tokenizers import Tokenizer, decoders, normalizers, pre_tokenizers, processors
from tokenizers.models import WordLevel
from transformers import (
    CLIPVisionConfig,
    LlamaConfig,
    LlavaConfig,
    LlavaForConditionalGeneration,
    LlavaProcessor,
    PreTrainedTokenizerFast,
)
from transformers.models.clip.image_processing_pil_clip import CLIPImageProcessorPil

from vsp_assert.shapes.questions import ANSWERS, TEMPLATES
from vsp_assert.shapes.world import COLORS, IMAGE_SIZE, PATCH_SIZE, SHAPES

SPECIAL_TOKENS: tuple[str, ...] = ("<pad>", "<s>", "</s>", "<unk>", "<image>")
IMAGE_TOKEN = "<image>"

#: The LLaVA-1.5 style chat template: ``USER: <image>\n{question} ASSISTANT:`` and answers ending in ``</s>``.
CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{% if message['content'] is string %}{% set parts = [{'type': 'text', 'text': message['content']}] %}"
    "{% else %}{% set parts = message['content'] %}{% endif %}"
    "{% if message['role'] == 'user' %}USER: "
    "{% for p in parts %}{% if p['type'] == 'image' %}<image>\n{% endif %}{% endfor %}"
    "{% for p in parts %}{% if p['type'] == 'text' %}{{ p['text'] }}{% endif %}{% endfor %} "
    "{% elif message['role'] == 'assistant' %}ASSISTANT: "
    "{% for p in parts %}{% if p['type'] == 'text' %}{{ p['text'] }}{% endif %}{% endfor %}</s>"
    "{% endif %}{% endfor %}"
    "{% if add_generation_prompt %}ASSISTANT:{% endif %}"
)

# Architecture sizes (≈ 0.7 M parameters; a batch-1 forward is a few milliseconds on one CPU core).
VISION_HIDDEN = 64
VISION_LAYERS = 3
VISION_HEADS = 4
VISION_INTERMEDIATE = 192
LM_HIDDEN = 128
LM_LAYERS = 3
LM_HEADS = 4
LM_INTERMEDIATE = 256


def vocabulary() -> list[str]:
    """The closed word vocabulary: special tokens, then the words of the chat frame, templates and answers."""
    words: list[str] = ["user", ":", "assistant", "?"]
    for t in TEMPLATES.values():
        for w in t.replace("?", " ").lower().split():
            if not w.startswith("{"):
                words.append(w)
    words += list(COLORS) + list(SHAPES) + list(ANSWERS)
    seen: dict[str, None] = {}
    for w in words:
        seen.setdefault(w, None)
    return list(SPECIAL_TOKENS) + list(seen)


def build_tokenizer() -> PreTrainedTokenizerFast:
    """A word-level tokenizer: lower-cased, split on whitespace and punctuation, ``<s>`` prepended."""
    vocab = {w: i for i, w in enumerate(vocabulary())}
    tok = Tokenizer(WordLevel(vocab, unk_token="<unk>"))
    tok.normalizer = normalizers.Lowercase()
    tok.pre_tokenizer = pre_tokenizers.Sequence([pre_tokenizers.WhitespaceSplit(), pre_tokenizers.Punctuation()])
    tok.add_special_tokens(list(SPECIAL_TOKENS))
    tok.post_processor = processors.TemplateProcessing(
        single="<s> $A", pair="<s> $A $B", special_tokens=[("<s>", vocab["<s>"])]
    )
    tok.decoder = decoders.WordPiece(prefix="##", cleanup=True)  # joins words with spaces, tidies " ?"
    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token="<s>",
        eos_token="</s>",
        unk_token="<unk>",
        pad_token="<pad>",
        extra_special_tokens={"image_token": IMAGE_TOKEN},
        padding_side="left",
        model_max_length=256,
        chat_template=CHAT_TEMPLATE,
    )


def build_image_processor() -> CLIPImageProcessorPil:
    """The PIL CLIP processor: resize to 64×64, scale to [0, 1], normalise with mean 0.5 / std 0.5."""
    return CLIPImageProcessorPil(
        do_resize=True,
        size={"height": IMAGE_SIZE, "width": IMAGE_SIZE},
        do_center_crop=False,
        crop_size={"height": IMAGE_SIZE, "width": IMAGE_SIZE},
        do_rescale=True,
        rescale_factor=1 / 255,
        do_normalize=True,
        image_mean=[0.5, 0.5, 0.5],
        image_std=[0.5, 0.5, 0.5],
        do_convert_rgb=True,
    )


def build_processor(tokenizer: PreTrainedTokenizerFast | None = None) -> LlavaProcessor:
    """The ``LlavaProcessor``: expands ``<image>`` to 64 tokens (8×8 patches + CLS − CLS)."""
    return LlavaProcessor(
        image_processor=build_image_processor(),
        tokenizer=tokenizer or build_tokenizer(),
        patch_size=PATCH_SIZE,
        vision_feature_select_strategy="default",
        num_additional_image_tokens=1,
        chat_template=CHAT_TEMPLATE,
        image_token=IMAGE_TOKEN,
    )


def build_config(tokenizer: PreTrainedTokenizerFast | None = None) -> LlavaConfig:
    """The LLaVA config; hidden sizes are the module constants above."""
    tok = tokenizer or build_tokenizer()
    vision = CLIPVisionConfig(
        hidden_size=VISION_HIDDEN,
        intermediate_size=VISION_INTERMEDIATE,
        num_hidden_layers=VISION_LAYERS,
        num_attention_heads=VISION_HEADS,
        image_size=IMAGE_SIZE,
        patch_size=PATCH_SIZE,
        num_channels=3,
        hidden_act="quick_gelu",
        projection_dim=VISION_HIDDEN,
    )
    text = LlamaConfig(
        vocab_size=len(tok),
        hidden_size=LM_HIDDEN,
        intermediate_size=LM_INTERMEDIATE,
        num_hidden_layers=LM_LAYERS,
        num_attention_heads=LM_HEADS,
        num_key_value_heads=LM_HEADS,
        max_position_embeddings=256,
        rms_norm_eps=1e-5,
        tie_word_embeddings=True,
        bos_token_id=tok.bos_token_id,
        eos_token_id=tok.eos_token_id,
        pad_token_id=tok.pad_token_id,
    )
    return LlavaConfig(
        vision_config=vision,
        text_config=text,
        image_token_index=int(tok.convert_tokens_to_ids(IMAGE_TOKEN)),  # type: ignore[arg-type]
        projector_hidden_act="gelu",
        vision_feature_select_strategy="default",
        vision_feature_layer=-1,
        image_seq_length=(IMAGE_SIZE // PATCH_SIZE) ** 2,
        tie_word_embeddings=True,
    )


def build_model(seed: int = 0) -> LlavaForConditionalGeneration:
    """A freshly initialised model (weights from ``torch.manual_seed(seed)``)."""
    torch.manual_seed(seed)
    model = LlavaForConditionalGeneration(build_config())
    model.set_attn_implementation("eager")  # the engine captures attentions; eager is also fastest here
    return model


def save_model_folder(model: LlavaForConditionalGeneration, folder: str | Path) -> Path:
    """Write weights (safetensors), config, tokenizer and processor files into ``folder``."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(folder)
    processor = build_processor()
    processor.save_pretrained(folder)
    return folder
