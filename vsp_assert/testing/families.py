"""Tiny in-process models of every supported VLM family, with their real processors (tests, notebooks).

:mod:`vsp_assert.testing` builds the tiny LLaVA the engine tests use; this module does the same for the other
families, so that each adapter in ``plugins/`` is proven on the real transformers classes: the model is built
from its config classes with random weights (nothing is downloaded), the image processor is the family's
``*Pil`` class with explicit arguments (no torchvision), and the tokenizer is the word-level
:func:`~vsp_assert.testing.word_tokenizer` carrying the family's special image tokens and a chat template, so
inputs go through the same processor code a real checkpoint uses.

Every config is small enough for a forward in a few milliseconds on one CPU core: 2 vision + 2 LM layers,
width 32, images of 16–32 pixels in patches of 4–8. ``tiny_model(family)`` is the entry point; ``FAMILIES``
lists the families it can build. The builders live in one module per group of related families
(``families_llava``, ``families_qwen``, ``families_qwen3``, ``families_gemma``, ``families_idefics``,
``families_internvl``, ``families_mistral3``, ``families_glm4v``) and are re-exported here.

One deviation from a hub checkpoint: the Qwen-VL, LLaVA-OneVision and LLaVA-NeXT-Video processors require a video
processor, which needs torchvision; the real processor classes are built with the video slot left empty (their
``__call__`` is unchanged; :func:`vsp_assert.plugins._qwen_video.image_only` for Qwen-VL), and the adapters put the
torchvision-free video processors of ``plugins/_qwen_video.py`` / ``plugins/_llava_video.py`` there.
SmolVLM's processor also insists on ``num2words`` (it spells video frame counts) and takes a video processor that
ProcessorMixin's class check only accepts with torchvision: ``_ImageOnlySmolVLMProcessor`` skips the first and holds
a real ``SmolVLMVideoProcessor`` (whose ``num_frames`` / ``fps`` its ``apply_chat_template`` reads) outside the check.
Qwen3-VL's, InternVL's and GLM-4V's processors get the same image-only treatment; Mistral 3's ``PixtralProcessor`` is
imported with its one torchvision-only helper served by the PIL twin (see ``families_mistral3``); the MoE LMs
(Qwen3-VL-MoE, GLM-4.5V) run ``experts_implementation="batched_mm"`` (see ``families_qwen3``).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from vsp_assert.engine.models import LoadedModel
from vsp_assert.testing.families_gemma import tiny_gemma3, tiny_paligemma
from vsp_assert.testing.families_glm4v import tiny_glm4v, tiny_glm4v_moe
from vsp_assert.testing.families_idefics import tiny_idefics3, tiny_smolvlm
from vsp_assert.testing.families_internvl import tiny_aya_vision, tiny_internvl
from vsp_assert.testing.families_llava import tiny_llava_next, tiny_llava_next_video, tiny_llava_onevision
from vsp_assert.testing.families_mistral3 import tiny_mistral3
from vsp_assert.testing.families_qwen import tiny_qwen2_5_vl, tiny_qwen2_vl
from vsp_assert.testing.families_qwen3 import tiny_qwen3_vl, tiny_qwen3_vl_moe

FAMILIES: tuple[str, ...] = (
    "llava", "llava_next", "qwen2_vl", "qwen2_5_vl", "paligemma", "idefics3", "smolvlm", "gemma3", "llava_onevision",
    "qwen3_vl", "qwen3_vl_moe", "internvl", "aya_vision", "mistral3", "glm4v", "glm4v_moe", "llava_next_video",
)

__all__ = [
    "BUILDERS", "FAMILIES", "tiny_aya_vision", "tiny_gemma3", "tiny_glm4v", "tiny_glm4v_moe", "tiny_idefics3",
    "tiny_internvl", "tiny_llava_next", "tiny_llava_next_video", "tiny_llava_onevision", "tiny_mistral3", "tiny_model",
    "tiny_paligemma", "tiny_qwen2_5_vl", "tiny_qwen2_vl", "tiny_qwen3_vl", "tiny_qwen3_vl_moe", "tiny_smolvlm",
]


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
    "qwen3_vl": tiny_qwen3_vl,
    "qwen3_vl_moe": tiny_qwen3_vl_moe,
    "internvl": tiny_internvl,
    "aya_vision": tiny_aya_vision,
    "mistral3": tiny_mistral3,
    "glm4v": tiny_glm4v,
    "glm4v_moe": tiny_glm4v_moe,
    "llava_next_video": tiny_llava_next_video,
}


def tiny_model(family: str, **kw: Any) -> LoadedModel:
    """A tiny random-weight model of ``family`` (one of :data:`FAMILIES`) with its processor and adapter."""
    if family not in BUILDERS:
        from vsp_assert.errors import InputError

        raise InputError("no tiny builder for this family", field="family", received=family,
                         allowed=", ".join(FAMILIES))
    return BUILDERS[family](**kw)
