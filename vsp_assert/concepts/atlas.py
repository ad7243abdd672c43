"""The atlas: each latent's top-activating reference images, with its patch activations overlaid, on disk.

This module owns the atlas folder beside the SAE (``atlas/``) and its size bound. Layout::

    atlas/index.json       {"version": 1, "top_images": N, "thumb": T, "sheet_latents": 64,
                            "images": ["/data/a.png", ...],                  # image table, indexed below
                            "latents": {"12": {"refs": [[3, 0.81], ...],     # [image index, image score], best first
                                               "sheet": "sheet_0000.png", "row": 0}}}
    atlas/sheet_0000.png   up to 64 latents, one row each: N thumbnails of T×T pixels side by side

A thumbnail is the image squashed to ``T×T`` and darkened where the latent does not fire:
``pixel · (0.2 + 0.8 · f[p,k] / max f[·,k])`` (the maximum over the whole image set), patch by patch. Sheets are
palette PNGs (256 colours per sheet) so that a pixel costs at most one byte. Only latents that fired get a row.

Size bound: a palette PNG never exceeds its raw size (1 byte a pixel, 1 filter byte a row) plus ~1.1 kB of
headers, palette and deflate framing, so ``sheets ≤ L·N·T² + L·T + ⌈L/64⌉·1100`` bytes for ``L`` latents that
fired; the index holds ≤ ``L·(28·N + 60) + 200`` bytes plus the image table. :func:`thumb_side` picks the largest
``T`` in :data:`THUMB_SIDES` whose bound fits the budget (default :data:`ATLAS_MB` MB): a 65,536-latent SAE at
``N = 8`` gets ``T = 16`` (≤ 136.4 MB sheets + ≤ 18.6 MB index + the image table, ≤ 21 MB at 40-character paths
and every image distinct), a 256-latent one ``T = 64`` (≤ 8.4 MB).
"""

from __future__ import annotations

import io
import json
import math
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from vsp_assert.concepts.defaults import ATLAS_MB
from vsp_assert.errors import SAEError
from vsp_assert.files import atomic_write_bytes, atomic_write_text

ATLAS_DIR = "atlas"
INDEX_FILE = "index.json"
SHEET_LATENTS = 64
THUMB_SIDES = (64, 48, 32, 24, 16, 8)
SHEET_OVERHEAD = 1100  # PNG signature, IHDR, PLTE (768), IDAT/zlib framing, IEND
REF_BYTES = 24  # one "[123456, 1.2345]," in the index
LATENT_BYTES = 60  # a latent's index entry without its refs
GROUP_BYTES = 64 * 2**20  # RGB thumbnails held in memory at once while sheets are drawn


def sheet_bound(n_latents: int, top_images: int, side: int) -> int:
    """Upper bound in bytes of the sheets for ``n_latents`` latents × ``top_images`` thumbnails of ``side`` px."""
    n_sheets = math.ceil(n_latents / SHEET_LATENTS)
    return n_latents * top_images * side * side + n_latents * side + n_sheets * SHEET_OVERHEAD


def index_bound(n_latents: int, top_images: int, image_paths: int = 0) -> int:
    """Upper bound in bytes of ``index.json`` (``image_paths``: total characters of the image table's paths)."""
    return n_latents * (top_images * REF_BYTES + LATENT_BYTES) + image_paths + 4 * top_images * n_latents + 200


def thumb_side(n_latents: int, top_images: int, budget_mb: float = ATLAS_MB, image_paths: int = 0) -> int:
    """The largest thumbnail side whose atlas bound fits ``budget_mb`` (the smallest side if none does)."""
    budget = budget_mb * 1e6 - index_bound(n_latents, top_images, image_paths)
    for side in THUMB_SIDES:
        if sheet_bound(n_latents, top_images, side) <= budget:
            return side
    return THUMB_SIDES[-1]


def overlay(image: Image.Image, levels: np.ndarray, side: int) -> np.ndarray:
    """The image as ``[side, side, 3]`` uint8, darkened where ``levels [rows, cols]`` (in [0, 1]) is low."""
    rows, cols = levels.shape
    rgb = np.asarray(image.convert("RGB").resize((side, side), Image.Resampling.BILINEAR), dtype=np.float32)
    lv = Image.fromarray((np.clip(levels, 0, 1) * 255).astype(np.uint8), mode="L")
    lv_up = np.asarray(lv.resize((side, side), Image.Resampling.NEAREST), dtype=np.float32) / 255.0  # [T, T]
    return (rgb * (0.2 + 0.8 * lv_up[..., None])).clip(0, 255).astype(np.uint8)


def _png(img: Image.Image) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format="PNG", optimize=True)
    return buf.getvalue()


