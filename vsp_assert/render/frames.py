"""Where a trace's patches lie in what the model saw: one panel for a still image, one per time slice of a video.

Every spatial view (the terminal's maps, the HTML report's overlays) draws a ``[rows, cols]`` grid over a picture.
A still image is one such grid (a tiled image one per view, drawn without its crop, which the trace does not
keep). A video (:mod:`vsp_assert.engine.video`) is ``len(trace.frames)`` of them — patch ``p`` lies in slice
``p // (rows·cols)`` — and each slice is drawn over its first frame, captioned with the frames it covers
("frames 3–4"). :func:`panels` gives those grids, so the renderers loop over panels and never work out the layout
themselves. At most :data:`MAX_PANELS` slices are drawn; the rest are counted.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from vsp_assert.engine.trace import Trace

#: time slices of a video drawn at most (each slice is one more map per view)
MAX_PANELS = 8


@dataclass(frozen=True)
class Panel:
    """One grid of patches ``[lo, hi)`` drawn over ``image`` (a PIL image or None) and captioned ``label``."""

    label: str
    image: Any
    lo: int
    hi: int


def panels(trace: Trace, limit: int = MAX_PANELS) -> tuple[list[Panel], int]:
    """The panels of ``trace`` and how many slices were left out past ``limit``."""
    rows, cols = trace.grid
    size = rows * cols
    if not trace.frames:
        if trace.n_patches <= size:
            return [Panel("image", trace.image, 0, trace.n_patches)], 0
        views = trace.n_patches // size  # a tiled image: its views, drawn without a picture (crops are not kept)
        return [Panel(f"view {v + 1}", None, v * size, (v + 1) * size) for v in range(min(views, limit))], \
            max(0, views - limit)
    video = trace.image
    n_frames = len(video.frames) if video is not None else len(trace.frames)
    per_slice = max(1, math.ceil(n_frames / len(trace.frames)))
    shown = []
    for s, label in enumerate(trace.frames[:limit]):
        frame = video.frames[min(s * per_slice, n_frames - 1)] if video is not None else None
        shown.append(Panel(label, frame, s * size, (s + 1) * size))
    return shown, max(0, len(trace.frames) - limit)

