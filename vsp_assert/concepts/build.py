"""``vsp-assert concepts build``: label an SAE's latents from a labelled image set and write its label file.

This module owns the run: it opens the image source (:mod:`~vsp_assert.concepts.sources`), streams the
activations at the SAE's hooked layer (:mod:`~vsp_assert.concepts.activations`), encodes them one image at a time,
maps each image's masks onto its patch grid, feeds :class:`~vsp_assert.concepts.stats.StatsAccumulator`, names
the latents and calibrates the thresholds (:func:`~vsp_assert.concepts.labelling.make_labels`), writes the atlas
(:mod:`~vsp_assert.concepts.atlas`; a second pass over only the top images) and finally the label file the SAE's
sidecar names (default ``concepts.json``), atomically. Nothing holds more than one batch of activations.

Mask → patch: the patch grid is taken to span the whole image (the processor resizes; a centre crop makes this
approximate); a patch carries a concept when the concept's mask covers at least ``mask_coverage`` of it
(default :data:`MASK_COVERAGE`, a quarter), the mean of the mask over the patch's pixel box.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from vsp_assert.concepts.atlas import ATLAS_DIR, INDEX_FILE, write_atlas
from vsp_assert.concepts.defaults import ATLAS_MB, MASK_COVERAGE
from vsp_assert.concepts.labelling import make_labels
from vsp_assert.concepts.stats import DENSE_RATE, MIN_PRECISION, StatsAccumulator
from vsp_assert.errors import InputError, SAEError

LABEL_FILE = "concepts.json"


@dataclass
class BuildResult:
    """What a build wrote and measured (printed by the CLI)."""

    label_file: Path
    n_images: int
    n_patches: int
    concepts: dict[str, list[int]]
    dead: int
    dense: int
    atlas: dict[str, Any] = field(default_factory=dict)
    seconds: float = 0.0


def mask_fraction(mask: np.ndarray, grid: tuple[int, int]) -> np.ndarray:
    """The fraction of each patch a pixel mask ``[H, W]`` bool covers: ``[rows·cols]`` float32, row-major.

    Each patch's coverage is the mask's mean over the patch's pixel box (a box filter, exact when the grid
    divides the image)."""
    rows, cols = grid
    img = Image.fromarray(mask.astype(np.float32), mode="F")
    return np.asarray(img.resize((cols, rows), Image.Resampling.BOX), dtype=np.float32).reshape(-1)


def mask_patches(mask: np.ndarray, grid: tuple[int, int], coverage: float = MASK_COVERAGE) -> np.ndarray:
    """Which patches a pixel mask ``[H, W]`` bool covers by at least ``coverage``: ``[rows·cols]`` bool."""
    return mask_fraction(mask, grid) >= coverage - 1e-6


def _sae_folder(sae: str | Path) -> Path:
    if str(sae) == "shapes":
        raise SAEError("'shapes' names the SAE shipped inside the package; building would overwrite its labels",
                       field="--sae", received=str(sae),
                       fix="copy it first (cp -r $(python -c 'import vsp_assert.shapes as s; print(s.SAE_DIR)') "
                           "my-sae) and pass --sae my-sae")
    folder = Path(sae)
    if str(sae).startswith("sae-lens:") or not folder.is_dir():
        raise SAEError("concepts build writes into the SAE folder; it must be a folder", file=str(sae),
                       field="--sae", fix="pass an SAE folder (cfg.json + sae_weights.safetensors)")
    return folder


def _label_file(folder: Path) -> tuple[Path, bool]:
    """The label file the sidecar names (default ``concepts.json``) and whether the sidecar must name it."""
    from vsp_assert.engine.sae import Sidecar

    sidecar = Sidecar.read(folder)
    return folder / (sidecar.labels or LABEL_FILE), not sidecar.labels


def _name_in_sidecar(folder: Path, name: str) -> None:
    from vsp_assert.engine.sae import SIDECAR_FILE
    from vsp_assert.files import atomic_write_text

    path = folder / SIDECAR_FILE
    raw = json.loads(path.read_text(encoding="utf-8")) if path.exists() else {}
    raw["labels"] = name
    atomic_write_text(path, json.dumps(raw, indent=2) + "\n")


def _encode(sae: Any, acts: torch.Tensor, where: str) -> torch.Tensor:
    if acts.shape[-1] != sae.d_in:
        raise SAEError(f"the model's activations have width {acts.shape[-1]} but the SAE expects d_in={sae.d_in}",
                       file=where, field="d_in", received=int(acts.shape[-1]), allowed=str(sae.d_in),
                       fix="use the SAE trained on this model's layer, or set its hook_layer in vsp_assert.json")
    with torch.no_grad():
        return sae.encode(acts.to(sae.W_enc.device)).float().cpu()  # [P, d_sae]


def build_concepts(
    model: str | Path,
    sae: str | Path,
    images: str | Path,
    *,
    min_precision: float = MIN_PRECISION,
    top_images: int = 8,
    batch_size: int = 16,
    atlas: bool = True,
    mask_coverage: float = MASK_COVERAGE,
    dense_rate: float = DENSE_RATE,
    atlas_mb: float = ATLAS_MB,
    device: str | None = None,
    log: Callable[[str], None] = print,
) -> BuildResult:
    """Label the latents of the SAE folder ``sae`` on ``images`` seen by ``model``; write the label file."""
    from vsp_assert.concepts.activations import stream_activations
    from vsp_assert.concepts.sources import ImageRecord, open_source
    from vsp_assert.engine.models import load_model
    from vsp_assert.engine.sae import load_sae

    _check_options(min_precision, top_images, batch_size, mask_coverage, dense_rate, atlas_mb)
    t0 = time.perf_counter()
    folder = _sae_folder(sae)
    label_path, name_it = _label_file(folder)
    source = open_source(images)
    loaded = load_model(model, device=device)
    the_sae = load_sae(folder, device=device, labels=False)
    where = str(folder / "cfg.json")
    concepts = list(source.label_names)
    patch_concepts = sorted({c for r in source for c in r.masks})
    acc = StatsAccumulator(the_sae.d_sae, concepts, patch_concepts, top_images=top_images)
    col = {c: i for i, c in enumerate(concepts)}

    def patch_labels(record: ImageRecord, grid: tuple[int, int] | None,
                     n: int) -> tuple[torch.Tensor | None, torch.Tensor | None]:
        """``(carries [P, C], touches [P, C])`` bool from the record's masks, or Nones without masks."""
        if not record.masks or grid is None or grid[0] * grid[1] != n:
            return None, None
        frac = np.zeros((n, len(concepts)), dtype=np.float32)
        for c in record.masks:
            frac[:, col[c]] = mask_fraction(record.load_mask(c), grid)
        carries = frac >= mask_coverage - 1e-6
        return torch.from_numpy(carries), torch.from_numpy((frac > 0) & ~carries)

    layer = the_sae.hook_layer
    for batch in stream_activations(loaded, source, layer=layer, batch_size=batch_size):
        fs = [_encode(the_sae, acts, where) for acts in batch.acts]
        lab = [patch_labels(r, g, f.shape[0]) for r, f, g in zip(batch.records, fs, batch.grids, strict=True)]
        acc.add_batch(fs, [c for c, _ in lab], [r.labels for r in batch.records], edges=[e for _, e in lab])
        if acc.n_images % (batch_size * 50) < batch_size:
            log(f"  {acc.n_images}/{len(source)} images, {time.perf_counter() - t0:.0f}s")
    stats = acc.finish(dense_rate)
    labels = make_labels(stats, min_precision=min_precision, atlas=f"{ATLAS_DIR}/{INDEX_FILE}",
                         build={"model": str(model), "images": str(images), "layer": layer,
                                "top_images": top_images, "mask_coverage": mask_coverage})

    def render(indices: Sequence[int]) -> Iterator[tuple[int, Image.Image, np.ndarray | None]]:
        recs = [source[i] for i in indices]
        done = 0
        for batch in stream_activations(loaded, recs, layer=layer, batch_size=batch_size):
            for record, acts, grid in zip(batch.records, batch.acts, batch.grids, strict=True):
                f = _encode(the_sae, acts, where)
                grid_f = f.numpy().reshape(grid[0], grid[1], -1) if grid is not None else None
                yield indices[done], record.load(), grid_f
                done += 1

    summary = write_atlas(folder, top_index=stats.top_index, top_score=stats.top_score,
                          image_paths=[str(r.path) for r in source], render=render if atlas else None,
                          max_activation=stats.max_activation, budget_mb=atlas_mb)
    labels.save(label_path)
    if name_it:
        _name_in_sidecar(folder, label_path.name)
    return BuildResult(label_path, stats.n_images, stats.n_patches, labels.concepts, len(labels.dead),
                       len(labels.dense), summary, time.perf_counter() - t0)


def _check_options(min_precision: float, top_images: int, batch_size: int, mask_coverage: float,
                   dense_rate: float, atlas_mb: float) -> None:
    checks: Iterable[tuple[str, Any, bool, str]] = (
        ("--min-precision", min_precision, 0.0 < min_precision <= 1.0, "a number in (0, 1]"),
        ("--top-images", top_images, isinstance(top_images, int) and top_images >= 1, "an integer ≥ 1"),
        ("--batch-size", batch_size, isinstance(batch_size, int) and batch_size >= 1, "an integer ≥ 1"),
        ("--mask-coverage", mask_coverage, 0.0 < mask_coverage <= 1.0, "a number in (0, 1]"),
        ("--dense-rate", dense_rate, 0.0 < dense_rate <= 1.0, "a number in (0, 1]"),
        ("--atlas-mb", atlas_mb, atlas_mb > 0, "a positive number of megabytes"),
    )
    for name, value, ok, allowed in checks:
        if not ok:
            raise InputError("invalid option", field=name, received=value, allowed=allowed)
