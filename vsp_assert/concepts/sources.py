"""The one reader of image sources: a folder, an ImageFolder tree, or a JSONL / CSV manifest.

:func:`open_source` turns a path into an :class:`ImageSource`, an iterable of :class:`ImageRecord` (image path,
image-level labels, per-label masks, any other manifest fields). ``sae train``, ``concepts build`` and dataset
suites all read images through it, so every one of them accepts the same inputs and reports bad ones the same way.

Kinds (``ImageSource.kind``):

- ``folder`` — every image under a folder (without a ``manifest.jsonl`` / ``manifest.csv`` at its top, which
  makes the folder that manifest), recursively, in sorted relative-path order; no labels;
- ``imagefolder`` — a folder whose images all live exactly one level under a class folder (at least two class
  folders, no image at the top): the class folder's name is the image's label;
- ``jsonl`` — one JSON object a line: ``image`` (path relative to the manifest's folder, or absolute), optional
  ``labels`` (a list of names), optional ``masks`` (``{label: mask path}``), every other key kept in ``fields``;
- ``csv`` — a header row with an ``image`` column, optional ``labels`` (``;``-separated), ``mask:<label>``
  columns (an empty cell: no mask), every other column kept in ``fields`` (as text).

A mask is a greyscale or RGB image of the same size as its image; a pixel belongs to the concept where it is
non-zero (``load_mask`` gives ``[H, W]`` bool). A label that has a mask is a label of the image.

Bad input: an image that cannot be read is skipped (``ImageSource.skipped`` lists ``(path, reason)``; one warning
names the count and the first few) or, with ``strict=True``, is an :class:`~vsp_assert.errors.InputError`. A
manifest without ``image``, a malformed line, a missing mask file, a mask whose size differs from its image and a
source without any readable image are always errors naming the file, the line and the field. Opening a source
reads image headers only (and verifies the file), never the pixels.
"""

from __future__ import annotations

import csv
import json
import warnings
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any

import numpy as np
from PIL import Image

from vsp_assert.errors import InputError

IMAGE_SUFFIXES = frozenset({".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff"})
#: A folder holding one of these at its top is read as that manifest (first found wins).
MANIFEST_NAMES = ("manifest.jsonl", "manifest.csv")
MANIFEST_SUFFIXES = {".jsonl": "jsonl", ".csv": "csv"}
#: How many skipped paths the warning names.
SHOW_SKIPPED = 5


@dataclass(frozen=True)
class ImageRecord:
    """One image of a source: its path, its image-level labels, masks per label and any other fields."""

    path: Path
    labels: tuple[str, ...] = ()
    masks: Mapping[str, Path] = field(default_factory=lambda: MappingProxyType({}))
    fields: Mapping[str, Any] = field(default_factory=lambda: MappingProxyType({}))

    def load(self) -> Image.Image:
        """The image as an RGB ``PIL.Image`` (an :class:`InputError` naming the file if it cannot be read)."""
        try:
            with Image.open(self.path) as img:
                return img.convert("RGB")
        except (OSError, ValueError, Image.DecompressionBombError) as exc:
            raise InputError(f"cannot read the image ({exc})", file=str(self.path), field="image") from None

    def size(self) -> tuple[int, int]:
        """``(width, height)`` from the image header."""
        with Image.open(self.path) as img:
            return img.size

    def load_mask(self, label: str) -> np.ndarray:
        """The mask of ``label``: ``[H, W]`` bool, true where the concept is (an error if its size differs)."""
        if label not in self.masks:
            raise InputError("this image has no mask for the label", file=str(self.path), field="masks",
                             received=label, allowed=", ".join(sorted(self.masks)) or "(no masks)")
        mask_path = self.masks[label]
        try:
            with Image.open(mask_path) as m:
                arr = np.asarray(m.convert("L")) > 0  # [H, W]
        except (OSError, ValueError) as exc:
            raise InputError(f"cannot read the mask ({exc})", file=str(mask_path), field=f"masks.{label}") from None
        width, height = self.size()
        if arr.shape != (height, width):
            raise InputError("the mask's size differs from its image's", file=str(mask_path),
                             field=f"masks.{label}", received=f"{arr.shape[1]}x{arr.shape[0]}",
                             allowed=f"{width}x{height} (the size of {self.path.name})")
        return arr


