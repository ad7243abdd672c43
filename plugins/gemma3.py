"""Gemma 3 family adapter (``model_type == "gemma3"``): SigLIP tower, 4×4 average pool, bidirectional image block.

The SigLIP tower (``model.vision_tower.vision_model``, no class token) sees the image at ``image_size``; its
last layer feeds the LM (through ``post_layernorm``) as ``[B, P, d]`` with ``P = (image_size / patch_size)²``
patches in row-major order. The multimodal projector average-pools the patch grid with a ``k × k`` kernel
(``k = patches_per_side / √mm_tokens_per_image``: 64 → 16 per side, k = 4, in the released checkpoints) before
its norm and projection, so one LM image token carries ``k²`` patches with weight ``1/k²`` each, tokens in the
pooled grid's row-major order. The map is read off the model's own projector: its forward runs on one-hot patch
features and the pool's output is taken, so the grouping and order are the model's.

In the prompt the processor writes ``<start_of_image>`` + ``mm_tokens_per_image`` image tokens +
``<end_of_image>``; ``token_type_ids`` marks the image tokens (1), which attend to each other bidirectionally.
Answer tokens are text (0) when appended. The captured rows are the generating (text) tokens', whose mask the
model passes as is, sliding-window layers included (see :mod:`vsp_assert.attention`). Pan-and-scan crops are not
used (``do_pan_and_scan=False``, the processor's default): one view per image, so the tower's batch is the
prompt batch and an intervention batch can share one tower run (``vision_once``).

Shapes: hooked layer output ``[B, P, d_vision]``; map ``[mm_tokens_per_image, P]``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, ClassVar

import torch
from torch import nn

from vsp_assert.adapters import PatchMap, register_adapter
from vsp_assert.errors import ModelError

from .llava import LlavaAdapter


class _Pooled(Exception):
    """Stops the projector's forward once its pool has run (its norm expects the vision width)."""


@register_adapter
class Gemma3Adapter(LlavaAdapter):
    family = "gemma3"
    model_types = ("gemma3",)
    model_class = "Gemma3ForConditionalGeneration"
    vision_once = True  # one view per image; SigLIP layers after the hook and the projector are batch-first
    processor_kwargs: ClassVar[dict[str, Any]] = {"do_pan_and_scan": False}
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

    # ------------------------------------------------------------------ mapping
    def pooling(self) -> torch.Tensor:
        """``[N_tok, P]``: the projector's pooling as a matrix, from its forward on one-hot patch features."""
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
        mapping = self.pooling()
        if positions.numel() != mapping.shape[0]:
            raise ModelError(f"gemma3: the prompt holds {positions.numel()} image tokens, the projector gives "
                             f"{mapping.shape[0]} (mm_tokens_per_image)",
                             fix="one image per prompt, built with the model's own processor (no pan-and-scan)")
        return PatchMap(image_positions=positions, token_to_patch=mapping, grid=self.grid())
