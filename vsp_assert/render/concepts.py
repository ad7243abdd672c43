"""Terminal rendering of ``vsp-assert concepts show``: a latent's statistics, labels and reference images.

Layout (one block per latent; a concept name shows its calibrated threshold first, then each of its latents)::

    concept red  (patch level · 5 latents · captured threshold 1.229, balanced accuracy 0.999)
    red#167   firing 3.1% · mean 1.42 · entropy 0.41 · precision 0.99 · recall 0.62
      labels: red (precision 0.99, recall 0.62)
      ▀▀▀▀▀▀▀▀ ▀▀▀▀▀▀▀▀ …          reference images (top-N, the latent's patches bright, the rest darkened)
      1. images/00012.png  0.81
      …

Thumbnails are drawn with half blocks (two pixel rows per line, 24-bit colour) at :data:`THUMB_CHARS` characters
wide; without colour each character is a shade glyph of the pixels' brightness. The data comes from the label file
(:class:`~vsp_assert.engine.labels.ConceptLabels`) and the atlas (:mod:`vsp_assert.concepts.atlas`).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from PIL import Image

from vsp_assert.engine.labels import ConceptLabels
from vsp_assert.render.style import SHADES, Style

THUMB_CHARS = 16  # characters per thumbnail (pixels across)


def thumbnail_lines(image: Image.Image, style: Style, width: int = THUMB_CHARS) -> list[str]:
    """An RGB image as ``width`` characters × ``width // 2`` lines (half blocks, or shade glyphs)."""
    height = width if width % 2 == 0 else width + 1
    px = np.asarray(image.convert("RGB").resize((width, height), Image.Resampling.BOX), dtype=np.int64)  # [H, W, 3]
    lines = []
    for r in range(0, height, 2):
        chars = []
        for c in range(width):
            top, bottom = px[r, c], px[r + 1, c]
            if style.enabled:
                chars.append(style.half_block(0, 0, rgb=(tuple(int(v) for v in top),  # type: ignore[arg-type]
                                                         tuple(int(v) for v in bottom))))
            else:
                level = float((top.mean() + bottom.mean()) / 2 / 255)
                chars.append(SHADES[round(level * (len(SHADES) - 1))])
        lines.append("".join(chars))
    return lines


def side_by_side(blocks: Sequence[list[str]], width: int, gap: int = 1) -> list[str]:
    """Thumbnail blocks (equal sizes) in rows that fit ``width`` characters."""
    if not blocks:
        return []
    block_w = THUMB_CHARS
    per_row = max(1, (width - 2) // (block_w + gap))
    out: list[str] = []
    for start in range(0, len(blocks), per_row):
        row = blocks[start : start + per_row]
        for line in range(len(row[0])):
            out.append("  " + (" " * gap).join(b[line] for b in row))
    return out


def _pct(x: Any) -> str:
    return f"{100 * float(x):.2f}%" if x is not None else "-"


def _num(x: Any, fmt: str = ".3f") -> str:
    return format(float(x), fmt) if isinstance(x, (int, float)) and not isinstance(x, bool) else "-"


def latent_header(labels: ConceptLabels, latent: int) -> str:
    """One line: the latent's display name and statistics (``dead``/``dense`` flagged)."""
    s = labels.stats(latent)
    parts = [f"firing {_pct(s.get('firing_rate'))}", f"mean {_num(s.get('mean_activation'))}",
             f"entropy {_num(s.get('label_entropy'), '.2f')}"]
    if "precision" in s:
        parts.append(f"best label {s.get('label')} (precision {_num(s.get('precision'), '.2f')}"
                     + (f", recall {_num(s.get('recall'), '.2f')})" if "recall" in s else ")"))
    flags = [f for f in ("dead", "dense") if s.get(f)]
    return labels.display(latent) + "  " + " · ".join(parts) + (f"  [{', '.join(flags)}: noise]" if flags else "")


def render_latent(labels: ConceptLabels, latent: int, thumbs: Sequence[Image.Image], *, style: Style,
                  width: int = 100) -> list[str]:
    """The block for one latent: header, the concepts naming it, reference thumbnails and their files."""
    lines = [style.bold(latent_header(labels, latent))]
    named = [c for c, ids in labels.concepts.items() if latent in ids]
    if named:
        parts = []
        for c in named:
            info = labels.concept_info.get(c, {})
            p, r = info.get("precision", {}).get(str(latent)), info.get("recall", {}).get(str(latent))
            parts.append(c + (f" (precision {_num(p, '.2f')}, recall {_num(r, '.2f')})" if p is not None else ""))
        lines.append("  labels: " + ", ".join(parts))
    else:
        lines.append(style.dim(f"  labels: none (unlabelled; name it as #{latent})"))
    refs = labels.references(latent)
    if not refs:
        lines.append(style.dim("  reference images: none (no atlas, or the latent never fired)"))
        return lines
    if thumbs:
        lines.append(style.dim(f"  reference images (top {len(refs)}; bright = where #{latent} fires):"))
        lines.extend(side_by_side([thumbnail_lines(t, style) for t in thumbs], width))
    else:
        lines.append(style.dim(f"  reference images (top {len(refs)}; no thumbnails: built with --no-atlas):"))
    for n, (path, score) in enumerate(refs, 1):
        lines.append(f"  {n}. {path}  {style.dim(f'score {score:.4g}')}")
    return lines


def render_concept_header(labels: ConceptLabels, name: str, style: Style) -> str:
    """The line above a concept's latents: level, count and calibrated threshold."""
    info = labels.concept_info.get(name, {})
    ids = labels.concepts.get(name, [])
    bits = [f"{info['level']} level" if "level" in info else None, f"{len(ids)} latent(s)"]
    t = labels.threshold(name)
    if t is not None:
        bits.append(f"captured threshold {t:.4g}, balanced accuracy {_num(info.get('balanced_accuracy'), '.3f')}")
    else:
        bits.append("no calibrated threshold")
    return style.bold(f"concept {name}") + "  (" + " · ".join(b for b in bits if b) + ")"
