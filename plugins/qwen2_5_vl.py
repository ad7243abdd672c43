"""Qwen2.5-VL family adapter (``model_type == "qwen2_5_vl"``): Qwen2-VL plus windowed vision attention.

Everything of :mod:`vsp_assert.plugins.qwen2_vl` holds (dynamic resolution, packed ``[Σ h·w, d]`` vision
sequence, 2×2 merge → many-to-one map with weights 1/4, M-RoPE). The difference the hook sees: before its blocks
the tower *reorders* the packed sequence into attention windows (``get_vision_window_index``: merge groups of
each ``window_size``-pixel window made contiguous; most blocks attend within a window, ``fullatt_block_indexes``
attend per image) and restores the order only after the merger. So every block's output is in window order;
this adapter undoes the permutation to read patches and redoes it to write them back. ``vision_config.hidden_size``
is the vision width here (``out_hidden_size`` is the merger's output).

Shapes: hooked block output ``[Σ h·w, d_vision]`` in window order.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from .qwen2_vl import Qwen2VLAdapter


class Qwen2_5_VLAdapter(Qwen2VLAdapter):  # noqa: N801 - transformers' spelling
    family = "qwen2_5_vl"
    model_types = ("qwen2_5_vl",)
    model_class = "Qwen2_5_VLForConditionalGeneration"

    def vision_width(self) -> int:
        return int(self.model.config.vision_config.hidden_size)

    def _window_index(self, grids: Sequence[tuple[int, int, int]]) -> torch.Tensor:
        """``[G]``: merge group stored at each window-order slot (``G = Σ h·w / 4``), as the tower computes it."""
        from transformers.vision_utils import get_vision_window_index

        visual = self.model.model.visual
        index, _ = get_vision_window_index(torch.tensor(grids), spatial_merge_size=visual.spatial_merge_size,
                                           window_size=visual.window_size, patch_size=visual.patch_size)
        return index

    def _to_natural(self, hidden: torch.Tensor, grids: Sequence[tuple[int, int, int]]) -> torch.Tensor:
        unit = self._merge() ** 2
        groups = hidden.reshape(-1, unit, hidden.shape[-1])  # [G, 4, d] in window order
        natural = torch.empty_like(groups)
        natural[self._window_index(grids).to(hidden.device)] = groups
        return natural.reshape(hidden.shape)

    def _from_natural(self, natural: torch.Tensor, grids: Sequence[tuple[int, int, int]]) -> torch.Tensor:
        unit = self._merge() ** 2
        groups = natural.reshape(-1, unit, natural.shape[-1])
        return groups[self._window_index(grids).to(natural.device)].reshape(natural.shape)
