"""Video inputs of the Qwen-VL families (Qwen2-VL, Qwen2.5-VL, Qwen3-VL) when transformers' video processor is missing.

transformers ships one video processor for these families, ``Qwen2VLVideoProcessor`` (Qwen3-VL's subclasses it),
and it needs torchvision, which this project does not depend on (there is no CPU build of it here). So a processor
built or loaded without it has no ``video_processor``, and :class:`FrameVideoProcessor` takes that slot. It computes
what ``Qwen2VLVideoProcessor._preprocess`` computes, on PIL frames with numpy:

1. every frame resized (Pillow bicubic, as the image processor) to ``smart_resize(h, w, patch·merge, min_pixels,
   max_pixels)`` — the pixel bounds of the checkpoint's ``video_preprocessor_config.json`` when it has one (Qwen2-VL
   gives a frame fewer pixels than an image), else those of the processor's own image processor;
2. rescaled by 1/255 and normalised by the image processor's mean and std;
3. the clip padded to a multiple of ``temporal_patch_size`` by repeating its last frame, then cut into
   ``(grid_t, temporal, C, grid_h/m, m, P, grid_w/m, m, P)`` and flattened to ``[grid_t·grid_h·grid_w,
   C·temporal·P·P]`` in the order ``(t, h/m, w/m, m, m, C, temporal, P, P)`` — the order the model's patch
   embedding and merger read.

It also returns the ``video_metadata`` the processors read (Qwen2.5-VL turns its fps into ``second_per_grid_ts``
for M-RoPE; Qwen3-VL writes frame timestamps into the prompt); the adapter passes each clip's metadata, so the
real processor gets the same. Frames given as a list carry no rate; they are taken as sampled at
:data:`DEFAULT_FPS` (Qwen's own default sampling rate), a GIF's frame durations give its rate.

Loading has the same gap: ``AutoProcessor`` cannot build a Qwen-VL processor at all without torchvision (it
builds the video processor first). :func:`load_processor` then builds the family's real processor class around the
checkpoint's image processor and tokenizer with the video slot empty (:func:`image_only`), and installs the
stand-in there, so a Qwen-VL checkpoint loads and takes images and video on a machine without torchvision.

The torchvision processor resizes with torchvision's bicubic kernel, so its pixels differ from these by resampling
rounding (not in layout); with torchvision installed the real processor stays in place and this class is unused.
``tests/test_video.py`` checks that a one-frame clip gets the image processor's pixels (to float32 rounding).
"""

from __future__ import annotations

import importlib.util
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

#: frames per second assumed for a clip given as a list of frames (Qwen2-VL's default sampling rate)
DEFAULT_FPS = 2.0


