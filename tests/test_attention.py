"""Captured attention equals eager ``output_attentions`` for the rows we keep, without asking for it."""

from __future__ import annotations

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from vsp_assert import Scratchpad
from vsp_assert.engine.attention import CAPTURE_IMPLEMENTATION, active_recorder

PROMPTS = ["what color is the square ?", "is there a red circle ?", "describe the image", "shape ?"]


def eager_reference(loaded, trace, layers):
    """Mean over heads and ``layers`` of eager attention rows that produced each output token, image keys only."""
    model = loaded.model
    ids = torch.cat([trace.replay.inputs["input_ids"][0], trace.output_ids])[None]
    model.set_attn_implementation({"text_config": "eager"})
    try:
        with torch.no_grad():
            out = model(input_ids=ids, pixel_values=trace.replay.inputs["pixel_values"], output_attentions=True)
    finally:
        loaded.adapter.install_attention_capture()
    att = torch.stack([out.attentions[i] for i in layers])[:, 0]  # [L, H, S, S]
    image_pos = torch.nonzero(ids[0] == model.config.image_token_id).flatten()
    rows = torch.arange(trace.replay.prompt_len - 1, trace.replay.prompt_len - 1 + trace.n_tokens)
    sel = att[:, :, rows][..., image_pos].mean(dim=(0, 1))  # [T, N_img]
    return sel / sel.sum(-1, keepdim=True)


@settings(max_examples=6, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(prompt=st.sampled_from(PROMPTS), image=st.integers(0, 2), layers=st.sampled_from([None, [0], [1], [0, 1]]))
def test_capture_equals_eager_output_attentions(tiny, tiny_sae, images, prompt, image, layers):
    pad = Scratchpad(tiny, tiny_sae, attention_layers=layers, max_new_tokens=5)
    trace = pad.run(images[image], prompt)
    assert trace.n_tokens > 0
    expected = eager_reference(tiny, trace, layers or [0, 1])
    torch.testing.assert_close(trace.attention, expected, rtol=1e-4, atol=1e-6)
    assert torch.allclose(trace.attention.sum(-1), torch.ones(trace.n_tokens))


def test_lm_runs_the_capturing_implementation_and_vision_keeps_sdpa(tiny):
    assert tiny.model.config.text_config._attn_implementation == CAPTURE_IMPLEMENTATION
    assert tiny.model.config.vision_config._attn_implementation == "sdpa"


def test_no_recorder_outlives_a_run(pad, images):
    pad.run(images[0], PROMPTS[0])
    assert active_recorder() is None


def test_capture_does_not_change_the_model_output(tiny, images):
    """The capturing implementation computes the same logits as plain sdpa."""
    inputs = tiny.adapter.prepare([images[0]], [PROMPTS[0]])
    with torch.no_grad():
        captured = tiny.model(**inputs).logits
        tiny.model.set_attn_implementation({"text_config": "sdpa"})
        try:
            plain = tiny.model(**inputs).logits
        finally:
            tiny.adapter.install_attention_capture()
    assert torch.equal(captured, plain)


@pytest.mark.parametrize("rows", [1, 3])
def test_image_attention_rows_against_full_softmax(rows):
    from vsp_assert.engine.attention import image_attention_rows

    q = torch.randn(2, 4, 6, 8)
    k = torch.randn(2, 2, 6, 8)
    pos = torch.tensor([[1, 2, 3], [0, 2, 4]])
    got = image_attention_rows(q, k, None, None, pos, rows=rows)  # [B, H, R, 3]
    full = torch.softmax(
        (q @ k.repeat_interleave(2, 1).transpose(2, 3)) * 8**-0.5
        + torch.full((6, 6), float("-inf")).triu(1), dim=-1
    )  # [B, H, 6, 6]
    want = torch.stack([full[b, :, 6 - rows :, pos[b]] for b in range(2)])
    torch.testing.assert_close(got, want)


def test_capture_refuses_soft_capped_attention():
    """Gemma 2 soft-caps attention logits inside the kernel; sdpa cannot, so the capture must not run it."""
    from transformers import Gemma2Config, Gemma2ForCausalLM

    from vsp_assert.engine.attention import register
    from vsp_assert.errors import ModelError

    config = Gemma2Config(vocab_size=32, hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                          num_attention_heads=2, num_key_value_heads=1, head_dim=8, attn_logit_softcapping=50.0)
    model = Gemma2ForCausalLM(config).eval()
    model.set_attn_implementation(register())
    with pytest.raises(ModelError, match="Gemma2Attention soft-caps its attention logits") as raised:
        with torch.no_grad():
            model(torch.tensor([[1, 2, 3]]))
    assert "attn_logit_softcapping=None" in str(raised.value)


def test_image_attention_rows_with_a_sliding_window_cache():
    """Keys 0..K-1 stand for sequence positions offset..offset+K-1; image tokens before the window get 0."""
    from vsp_assert.engine.attention import image_attention_rows

    q, k = torch.randn(1, 2, 1, 4), torch.randn(1, 2, 5, 4)
    pos = torch.tensor([[1, 3, 4, 6]])  # sequence positions; the cache holds positions 3..7
    got = image_attention_rows(q, k, None, None, pos, key_offset=3)  # [1, 2, 1, 4]
    probs = torch.softmax((q @ k.transpose(2, 3)) * 4**-0.5, dim=-1)  # [1, 2, 1, 5]
    assert torch.equal(got[..., 0], torch.zeros(1, 2, 1))
    torch.testing.assert_close(got[..., 1:], probs[..., [0, 1, 3]])
