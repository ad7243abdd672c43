"""Mistral 3 family adapter (``model_type == "mistral3"``): Pixtral tower at the image's own resolution, 2×2 patch
merger, ``[IMG_BREAK]`` / ``[IMG_END]`` tokens.

The processor (``PixtralImageProcessor``) scales the image so that its longest edge fits ``longest_edge`` and both
sides are multiples of ``patch_size · spatial_merge_size``, keeping its aspect ratio: every image has its own patch
grid ``(h, w)`` (``image_sizes // patch_size``); ``pixel_values`` is padded to the batch's largest image. The Pixtral
tower (``model.vision_tower.transformer.layers``, no class token, 2D rotary positions) runs on *one packed sequence*
``[1, Σ h·w, d]``, every image's patches in row-major order, with block-diagonal attention per image. It feeds the
LM the hidden states of ``vision_feature_layer`` (−1: the last layer). The projector's ``patch_merger`` unfolds every
2×2 block of an image's grid into one token (channels concatenated, then a learned linear merge): image token ``g``
carries the four patches of block ``g`` (blocks row-major), ¼ each. The map is read off the model's own merger: it
runs on patch indices and its linear layer's input is taken.

In the prompt an image is its merged grid row by row: ``w/2`` ``[IMG]`` tokens then ``[IMG_BREAK]`` per row, the
last row's break replaced by ``[IMG_END]``. Break and end tokens are text to the model (their own embeddings, no
image feature), so they are not image tokens of the map. Patches are numbered ``row · w + col`` of the image's own
grid (``PatchMap.grid = (h, w)``); ``patches_of`` unpacks ``[1, Σ h·w, d]`` to ``[B, max h·w, d]`` (zero-padded) and
``with_patches`` packs back; both need the forward's ``image_sizes``.

Shapes: hooked layer output ``[1, Σ h·w, d_vision]``; map ``[h·w / 4, h·w]``.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from vsp_assert.engine.adapter import PatchMap
from vsp_assert.errors import ModelError

from .llava import LlavaAdapter


class _Merged(Exception):
    """Stops the patch merger once its input to the linear merge is known."""


class Mistral3Adapter(LlavaAdapter):
    family = "mistral3"
    model_types = ("mistral3",)
    model_class = "Mistral3ForConditionalGeneration"
    vision_once = False  # one packed sequence for the whole batch: no batch expansion at the hook

    # ------------------------------------------------------------------ vision
    def vision_layer_paths(self) -> list[str]:
        n = len(self.model.model.vision_tower.transformer.layers)
        return [f"model.vision_tower.transformer.layers.{i}" for i in range(n)]

    def _patch(self) -> int:
        return int(self.model.config.vision_config.patch_size)

    def _merge(self) -> int:
        return int(self.model.config.spatial_merge_size)

    def grid(self) -> tuple[int, int]:
        raise ModelError(f"{self.family}: the patch grid depends on the image; read PatchMap.grid")

    def patch_token_index(self, n_tokens: int) -> torch.Tensor:
        return torch.arange(n_tokens)

    def _grids(self, inputs: dict[str, torch.Tensor] | None, n_rows: int, batch: int) -> list[tuple[int, int]]:
        if inputs is None or "image_sizes" not in inputs:
            raise ModelError(f"{self.family}: the packed vision sequence needs the forward's image_sizes",
                             fix="pass the model inputs to patches_of / with_patches / make_edit")
        grids = [(int(h) // self._patch(), int(w) // self._patch()) for h, w in inputs["image_sizes"].tolist()]
        if len(grids) != batch or sum(h * w for h, w in grids) != n_rows:
            raise ModelError(f"{self.family}: {len(grids)} image sizes for a batch of {batch} images "
                             f"({n_rows} packed patches)", fix="one image per prompt")
        return grids

    def patches_of(self, hidden: torch.Tensor, batch: int,
                   inputs: dict[str, torch.Tensor] | None = None) -> torch.Tensor:
        packed = hidden.reshape(-1, hidden.shape[-1])  # [Σ h·w, d]
        grids = self._grids(inputs, packed.shape[0], batch)
        sizes = [h * w for h, w in grids]
        out = packed.new_zeros(batch, max(sizes), packed.shape[1])  # [B, P_max, d]
        for b, chunk in enumerate(torch.split(packed, sizes)):
            out[b, : chunk.shape[0]] = chunk
        return out

    def with_patches(self, hidden: torch.Tensor, patches: torch.Tensor,
                     inputs: dict[str, torch.Tensor] | None = None) -> torch.Tensor:
        grids = self._grids(inputs, hidden.shape[0] * hidden.shape[1], patches.shape[0])
        chunks = [patches[b, : h * w] for b, (h, w) in enumerate(grids)]
        return torch.cat(chunks).to(hidden.dtype).reshape(hidden.shape)

    # ------------------------------------------------------------------ mapping
    def _merged_ids(self, h: int, w: int) -> torch.Tensor:
        """``[h·w/4, 4]``: the patches the model's merger folds into each token, from its forward on patch ids."""
        merger = self.model.model.multi_modal_projector.patch_merger
        seen: dict[str, torch.Tensor] = {}

        def grab(_module: nn.Module, args: Any) -> None:
            seen["ids"] = args[0].detach()  # [h·w/4, 4 · 1 channel]
            raise _Merged

        handle = merger.merging_layer.register_forward_pre_hook(grab)
        try:
            with torch.no_grad():
                merger(torch.arange(h * w, dtype=torch.float32)[:, None],
                       torch.tensor([[h * self._patch(), w * self._patch()]]))
        except _Merged:
            pass
        finally:
            handle.remove()
        return seen["ids"].round().long()

    def patch_map(self, inputs: dict[str, torch.Tensor], index: int) -> PatchMap:
        ids = inputs["input_ids"][index]  # [L]
        positions = torch.nonzero(ids == self.model.config.image_token_id).flatten()  # [N_img]
        h, w = (int(x) // self._patch() for x in inputs["image_sizes"][index].tolist())
        carried = self._merged_ids(h, w)  # [N_img, 4]
        if carried.shape[0] != positions.numel():
            raise ModelError(f"{self.family}: the prompt holds {positions.numel()} image tokens, the {h}x{w} patch "
                             f"grid merges to {carried.shape[0]}", fix="build inputs with the model's own processor")
        mapping = torch.zeros(positions.numel(), h * w)
        mapping.scatter_(1, carried, 1.0 / carried.shape[1])
        return PatchMap(image_positions=positions, token_to_patch=mapping, grid=(h, w))
