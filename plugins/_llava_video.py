"""Video in the LLaVA families that pool each frame's patch grid (LLaVA-OneVision, LLaVA-NeXT-Video): the layout
both adapters share (:class:`LlavaVideoAdapter`) and a stand-in for their torchvision-only video processor
(:class:`FrameVideoProcessor`).

**Layout.** Both run the vision tower on every frame of a clip as one batch row (``pixel_values_videos [B, F, C,
H, W]`` → hooked output ``[B·F, S, d]``, the frames of element 0 first), pool each frame's ``rows × cols`` grid to
a smaller one and put the pooled tokens of frame 0, frame 1, … where the prompt's video placeholder was
(OneVision then adds one learned ``image_newline`` token per clip, which carries no patch). So every frame is one
view (``PatchMap.frames_per_view == 1``), patch ``frame · rows · cols + row · cols + col``, and a clip's token →
patch map is one frame's pooling map repeated block-diagonally over its frames. The family says how one frame
pools (:meth:`LlavaVideoAdapter.frame_block`: one-hot patch features pushed through the model's own pooling) and
whether a newline follows; the rest is here. The maps are sparse: at real sizes (729 patches a frame, 32 frames) a
dense one would take gigabytes. Still images keep the LLaVA-NeXT / OneVision image path unchanged.

**Stand-in.** transformers' ``LlavaOnevisionVideoProcessor`` and ``LlavaNextVideoVideoProcessor`` are
``BaseVideoProcessor`` subclasses, which need torchvision; this project does not depend on it (there is no CPU
build of it here), so a processor built or loaded without it has no ``video_processor`` and
:class:`FrameVideoProcessor` takes that slot (the adapter installs it). Both real classes run the base
``_preprocess`` (``video_processing_utils.py``) on every frame of every clip, which this class computes on PIL
frames with numpy:

1. each frame resized with Pillow (the image processor's ``resample``, bicubic for both families): to exactly
   ``size["height"] × size["width"]`` (OneVision: ``{"height": 384, "width": 384}``), or, for a
   ``size["shortest_edge"]`` (NeXT-Video: 224), so that its short side is that long and the long side
   ``int(shortest_edge · long / short)`` (``get_resize_output_image_size`` with ``default_to_square=False``);
2. centre-cropped to ``crop_size`` where the family crops (NeXT-Video: ``do_center_crop``, 224 × 224, top-left
   corner ``int((H − h) / 2)``, ``int((W − w) / 2)`` as the torchvision backend computes it);
3. rescaled by ``rescale_factor`` (float64, then float32) and normalised by ``image_mean`` / ``image_std``.

The output is ``pixel_values_videos [B, F, C, H, W]`` float32: each clip ``[F, C, H, W]``, stacked by the same
``BatchFeature`` conversion the real class ends with (so clips of different frame counts fail to stack here as
they do there). Sizes, crop, ``resample``, rescale factor, mean and std are the settings of the processor's own
image processor (the real video processors' class defaults are the same sizes and kernel; a checkpoint whose
``video_preprocessor_config.json`` says otherwise would differ, as would one that asks for frame sampling: every
given frame is used, as with ``do_sample_frames=False``).

Where the torchvision processor can differ: it resizes with torchvision's bicubic kernel (antialiased, on
tensors), so its pixels differ from these by resampling rounding, never in layout, shape or dtype; with torchvision
installed the real processor stays in place and this class is unused. ``tests/plugins/test_video_llava.py``
checks that a one-frame clip gets exactly the image processor's pixels where the two pipelines agree.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, ClassVar

import numpy as np
import torch

from vsp_assert.engine.adapter import PatchMap
from vsp_assert.engine.video import is_video
from vsp_assert.engine.views import sparse_map
from vsp_assert.errors import ModelError

from .llava_next import LlavaNextAdapter

#: the real video processors' crop switch per family (their ``do_center_crop`` class attribute)
CROPS = {"llava_onevision": False, "llava_next_video": True}


def is_video_inputs(inputs: dict[str, Any] | None) -> bool:
    return inputs is not None and "pixel_values_videos" in inputs


class LlavaVideoAdapter(LlavaNextAdapter):
    """LLaVA-NeXT's image path plus the pooled-frames video path (see the module doc)."""

    supports_video = True
    vision_keys = ("pixel_values", "pixel_values_videos")
    #: whether one ``image_newline`` token closes each clip's video tokens (OneVision)
    newline_after_frames: ClassVar[bool] = False

    def __init__(self, model: Any, processor: Any) -> None:
        super().__init__(model, processor)
        install(processor, self.family)  # only where the torchvision video processor is missing
        self._block: torch.Tensor | None = None

    # ------------------------------------------------------------------ one frame
    def frame_block(self) -> torch.Tensor:
        """``[t, rows·cols]``: how one frame's patches pool into its ``t`` LM tokens (rows sum to 1)."""
        raise NotImplementedError

    def _frame_block(self) -> torch.Tensor:
        if self._block is None:
            self._block = self.frame_block()
        return self._block

    def video_frames(self, inputs: dict[str, torch.Tensor]) -> list[int]:
        """Frames of each batch element, from its video-token count (``t`` a frame, plus any newline)."""
        per_frame = self._frame_block().shape[0]
        extra = 1 if self.newline_after_frames else 0
        counts = (inputs["input_ids"] == self.model.config.video_token_id).sum(1).tolist()  # [B]
        if any(c < per_frame + extra or (c - extra) % per_frame for c in counts):
            raise ModelError(f"{self.family}: video-token counts {counts} are not whole frames of {per_frame} pooled "
                             f"tokens{' plus a newline' if extra else ''}", field="video", received=counts,
                             fix="one clip per prompt, built with the model's own processor")
        return [(int(c) - extra) // per_frame for c in counts]

    # ------------------------------------------------------------------ views
    def element_views(self, inputs: dict[str, torch.Tensor]) -> list[int] | None:
        return self.video_frames(inputs) if is_video_inputs(inputs) else super().element_views(inputs)

    # ------------------------------------------------------------------ inputs
    def prepare(self, images: Sequence[Any], prompts: Sequence[str]) -> dict[str, torch.Tensor]:
        if not any(is_video(v) for v in images):
            return super().prepare(images, prompts)
        return self.prepare_videos(images, [self._chat(p, kind="video") for p in prompts])

    def prepare_videos(self, videos: Sequence[Any], texts: list[str]) -> dict[str, torch.Tensor]:
        """The processor on a batch of clips and chat texts, padded on the left: ``pixel_values_videos [B, F, C, H,
        W]``. Clips of one batch must have one frame count (the model stacks them); families that can do better
        override this."""
        counts = [len(v.frames) for v in videos]
        if len(set(counts)) > 1:
            raise ModelError(f"{self.family}: the clips of one batch must have the same number of frames (the model "
                             f"stacks them as pixel_values_videos [B, F, C, H, W] and closes each row with a newline)",
                             field="video", received=counts,
                             fix="run clips of different lengths in separate batches (Scratchpad.run per clip)")
        tokenizer = self.tokenizer
        old_side, tokenizer.padding_side = getattr(tokenizer, "padding_side", "left"), "left"
        try:
            return dict(self.processor(videos=[list(v.frames) for v in videos], text=texts, return_tensors="pt",
                                       padding=True))
        finally:
            tokenizer.padding_side = old_side

    def element_inputs(self, inputs: dict[str, torch.Tensor], index: int) -> dict[str, torch.Tensor]:
        if not is_video_inputs(inputs):
            return super().element_inputs(inputs, index)
        frames = self.video_frames(inputs)
        pixels = inputs["pixel_values_videos"]  # [B, F, C, H, W], or [1, ΣF, C, H, W] for a ragged batch
        flat = pixels.reshape(-1, *pixels.shape[2:])  # [ΣF, C, H, W]
        start = sum(frames[:index])
        rest = {k: v for k, v in inputs.items() if k != "pixel_values_videos"}
        return {**super().element_inputs(rest, index),
                "pixel_values_videos": flat[start : start + frames[index]][None]}  # [1, F_b, C, H, W]

    # ------------------------------------------------------------------ mapping
    def patch_map(self, inputs: dict[str, torch.Tensor], index: int) -> PatchMap:
        if not is_video_inputs(inputs):
            return super().patch_map(inputs, index)
        ids = inputs["input_ids"][index]  # [L]
        positions = torch.nonzero(ids == self.model.config.video_token_id).flatten()  # [N_vid]
        frames = self.video_frames(inputs)[index]
        block = self._frame_block()  # [t, P_f]
        t, per_frame = block.shape
        token, patch = torch.nonzero(block, as_tuple=True)  # [nnz]
        offsets = torch.arange(frames)[:, None]  # [F, 1]
        n_tokens = frames * t + (1 if self.newline_after_frames else 0)  # the newline row (last) stays empty
        mapping = sparse_map((token + offsets * t).flatten(), (patch + offsets * per_frame).flatten(),
                             block[token, patch].repeat(frames), (n_tokens, frames * per_frame))
        rows, cols = self.grid()
        return PatchMap(image_positions=positions, token_to_patch=mapping, grid=(rows, cols), views=frames,
                        frames_per_view=1)


class FrameVideoProcessor:
    """A LLaVA video processor's output for lists of PIL frames, without torchvision (see the module doc)."""

    model_input_names = ["pixel_values_videos"]

    def __init__(self, image_processor: Any, *, center_crop: bool) -> None:
        from PIL import Image

        self.size = dict(image_processor.size)
        crop = getattr(image_processor, "crop_size", None)
        self.crop_size = dict(crop) if center_crop and crop else None
        resample = getattr(image_processor, "resample", None)
        self.resample = Image.Resampling(int(resample)) if resample is not None else Image.Resampling.BICUBIC
        self.rescale_factor = float(image_processor.rescale_factor)
        self.image_mean = np.asarray(image_processor.image_mean, dtype=np.float32)[:, None, None]  # [C, 1, 1]
        self.image_std = np.asarray(image_processor.image_std, dtype=np.float32)[:, None, None]

    def __call__(self, videos: Any = None, return_tensors: Any = None, **kwargs: Any) -> Any:
        """``videos``: one clip or a list of clips, each a list of RGB PIL frames. The processor's other keywords
        are taken and ignored (this class serves the settings it was built with)."""
        from transformers.feature_extraction_utils import BatchFeature

        clips = [torch.from_numpy(np.stack([self.frame(f) for f in frames])) for frames in _as_clips(videos)]
        return BatchFeature(data={"pixel_values_videos": clips}, tensor_type=return_tensors)  # [B, F, C, H, W]

    def target_size(self, height: int, width: int) -> tuple[int, int]:
        """``(height, width)`` a frame of this size is resized to (before any crop)."""
        if self.size.get("height") and self.size.get("width"):
            return int(self.size["height"]), int(self.size["width"])
        edge = int(self.size["shortest_edge"])
        short, long = (width, height) if width <= height else (height, width)
        new_long = int(edge * long / short)
        return (new_long, edge) if width <= height else (edge, new_long)

    def frame(self, frame: Any) -> np.ndarray:
        """One PIL frame → ``[C, H, W]`` float32: resized, cropped where the family crops, rescaled, normalised."""
        h, w = self.target_size(frame.size[1], frame.size[0])
        pixels = np.asarray(frame.convert("RGB").resize((w, h), self.resample)).transpose(2, 0, 1)  # [C, h, w] uint8
        if self.crop_size is not None:
            ch, cw = int(self.crop_size["height"]), int(self.crop_size["width"])
            top, left = int((h - ch) / 2.0), int((w - cw) / 2.0)
            pixels = pixels[:, top : top + ch, left : left + cw]
        scaled = (pixels.astype(np.float64) * self.rescale_factor).astype(np.float32)
        return np.ascontiguousarray((scaled - self.image_mean) / self.image_std)


def _as_clips(videos: Any) -> list[list[Any]]:
    """The processor's ``videos`` argument (one clip, or a list of clips; a clip is a list of PIL frames)."""
    from PIL import Image

    if isinstance(videos, (list, tuple)) and videos and isinstance(videos[0], Image.Image):
        return [list(videos)]
    return [list(v) for v in videos]


def install(processor: Any, family: str) -> None:
    """Put a :class:`FrameVideoProcessor` in ``processor``'s empty ``video_processor`` slot (left alone when the
    real, torchvision-based one is there)."""
    if getattr(processor, "video_processor", None) is None and getattr(processor, "image_processor", None):
        processor.video_processor = FrameVideoProcessor(processor.image_processor, center_crop=CROPS[family])
