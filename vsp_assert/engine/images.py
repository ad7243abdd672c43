"""Image input: one function turns what users pass (path, PIL image, array) into an RGB PIL image.

:func:`load_image` does the turning; :func:`probe_image_file` checks an image file from its header alone (the
case-file loader runs it at collection, so a folder or a non-image is refused before any model loads).

Users give images as file paths (relative to a case file), PIL images or arrays; models want RGB. Every way an
image can be unusable (missing, unreadable, not an image, too small, absurdly large, wrong array shape) is one
:class:`~vsp_assert.errors.InputError` naming the source; grayscale, palette and RGBA images are converted
(alpha composited on white) rather than refused.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from vsp_assert.errors import InputError

MIN_SIDE = 8
MAX_PIXELS = 64_000_000


def probe_image_file(path: str | os.PathLike[str], *, source: str | None = None, line: int | None = None,
                     field: str = "image") -> tuple[int, int]:
    """The ``(width, height)`` of an image file, from its header only (nothing decoded): cheap enough to run on
    every case at collection. Raises :class:`InputError` for a missing path, a folder or other non-file, a file
    that cannot be opened or is not an image, or a size out of bounds. ``source``/``line`` name the case file."""
    from PIL import Image

    path = Path(path)
    try:
        exists = path.exists()
    except (OSError, ValueError):  # a name too long for the file system, an embedded NUL byte
        exists = False
    if not exists:
        raise InputError("image file not found", file=source, line=line, field=field, received=str(path),
                         fix="give a path relative to the case file, or an absolute one")
    if path.is_dir():
        raise InputError("expected an image file, got a folder", file=source, line=line, field=field,
                         received=str(path), fix="name one image file inside it")
    if not path.is_file():
        raise InputError("expected an image file, got something else (a device, socket or pipe)", file=source,
                         line=line, field=field, received=str(path))
    with _reading(path, source=source, line=line, field=field), Image.open(path) as opened:
        w, h = opened.size
    _check_size(w, h, f"{w}x{h} ({path})", source=source, line=line, field=field)
    return w, h


@contextmanager
def _reading(path: Path, *, source: str | None, line: int | None, field: str) -> Iterator[None]:
    """PIL's errors while opening or decoding ``path`` as one :class:`InputError` naming where it was given."""
    from PIL import Image, UnidentifiedImageError

    try:
        yield
    except Image.DecompressionBombError:
        raise InputError("image is too large", file=source, line=line, field=field, received=str(path),
                         allowed=f"at most {MAX_PIXELS:,} pixels") from None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
        raise InputError(f"not a readable image ({type(exc).__name__})", file=source, line=line, field=field,
                         received=str(path), allowed="PNG, JPEG, BMP, GIF, WebP, TIFF") from None


def _check_size(w: int, h: int, shown: str, *, source: str | None, line: int | None, field: str) -> None:
    if w * h > MAX_PIXELS:  # refused from the header, before decoding
        raise InputError("image is too large", file=source, line=line, field=field, received=shown,
                         allowed=f"at most {MAX_PIXELS:,} pixels", fix="downscale it before the test")
    if min(w, h) < MIN_SIDE:
        raise InputError("image is too small", file=source, line=line, field=field, received=shown,
                         allowed=f"both sides >= {MIN_SIDE} pixels")


def load_image(image: Any, *, source: str | None = None, line: int | None = None, field: str = "image") -> Any:
    """An RGB ``PIL.Image`` from a path, a PIL image, or an ``[H, W]`` / ``[H, W, 3|4]`` array.

    ``source`` and ``line`` name where the image was given (a case file and the line of its ``image`` field);
    every error names them, with ``field``."""
    from PIL import Image

    if isinstance(image, (str, os.PathLike)):
        path = Path(image)
        probe_image_file(path, source=source, line=line, field=field)
        with _reading(path, source=source, line=line, field=field), Image.open(path) as opened:
            opened.load()
            img = opened.copy()
        shown = f"{img.size[0]}x{img.size[1]} ({path})"
    elif isinstance(image, Image.Image):
        img = image
        shown = f"{img.size[0]}x{img.size[1]} ({source or 'image'})"
    else:
        img = _from_array(image, source=source, field=field)
        shown = f"{img.size[0]}x{img.size[1]} ({source or 'image'})"
    _check_size(img.size[0], img.size[1], shown, source=source, line=line, field=field)
    return _to_rgb(img)


def _to_rgb(img: Any) -> Any:
    from PIL import Image

    if img.mode == "RGB":
        return img
    if img.mode in ("RGBA", "LA") or (img.mode == "P" and "transparency" in img.info):
        rgba = img.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    return img.convert("RGB")


def _from_array(array: Any, *, source: str | None, field: str) -> Any:
    import numpy as np
    from PIL import Image

    if hasattr(array, "detach"):  # torch tensor
        array = array.detach().cpu().numpy()
    try:
        arr = np.asarray(array)
    except Exception:
        arr = None
    if arr is None or arr.dtype.kind not in "biuf" or arr.ndim not in (2, 3) or arr.size == 0:
        shown = type(array).__name__ if arr is None else f"{type(array).__name__} {arr.dtype} {list(arr.shape)}"
        raise InputError("unsupported image value", file=source, field=field, received=shown,
                         allowed="a path, a PIL image, or a non-empty real-valued array [H, W] / [H, W, 3] / [H, W, 4]")
    if arr.ndim == 3 and arr.shape[2] not in (1, 3, 4):
        raise InputError("array image has an unsupported channel count", file=source, field=field,
                         received=list(arr.shape), allowed="[H, W], [H, W, 3] or [H, W, 4] (channels last)")
    if not np.isfinite(arr.astype(np.float64)).all():
        raise InputError("array image contains NaN or inf", file=source, field=field)
    if arr.dtype != np.uint8:
        lo, hi = float(arr.min()), float(arr.max())
        if lo >= 0.0 and hi <= 1.0:
            arr = np.round(arr * 255.0)
        elif lo < 0.0 or hi > 255.0:
            raise InputError("array image values out of range", file=source, field=field,
                             received=f"[{lo:g}, {hi:g}]", allowed="uint8, or floats in [0, 1] or [0, 255]")
        arr = arr.astype(np.uint8)
    if arr.ndim == 3 and arr.shape[2] == 1:
        arr = arr[:, :, 0]
    return Image.fromarray(np.ascontiguousarray(arr))  # mode L, RGB or RGBA from the shape


def blank_like(media: Any) -> Any:
    """The same input with its content taken away: an RGB image of the same size filled with its per-channel median
    colour (on a scene with a plain background, the background; on a photograph, a flat tone of it), or, for a
    :class:`~vsp_assert.engine.video.Video`, a clip of as many such frames. What a model answers about it is its
    *prior* for the question — the answer the words alone give (:mod:`vsp_assert.engine.flip`)."""
    import numpy as np
    from PIL import Image

    frames = getattr(media, "frames", None)
    if frames is not None:
        from dataclasses import replace

        return replace(media, frames=tuple(blank_like(f) for f in frames), source="blank")
    rgb = _to_rgb(media)
    pixels = np.asarray(rgb).reshape(-1, 3)  # [H·W, 3]
    colour = tuple(int(v) for v in np.median(pixels, axis=0))
    return Image.new("RGB", rgb.size, colour)
