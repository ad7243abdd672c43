"""Image input: one function turns what users pass (path, PIL image, array) into an RGB PIL image.

Users give images as file paths (relative to a case file), PIL images or arrays; models want RGB. Every way an
image can be unusable (missing, unreadable, not an image, too small, absurdly large, wrong array shape) is one
:class:`~vsp_assert.errors.InputError` naming the source; grayscale, palette and RGBA images are converted
(alpha composited on white) rather than refused.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from vsp_assert.errors import InputError

MIN_SIDE = 8
MAX_PIXELS = 64_000_000


def load_image(image: Any, *, source: str | None = None, field: str = "image") -> Any:
    """An RGB ``PIL.Image`` from a path, a PIL image, or an ``[H, W]`` / ``[H, W, 3|4]`` array."""
    from PIL import Image, UnidentifiedImageError

    where = source
    if isinstance(image, (str, os.PathLike)):
        path = Path(image)
        where = str(path)
        try:
            exists = path.exists()
        except (OSError, ValueError):  # a name too long for the file system, an embedded NUL byte
            exists = False
        if not exists:
            raise InputError("image file not found", file=source, field=field, received=str(path),
                             fix="give a path relative to the case file, or an absolute one")
        if path.is_dir():
            raise InputError("expected an image file, got a folder", file=source, field=field, received=str(path))
        try:
            with Image.open(path) as opened:
                w, h = opened.size  # from the header: refuse a huge image before decoding it
                if w * h > MAX_PIXELS:
                    raise InputError("image is too large", file=source, field=field, received=f"{w}x{h} ({path})",
                                     allowed=f"at most {MAX_PIXELS:,} pixels", fix="downscale it before the test")
                opened.load()
                img = opened.copy()
        except Image.DecompressionBombError:
            raise InputError("image is too large", file=source, field=field, received=str(path),
                             allowed=f"at most {MAX_PIXELS:,} pixels") from None
        except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
            raise InputError(f"not a readable image ({type(exc).__name__})", file=source, field=field,
                             received=str(path), allowed="PNG, JPEG, BMP, GIF, WebP, TIFF") from None
    elif isinstance(image, Image.Image):
        img = image
    else:
        img = _from_array(image, source=source, field=field)
    w, h = img.size
    if min(w, h) < MIN_SIDE:
        raise InputError("image is too small", file=source, field=field, received=f"{w}x{h} ({where or 'image'})",
                         allowed=f"both sides >= {MIN_SIDE} pixels")
    if w * h > MAX_PIXELS:
        raise InputError("image is too large", file=source, field=field, received=f"{w}x{h}",
                         allowed=f"at most {MAX_PIXELS:,} pixels", fix="downscale it before the test")
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