def write_atlas(folder: Path, *, top_index: np.ndarray, top_score: np.ndarray, image_paths: Sequence[str],
                render: Callable[[Sequence[int]], Iterable[tuple[int, Image.Image, np.ndarray | None]]] | None,
                max_activation: np.ndarray, budget_mb: float = ATLAS_MB) -> dict[str, Any]:
    """Write ``folder/atlas`` (index always; sheets when ``render`` is given) and return a summary.

    ``top_index``/``top_score``: ``[d_sae, N]`` from the statistics pass (-1 = no image). ``render(images)``
    yields ``(image index, PIL image, f [P, d_sae] reshaped to the grid as [rows, cols, d_sae] or None)`` for
    the requested image indices; it is called once per group of sheets, so memory stays bounded.
    """
    out = folder / ATLAS_DIR
    d_sae, n_top = top_index.shape
    fired = [k for k in range(d_sae) if top_index[k, 0] >= 0]
    used = sorted({int(i) for i in top_index[fired].flatten() if i >= 0})
    remap = {i: j for j, i in enumerate(used)}
    table = [str(image_paths[i]) for i in used]
    side = thumb_side(len(fired), n_top, budget_mb, sum(len(p) + 4 for p in table)) if render else None
    latents: dict[str, dict[str, Any]] = {}
    for pos, k in enumerate(fired):
        refs = [[remap[int(i)], round(float(s), 5)] for i, s in zip(top_index[k], top_score[k], strict=True) if i >= 0]
        entry: dict[str, Any] = {"refs": refs}
        if side is not None:
            entry["sheet"] = f"sheet_{pos // SHEET_LATENTS:04d}.png"
            entry["row"] = pos % SHEET_LATENTS
        latents[str(k)] = entry
    written: set[str] = set()
    sheet_bytes = 0
    if render is not None and side is not None and fired:
        per_group = max(1, GROUP_BYTES // (SHEET_LATENTS * n_top * side * side * 3)) * SHEET_LATENTS
        for start in range(0, len(fired), per_group):
            group = fired[start : start + per_group]
            sheet_bytes += _draw_group(out, start, group, top_index, side, render, max_activation, written)
    for stale in out.glob("sheet_*.png") if out.is_dir() else []:
        if stale.name not in written:
            stale.unlink()
    index = {"version": 1, "top_images": n_top, "thumb": side, "sheet_latents": SHEET_LATENTS,
             "images": table, "latents": latents}
    text = json.dumps(index, separators=(",", ":")) + "\n"
    atomic_write_text(out / INDEX_FILE, text)
    return {"latents": len(fired), "images": len(table), "thumb": side, "sheets": len(written),
            "bytes": sheet_bytes + len(text.encode()),
            "bound": (sheet_bound(len(fired), n_top, side) if side else 0) + len(text.encode())}


def _draw_group(out: Path, start: int, group: Sequence[int], top_index: np.ndarray, side: int,
                render: Callable[[Sequence[int]], Iterable[tuple[int, Image.Image, np.ndarray | None]]],
                max_activation: np.ndarray, written: set[str]) -> int:
    n_top = top_index.shape[1]
    n_sheets = math.ceil(len(group) / SHEET_LATENTS)
    canvas = np.zeros((n_sheets, SHEET_LATENTS * side, n_top * side, 3), dtype=np.uint8)
    wanted: dict[int, list[tuple[int, int, int]]] = {}  # image → (latent, position in group, slot)
    for pos, k in enumerate(group):
        for slot, i in enumerate(top_index[k]):
            if i >= 0:
                wanted.setdefault(int(i), []).append((k, pos, slot))
    for i, image, grid_f in render(sorted(wanted)):
        for k, pos, slot in wanted.get(i, []):
            if grid_f is None:  # no single patch grid (several views): the image without an overlay
                levels = np.ones((1, 1))
            else:
                scale = float(max_activation[k]) or 1.0
                levels = grid_f[:, :, k] / scale
            sheet, row = divmod(pos, SHEET_LATENTS)
            canvas[sheet, row * side : (row + 1) * side, slot * side : (slot + 1) * side] = overlay(image, levels,
                                                                                                    side)
    total = 0
    for s in range(n_sheets):
        rows = min(SHEET_LATENTS, len(group) - s * SHEET_LATENTS)
        img = Image.fromarray(canvas[s, : rows * side]).quantize(colors=256, method=Image.Quantize.MEDIANCUT)
        name = f"sheet_{(start + s * SHEET_LATENTS) // SHEET_LATENTS:04d}.png"
        data = _png(img)
        atomic_write_bytes(out / name, data)
        written.add(name)
        total += len(data)
    return total


def read_index(path: Path) -> dict[str, Any]:
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise SAEError(f"cannot read the atlas index ({exc})", file=str(path),
                       fix="rebuild it with 'vsp-assert concepts build'") from None
    if not isinstance(raw, dict) or not isinstance(raw.get("latents"), dict):
        raise SAEError("not an atlas index", file=str(path), fix="rebuild it with 'vsp-assert concepts build'")
    return raw


def thumbnails(index_path: Path, index: dict[str, Any], latent: int) -> list[Image.Image]:
    """The latent's reference thumbnails (RGB, best first); ``[]`` when the atlas has none for it."""
    entry = index.get("latents", {}).get(str(latent))
    side = index.get("thumb")
    if not entry or not side or "sheet" not in entry:
        return []
    sheet_path = index_path.parent / str(entry["sheet"])
    try:
        with Image.open(sheet_path) as sheet:
            rgb = sheet.convert("RGB")
    except OSError as exc:
        raise SAEError(f"cannot read the atlas sheet ({exc})", file=str(sheet_path),
                       fix="rebuild the atlas with 'vsp-assert concepts build'") from None
    row = int(entry["row"])
    return [rgb.crop((slot * side, row * side, (slot + 1) * side, (row + 1) * side))
            for slot in range(len(entry.get("refs", [])))]
