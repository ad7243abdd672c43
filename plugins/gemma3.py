"""Gemma 3 family adapter (``model_type == "gemma3"``): SigLIP tower, 4×4 average pool, bidirectional image blocks.

The SigLIP tower (``model.vision_tower.vision_model``, no class token) sees each view at ``image_size``; its last
layer feeds the LM (through ``post_layernorm``) as ``[ΣV, P, d]`` with ``P = (image_size / patch_size)²`` patches
per view in row-major order. The multimodal projector average-pools each view's patch grid with a ``k × k``
kernel (``k = patches_per_side / √mm_tokens_per_image``: 64 → 16 per side, k = 4, in the released checkpoints)
before its norm and projection, so one LM image token carries ``k²`` patches of one view with weight ``1/k²``
each, tokens in the pooled grid's row-major order. The pooling is read off the model's own projector: its forward
runs on one-hot patch features and the pool's output is taken, so the grouping and order are the model's.

Pan-and-scan: the adapter calls the processor without pan-and-scan options, so it preprocesses exactly as the
processor does when called plainly (as a deployment calls it). With ``do_pan_and_scan`` on, an image whose
aspect ratio passes ``pan_and_scan_min_ratio_to_activate`` is also cut into 2 … ``pan_and_scan_max_num_crops``
crops side by side (a row of crops for a wide image, a column for a tall one), each resized to ``image_size``:
``V = 1 + num_crops`` views, the whole image first, then the crops left to right / top to bottom; an image that
is not cut has one view. ``pixel_values`` stacks the views of every image, images in batch order. Gemma3Processor
passes its own ``images_kwargs`` (class defaults: pan-and-scan off) to the image processor on every call, and
they override the image processor's own ``do_pan_and_scan`` (transformers 5.24), so the switch that counts is
the processor's: ``processor.images_kwargs = {**processor.images_kwargs, "do_pan_and_scan": True}`` (an instance
attribute, leaving the class's shared defaults alone) gives the same inputs as a deployment calling
``processor(..., do_pan_and_scan=True)``. The processor drops ``num_crops`` from its output.

In the prompt every view is one block ``<start_of_image>`` + ``mm_tokens_per_image`` image tokens +
``<end_of_image>`` (the whole image's block first, then the crops', in view order, with the processor's text
between them); ``token_type_ids`` marks the image tokens (1), each block attending to itself bidirectionally.
The model scatters the projected views into the image tokens in sequence order, so element ``b`` has
``V_b = (its image tokens) / mm_tokens_per_image`` views, its ``k``-th block of image tokens carries its ``k``-th
view, and its views are rows ``ΣV_<b … ΣV_≤b − 1`` of the tower's batch: that is how the views are read from the
forward's inputs (``input_ids``), with no ``num_crops`` needed. Patches are numbered ``view · P + row · cols +
col`` and ``patches_of`` / ``with_patches`` move between ``[ΣV, P, d]`` and ``[B, V_max·P, d]`` (zero-padded
past an element's own views). The map of a one-view element is the ``[mm_tokens_per_image, P]`` pooling (dense,
as without pan-and-scan); with crops it is the block-diagonal ``[V·mm_tokens_per_image, V·P]`` (sparse COO).
The views' layout and the block-diagonal map are :mod:`vsp_assert.engine.views`'.

Answer tokens are text (0) when appended. The captured rows are the generating (text) tokens', whose mask the
model passes as is, sliding-window layers included (see :mod:`vsp_assert.engine.attention`). ``vision_once``: a batch
of interventions on a one-view element shares one tower run (the hook expands it); an element with crops has
its views repeated per row instead (:meth:`Gemma3Adapter.intervention_inputs`).

Shapes: hooked layer output ``[ΣV, P, d_vision]`` → patches ``[B, V_max·P, d_vision]``; map per element
``[V·mm_tokens_per_image, V·P]``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from vsp_assert.engine.adapter import PatchMap
from vsp_assert.engine.views import MultiViewAdapter, block_diagonal, views_from_tokens
from vsp_assert.errors import ModelError

from .llava import LlavaAdapter


class _Pooled(Exception):
    """Stops the projector's forward once its pool has run (its norm expects the vision width)."""


