"""Aya Vision family adapter (``model_type == "aya_vision"``): SigLIP tiles + global view, pixel shuffle ×2, Cohere2 LM.

The processor (``GotOcr2ImageProcessor`` with ``crop_to_patches``, as InternVL's) cuts the image into up to
``max_patches`` tiles of the encoder's size and, when it cut more than one, appends the whole image resized to one
tile (the *global* view): ``V = tiles (+ 1)`` views, stacked for the whole batch in ``pixel_values [ΣV, 3, H, W]``.
In the prompt an image is ``<|START_OF_IMG|>``, then per tile ``TILE_i`` and its image-patch tokens, then
``TILE_GLOBAL`` and the global view's tokens, then ``<|END_OF_IMG|>``: the views' ``<|IMG_PATCH|>`` tokens in view
order (tiles row-major, global view last).

The SigLIP tower (``model.vision_tower.vision_model.encoder.layers``, no class token; ``vision_feature_select_strategy``
``full``) feeds the LM the hidden states of ``vision_feature_layer`` (−1: the last layer, before the tower's
``post_layernorm``). The projector's ``pixel_shuffle`` folds every ``downsample_factor × downsample_factor`` block of
a view's patches into one LM token (channels concatenated, then a SwiGLU projection): each image token carries
``downsample_factor²`` patches of one view with weight ``1/downsample_factor²``. The map is that shuffle run on
patch indices (:func:`~vsp_assert.plugins._stacked_views.shuffle_map`); patches are numbered
``view · P_v + row · cols + col``. The Cohere2 LM's sliding-window layers need nothing (see
:mod:`vsp_assert.engine.attention`).

Shapes: hooked layer output ``[ΣV, P_v, d_vision]`` → patches ``[B, V_max·P_v, d_vision]``; map
``[V·P_v/s², V·P_v]``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from vsp_assert.engine.adapter import PatchMap
from vsp_assert.engine.views import views_from_tokens
from vsp_assert.errors import ModelError

from ._stacked_views import StackedViewsAdapter, shuffle_map
from .llava import LlavaAdapter


class AyaVisionAdapter(StackedViewsAdapter, LlavaAdapter):
    family = "aya_vision"
    model_types = ("aya_vision",)
    model_class = "AyaVisionForConditionalGeneration"
    vision_once = False  # views per element differ: every intervention row gets its own copy of the views

    def _has_cls(self) -> bool:
        return False  # SigLIP

    def _factor(self) -> int:
        return int(self.model.config.downsample_factor)

    def _tokens_per_view(self) -> int:
        rows, cols = self.grid()
        return (rows // self._factor()) * (cols // self._factor())

    def element_views(self, inputs: dict[str, torch.Tensor]) -> list[int] | None:
        """Views (tiles + global view) of each element: its image-patch tokens over the tokens one view gives."""
        if "input_ids" not in inputs:
            return None
        return views_from_tokens(self.family, inputs, self.model.config.image_token_id, self._tokens_per_view())

    def prepare(self, images: Sequence[Any], prompts: Sequence[str]) -> dict[str, torch.Tensor]:
        return super().prepare([[image] for image in images], prompts)  # images per prompt

    def patch_map(self, inputs: dict[str, torch.Tensor], index: int) -> PatchMap:
        config = self.model.config
        if config.vision_feature_select_strategy != "full":
            raise ModelError("aya_vision: only vision_feature_select_strategy='full' is supported (SigLIP has no "
                             "class token to drop)", received=config.vision_feature_select_strategy,
                             fix="use a checkpoint with the full strategy (all released Aya Vision models)")
        ids = inputs["input_ids"][index]  # [L]
        positions = torch.nonzero(ids == config.image_token_id).flatten()  # [N_img]
        rows, cols = self.grid()
        views = max(positions.numel() // self._tokens_per_view(), 1)
        projector = self.model.model.multi_modal_projector

        def shuffle(index_features: torch.Tensor) -> torch.Tensor:  # [V, P_v, 1] → [V·T_v, s²]
            out = projector.pixel_shuffle(index_features)  # [V, rows/s, cols/s, s²]
            return out.reshape(-1, out.shape[-1])

        mapping = shuffle_map(self.family, shuffle, views, rows * cols, positions.numel())
        return PatchMap(image_positions=positions, token_to_patch=mapping, grid=(rows, cols), views=views)
