"""``vsp-assert shapes export``: shapes scenes as an image source with known truth.

Writes ``N`` scenes drawn uniformly from the world (held-out seeds, every shape × colour × background) as PNG
images, one mask per concept present, and a JSONL manifest in the format of :mod:`vsp_assert.concepts.sources`::

    {"image": "images/00000.png", "labels": ["blue", "circle", "stripes"],
     "masks": {"blue": "masks/00000_blue.png", ...}, "scene": {...Scene.to_dict()...}}

Masks are pixel-level and come from the scene's own coverage masks (the ones its pixels were drawn with): an
object's colour and shape cover its visible pixels, the background texture covers every pixel that no object
covers. ``labels`` lists every concept with a non-empty mask. So ``sae train`` and ``concepts build`` can be run
on data whose truth is known, and the whole path checked against it. Every file is written atomically and the
manifest last: an interrupted export leaves no manifest that names a missing file.
"""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
from PIL import Image

from vsp_assert.files import atomic_write_bytes, atomic_write_text
from vsp_assert.shapes.world import IMAGE_SIZE, Scene, random_scene

EXPORT_STREAM = 0xE4B0
MANIFEST = "manifest.jsonl"


def export_scenes(seed: int, n: int) -> list[Scene]:
    """The ``n`` scenes ``shapes export --seed seed`` writes (uniform over the world, held-out seeds)."""
    rng = np.random.default_rng([EXPORT_STREAM, seed])
    return [random_scene(rng, heldout=True) for _ in range(n)]


def concept_masks(scene: Scene) -> dict[str, np.ndarray]:
    """Pixel masks ``{concept: [IMAGE_SIZE, IMAGE_SIZE] bool}`` of every concept present in ``scene``."""
    visible = scene.visible_masks()  # [n_objects, H, W]
    masks: dict[str, np.ndarray] = {}
    for spec, m in zip(scene.shapes, visible, strict=True):
        for concept in (spec.color, spec.shape):
            masks[concept] = masks.get(concept, np.zeros_like(m)) | m
    background = ~visible.any(axis=0) if len(scene.shapes) else np.ones((IMAGE_SIZE, IMAGE_SIZE), dtype=bool)
    masks[scene.background] = masks.get(scene.background, np.zeros_like(background)) | background
    return {c: m for c, m in masks.items() if m.any()}


def _png(img: Image.Image) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return buf.getvalue()


def export(out: str | Path, n: int, *, seed: int = 0) -> Path:
    """Write ``n`` scenes, their masks and ``manifest.jsonl`` under ``out``; returns the manifest's path."""
    from vsp_assert.errors import InputError

    if n < 1:
        raise InputError("export at least one scene", field="--n", received=n, allowed="1 or more")
    root = Path(out)
    lines = []
    for i, scene in enumerate(export_scenes(seed, n)):
        image = f"images/{i:05d}.png"
        atomic_write_bytes(root / image, _png(scene.render()))
        masks = {}
        for concept, m in concept_masks(scene).items():
            rel = f"masks/{i:05d}_{concept}.png"
            atomic_write_bytes(root / rel, _png(Image.fromarray(m.astype(np.uint8) * 255, mode="L")))
            masks[concept] = rel
        row = {"image": image, "labels": sorted(masks), "masks": masks, "scene": scene.to_dict()}
        lines.append(json.dumps(row, sort_keys=True))
    return atomic_write_text(root / MANIFEST, "\n".join(lines) + "\n")
