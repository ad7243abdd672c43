"""Llama 4 is refused with its reason: chunked attention that nothing can verify, because the installed
transformers' forward does not run (checked here on the real class, so a release that fixes it fails this test and
calls for the adapter)."""

from __future__ import annotations

import pytest
import torch

from vsp_assert.engine.models import LoadedModel
from vsp_assert.errors import ModelError


@pytest.fixture(scope="module")
def llama4():
    """A tiny random Llama 4 (real class): MoE LM with chunked attention (chunks of 8 tokens), pixel-shuffle tower."""
    from transformers import Llama4Config, Llama4ForConditionalGeneration

    config = Llama4Config(
        vision_config={"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2, "num_attention_heads": 4,
                       "image_size": 16, "patch_size": 4, "vision_output_dim": 32, "projector_input_dim": 32,
                       "projector_output_dim": 32, "pixel_shuffle_ratio": 0.5},
        text_config={"hidden_size": 32, "intermediate_size": 64, "intermediate_size_mlp": 64, "num_hidden_layers": 2,
                     "num_attention_heads": 4, "num_key_value_heads": 2, "head_dim": 8, "vocab_size": 64,
                     "num_local_experts": 2, "attention_chunk_size": 8, "interleave_moe_layer_step": 1,
                     "max_position_embeddings": 128},
        image_token_index=60)
    torch.manual_seed(0)
    return Llama4ForConditionalGeneration(config).eval()


def test_loading_is_refused_with_the_reason_and_the_alternative(llama4):
    with pytest.raises(ModelError) as caught:
        LoadedModel.wrap(llama4, object())
    text = str(caught.value)
    assert "chunked-attention" in text and "attention_chunk_size=8" in text
    assert "output_attentions=True" in text and "docs/adapters.md" in text


def test_the_reason_holds_the_installed_forward_does_not_run(llama4):
    """If this starts passing through (a transformers release fixed the forward), write the adapter: tiles + global
    view, CLS dropped, pixel shuffle ½, and a capture of each chunked layer's own mask checked against eager."""
    with torch.no_grad(), pytest.raises(AttributeError, match="image_outputs"):
        llama4(input_ids=torch.tensor([[1, 2, 3, 4]]))
