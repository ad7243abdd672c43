"""Idefics3 / SmolVLM family adapter (``model_type`` ``"idefics3"``, ``"smolvlm"``): image splitting + pixel shuffle.

The processor resizes the image, splits it into ``rows × cols`` tiles of the encoder's size and appends the whole
image downscaled to one tile (the *global* view), so an image has ``V = rows·cols + 1`` views (the batch is
padded with all-zero views, which the model drops). The SigLIP-style tower (``model.vision_model``, no class
token) runs on every real view: ``[ΣV, P_v, d]``. The connector *pixel-shuffles* each view: every
``scale × scale`` block of patches becomes one LM token (``P_v / scale²`` tokens per view), so the map is
many-to-one, each image token carrying ``scale²`` patches with weight ``1/scale²``. In the prompt each view's
tokens follow ``<fake_token_around_image><row_r_col_c>`` (tiles, row-major) or ``<global-img>`` (last).

Patches are numbered ``view · P_v + row · cols_v + col`` (views in the processor's order, global view last), and
the map is computed by running the model's own ``pixel_shuffle`` on patch indices, so it follows the model.
The views' layout (``[ΣV, P_v, d]`` ↔ ``[B, V·P_v, d]``) is :mod:`vsp_assert.engine.views`'.

Shapes: hooked layer output ``[ΣV, P_v, d_vision]`` → patches ``[B, V·P_v, d_vision]``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from vsp_assert.engine.adapter import PatchMap
from vsp_assert.engine.views import MultiViewAdapter, views_from_tokens
from vsp_assert.errors import ModelError

from .llava import LlavaAdapter


class Idefics3Adapter(MultiViewAdapter, LlavaAdapter):
    family = "idefics3"
    model_types = ("idefics3", "smolvlm")
    model_class = "AutoModelForImageTextToText"
    vision_once = False  # the layout after the hook depends on per-image views/packing: no batch expansion

    # ------------------------------------------------------------------ vision
    def vision_layer_paths(self) -> list[str]:
        n = len(self.model.model.vision_model.encoder.layers)
        return [f"model.vision_model.encoder.layers.{i}" for i in range(n)]

    def fed_layer_index(self) -> int:
        return len(self.vision_layer_paths()) - 1

    def _has_cls(self) -> bool:
        return False

    def _scale(self) -> int:
        return int(self.model.config.scale_factor)

    def _tokens_per_view(self) -> int:
        rows, cols = self.grid()
        return rows * cols // self._scale() ** 2

    def element_views(self, inputs: dict[str, torch.Tensor]) -> list[int] | None:
        """Real views of each element: its image-token count over the tokens one view gives."""
        if "input_ids" not in inputs:
            return None
        return views_from_tokens(self.family, inputs, self.model.config.image_token_id, self._tokens_per_view())

    # ------------------------------------------------------------------ inputs
    def _chat(self, prompt: str, kind: str = "image") -> str:
        messages = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": prompt}]}]
        return self.processor.apply_chat_template(messages, add_generation_prompt=True)

    def _process(self, images: Sequence[Any], texts: list[str], **kwargs: Any) -> dict[str, torch.Tensor]:
        """Images nested one per prompt: Idefics3Processor splits a flat list across the prompts, but
        SmolVLMProcessor reads a flat list as all the images of one prompt."""
        return super()._process([[image] for image in images], texts, **kwargs)

    # ------------------------------------------------------------------ mapping
    def patch_map(self, inputs: dict[str, torch.Tensor], index: int) -> PatchMap:
        ids = inputs["input_ids"][index]  # [L]
        positions = torch.nonzero(ids == self.model.config.image_token_id).flatten()  # [N_img]
        views = positions.numel() // self._tokens_per_view()
        rows, cols = self.grid()
        p_v = rows * cols
        if views * self._tokens_per_view() != positions.numel():
            raise ModelError(f"idefics3: {positions.numel()} image tokens are not a whole number of views of "
                             f"{self._tokens_per_view()} tokens", fix="build inputs with the model's own processor")
        index_feature = torch.arange(views * p_v, dtype=torch.float32).reshape(views, p_v, 1)  # patch ids
        shuffled = self.model.model.connector.pixel_shuffle(index_feature, self._scale())  # [V, P_v/s², s²]
        carried = shuffled.reshape(-1, self._scale() ** 2).round().long()  # [N_img, s²]
        mapping = torch.zeros(positions.numel(), views * p_v)
        mapping.scatter_(1, carried, 1.0 / self._scale() ** 2)
        return PatchMap(image_positions=positions, token_to_patch=mapping, grid=(rows, cols), views=views)
