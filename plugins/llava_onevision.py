"""LLaVA-OneVision family adapter (``model_type == "llava_onevision"``): SigLIP, anyres-max tiles, bilinear pooling.

As LLaVA-NeXT (:mod:`vsp_assert.plugins.llava_next`): the processor cuts the image into tiles of the encoder's size
at the best ``image_grid_pinpoints`` resolution and prepends a resized base view; the SigLIP tower (no class
token, ``vision_feature_select_strategy == "full"``) runs on every view, ``[ΣV, P_v, d]``; the LM receives the
base view's patches, then the stitched and unpadded tiles row by row, each row closed by an ``image_newline``
token. The difference is *anyres-max-N* (``vision_aspect_ratio``): when the unpadded tile grid holds more than
about N views' worth of patches, the projected grid is *bilinearly downsampled* to fit, so one LM token mixes up
to four neighbouring patches with bilinear weights and some patches reach the LM through no token at all.

The map comes from the model's own ``pack_image_features``: packing is linear in the features, so packing one-hot
patch features (in chunks of channels) gives each token's exact weights over the patches; newline tokens get a
zero row. The map is kept sparse (at most four entries a row; a dense one would be about 200 MB at anyres-max-9
sizes) and cached per image size. Patches are numbered ``view · P_v + row · cols + col`` (view 0 the base view,
then the tiles in row-major tile order). One image per prompt (multi-image prompts skip the tiles in the model).

**Video** (:mod:`vsp_assert.engine.video`, layout shared with LLaVA-NeXT-Video in
:mod:`vsp_assert.plugins._llava_video`): the SigLIP tower runs on every frame (``pixel_values_videos [B, F, C, H,
W]``), the projected features of each frame are *bilinearly* downsampled to ``⌈rows/2⌉ × ⌈cols/2⌉``
(``apply_pooling``), the pooled tokens of all frames follow one another and one ``image_newline`` token closes the
clip, in place of ``F · ⌈rows/2⌉ · ⌈cols/2⌉ + 1`` ``<video>`` tokens. Each frame is a view; a frame's map is
``apply_pooling`` run on one-hot patch features (pooling is linear), so a token carries up to four patches with
bilinear weights (exactly 2×2 at ¼ each for an even grid; an odd grid's edge tokens carry fewer and some patches
reach no token), and the newline token none. The model stacks the clips of a batch and appends one newline per
row, so a batch of clips must share a frame count: :meth:`batch_group` keys clips by it, and the Scratchpad runs
clips of each length as their own batch (``prepare`` called directly with mixed lengths raises a ``ModelError``).

Shapes: hooked layer output ``[ΣV, P_v, d_vision]`` (video: ``[B·F, P_f, d_vision]``) → patches ``[B, V·P_v,
d_vision]``; map ``[N_img, V·P_v]`` (video: ``[F·t + 1, F·P_f]``).
"""

from __future__ import annotations

from typing import Any

import torch

from vsp_assert.engine.adapter import PatchMap
from vsp_assert.engine.video import is_video
from vsp_assert.engine.views import sparse_map
from vsp_assert.errors import ModelError

from ._llava_video import LlavaVideoAdapter, is_video_inputs

_CHUNK = 1024  # one-hot channels packed at a time (memory: ΣV · P_v · _CHUNK floats)
_MAPS_KEPT = 16  # sparse maps kept per adapter, by image size (a few hundred KB each at real sizes)


class LlavaOnevisionAdapter(LlavaVideoAdapter):
    family = "llava_onevision"
    model_types = ("llava_onevision",)
    model_class = "LlavaOnevisionForConditionalGeneration"
    newline_after_frames = True

    def __init__(self, model: Any, processor: Any) -> None:
        super().__init__(model, processor)
        # image size → sparse token_to_patch: images of one size share their layout, and the map costs
        # ⌈V·P_v / _CHUNK⌉ packing passes to build
        self._maps: dict[tuple[tuple[int, ...], int], torch.Tensor] = {}

    def batch_group(self, item: Any) -> Any:
        """Clips batch only with clips of their own frame count (the model stacks them ``[B, F, …]``)."""
        return ("video", len(item.frames)) if is_video(item) else False

    def _has_cls(self) -> bool:
        return False  # SigLIP

    def _views(self, size: torch.Tensor) -> int:
        from transformers.models.llava_onevision.modeling_llava_onevision import image_size_to_num_patches

        return int(image_size_to_num_patches(size, self.model.config.image_grid_pinpoints,
                                             int(self.model.config.vision_config.image_size)))

    def frame_block(self) -> torch.Tensor:
        """``[⌈rows/2⌉·⌈cols/2⌉, rows·cols]``: one frame's bilinear pooling, from the model's ``apply_pooling``."""
        rows, cols = self.grid()
        one_hot = torch.eye(rows * cols)[None]  # [1, P_f, P_f]: channel j marks patch j
        with torch.no_grad():
            pooled = self.model.model.apply_pooling(one_hot)[0]  # [t, P_f]
        return pooled.detach().clone()

    def patch_map(self, inputs: dict[str, torch.Tensor], index: int) -> PatchMap:
        config = self.model.config
        if config.vision_feature_select_strategy != "full":
            raise ModelError("llava_onevision: only vision_feature_select_strategy='full' is supported (SigLIP has "
                             "no class token to drop)", received=config.vision_feature_select_strategy,
                             fix="use a checkpoint with the full strategy (all released LLaVA-OneVision models)")
        if is_video_inputs(inputs):
            return super().patch_map(inputs, index)
        ids = inputs["input_ids"][index]  # [L]
        positions = torch.nonzero(ids == config.image_token_id).flatten()  # [N_img]
        size = inputs["image_sizes"][index]
        views = self._views(size)
        rows, cols = self.grid()
        key = (tuple(int(x) for x in size.tolist()), positions.numel())
        mapping = self._maps.get(key)
        if mapping is None:
            mapping = self._packed_map(size, views, rows * cols, positions.numel())
            self._maps[key] = mapping
            while len(self._maps) > _MAPS_KEPT:
                self._maps.pop(next(iter(self._maps)))
        return PatchMap(image_positions=positions, token_to_patch=mapping, grid=(rows, cols), views=views)

    def _packed_map(self, size: torch.Tensor, views: int, per_view: int, n_tokens: int) -> torch.Tensor:
        """The sparse ``[N_img, V·P_v]`` map of one image size, packing one-hot patch features in chunks."""
        config = self.model.config
        n = views * per_view
        rows_idx, cols_idx, values = [], [], []
        for start in range(0, n, _CHUNK):
            width = min(_CHUNK, n - start)
            one_hot = torch.zeros(n, width)
            one_hot[start : start + width] = torch.eye(width)  # channel j marks patch start + j
            packed, _ = self.model.model.pack_image_features(
                [one_hot.reshape(views, per_view, width)], size[None], image_newline=torch.zeros(width),
                vision_aspect_ratio=config.vision_aspect_ratio,
            )
            if packed[0].shape[0] != n_tokens:
                raise ModelError(f"llava_onevision: the prompt holds {n_tokens} image tokens, the model "
                                 f"packs {packed[0].shape[0]} features",
                                 fix="one image per prompt, built with the model's own processor "
                                     "(its vision_aspect_ratio must equal the config's)")
            chunk = packed[0].detach()  # [N_img, width]
            r, c = torch.nonzero(chunk, as_tuple=True)
            rows_idx.append(r)
            cols_idx.append(c + start)
            values.append(chunk[r, c])
        return sparse_map(torch.cat(rows_idx), torch.cat(cols_idx), torch.cat(values), (n_tokens, n))
