"""InternVL family adapter (``model_type == "internvl"``): InternViT tiles + thumbnail, pixel shuffle ×½.

The processor (``GotOcr2ImageProcessor`` with ``crop_to_patches``) resizes the image to the best grid of
``min_patches … max_patches`` tiles of the encoder's size and, when it cut more than one tile, appends the whole image
resized to one tile (the *thumbnail*): ``V = tiles (+ 1)`` views, tiles in row-major order, thumbnail last. Every view
of every image is stacked in ``pixel_values [ΣV, 3, H, W]``. In the prompt an image is ``<img>`` +
``image_seq_length · V`` context tokens + ``</img>``, the views' tokens in view order.

The InternViT tower (``model.vision_tower.encoder.layer``, CLS token first) feeds the LM the hidden states of
``vision_feature_layer`` (−1: the last layer, through the tower's final norm), CLS dropped (``default`` strategy,
the released checkpoints'). The model's ``pixel_shuffle`` with ``downsample_ratio`` ½ folds every 2×2 block of a
view's patch grid into one LM token (channels concatenated, then projected): each image token carries 4 patches of
one view with weight ¼. The map is that function run on patch indices, so it follows the model; patches are
numbered ``view · P_v + row · cols + col``.

Shapes: hooked layer output ``[ΣV, 1 + P_v, d_vision]`` → patches ``[B, V_max·P_v, d_vision]``; map
``[V·P_v/4, V·P_v]``.
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


def _pair(value: Any) -> tuple[int, int]:
    return (int(value[0]), int(value[1])) if isinstance(value, (list, tuple)) else (int(value), int(value))


class InternVLAdapter(StackedViewsAdapter, LlavaAdapter):
    family = "internvl"
    model_types = ("internvl",)
    model_class = "InternVLForConditionalGeneration"
    vision_once = False  # views per element differ: every intervention row gets its own copy of the views

    # ------------------------------------------------------------------ vision
    def vision_layer_paths(self) -> list[str]:
        n = len(self.model.model.vision_tower.encoder.layer)
        return [f"model.vision_tower.encoder.layer.{i}" for i in range(n)]

    def grid(self) -> tuple[int, int]:
        cfg = self.model.config.vision_config
        (h, w), (ph, pw) = _pair(cfg.image_size), _pair(cfg.patch_size)
        return h // ph, w // pw

    def _tokens_per_view(self) -> int:
        rows, cols = self.grid()
        ratio = float(self.model.config.downsample_ratio)
        return int(rows * ratio) * int(cols * ratio)

    def element_views(self, inputs: dict[str, torch.Tensor]) -> list[int] | None:
        """Views (tiles + thumbnail) of each element: its context tokens over the tokens one view gives."""
        if "input_ids" not in inputs:
            return None
        return views_from_tokens(self.family, inputs, self.model.config.image_token_id, self._tokens_per_view())

    # ------------------------------------------------------------------ inputs
    def _chat(self, prompt: str, kind: str = "image") -> str:
        messages = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": prompt}]}]
        return self.processor.apply_chat_template(messages, add_generation_prompt=True)

    def prepare(self, images: Sequence[Any], prompts: Sequence[str]) -> dict[str, torch.Tensor]:
        return super().prepare([[image] for image in images], prompts)  # images per prompt

    # ------------------------------------------------------------------ mapping
    def patch_map(self, inputs: dict[str, torch.Tensor], index: int) -> PatchMap:
        config = self.model.config
        if config.vision_feature_select_strategy != "default":
            raise ModelError("internvl: only vision_feature_select_strategy='default' is supported (the CLS token "
                             "would enter the pixel shuffle's square grid)",
                             received=config.vision_feature_select_strategy,
                             fix="use a checkpoint with the default strategy (all released InternVL models)")
        ids = inputs["input_ids"][index]  # [L]
        positions = torch.nonzero(ids == config.image_token_id).flatten()  # [N_img]
        rows, cols = self.grid()
        views = max(positions.numel() // self._tokens_per_view(), 1)

        def shuffle(index_features: torch.Tensor) -> torch.Tensor:  # [V, P_v, 1] → [V·T_v, 4]
            square = index_features.reshape(views, rows, cols, 1)
            out = self.model.model.pixel_shuffle(square, scale_factor=float(config.downsample_ratio))
            return out.reshape(-1, out.shape[-1])

        mapping = shuffle_map(self.family, shuffle, views, rows * cols, positions.numel())
        return PatchMap(image_positions=positions, token_to_patch=mapping, grid=(rows, cols), views=views)
