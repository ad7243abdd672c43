"""GLM-4V family adapter (``model_type`` ``"glm4v"``, ``"glm4v_moe"``): GLM-4.1V / GLM-4.5V, Qwen2-VL's packing with
a convolutional 2×2 token merge and 3D rotary positions.

As :mod:`vsp_assert.plugins.qwen2_vl`: the processor (``Glm4vImageProcessor``) resizes to multiples of
``patch_size · merge_size`` and packs each image's patches in merge order ``(t, h/2, w/2, 2, 2)`` into one
``[Σ h·w, d]`` sequence with block-diagonal attention (``image_grid_thw`` rows ``(1, h, w)``); the LM's M-RoPE
("3D rotary") positions come from ``input_ids``, ``mm_token_type_ids`` and ``image_grid_thw`` (``mm_token_type_ids``
grows by zeros with an appended answer). The difference: after the last block and ``post_layernorm`` (per patch),
the tower reads every 4 consecutive packed patches as a 2×2 image and merges them with a stride-2 convolution
(``downsample``) before its MLP merger, so LM image token ``g`` carries the four patches of merge group ``g`` with
weight ¼, as under Qwen's merger. ``vision_config.hidden_size`` is the vision width. The MoE variant (GLM-4.5V)
differs only in its LM's MLPs (per-token routing; see the MoE note in docs/adapters.md).

Video is refused (``supports_video = False``): GLM-4V writes its own video markers and per-frame timestamps into the
prompt, which this adapter does not map yet; the Qwen-VL families and LLaVA-OneVision / LLaVA-NeXT-Video take video.

Shapes: hooked block output ``[Σ h·w, d_vision]``; map ``[h·w / 4, h·w]``.
"""

from __future__ import annotations

from typing import Any

from .llava import LlavaAdapter
from .qwen2_vl import Qwen2VLAdapter


class Glm4vAdapter(Qwen2VLAdapter):
    family = "glm4v"
    model_types = ("glm4v", "glm4v_moe")  # type: ignore[assignment]  # the base's is inferred as one str
    model_class = "AutoModelForImageTextToText"  # Glm4v… or Glm4vMoe…ForConditionalGeneration by model_type
    #: GLM-4V's video prompt (its own video markers and per-frame timestamps) is not mapped: refused, not guessed
    supports_video = False

    @classmethod
    def load(cls, name_or_path: str, **kwargs: Any) -> tuple[Any, Any]:
        """``AutoProcessor`` as for LLaVA: GLM's processor has its own special tokens (Qwen's torchvision-free
        fallback does not apply)."""
        return LlavaAdapter.load.__func__(cls, name_or_path, **kwargs)  # type: ignore[attr-defined, no-any-return]

    def vision_width(self) -> int:
        return int(self.model.config.vision_config.hidden_size)
