"""A perceptual colour ramp (dark violet → blue → teal → green → yellow) as a numpy function.

The HTML report colours heatmap cells and image overlays with it. We keep our own ramp instead of depending on
matplotlib: a handful of anchor colours, linearly interpolated in sRGB, is all a report needs, and it keeps the
package's dependencies to what the engine already uses. The anchors follow the shape of the well-known viridis
ramp (monotone lightness, readable for colour-blind viewers), so low values stay dark and high values bright.
"""

from __future__ import annotations

import numpy as np

# [K, 3] anchor colours at evenly spaced positions 0 … 1 (sRGB, 0–255)
ANCHORS = np.array(
    [
        (68, 1, 84),
        (71, 44, 122),
        (59, 81, 139),
        (44, 113, 142),
        (33, 144, 141),
        (39, 173, 129),
        (92, 200, 99),
        (170, 220, 50),
        (253, 231, 37),
    ],
    dtype=np.float64,
)


def ramp(levels: np.ndarray | float) -> np.ndarray:
    """Colours for ``levels`` in [0, 1] (clipped; NaN reads as 0): shape ``[*levels.shape, 3]``, uint8 RGB."""
    x = np.nan_to_num(np.asarray(levels, dtype=np.float64), nan=0.0)
    x = np.clip(x, 0.0, 1.0) * (len(ANCHORS) - 1)  # [...] position on the anchor scale
    lo = np.minimum(np.floor(x).astype(np.int64), len(ANCHORS) - 2)  # [...] left anchor index
    frac = (x - lo)[..., None]  # [..., 1]
    rgb = ANCHORS[lo] * (1.0 - frac) + ANCHORS[lo + 1] * frac  # [..., 3]
    return np.rint(rgb).astype(np.uint8)


def hex_colour(level: float) -> str:
    """``#rrggbb`` for one level in [0, 1]."""
    r, g, b = (int(c) for c in ramp(level))
    return f"#{r:02x}{g:02x}{b:02x}"


def text_colour(level: float) -> str:
    """Black or white, whichever reads better on the ramp colour of ``level``."""
    r, g, b = (int(c) for c in ramp(level))
    luminance = 0.2126 * r + 0.7152 * g + 0.0722 * b
    return "#000000" if luminance > 140 else "#ffffff"


def css_gradient() -> str:
    """A CSS ``linear-gradient`` through the anchors (for the legend)."""
    stops = ", ".join(f"rgb({int(r)},{int(g)},{int(b)})" for r, g, b in ANCHORS)
    return f"linear-gradient(to right, {stops})"