class Gemma3Adapter(MultiViewAdapter, LlavaAdapter):
    family = "gemma3"
    model_types = ("gemma3",)
    model_class = "Gemma3ForConditionalGeneration"
    # for one-view elements: SigLIP layers after the hook and the projector are batch-first. Elements with
    # pan-and-scan crops are repeated whole instead (intervention_inputs), so the hook never expands them
    vision_once = True
    _pooling: torch.Tensor | None = None

    def fed_layer_index(self) -> int:
        return len(self.vision_layer_paths()) - 1

    def _has_cls(self) -> bool:
        return False

    def prepare(self, images: Sequence[Any], prompts: Sequence[str]) -> dict[str, torch.Tensor]:
        return super().prepare([[image] for image in images], prompts)  # the processor takes images per prompt

    def teacher_forced_inputs(self, inputs: dict[str, torch.Tensor], answer_ids: torch.Tensor
                              ) -> dict[str, torch.Tensor]:
        out = super().teacher_forced_inputs(inputs, answer_ids)
        if "token_type_ids" in inputs:  # answer tokens are text (type 0): outside the bidirectional image block
            types = inputs["token_type_ids"]
            out["token_type_ids"] = torch.cat([types, types.new_zeros(1, answer_ids.numel())], dim=1)
        return out

    # ------------------------------------------------------------------ views
    def _tokens_per_view(self) -> int:
        return int(self.model.config.mm_tokens_per_image)

    def element_views(self, inputs: dict[str, torch.Tensor]) -> list[int] | None:
        """Views (whole image + pan-and-scan crops) of each batch element: its image tokens over the tokens one
        view gives (``mm_tokens_per_image``)."""
        if "input_ids" not in inputs:
            return None
        return views_from_tokens(self.family, inputs, self.model.config.image_token_id, self._tokens_per_view())

    # ------------------------------------------------------------------ inputs
    def element_inputs(self, inputs: dict[str, torch.Tensor], index: int) -> dict[str, torch.Tensor]:
        pixels = inputs.get("pixel_values")
        if pixels is None:
            return super().element_inputs(inputs, index)
        views = self.views_per_image(inputs, pixels.shape[0], inputs["input_ids"].shape[0])
        start = sum(views[:index])
        out = super().element_inputs({key: value for key, value in inputs.items() if key != "pixel_values"}, index)
        out["pixel_values"] = pixels[start : start + views[index]]  # the element's views: whole image, crops
        return {key: out[key] for key in inputs if key in out}  # the inputs' key order

    def intervention_inputs(self, inputs: dict[str, torch.Tensor], n: int) -> dict[str, torch.Tensor]:
        """One-view inputs keep a single copy of the pixels (``vision_once``); with crops every row gets its own
        copy of the views (the hook only expands a one-row tower output)."""
        pixels = inputs.get("pixel_values")
        if pixels is not None and any(v != 1 for v in self.views_per_image(inputs, pixels.shape[0], 1)):
            return self.repeat_inputs(inputs, n)
        return super().intervention_inputs(inputs, n)

    # ------------------------------------------------------------------ mapping
    def pooling(self) -> torch.Tensor:
        """``[N_tok, P]``: the projector's pooling of one view as a matrix, from its forward on one-hot patch
        features."""
        if self._pooling is not None:
            return self._pooling
        projector = self.model.model.multi_modal_projector
        rows, cols = self.grid()
        n = rows * cols
        seen: dict[str, torch.Tensor] = {}

        def grab(_module: nn.Module, _args: Any, output: torch.Tensor) -> None:
            seen["pooled"] = output.detach()  # [1, P, t, t]: channel p = the weight of patch p
            raise _Pooled

        handle = projector.avg_pool.register_forward_hook(grab)
        try:
            with torch.no_grad():
                projector(torch.eye(n)[None])  # [1, P patches, P one-hot channels]
        except _Pooled:
            pass
        finally:
            handle.remove()
        self._pooling = seen["pooled"][0].flatten(1).T.contiguous().float()  # [t², P]
        return self._pooling

    def patch_map(self, inputs: dict[str, torch.Tensor], index: int) -> PatchMap:
        ids = inputs["input_ids"][index]  # [L]
        positions = torch.nonzero(ids == self.model.config.image_token_id).flatten()  # [N_img]
        pooling = self.pooling()  # [t², P]
        views, rest = divmod(positions.numel(), pooling.shape[0])
        if rest or not views:
            raise ModelError(f"gemma3: the prompt holds {positions.numel()} image tokens, not a whole number of "
                             f"views of {pooling.shape[0]} tokens (mm_tokens_per_image)",
                             fix="one image per prompt, built with the model's own processor")
        if views == 1:
            return PatchMap(image_positions=positions, token_to_patch=pooling, grid=self.grid())
        mapping = block_diagonal(pooling, views)  # view v: its tokens v·t² … pool its patches v·P … like view 0
        return PatchMap(image_positions=positions, token_to_patch=mapping, grid=self.grid(), views=views)
