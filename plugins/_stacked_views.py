"""Shared by the tiled families whose processor stacks every view of every image along ``pixel_values``' first axis
(InternVL, Aya Vision, Llama 4: ``[ΣV, 3, H, W]``, the views of element 0 first): slicing one element's views out
of a batch, and the token ↔ patch map of a *pixel shuffle* read off the model's own shuffle function.

Private to ``plugins/`` (the leading underscore): a family adapter derives from :class:`StackedViewsAdapter` before
its base class, as it would from :class:`~vsp_assert.engine.views.MultiViewAdapter`, and says how many views each
element has (:meth:`~vsp_assert.engine.views.MultiViewAdapter.element_views`, usually its image tokens over the
tokens one view gives).

Shapes: ``pixel_values [ΣV, C, H, W]``; index features ``[V, P_v, 1]`` → shuffled ``[V·T_v, k]`` patch ids → map
``[V·T_v, V·P_v]`` with ``1/k`` on each of a token's ``k`` patches.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from vsp_assert.engine.views import MultiViewAdapter
from vsp_assert.errors import ModelError


class StackedViewsAdapter(MultiViewAdapter):
    """A multi-view adapter whose ``pixel_values`` hold the views of all elements stacked, ``[ΣV, C, H, W]``."""

    def element_inputs(self, inputs: dict[str, torch.Tensor], index: int) -> dict[str, torch.Tensor]:
        pixels = inputs.get("pixel_values")
        if pixels is None:
            return super().element_inputs(inputs, index)
        views = self.views_per_image(inputs, pixels.shape[0], inputs["input_ids"].shape[0])
        start = sum(views[:index])
        out = super().element_inputs({key: value for key, value in inputs.items() if key != "pixel_values"}, index)
        out["pixel_values"] = pixels[start : start + views[index]]  # [V_b, C, H, W]: this element's views
        return {key: out[key] for key in inputs if key in out}  # the inputs' key order


def shuffle_map(family: str, shuffle: Callable[[torch.Tensor], torch.Tensor], views: int, per_view: int,
                n_tokens: int) -> torch.Tensor:
    """The dense ``[N_img, V·P_v]`` map of a pixel shuffle: ``shuffle`` (the model's own, wrapped to take index
    features ``[V, P_v, 1]`` and return ``[V·T_v, k]``) is run on patch indices, so token ``i`` carries the ``k``
    patches whose ids land in its row, ``1/k`` each. An error when the shuffle's token count is not ``n_tokens``."""
    ids = torch.arange(views * per_view, dtype=torch.float32).reshape(views, per_view, 1)  # [V, P_v, 1]
    with torch.no_grad():
        carried = shuffle(ids).round().long()  # [V·T_v, k]
    if carried.shape[0] != n_tokens:
        raise ModelError(f"{family}: the prompt holds {n_tokens} image tokens, the model's pixel shuffle gives "
                         f"{carried.shape[0]} for {views} views", fix="build inputs with the model's own processor")
    mapping = torch.zeros(n_tokens, views * per_view)
    mapping.scatter_(1, carried, 1.0 / carried.shape[1])
    return mapping
