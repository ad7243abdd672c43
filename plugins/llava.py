"""LLaVA-1.5 family adapter (``model_type == "llava"``): CLIP-style vision tower + projector + causal LM.

The worked example for adding a family (see docs/adapters.md). LLaVA feeds the LM the hidden states of one
encoder layer (``vision_feature_layer``, -2 for LLaVA-1.5), drops CLIP's CLS token under the ``default``
feature strategy and places one LM image token per patch, in row-major order, where the prompt's ``<image>``
placeholder was: the token ↔ patch map is a bijection (with ``full`` the first image token is the CLS token and
carries no patch).

Shapes: hooked layer output ``[B, 1 + P, d_vision]`` (CLS first); ``P = (image_size / patch_size)²``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, ClassVar

import torch
from torch import nn

from vsp_assert.engine.adapter import Adapter, PatchMap
from vsp_assert.errors import ModelError


class LlavaAdapter(Adapter):
    family = "llava"
    model_types: ClassVar[tuple[str, ...]] = ("llava",)
    model_class: ClassVar[str] = "LlavaForConditionalGeneration"  # the transformers class subclasses change
    vision_once = True  # CLIP layers after the hook and the projector are batch-first: expand at the hook
    #: Extra keyword arguments of the processor call in :meth:`prepare` (a family pins options it relies on).
    processor_kwargs: ClassVar[dict[str, Any]] = {}

    @classmethod
    def load(cls, name_or_path: str, **kwargs: Any) -> tuple[nn.Module, Any]:
        import transformers
        from transformers import AutoProcessor

        model = getattr(transformers, cls.model_class).from_pretrained(name_or_path, **kwargs)
        processor = AutoProcessor.from_pretrained(
            name_or_path, trust_remote_code=kwargs.get("trust_remote_code", False)
        )
        return model, processor

    # ------------------------------------------------------------------ vision
    def _vision_config(self) -> Any:
        return self.model.config.vision_config

    def vision_layer_paths(self) -> list[str]:
        tower = self.model.model.vision_tower
        prefix = "model.vision_tower"
        if hasattr(tower, "vision_model"):  # CLIPVisionModel wrapping a transformer
            tower, prefix = tower.vision_model, prefix + ".vision_model"
        n = len(tower.encoder.layers)
        return [f"{prefix}.encoder.layers.{i}" for i in range(n)]

    def fed_layer_index(self) -> int:
        n = len(self.vision_layer_paths())
        layer = self.model.config.vision_feature_layer
        layers = [layer] if isinstance(layer, int) else list(layer)
        # hidden_states[i] is the output of layer i - 1 (hidden_states[0] is the embedding output)
        return max((i % (n + 1)) - 1 for i in layers)

    def _has_cls(self) -> bool:
        return True  # CLIP-style towers put a class token first

    def grid(self) -> tuple[int, int]:
        cfg = self._vision_config()
        side = int(cfg.image_size) // int(cfg.patch_size)
        return side, side

    def patch_token_index(self, n_tokens: int) -> torch.Tensor:
        rows, cols = self.grid()
        offset = 1 if self._has_cls() else 0
        if n_tokens != rows * cols + offset:
            raise ModelError(
                f"the hooked layer has {n_tokens} tokens; a {rows}x{cols} patch grid"
                f"{' plus CLS' if offset else ''} needs {rows * cols + offset}",
                fix="check the image processor's size against vision_config.image_size",
            )
        return torch.arange(offset, offset + rows * cols)

    # ------------------------------------------------------------------ inputs
    def _chat(self, prompt: str, kind: str = "image") -> str:
        messages = [{"role": "user", "content": [{"type": kind}, {"type": "text", "text": prompt}]}]
        if getattr(self.processor, "chat_template", None):
            return self.processor.apply_chat_template(messages, add_generation_prompt=True)
        return f"USER: <image>\n{prompt} ASSISTANT:"

    def prepare(self, images: Sequence[Any], prompts: Sequence[str]) -> dict[str, torch.Tensor]:
        # prompts are checked by the Scratchpad for every family
        return self._process(images, [self._chat(p) for p in prompts], **self.processor_kwargs)

    def _process(self, images: Sequence[Any], texts: list[str], **kwargs: Any) -> dict[str, torch.Tensor]:
        """The processor on a batch, padded on the left (the tokenizer's own setting is restored)."""
        tokenizer = self.tokenizer
        old_side = getattr(tokenizer, "padding_side", "left")
        tokenizer.padding_side = "left"
        try:
            return dict(self.processor(images=list(images), text=texts, return_tensors="pt", padding=True, **kwargs))
        finally:
            tokenizer.padding_side = old_side

    # ------------------------------------------------------------------ mapping
    def patch_map(self, inputs: dict[str, torch.Tensor], index: int) -> PatchMap:
        ids = inputs["input_ids"][index]  # [L]
        positions = torch.nonzero(ids == self.model.config.image_token_id).flatten()  # [N_img]
        rows, cols = self.grid()
        n_patches = rows * cols
        strategy = self.model.config.vision_feature_select_strategy
        lead = 1 if strategy == "full" else 0  # 'full' keeps CLS as the first image token
        if positions.numel() != n_patches + lead:
            raise ModelError(
                f"the prompt holds {positions.numel()} image tokens, the encoder gives {n_patches + lead} features",
                fix="build inputs with the model's own processor (patch_size, vision_feature_select_strategy)",
            )
        mapping = torch.zeros(positions.numel(), n_patches)
        mapping[torch.arange(lead, lead + n_patches), torch.arange(n_patches)] = 1.0
        return PatchMap(image_positions=positions, token_to_patch=mapping, grid=(rows, cols))
