"""Tiny in-process models and SAEs for tests (ours and our users').

Nothing here downloads: a LLaVA is built from ``LlavaConfig`` with random weights, its processor from a
``CLIPImageProcessorPil`` with explicit sizes and a word-level tokenizer made with the ``tokenizers`` library
(carrying ``<image>`` and a chat template), so inputs go through the same processor code path a real checkpoint
uses. ``tiny_llava(...).save(folder)`` writes a folder that ``load_model(folder)`` reads back.

The other families' tiny models are in :mod:`vsp_assert.testing.families`; the adapter contract every family
keeps (and a third-party adapter can check) is :mod:`vsp_assert.testing.contract`.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Literal

import torch

from vsp_assert.engine.labels import ConceptLabels
from vsp_assert.engine.models import LoadedModel
from vsp_assert.engine.sae import SAE, SAEConfig

TINY_WORDS = (
    "USER: ASSISTANT: what color is the a an of shape object in image ? . yes no "
    "red green blue yellow circle square triangle left right top bottom describe it there"
).split()
CHAT_TEMPLATE = (
    "{% for message in messages %}{% if message['role'] == 'user' %}USER: "
    "{% for part in message['content'] %}{% if part['type'] == 'image' %}<image>\n{% else %}{{ part['text'] }}"
    "{% endif %}{% endfor %} {% else %}ASSISTANT: {{ message['content'][0]['text'] }}</s>{% endif %}{% endfor %}"
    "{% if add_generation_prompt %}ASSISTANT:{% endif %}"
)


def word_tokenizer(
    words: list[str] | tuple[str, ...] = TINY_WORDS,
    *,
    extra_specials: dict[str, str] | None = None,
) -> Any:
    """A real ``PreTrainedTokenizerFast`` over a closed vocabulary (word level, whitespace split).

    ``extra_specials`` adds special tokens a family's processor looks for, as ``{attribute: token}`` (e.g.
    ``{"vision_start_token": "<|vision_start|>"}``); each becomes ``tok.<attribute>`` / ``tok.<attribute>_id``
    and is never split, so it may stand next to other text without spaces.
    """
    from tokenizers import AddedToken, Tokenizer, decoders, models, normalizers, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    specials = ["<pad>", "<unk>", "<s>", "</s>", "<image>"]
    added = [t for t in dict.fromkeys((extra_specials or {}).values()) if t not in specials]
    vocab = {w: i for i, w in enumerate(specials + added + [w for w in dict.fromkeys(words) if w not in specials])}
    backend = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    if extra_specials:
        backend.add_special_tokens([AddedToken(t, normalized=False, special=True) for t in extra_specials.values()])
    backend.normalizer = normalizers.Sequence([normalizers.Replace("?", " ?"), normalizers.Replace("\n", " ")])
    backend.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    backend.decoder = decoders.WordPiece(prefix="##", cleanup=False)
    tok = PreTrainedTokenizerFast(
        tokenizer_object=backend,
        bos_token="<s>",
        eos_token="</s>",
        pad_token="<pad>",
        unk_token="<unk>",
        extra_special_tokens={"image_token": "<image>", **(extra_specials or {})},
        padding_side="left",
    )
    tok.chat_template = CHAT_TEMPLATE
    return tok


def tiny_llava(
    *,
    seed: int = 0,
    image_size: int = 32,
    patch_size: int = 8,
    vision_hidden: int = 32,
    vision_layers: int = 2,
    text_hidden: int = 32,
    text_layers: int = 2,
    heads: int = 4,
    kv_heads: int = 2,
    vision_feature_layer: int = -1,
    select_strategy: Literal["default", "full"] = "default",
    max_positions: int = 512,
) -> LoadedModel:
    """A random-weight ``LlavaForConditionalGeneration`` with a working processor, wrapped for the engine."""
    from transformers import (
        CLIPImageProcessorPil,
        CLIPVisionConfig,
        LlamaConfig,
        LlavaConfig,
        LlavaForConditionalGeneration,
        LlavaProcessor,
    )

    tok = word_tokenizer()
    image_token = tok.convert_tokens_to_ids("<image>")
    vision = CLIPVisionConfig(
        hidden_size=vision_hidden, intermediate_size=vision_hidden * 2, num_hidden_layers=vision_layers,
        num_attention_heads=heads, image_size=image_size, patch_size=patch_size,
    )
    text = LlamaConfig(
        hidden_size=text_hidden, intermediate_size=text_hidden * 2, num_hidden_layers=text_layers,
        num_attention_heads=heads, num_key_value_heads=kv_heads, vocab_size=len(tok),
        max_position_embeddings=max_positions, pad_token_id=tok.pad_token_id, bos_token_id=tok.bos_token_id,
        eos_token_id=tok.eos_token_id,
    )
    config = LlavaConfig(
        vision_config=vision, text_config=text, image_token_index=image_token,
        vision_feature_layer=vision_feature_layer, vision_feature_select_strategy=select_strategy,
        projector_hidden_act="gelu",
    )
    torch.manual_seed(seed)
    model = LlavaForConditionalGeneration(config).eval()
    model.generation_config.eos_token_id = tok.eos_token_id
    model.generation_config.pad_token_id = tok.pad_token_id
    image_processor = CLIPImageProcessorPil(
        size={"shortest_edge": image_size}, crop_size={"height": image_size, "width": image_size},
        do_center_crop=True, do_resize=True,
    )
    processor = LlavaProcessor(
        image_processor=image_processor, tokenizer=tok, patch_size=patch_size,
        vision_feature_select_strategy=select_strategy, num_additional_image_tokens=1,
        chat_template=CHAT_TEMPLATE,
    )
    return LoadedModel.wrap(model, processor, name="tiny-llava")


def save_model(loaded: LoadedModel, folder: str | os.PathLike[str]) -> Path:
    """Write ``loaded`` with ``save_pretrained`` (model + processor) so that ``load_model(folder)`` reads it."""
    out = Path(folder)
    loaded.model.save_pretrained(out)
    loaded.processor.save_pretrained(out)
    return out


def random_sae(
    d_in: int,
    d_sae: int = 64,
    *,
    architecture: str = "topk",
    k: int = 8,
    seed: int = 0,
    hook_layer: str | None = None,
    concepts: dict[str, list[int]] | None = None,
    apply_b_dec_to_input: bool = True,
    normalize_activations: str = "none",
) -> SAE:
    """An SAE with random weights (unit-norm decoder rows, encoder = decoderᵀ as SAELens initialises)."""
    gen = torch.Generator().manual_seed(seed)
    w_dec = torch.randn(d_sae, d_in, generator=gen)
    w_dec = w_dec / w_dec.norm(dim=1, keepdim=True)
    weights = {
        "W_enc": w_dec.T.clone(),
        "W_dec": w_dec,
        "b_enc": 0.1 * torch.randn(d_sae, generator=gen),
        "b_dec": 0.1 * torch.randn(d_in, generator=gen),
    }
    if architecture == "jumprelu":
        weights["threshold"] = 0.2 * torch.rand(d_sae, generator=gen)
    cfg = SAEConfig(
        architecture=architecture,  # type: ignore[arg-type]
        d_in=d_in, d_sae=d_sae, k=k if architecture == "topk" else None,
        apply_b_dec_to_input=apply_b_dec_to_input,
        normalize_activations=normalize_activations,  # type: ignore[arg-type]
    )
    labels = ConceptLabels(d_sae=d_sae, concepts=dict(concepts or {}))
    return SAE(cfg, weights, hook_layer=hook_layer, labels=labels)
