"""LLaVA-NeXT-Video family adapter (``model_type == "llava_next_video"``): LLaVA-NeXT images, pooled video frames.

Still images go exactly as in LLaVA-NeXT (:mod:`vsp_assert.plugins.llava_next`: base view + anyres tiles, CLIP
tower, newline tokens; the map from the model's ``pack_image_features``). **Video** (layout shared with
LLaVA-OneVision in :mod:`vsp_assert.plugins._llava_video`): every frame runs through the CLIP tower
(``pixel_values_videos [B, F, C, H, W]`` → ``[B·F, 1 + P_f, d]``), ``vision_feature_select_strategy == "default"``
drops the class token, the ``vision_resampler`` pools each frame's ``rows × cols`` grid with
``spatial_pool_stride`` (``spatial_pool_mode``: ``average`` in the released checkpoints) *before* the projector,
and the pooled tokens of frame 0, frame 1, … fill the prompt's ``<video>`` tokens (``video_token_id``; no newline
token). Each frame is one view; a frame's map is the resampler run on one-hot patch features: under ``average``
pooling exactly the window's patches at ``1/stride²`` each (pooling is linear), under ``max`` the window's patches
at equal weights (which patch wins depends on the features, channel by channel); ``conv`` pooling mixes channels
and is refused.

The model concatenates the pooled frames of all clips before placing them (no per-clip newline), so clips of
different frame counts can share a batch: the processor stacks clips of one length as ``[B, F, C, H, W]``; for a
ragged batch :meth:`LlavaNextVideoAdapter.prepare_videos` runs the video processor clip by clip, writes each
prompt's ``<video>`` tokens with the processor's own ``replace_video_token`` and packs the frames as ``[1, ΣF, C,
H, W]`` (the tower sees the same ``ΣF`` frames in the same order).

Shapes: hooked layer output ``[B·F, 1 + P_f, d_vision]`` (CLS first) → patches ``[B, F·P_f, d_vision]``; map
``[F·t, F·P_f]`` with ``t = P_f / stride²``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from vsp_assert.engine.adapter import PatchMap
from vsp_assert.errors import ModelError

from ._llava_video import LlavaVideoAdapter, is_video_inputs


class LlavaNextVideoAdapter(LlavaVideoAdapter):
    family = "llava_next_video"
    model_types = ("llava_next_video",)
    model_class = "LlavaNextVideoForConditionalGeneration"

    # ------------------------------------------------------------------ one frame
    def frame_block(self) -> torch.Tensor:
        """``[t, rows·cols]``: one frame's pooling, from the model's own ``vision_resampler`` (see the module doc)."""
        config = self.model.config
        mode = getattr(config, "spatial_pool_mode", "average")
        if mode not in ("average", "max"):
            raise ModelError("llava_next_video: the video map follows average or max pooling only (conv pooling "
                             "mixes channels)", field="spatial_pool_mode", received=mode,
                             allowed="average, max", fix="use a checkpoint with average pooling (the released ones)")
        rows, cols = self.grid()
        one_hot = torch.eye(rows * cols)[None]  # [1, P_f, P_f]: channel j marks patch j
        with torch.no_grad():
            pooled = self.model.model.vision_resampler(one_hot)[0].detach().clone()  # [t, P_f]
        return pooled / pooled.sum(1, keepdim=True)  # average: already 1/stride²; max: 1 per window patch

    # ------------------------------------------------------------------ inputs
    def prepare_videos(self, videos: Sequence[Any], texts: list[str]) -> dict[str, torch.Tensor]:
        if len({len(v.frames) for v in videos}) == 1:
            return super().prepare_videos(videos, texts)
        return self.pack_ragged(videos, texts)

    def pack_ragged(self, videos: Sequence[Any], texts: list[str]) -> dict[str, torch.Tensor]:
        """Clips of different frame counts: the processor's own parts clip by clip, frames packed ``[1, ΣF, C, H,
        W]``; each prompt's tokens are what the processor writes for its clip."""
        processor = self.processor
        clips = [processor.video_processor([list(v.frames)], return_tensors="pt") for v in videos]  # [1, F_b, ...]
        replacements = [processor.replace_video_token(clip, video_idx=0) for clip in clips]
        expanded, _ = processor.get_text_with_replacements(texts, [], replacements, [])
        tokenizer = self.tokenizer
        old_side, tokenizer.padding_side = getattr(tokenizer, "padding_side", "left"), "left"
        try:
            out = dict(tokenizer(expanded, padding=True, return_tensors="pt"))
        finally:
            tokenizer.padding_side = old_side
        out["pixel_values_videos"] = torch.cat([clip["pixel_values_videos"] for clip in clips], dim=1)
        return out

    # ------------------------------------------------------------------ mapping
    def patch_map(self, inputs: dict[str, torch.Tensor], index: int) -> PatchMap:
        if is_video_inputs(inputs) and self.model.config.vision_feature_select_strategy != "default":
            raise ModelError("llava_next_video: only vision_feature_select_strategy='default' is supported (the "
                             "resampler pools a square grid without the class token)",
                             field="vision_feature_select_strategy",
                             received=self.model.config.vision_feature_select_strategy,
                             fix="use a checkpoint with the default strategy (all released LLaVA-NeXT-Video models)")
        return super().patch_map(inputs, index)
