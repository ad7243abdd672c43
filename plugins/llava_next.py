"""LLaVA-NeXT family adapter (``model_type == "llava_next"``): anyres tiles + base view + image-newline tokens.

The processor resizes the image to the best ``image_grid_pinpoints`` resolution, cuts it into tiles of the
encoder's size and prepends a resized *base view*; the CLIP tower runs on every view (``[V, 1 + P_v, d]`` per
image, views of all images of the batch stacked). The LM receives the base view's patches (row-major), then the
tiles stitched into one grid, *unpadded* (rows/columns that only show the letterbox padding are dropped) and
read row by row with one learned ``image_newline`` token closing each row.

A patch is identified by (view, row, col): patch index ``view * P_v + row * cols + col`` with view 0 the base
view and views 1.. the tiles in row-major tile order; ``PatchMap.grid`` is one view's grid and ``views`` their
number, so spatial maps can be shown per view or stitched. The token ↔ patch map is computed by running the
model's own ``pack_image_features`` on patch indices (newline tokens carry no patch: zero rows), so it cannot
drift from the model's placement. Only ``vision_feature_select_strategy == "default"`` (the released checkpoints)
is supported.

The views' layout is :mod:`vsp_assert.engine.views`'.

Shapes: hooked layer output ``[ΣV, 1 + P_v, d_vision]`` (CLS first) → patches ``[B, V·P_v, d_vision]``.
"""

from __future__ import annotations

import torch

from vsp_assert.engine.adapter import PatchMap
from vsp_assert.engine.views import MultiViewAdapter
from vsp_assert.errors import ModelError

from .llava import LlavaAdapter


class LlavaNextAdapter(MultiViewAdapter, LlavaAdapter):
    family = "llava_next"
    model_types = ("llava_next",)
    model_class = "LlavaNextForConditionalGeneration"
    vision_once = False  # the layout after the hook depends on per-image views/packing: no batch expansion

    # ------------------------------------------------------------------ views
    def element_views(self, inputs: dict[str, torch.Tensor]) -> list[int] | None:
        """Views (base + tiles) of each batch element, from ``image_sizes``."""
        return [self._views(size) for size in inputs["image_sizes"]] if "image_sizes" in inputs else None

    # ------------------------------------------------------------------ mapping
    def patch_map(self, inputs: dict[str, torch.Tensor], index: int) -> PatchMap:
        config = self.model.config
        if config.vision_feature_select_strategy != "default":
            raise ModelError("llava_next: only vision_feature_select_strategy='default' is supported",
                             received=config.vision_feature_select_strategy,
                             fix="use a checkpoint with the default strategy (all released LLaVA-NeXT models)")
        ids = inputs["input_ids"][index]  # [L]
        positions = torch.nonzero(ids == config.image_token_id).flatten()  # [N_img]
        size = inputs["image_sizes"][index]
        views = self._views(size)
        rows, cols = self.grid()
        p_v = rows * cols
        ids_feature = torch.arange(views * p_v, dtype=torch.float32).reshape(views, p_v, 1)  # patch ids as features
        newline = torch.tensor([-1.0])
        packed, _ = self.model.model.pack_image_features([ids_feature], size[None], "default", image_newline=newline)
        carried = packed[0][:, 0].round().long()  # [N_img]: patch id, -1 for a newline token
        if carried.numel() != positions.numel():
            raise ModelError(f"llava_next: the prompt holds {positions.numel()} image tokens, the model packs "
                             f"{carried.numel()} features", fix="build inputs with the model's own processor")
        mapping = torch.zeros(positions.numel(), views * p_v)
        real = carried >= 0
        mapping[torch.nonzero(real).flatten(), carried[real]] = 1.0
        return PatchMap(image_positions=positions, token_to_patch=mapping, grid=(rows, cols), views=views)

    def _views(self, size: torch.Tensor) -> int:
        from transformers.models.llava_next.modeling_llava_next import image_size_to_num_patches

        return int(image_size_to_num_patches(size, self.model.config.image_grid_pinpoints,
                                             int(self.model.config.vision_config.image_size)))
