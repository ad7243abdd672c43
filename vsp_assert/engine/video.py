"""Video input: a clip is a sequence of frames, and the engine treats its frames as views of one input.

A user gives a video as a list of frames (paths, PIL images or arrays) or as one file. Files are decoded with
what the dependency tree already has: Pillow reads animated GIF, WebP and PNG (APNG) and multi-page TIFF, so
those always work; other containers (MP4, WebM, MKV, AVI, MOV) are read with PyAV when it is installed, and are
refused with a message that says so when it is not (transformers' own video decoders need torchvision or
torchcodec, which this project does not depend on).

:class:`Video` is the record every layer passes around in place of a PIL image: the engine hands it to the
family adapter, which builds the model's video inputs (``pixel_values_videos`` …) with the family's processor;
its patch map then lays patches out as (time slice, row, col) — ``views`` of the :class:`~.adapter.PatchMap` are
the time slices, and ``PatchMap.frames`` names the frames each slice covers ("frames 1–2" for a family that
merges two frames into one temporal patch, as Qwen2-VL does). Flat patch indices keep the row-major layout of
every multi-view input: ``patch = slice · rows · cols + row · cols + col``.

Limits, checked with the frames' place in the error: 1 to :data:`MAX_FRAMES` frames, all of one size (a family
processor stacks them), each a valid image (:func:`~.images.load_image`'s rules).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from vsp_assert.errors import InputError

#: frames a case may give (a video this long is already thousands of image tokens in any family)
MAX_FRAMES = 64
#: file types Pillow decodes as a sequence of frames
PIL_VIDEO_SUFFIXES = (".gif", ".webp", ".png", ".apng", ".tif", ".tiff")
#: container types read with PyAV when it is installed
AV_SUFFIXES = (".mp4", ".webm", ".mkv", ".avi", ".mov", ".m4v")


@dataclass(frozen=True, eq=False)
class Video:
    """A clip: ``frames`` are RGB PIL images of one size, in time order; ``source`` says where it came from."""

    frames: tuple[Any, ...]
    source: str | None = None
    #: frames per second, when the source says (a GIF's frame durations, a container's rate); None for a list
    fps: float | None = None

    @property
    def size(self) -> tuple[int, int]:
        """``(width, height)`` of every frame (PIL's order)."""
        return tuple(self.frames[0].size)  # type: ignore[return-value]

    def __len__(self) -> int:
        return len(self.frames)

    def __repr__(self) -> str:
        w, h = self.size
        return f"Video({len(self.frames)} frames {w}x{h}{f' from {self.source}' if self.source else ''})"


def is_video(item: Any) -> bool:
    return isinstance(item, Video)


def frame_labels(n_slices: int, frames_per_slice: int, n_frames: int) -> tuple[str, ...]:
    """Names of ``n_slices`` time slices of ``frames_per_slice`` frames each, over a clip of ``n_frames`` (1-based;
    a last slice padded by repeating the last frame names only the frames it really holds). An adapter that does
    not say (``frames_per_slice`` 0) gets the even split ``⌈n_frames / n_slices⌉``."""
    if frames_per_slice < 1:
        frames_per_slice = max(1, -(-n_frames // max(1, n_slices)))
    out = []
    for s in range(n_slices):
        first = s * frames_per_slice + 1
        last = min((s + 1) * frames_per_slice, n_frames)
        out.append(f"frame {first}" if first >= last else f"frames {first}–{last}")
    return tuple(out)


def load_video(video: Any, *, source: str | None = None, line: int | None = None, field: str = "video") -> Video:
    """A :class:`Video` from a :class:`Video`, a list of frames (paths, PIL images, arrays) or a video file.

    ``source`` and ``line`` name where the video was given (a case file and the line of its ``video`` field);
    every error names them, with ``field`` (``video[3]`` for the fourth frame)."""
    from vsp_assert.engine.images import load_image

    if isinstance(video, Video):
        return video
    if isinstance(video, (str, os.PathLike)):
        frames, fps = decode_video_file(Path(video), source=source, line=line, field=field)
        origin: str | None = str(video)
    elif isinstance(video, (list, tuple)):
        if not video:
            raise InputError("the video has no frames", file=source, line=line, field=field, received="[]",
                             allowed=f"1 to {MAX_FRAMES} frames")
        _check_count(len(video), source=source, line=line, field=field)
        frames = [load_image(f, source=source, line=line, field=f"{field}[{i}]") for i, f in enumerate(video)]
        origin, fps = source, None
    else:
        raise InputError("unsupported video value", file=source, line=line, field=field,
                         received=type(video).__name__,
                         allowed="a list of frames (paths, PIL images, arrays) or a video file path")
    sizes = [f.size for f in frames]
    for i, size in enumerate(sizes):
        if size != sizes[0]:
            raise InputError("video frames differ in size", file=source, line=line, field=f"{field}[{i}]",
                             received=f"{size[0]}x{size[1]}", allowed=f"{sizes[0][0]}x{sizes[0][1]} (frame 0's size)",
                             fix="resize the frames to one size")
    return Video(tuple(frames), origin, fps)


def _check_count(n: int, *, source: str | None, line: int | None, field: str) -> None:
    if n > MAX_FRAMES:
        raise InputError("the video has too many frames", file=source, line=line, field=field, received=n,
                         allowed=f"at most {MAX_FRAMES}", fix="sample fewer frames (for example every n-th)")


def decode_video_file(path: Path, *, source: str | None = None, line: int | None = None,
                      field: str = "video") -> tuple[list[Any], float | None]:
    """The frames of a video file as RGB PIL images, and its frame rate when the file gives one: Pillow for
    animated images, PyAV for containers."""
    from vsp_assert.engine.images import _check_size, _reading, _to_rgb

    if not path.is_file():
        raise InputError("video file not found" if not path.exists() else "expected a video file", file=source,
                         line=line, field=field, received=str(path),
                         fix="give a path relative to the case file, or a list of frame images")
    suffix = path.suffix.lower()
    if suffix in AV_SUFFIXES or suffix not in PIL_VIDEO_SUFFIXES:
        return _decode_with_av(path, source=source, line=line, field=field)
    from PIL import Image, ImageSequence

    frames, durations = [], []
    with _reading(path, source=source, line=line, field=field), Image.open(path) as opened:
        n = int(getattr(opened, "n_frames", 1))
        _check_count(n, source=source, line=line, field=field)
        for frame in ImageSequence.Iterator(opened):
            frame.load()
            durations.append(frame.info.get("duration"))
            frames.append(_to_rgb(frame.copy()))
    w, h = frames[0].size
    _check_size(w, h, f"{w}x{h} ({path})", source=source, line=line, field=field)
    known = [float(d) for d in durations if isinstance(d, (int, float)) and d > 0]  # milliseconds per frame
    return frames, (1000.0 * len(known) / sum(known) if known else None)


def _decode_with_av(path: Path, *, source: str | None, line: int | None,
                    field: str) -> tuple[list[Any], float | None]:
    try:
        import av  # type: ignore[import-not-found]  # PyAV: optional
    except ImportError:
        raise InputError(f"cannot decode '{path.suffix or path.name}' video: no video decoder is installed",
                         file=source, line=line, field=field, received=str(path),
                         allowed="animated GIF/WebP/PNG or TIFF (read with Pillow); MP4, WebM, MKV, AVI, MOV with "
                                 "PyAV installed",
                         fix="pip install av, or give the frames as a list of images") from None
    frames: list[Any] = []
    fps = None
    try:
        with av.open(str(path)) as container:
            rate = container.streams.video[0].average_rate
            fps = float(rate) if rate else None
            for frame in container.decode(video=0):
                frames.append(frame.to_image().convert("RGB"))
                _check_count(len(frames), source=source, line=line, field=field)
    except InputError:
        raise
    except Exception as exc:  # PyAV's own errors: a broken or unsupported container
        raise InputError(f"not a readable video ({type(exc).__name__})", file=source, line=line, field=field,
                         received=str(path)) from None
    if not frames:
        raise InputError("the video has no frames", file=source, line=line, field=field, received=str(path))
    return frames, fps


def probe_video_file(path: Path, *, source: str | None = None, line: int | None = None,
                     field: str = "video") -> int | None:
    """Check a video file without decoding it (collection time): the frame count of an animated image from its
    header (None for a container), or the :class:`InputError` :func:`decode_video_file` would raise for a missing
    file, a non-image, too many frames, or a container with no decoder installed."""
    from vsp_assert.engine.images import _check_size, _reading

    if not path.is_file():
        raise InputError("video file not found" if not path.exists() else "expected a video file", file=source,
                         line=line, field=field, received=str(path))
    suffix = path.suffix.lower()
    if suffix in AV_SUFFIXES or suffix not in PIL_VIDEO_SUFFIXES:
        try:
            import av  # type: ignore[import-not-found]  # noqa: F401  # PyAV: optional
        except ImportError:
            _decode_with_av(path, source=source, line=line, field=field)  # raises the no-decoder error
        return None
    from PIL import Image

    with _reading(path, source=source, line=line, field=field), Image.open(path) as opened:
        n, (w, h) = int(getattr(opened, "n_frames", 1)), opened.size
    _check_count(n, source=source, line=line, field=field)
    _check_size(w, h, f"{w}x{h} ({path})", source=source, line=line, field=field)
    return n


def load_media(item: Any, *, source: str | None = None, line: int | None = None, field: str = "image") -> Any:
    """An RGB PIL image, or a :class:`Video` left as it is: what the Scratchpad hands to an adapter."""
    from vsp_assert.engine.images import load_image

    return item if isinstance(item, Video) else load_image(item, source=source, line=line, field=field)


def groups_by_kind(media: Sequence[Any], key: Callable[[Any], Any] = is_video) -> list[list[int]]:
    """Indices of ``media`` grouped by ``key`` (in order of first appearance); by default into still images and
    videos, since families run their vision tower once per kind (an adapter's ``batch_group`` may split finer)."""
    kinds: dict[Any, list[int]] = {}
    for i, item in enumerate(media):
        kinds.setdefault(key(item), []).append(i)
    return list(kinds.values())


def run_grouped(groups: list[list[int]], media: Sequence[Any], prompts: Sequence[str],
                run: Callable[[list[Any], list[str]], list[Any]]) -> list[Any]:
    """``run`` on each group of :func:`groups_by_kind` alone, the results put back in the order of ``media``."""
    done: dict[int, Any] = {}
    for group in groups:
        done.update(zip(group, run([media[i] for i in group], [prompts[i] for i in group])))
    return [done[i] for i in range(len(media))]