class ImageSource:
    """The records of one source, in a fixed order. ``len(source)`` counts the readable images."""

    def __init__(self, kind: str, root: Path, records: Sequence[ImageRecord],
                 skipped: Sequence[tuple[str, str]] = ()) -> None:
        self.kind = kind
        self.root = root
        self._records = list(records)
        self.skipped: list[tuple[str, str]] = list(skipped)
        self.label_names: list[str] = sorted({lab for r in self._records for lab in r.labels})

    def __iter__(self) -> Iterator[ImageRecord]:
        return iter(self._records)

    def __len__(self) -> int:
        return len(self._records)

    def __getitem__(self, index: int) -> ImageRecord:
        return self._records[index]

    def __repr__(self) -> str:
        return (f"ImageSource(kind={self.kind!r}, root={str(self.root)!r}, images={len(self)}, "
                f"labels={len(self.label_names)}, skipped={len(self.skipped)})")


def folder_manifest(folder: Path) -> Path | None:
    """The manifest a folder carries at its top (``manifest.jsonl``, else ``manifest.csv``), or None."""
    for name in MANIFEST_NAMES:
        if (folder / name).is_file():
            return folder / name
    return None


def open_source(spec: str | Path, *, strict: bool = False) -> ImageSource:
    """Open a folder, an ImageFolder tree or a ``.jsonl`` / ``.csv`` manifest as an :class:`ImageSource`.

    A folder holding ``manifest.jsonl`` (or ``manifest.csv``) at its top is read as that manifest, as
    ``vsp-assert shapes export`` writes it: its masks are then masks, not images."""
    path = Path(spec).expanduser()
    if not path.exists():
        raise InputError("the image source does not exist", file=str(path), field="images",
                         allowed="a folder of images, an ImageFolder tree, a .jsonl or .csv manifest")
    if path.is_dir() and (manifest := folder_manifest(path)) is not None:
        path = manifest
    if path.is_dir():
        kind, rows = _read_folder(path)
        root = path
    elif path.suffix.lower() in MANIFEST_SUFFIXES:
        kind = MANIFEST_SUFFIXES[path.suffix.lower()]
        rows = _read_jsonl(path) if kind == "jsonl" else _read_csv(path)
        root = path.parent
    else:
        raise InputError("unsupported image source", file=str(path), field="images", received=path.suffix or path.name,
                         allowed="a folder, or a manifest ending in .jsonl or .csv")
    records: list[ImageRecord] = []
    skipped: list[tuple[str, str]] = []
    for where, record in rows:
        reason = _unreadable(record.path)
        if reason is not None:
            if strict:
                raise InputError(f"cannot read the image ({reason})", file=where, field="image",
                                 received=str(record.path), fix="fix or remove it, or drop --strict to skip it")
            skipped.append((str(record.path), reason))
            continue
        _check_masks(record, where)
        records.append(record)
    if not records:
        raise InputError("the image source holds no readable image", file=str(path), field="images",
                         received=f"{len(skipped)} unreadable" if skipped else "no image files",
                         allowed=", ".join(sorted(IMAGE_SUFFIXES)))
    if skipped:
        first = ", ".join(p for p, _ in skipped[:SHOW_SKIPPED])
        more = f" and {len(skipped) - SHOW_SKIPPED} more" if len(skipped) > SHOW_SKIPPED else ""
        warnings.warn(f"{path}: skipped {len(skipped)} unreadable image(s): {first}{more}", stacklevel=2)
    return ImageSource(kind, root, records, skipped)


# ---------------------------------------------------------------------- checks
def _unreadable(path: Path) -> str | None:
    """Why ``path`` is not a readable image (header + integrity check, no decoding), or ``None``."""
    if not path.is_file():
        return "no such file"
    try:
        with Image.open(path) as img:
            img.verify()
    except Exception as exc:  # PIL raises many types (SyntaxError for bad PNG chunks, struct.error, …)
        return f"{type(exc).__name__}: {exc}"
    return None


def _check_masks(record: ImageRecord, where: str) -> None:
    if not record.masks:
        return
    size = record.size()
    for label, mask_path in record.masks.items():
        if not mask_path.is_file():
            raise InputError("the mask file does not exist", file=where, field=f"masks.{label}",
                             received=str(mask_path))
        try:
            with Image.open(mask_path) as m:
                mask_size = m.size
        except Exception as exc:
            raise InputError(f"cannot read the mask ({exc})", file=where, field=f"masks.{label}",
                             received=str(mask_path)) from None
        if mask_size != size:
            raise InputError("the mask's size differs from its image's", file=where, field=f"masks.{label}",
                             received=f"{mask_size[0]}x{mask_size[1]} ({mask_path.name})",
                             allowed=f"{size[0]}x{size[1]} (the size of {record.path.name})")


