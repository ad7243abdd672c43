"""Qwen2-VL family adapter (``model_type == "qwen2_vl"``): dynamic resolution, 2×2 patch merge, M-RoPE.

The image is resized to multiples of ``patch_size · merge_size`` (within ``min_pixels``/``max_pixels``), so the
patch grid ``(h, w)`` differs per image (``image_grid_thw`` rows ``(1, h, w)`` for still images). The vision
tower (``model.visual``) runs on one *packed* sequence: ``[Σ h·w, d]`` for all images of the batch, each image's
patches in merge order ``(h/2, w/2, 2, 2)``, with block-diagonal attention per image. The merger turns each 2×2
group into one LM image token, so the token ↔ patch map is many-to-one: image token ``g`` carries its four
patches with weight 1/4. ``patches_of`` unpacks to row-major ``[B, h·w, d]`` (zero-padded to the largest image)
and ``with_patches`` packs back; both need the forward's ``image_grid_thw`` (the patch count alone does not
give the grid) and raise a ``ModelError`` naming the family without it.

**Video** (:mod:`vsp_assert.engine.video`): a clip's frames go through the processor's video path
(``pixel_values_videos``, ``video_grid_thw`` rows ``(t, h, w)``, ``<|video_pad|>`` tokens); the tower packs
``temporal_patch_size`` (2) consecutive frames into one patch, so a clip of ``F`` frames has ``t = ⌈F/2⌉`` time
slices of ``h × w`` patches, and a patch is (slice, row, col): the map's views are the slices and
``PatchMap.frames_per_view`` is 2 (``Trace.frames`` then names the frames each slice covers). Without torchvision
the processor has no video processor and :class:`~vsp_assert.plugins._qwen_video.FrameVideoProcessor` computes the
same inputs. A batch holds images or videos, never both (the Scratchpad splits mixed batches): the model runs its
tower once per kind.

M-RoPE position ids are computed by the model itself from ``input_ids`` and ``image_grid_thw`` (also during
``generate``); ``mm_token_type_ids`` is a per-token input and grows by zeros when an answer is appended.

Shapes: hooked block output ``[Σ h·w, d_vision]``; ``vision_config.embed_dim`` is the vision width
(``hidden_size`` is the merger's output width).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from vsp_assert.engine.adapter import PatchMap
from vsp_assert.engine.video import is_video
from vsp_assert.errors import ModelError

from . import _qwen_video
from .llava import LlavaAdapter

#: the input keys of each kind: pixels, grid rows, placeholder token (the config's attribute name)
_KIND = {"image": ("pixel_values", "image_grid_thw", "image_token_id"),
         "video": ("pixel_values_videos", "video_grid_thw", "video_token_id")}


def _kind(inputs: dict[str, torch.Tensor] | None) -> str:
    return "video" if inputs is not None and "video_grid_thw" in inputs else "image"


class Qwen2VLAdapter(LlavaAdapter):
    family = "qwen2_vl"
    model_types = ("qwen2_vl",)
    vision_once = False  # the layout after the hook depends on per-image views/packing: no batch expansion
    model_class = "Qwen2VLForConditionalGeneration"
    supports_video = True
    vision_keys = ("pixel_values", "pixel_values_videos")

    def __init__(self, model: Any, processor: Any) -> None:
        super().__init__(model, processor)
        if self.supports_video:
            _qwen_video.install(processor)  # only where the torchvision video processor is missing

    @classmethod
    def load(cls, name_or_path: str, **kwargs: Any) -> tuple[Any, Any]:
        import transformers

        model = getattr(transformers, cls.model_class).from_pretrained(name_or_path, **kwargs)
        return model, _qwen_video.load_processor(name_or_path,
                                                 trust_remote_code=kwargs.get("trust_remote_code", False))

    # ------------------------------------------------------------------ vision
    def vision_layer_paths(self) -> list[str]:
        return [f"model.visual.blocks.{i}" for i in range(len(self.model.model.visual.blocks))]

    def fed_layer_index(self) -> int:
        return len(self.vision_layer_paths()) - 1

    def vision_width(self) -> int:
        return int(self.model.config.vision_config.embed_dim)

    def _merge(self) -> int:
        return int(self.model.config.vision_config.spatial_merge_size)

    def grid(self) -> tuple[int, int]:
        raise ModelError(f"{self.family}: the patch grid depends on the image; read PatchMap.grid")

    def patch_token_index(self, n_tokens: int) -> torch.Tensor:
        return torch.arange(n_tokens)

    def _grids(self, inputs: dict[str, torch.Tensor] | None, n_rows: int, batch: int) -> list[tuple[int, int, int]]:
        key = _KIND[_kind(inputs)][1]
        if inputs is None or key not in inputs:
            raise ModelError(f"{self.family}: the packed vision sequence needs the forward's {key}",
                             fix="pass the model inputs to patches_of / with_patches / make_edit")
        grids = [tuple(int(x) for x in row) for row in inputs[key]]
        if len(grids) != batch or sum(t * h * w for t, h, w in grids) != n_rows:
            raise ModelError(f"{self.family}: {len(grids)} image grids for a batch of {batch} images "
                             f"({n_rows} packed patches)", fix="one image per prompt")
        return grids  # type: ignore[return-value]

    def _row_major(self, t: int, h: int, w: int) -> torch.Tensor:
        """``[t·h·w]``: the row-major patch index of each position of one image's packed (merge-order) sequence."""
        m = self._merge()
        idx = torch.arange(t * h * w).reshape(t, h // m, m, w // m, m)  # row-major ids viewed as (t, bh, mh, bw, mw)
        return idx.permute(0, 1, 3, 2, 4).flatten()  # packed order (t, bh, bw, mh, mw)

    def _to_natural(self, hidden: torch.Tensor, grids: Sequence[tuple[int, int, int]]) -> torch.Tensor:
        """The hooked output in the processor's packed order (Qwen2.5-VL overrides: undo its window order)."""
        return hidden

    def _from_natural(self, natural: torch.Tensor, grids: Sequence[tuple[int, int, int]]) -> torch.Tensor:
        return natural

    def patches_of(self, hidden: torch.Tensor, batch: int,
                   inputs: dict[str, torch.Tensor] | None = None) -> torch.Tensor:
        grids = self._grids(inputs, hidden.shape[0], batch)
        natural = self._to_natural(hidden, grids)  # [N, d]
        sizes = [t * h * w for t, h, w in grids]
        out = natural.new_zeros(batch, max(sizes), natural.shape[1])  # [B, P_max, d]
        for b, (chunk, grid) in enumerate(zip(torch.split(natural, sizes), grids)):
            out[b, self._row_major(*grid).to(out.device)] = chunk
        return out

    def with_patches(self, hidden: torch.Tensor, patches: torch.Tensor,
                     inputs: dict[str, torch.Tensor] | None = None) -> torch.Tensor:
        grids = self._grids(inputs, hidden.shape[0], patches.shape[0])
        chunks = [patches[b, self._row_major(*grid).to(patches.device)] for b, grid in enumerate(grids)]
        return self._from_natural(torch.cat(chunks).to(hidden.dtype), grids)

    # ------------------------------------------------------------------ inputs
    def prepare(self, images: Sequence[Any], prompts: Sequence[str]) -> dict[str, torch.Tensor]:
        if not any(is_video(v) for v in images):
            return super().prepare(images, prompts)
        texts = [self._chat(p, kind="video") for p in prompts]
        tokenizer = self.tokenizer
        old_side, tokenizer.padding_side = getattr(tokenizer, "padding_side", "left"), "left"
        try:
            out = dict(self.processor(videos=[list(v.frames) for v in images], text=texts, return_tensors="pt",
                                      padding=True, video_metadata=[_qwen_video.metadata(v) for v in images]))
        finally:
            tokenizer.padding_side = old_side
        out.pop("video_metadata", None)
        return out

    def element_inputs(self, inputs: dict[str, torch.Tensor], index: int) -> dict[str, torch.Tensor]:
        pixels_key, grid_key, _ = _KIND[_kind(inputs)]
        grids = inputs[grid_key]  # [B, 3]
        sizes = grids.prod(-1).tolist()
        start = sum(sizes[:index])
        packed = {pixels_key: inputs[pixels_key][start : start + sizes[index]], grid_key: grids[index : index + 1]}
        per_video = {k: inputs[k][index : index + 1] for k in ("second_per_grid_ts",) if k in inputs}
        rest = {k: v for k, v in inputs.items() if k not in packed and k not in per_video}
        return {**super().element_inputs(rest, index), **packed, **per_video}

    def teacher_forced_inputs(self, inputs: dict[str, torch.Tensor], answer_ids: torch.Tensor
                              ) -> dict[str, torch.Tensor]:
        out = super().teacher_forced_inputs(inputs, answer_ids)
        if "mm_token_type_ids" in inputs:  # answer tokens are text (type 0)
            types = inputs["mm_token_type_ids"]
            out["mm_token_type_ids"] = torch.cat([types, types.new_zeros(1, answer_ids.numel())], dim=1)
        return out

    # ------------------------------------------------------------------ mapping
    def patch_map(self, inputs: dict[str, torch.Tensor], index: int) -> PatchMap:
        kind = _kind(inputs)
        _, grid_key, token_name = _KIND[kind]
        ids = inputs["input_ids"][index]  # [L]
        positions = torch.nonzero(ids == getattr(self.model.config, token_name)).flatten()  # [N_img]
        t, h, w = (int(x) for x in inputs[grid_key][index])
        m = self._merge()
        n_tokens = t * h * w // (m * m)
        if positions.numel() != n_tokens:
            raise ModelError(f"{self.family}: the prompt holds {positions.numel()} image tokens, the grid "
                             f"{t}x{h}x{w} merges to {n_tokens}", fix="build inputs with the model's own processor")
        mapping = torch.zeros(n_tokens, t * h * w)
        owner = torch.arange(t * h * w) // (m * m)  # packed position → merged token
        mapping[owner, self._row_major(t, h, w)] = 1.0 / (m * m)
        per_view = int(self.model.config.vision_config.temporal_patch_size) if kind == "video" else 0
        return PatchMap(image_positions=positions, token_to_patch=mapping, grid=(h, w), views=t,
                        frames_per_view=per_view)
