"""PaliGemma family adapter (``model_type == "paligemma"``): SigLIP tower, linear projector, Gemma prefix-LM.

SigLIP has no class token: the hooked layer's output is ``[B, P, d]`` with ``P = (image_size / patch_size)²``
patches in row-major order, and every layer up to the last feeds the LM (through ``post_layernorm`` and a linear
projector). The processor puts ``P`` image tokens *before* ``<bos>`` and the prompt (no chat template:
PaliGemma is prompted with raw text), one per patch: the token ↔ patch map is a bijection.

The LM attends bidirectionally over the prefix (image + prompt; ``token_type_ids == 0``) and causally over the
answer (``token_type_ids == 1``). The capture keeps the last query row of each step, which sees every key in
both regimes, so the mask the model passes is all it needs; appended answer tokens get type 1.

Shapes: hooked layer output ``[B, P, d_vision]``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from vsp_assert.engine.adapter import PatchMap
from vsp_assert.errors import ModelError

from .llava import LlavaAdapter


class PaliGemmaAdapter(LlavaAdapter):
    family = "paligemma"
    model_types = ("paligemma",)
    model_class = "PaliGemmaForConditionalGeneration"

    def fed_layer_index(self) -> int:
        return len(self.vision_layer_paths()) - 1

    def _has_cls(self) -> bool:
        return False

    def prepare(self, images: Sequence[Any], prompts: Sequence[str]) -> dict[str, torch.Tensor]:
        batch = self._process(images, [self.processor.image_token + p for p in prompts])
        return {k: v for k, v in batch.items() if k != "labels"}  # labels: a training target, not an input

    def teacher_forced_inputs(self, inputs: dict[str, torch.Tensor], answer_ids: torch.Tensor
                              ) -> dict[str, torch.Tensor]:
        out = super().teacher_forced_inputs(inputs, answer_ids)
        if "token_type_ids" in inputs:  # the answer is the causal suffix (type 1)
            types = inputs["token_type_ids"]
            out["token_type_ids"] = torch.cat([types, types.new_ones(1, answer_ids.numel())], dim=1)
        return out

    def patch_map(self, inputs: dict[str, torch.Tensor], index: int) -> PatchMap:
        ids = inputs["input_ids"][index]  # [L]
        positions = torch.nonzero(ids == self.model.config.image_token_id).flatten()  # [N_img]
        rows, cols = self.grid()
        if positions.numel() != rows * cols:
            raise ModelError(f"paligemma: the prompt holds {positions.numel()} image tokens, the encoder gives "
                             f"{rows * cols} patches", fix="set the image processor's image_seq_length to match")
        return PatchMap(image_positions=positions, token_to_patch=torch.eye(rows * cols), grid=(rows, cols))
