"""What every tiny family builder shares: the LM sizes, the chat template with a family's image placeholder, and
the finishing of a built model (eval mode, generation ids, the engine's wrapper). Private to the
``vsp_assert.testing.families_*`` modules, which import it rather than one another.
"""

from __future__ import annotations

from typing import Any

from vsp_assert.engine.models import LoadedModel

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


def _chat_template(image: str, video: str | None = None) -> str:
    """``USER: <image block> prompt ASSISTANT:`` with the family's image placeholder (and its video one, for
    families that take video)."""
    video_part = "{% elif part['type'] == 'video' %}" + video if video else ""
    return (
        "{% for message in messages %}{% if message['role'] == 'user' %}USER: "
        "{% for part in message['content'] %}{% if part['type'] == 'image' %}" + image + video_part + "{% else %}"
        "{{ part['text'] }}{% endif %}{% endfor %} {% else %}ASSISTANT: {{ message['content'][0]['text'] }}</s>"
        "{% endif %}{% endfor %}{% if add_generation_prompt %}ASSISTANT:{% endif %}"
    )


def _finish(model: Any, processor: Any, tok: Any, name: str) -> LoadedModel:
    model = model.eval()
    model.generation_config.eos_token_id = tok.eos_token_id
    model.generation_config.pad_token_id = tok.pad_token_id
    return LoadedModel.wrap(model, processor, name=name)