class FrameVideoProcessor:
    """``Qwen2VLVideoProcessor``'s output for lists of PIL frames, without torchvision (see the module doc)."""

    model_input_names = ["pixel_values_videos", "video_grid_thw"]

    def __init__(self, image_processor: Any, video_config: dict[str, Any] | None = None) -> None:
        """Settings from ``image_processor``, overridden by a checkpoint's ``video_preprocessor_config.json``
        (``video_config``) where it has its own: Qwen2-VL's bounds each frame at fewer pixels than each image."""
        video = dict(video_config or {})
        size = dict(video.get("size") or {})
        if not size:
            image_size = image_processor.size
            size = {k: image_size[k] if k in image_size else getattr(image_size, k)
                    for k in ("shortest_edge", "longest_edge")}
        self.min_pixels = int(video.get("min_pixels") or size["shortest_edge"])
        self.max_pixels = int(video.get("max_pixels") or size["longest_edge"])
        setting = {name: video.get(name, getattr(image_processor, name)) for name in
                   ("patch_size", "merge_size", "temporal_patch_size", "image_mean", "image_std", "rescale_factor")}
        self.patch_size = int(setting["patch_size"])
        self.merge_size = int(setting["merge_size"])
        self.temporal_patch_size = int(setting["temporal_patch_size"])
        self.image_mean = np.asarray(setting["image_mean"], dtype=np.float32)[:, None, None]  # [C, 1, 1]
        self.image_std = np.asarray(setting["image_std"], dtype=np.float32)[:, None, None]
        self.rescale_factor = float(setting["rescale_factor"])

    def __call__(self, videos: Any = None, video_metadata: Sequence[Any] | None = None, **kwargs: Any) -> Any:
        """``videos``: one clip or a list of clips, each a list of RGB PIL frames; ``video_metadata``: one
        ``VideoMetadata`` per clip (its ``fps``), or None (:data:`DEFAULT_FPS`)."""
        from transformers.feature_extraction_utils import BatchFeature

        clips = _as_clips(videos)
        given = list(video_metadata) if video_metadata is not None else [None] * len(clips)
        if len(given) != len(clips):
            raise ValueError(f"{len(given)} video_metadata entries for {len(clips)} videos")
        patches, grids, metadata = [], [], []
        for frames, meta in zip(clips, given):
            flat, grid = self.patchify([self._frame(f) for f in frames])
            patches.append(flat)
            grids.append(grid)
            metadata.append(meta if meta is not None and meta.fps else
                            _metadata(len(frames), DEFAULT_FPS, frames[0].size))
        data = {"pixel_values_videos": torch.from_numpy(np.concatenate(patches)),
                "video_grid_thw": torch.tensor(grids, dtype=torch.long), "video_metadata": metadata}
        return BatchFeature(data=data)

    def target_size(self, height: int, width: int) -> tuple[int, int]:
        from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import smart_resize

        return smart_resize(height, width, factor=self.patch_size * self.merge_size, min_pixels=self.min_pixels,
                            max_pixels=self.max_pixels)

    def _frame(self, frame: Any) -> np.ndarray:
        """One RGB PIL frame → ``[C, H', W']`` float32, resized, rescaled and normalised."""
        from PIL import Image

        h, w = self.target_size(frame.size[1], frame.size[0])
        resized = np.asarray(frame.convert("RGB").resize((w, h), Image.Resampling.BICUBIC), dtype=np.float32)
        return (resized.transpose(2, 0, 1) * self.rescale_factor - self.image_mean) / self.image_std

    def patchify(self, frames: Sequence[np.ndarray]) -> tuple[np.ndarray, list[int]]:
        """``[T, C, H, W]`` frames → ``[grid_t·grid_h·grid_w, C·temporal·P·P]`` and ``[grid_t, grid_h, grid_w]``."""
        clip = np.stack(frames)  # [T, C, H, W]
        tp, p, m = self.temporal_patch_size, self.patch_size, self.merge_size
        if pad := -clip.shape[0] % tp:
            clip = np.concatenate([clip, np.repeat(clip[-1:], pad, axis=0)])
        t, c, h, w = clip.shape
        gt, gh, gw = t // tp, h // p, w // p
        x = clip.reshape(gt, tp, c, gh // m, m, p, gw // m, m, p)
        x = x.transpose(0, 3, 6, 4, 7, 2, 1, 5, 8)  # (t, h/m, w/m, m, m, C, temporal, P, P)
        return np.ascontiguousarray(x.reshape(gt * gh * gw, c * tp * p * p)), [gt, gh, gw]


def _as_clips(videos: Any) -> list[list[Any]]:
    """The processor's ``videos`` argument (one clip, or a list of clips; a clip is a list of PIL frames)."""
    from PIL import Image

    if isinstance(videos, (list, tuple)) and videos and isinstance(videos[0], Image.Image):
        return [list(videos)]
    return [list(v) for v in videos]


def _metadata(n_frames: int, fps: float, size: tuple[int, int]) -> Any:
    from transformers.video_utils import VideoMetadata

    return VideoMetadata(total_num_frames=n_frames, fps=fps, width=size[0], height=size[1],
                         duration=n_frames / fps, frames_indices=list(range(n_frames)))


def metadata(video: Any) -> Any:
    """The ``VideoMetadata`` of a :class:`~vsp_assert.engine.video.Video`: its frame count and rate
    (:data:`DEFAULT_FPS` when the source gave none), every frame sampled."""
    return _metadata(len(video.frames), video.fps or DEFAULT_FPS, video.size)


def install(processor: Any, video_config: dict[str, Any] | None = None) -> None:
    """Put a :class:`FrameVideoProcessor` in ``processor``'s empty ``video_processor`` slot (left alone when the
    real, torchvision-based one is there)."""
    if getattr(processor, "video_processor", None) is None and getattr(processor, "image_processor", None):
        processor.video_processor = FrameVideoProcessor(processor.image_processor, video_config)


def video_config(name_or_path: str) -> dict[str, Any] | None:
    """The checkpoint's ``video_preprocessor_config.json``, or None when it has none."""
    import json
    from pathlib import Path

    from transformers.utils import cached_file

    path = cached_file(name_or_path, "video_preprocessor_config.json", _raise_exceptions_for_missing_entries=False)
    return json.loads(Path(path).read_text(encoding="utf-8")) if path else None


#: the special tokens a Qwen-VL processor reads off its tokenizer, and the names Qwen's vocabularies give them
SPECIAL_TOKENS = {"image_token": "<|image_pad|>", "video_token": "<|video_pad|>",
                  "vision_start_token": "<|vision_start|>", "vision_end_token": "<|vision_end|>"}


def image_only(base: type) -> type:
    """``base`` (Qwen2VLProcessor, Qwen2_5_VLProcessor, Qwen3VLProcessor) with its video slot left empty: its
    ``__init__`` sets the special tokens as the real one does (from the tokenizer, else Qwen's names) and skips
    the torchvision-only video processor; every other method, ``__call__`` included, is the real class's."""
    from transformers.processing_utils import ProcessorMixin

    class ImageOnly(base):  # type: ignore[misc, valid-type]
        def __init__(self, image_processor: Any = None, tokenizer: Any = None, chat_template: str | None = None,
                     **kwargs: Any) -> None:
            for name, default in SPECIAL_TOKENS.items():
                token = getattr(tokenizer, name, None) or default
                setattr(self, name, token)
                setattr(self, f"{name}_id", getattr(tokenizer, f"{name}_id", None)
                        or tokenizer.convert_tokens_to_ids(token))
            self.video_processor = None
            ProcessorMixin.__init__(self, image_processor, tokenizer, chat_template=chat_template)

    ImageOnly.__name__ = ImageOnly.__qualname__ = base.__name__
    return ImageOnly


def load_processor(name_or_path: str, *, trust_remote_code: bool = False) -> Any:
    """The checkpoint's processor: ``AutoProcessor``'s, or — where that fails for want of torchvision — the real
    processor class built by :func:`image_only` around the checkpoint's image processor and tokenizer."""
    import transformers
    from transformers import AutoConfig, AutoImageProcessor, AutoProcessor, AutoTokenizer
    from transformers.models.auto.processing_auto import PROCESSOR_MAPPING_NAMES

    try:
        return AutoProcessor.from_pretrained(name_or_path, trust_remote_code=trust_remote_code)
    except (ImportError, OSError, ValueError, AttributeError):
        if importlib.util.find_spec("torchvision") is not None:
            raise  # not the missing video processor: the error is the user's to see
    model_type = AutoConfig.from_pretrained(name_or_path, trust_remote_code=trust_remote_code).model_type
    base = getattr(transformers, PROCESSOR_MAPPING_NAMES[model_type])
    tokenizer = AutoTokenizer.from_pretrained(name_or_path, trust_remote_code=trust_remote_code)
    image_processor = AutoImageProcessor.from_pretrained(name_or_path, trust_remote_code=trust_remote_code)
    processor = image_only(base)(image_processor=image_processor, tokenizer=tokenizer,
                                 chat_template=getattr(tokenizer, "chat_template", None))
    install(processor, video_config(name_or_path))
    return processor