# ---------------------------------------------------------------------- folders
def _read_folder(folder: Path) -> tuple[str, list[tuple[str, ImageRecord]]]:
    files = sorted(
        (p for p in folder.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file()
         and not any(part.startswith(".") for part in p.relative_to(folder).parts)),
        key=lambda p: p.relative_to(folder).as_posix(),
    )
    depths = {len(p.relative_to(folder).parts) for p in files}
    classes = {p.relative_to(folder).parts[0] for p in files}
    if depths == {2} and len(classes) >= 2:
        return "imagefolder", [(str(p), ImageRecord(p, labels=(p.parent.name,))) for p in files]
    return "folder", [(str(p), ImageRecord(p)) for p in files]


# ---------------------------------------------------------------------- manifests
def _record(manifest: Path, number: int, row: Mapping[str, Any], labels: list[str], masks: dict[str, str],
            extra: dict[str, Any]) -> ImageRecord:
    """The record of manifest row ``number`` (its line), its paths resolved against the manifest's folder."""
    image = row.get("image")
    if not isinstance(image, str) or not image.strip():
        raise InputError("every manifest row needs an image path", file=str(manifest), line=number, field="image",
                         received=image, allowed="a path relative to the manifest's folder")
    base = manifest.parent
    mask_paths = {label: base / p for label, p in masks.items()}
    all_labels = tuple(dict.fromkeys([*labels, *mask_paths]))
    return ImageRecord(base / image, all_labels, MappingProxyType(mask_paths), MappingProxyType(extra))


def _read_jsonl(manifest: Path) -> list[tuple[str, ImageRecord]]:
    rows: list[tuple[str, ImageRecord]] = []
    try:
        lines = manifest.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise InputError(f"cannot read the manifest ({exc})", file=str(manifest)) from None
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        where = f"{manifest}:{number}"
        try:
            row = json.loads(line)
        except json.JSONDecodeError as exc:
            raise InputError(f"not a JSON object ({exc.msg})", file=str(manifest), line=number) from None
        if not isinstance(row, dict):
            raise InputError("each line must be a JSON object", file=str(manifest), line=number,
                             received=type(row).__name__, allowed='{"image": "...", "labels": [...]}')
        labels = row.get("labels", [])
        if isinstance(labels, str) or not isinstance(labels, list) or not all(isinstance(x, str) for x in labels):
            raise InputError("labels must be a list of names", file=str(manifest), line=number, field="labels",
                             received=labels, allowed='["red", "circle"]')
        masks = row.get("masks", {})
        if not isinstance(masks, dict) or not all(isinstance(k, str) and isinstance(v, str)
                                                  for k, v in masks.items()):
            raise InputError("masks must map a label to a mask path", file=str(manifest), line=number,
                             field="masks", received=masks, allowed='{"red": "masks/0_red.png"}')
        extra = {k: v for k, v in row.items() if k not in ("image", "labels", "masks")}
        rows.append((where, _record(manifest, number, row, labels, masks, extra)))
    return rows


def _read_csv(manifest: Path) -> list[tuple[str, ImageRecord]]:
    try:
        with manifest.open(newline="", encoding="utf-8") as handle:
            reader = csv.DictReader(handle)
            header = list(reader.fieldnames or [])
            table = [(reader.line_num, row) for row in reader]
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise InputError(f"cannot read the manifest ({exc})", file=str(manifest)) from None
    if "image" not in header:
        raise InputError("the manifest has no 'image' column", file=str(manifest), line=1, field="image",
                         received=header, allowed="a header row with an 'image' column (labels, mask:<label> optional)")
    mask_cols = {c: c.split(":", 1)[1].strip() for c in header if c.startswith("mask:")}
    if any(not label for label in mask_cols.values()):
        raise InputError("a mask column needs a label name", file=str(manifest), line=1, field="mask:",
                         allowed="mask:<label>, e.g. mask:red")
    rows: list[tuple[str, ImageRecord]] = []
    for number, row in table:
        if None in row:  # more cells than header columns
            raise InputError("the row has more cells than the header", file=str(manifest), line=number,
                             received=row[None])  # type: ignore[index]
        where = f"{manifest}:{number}"
        labels = [x.strip() for x in (row.get("labels") or "").split(";") if x.strip()]
        cells = {label: (row.get(col) or "").strip() for col, label in mask_cols.items()}
        masks = {label: cell for label, cell in cells.items() if cell}
        extra = {k: v for k, v in row.items() if k not in ("image", "labels") and k not in mask_cols}
        rows.append((where, _record(manifest, number, row, labels, masks, extra)))
    return rows
