"""Idefics2 is refused, with its reason and the alternatives: the perceiver resampler makes every LM image token
depend on every patch (checked here on the real classes), so A[t, p] has no token ↔ patch map to rest on."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from vsp_assert.engine.models import LoadedModel
from vsp_assert.errors import ModelError
from vsp_assert.testing import word_tokenizer
from vsp_assert.testing._tiny import _HEADS, _WIDTH, _chat_template, _text_kwargs
from vsp_assert.testing.contract_checks import lm_input_embeds


@pytest.fixture(scope="module")
def idefics2():
    """A tiny random Idefics2 (real model, processor and PIL image processor): 4 resampled latents per image."""
    from transformers import Idefics2Config, Idefics2ForConditionalGeneration, MistralConfig
    from transformers.models.idefics2 import Idefics2Processor
    from transformers.models.idefics2.image_processing_pil_idefics2 import Idefics2ImageProcessorPil

    tok = word_tokenizer(extra_specials={"image_token": "<image>", "image_boundary_token": "<fake_token_around_image>",
                                         "end_of_utterance_token": "<end_of_utterance>"})
    image_processor = Idefics2ImageProcessorPil(size={"shortest_edge": 16, "longest_edge": 16},
                                                do_image_splitting=False)
    processor = Idefics2Processor(image_processor=image_processor, tokenizer=tok, image_seq_len=4,
                                  chat_template=_chat_template("<image>"))
    config = Idefics2Config(
        vision_config={"hidden_size": _WIDTH, "intermediate_size": 2 * _WIDTH, "num_hidden_layers": 2,
                       "num_attention_heads": _HEADS, "image_size": 16, "patch_size": 4},
        perceiver_config={"hidden_size": _WIDTH, "resampler_n_latents": 4, "resampler_depth": 1,
                          "resampler_n_heads": _HEADS, "resampler_head_dim": _WIDTH // _HEADS,
                          "num_key_value_heads": 2},
        text_config=MistralConfig(**_text_kwargs(tok, max_position_embeddings=4096)),
        image_token_id=tok.image_token_id)
    torch.manual_seed(0)
    return Idefics2ForConditionalGeneration(config).eval(), processor


def test_loading_is_refused_with_the_reason_and_the_alternatives(idefics2):
    model, processor = idefics2
    with pytest.raises(ModelError) as caught:
        LoadedModel.wrap(model, processor)
    text = str(caught.value)
    assert "perceiver resampler" in text and "A[t, p], is undefined" in text
    assert "output_attentions=True" in text and "Idefics3 / SmolVLM" in text
    assert "resampler_n_latents=4" in text


def test_every_image_token_depends_on_every_patch(idefics2):
    """The reason, checked: perturbing any one patch at the last vision layer moves all the image tokens' LM inputs."""
    from PIL import Image

    model, processor = idefics2
    image = Image.fromarray((np.random.RandomState(1).rand(16, 16, 3) * 255).astype("uint8"))
    text = processor.apply_chat_template(
        [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "describe the image"}]}],
        add_generation_prompt=True)
    inputs = dict(processor(images=[[image]], text=[text], return_tensors="pt"))
    image_id = model.config.image_token_id
    positions = torch.nonzero(inputs["input_ids"][0] == image_id).flatten()
    assert positions.numel() == 4
    layer = model.model.vision_model.encoder.layers[-1]
    plain = lm_input_embeds(model, inputs)
    for patch in (0, 7, 15):
        def bump(hidden, patch=patch):
            h = hidden.clone()
            h[:, patch] += 3.0 * torch.linspace(-1.0, 1.0, h.shape[-1])  # not constant: the post-norm removes that
            return h

        moved = (lm_input_embeds(model, inputs, layer, bump) != plain).any(-1)[0]  # [L]
        assert torch.equal(torch.nonzero(moved).flatten(), positions), patch
