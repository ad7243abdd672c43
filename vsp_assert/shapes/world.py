"""The shapes world: procedurally drawn scenes of coloured shapes with known ground truth.

This module owns the *pixels* and the *truth about the pixels*: a :class:`Scene` says what is where, renders
itself to a 64×64 RGB image and reports the ground-truth concept labels of every encoder patch (8×8 pixels,
an 8×8 grid, row-major). Every drawn pixel comes from a per-object coverage mask, and the same masks give the
patch labels, so labels and drawing can never disagree. Everything is a pure function of the scene spec (the
scene's ``seed`` only fixes the texture phase and a small colour jitter), so the same spec gives byte-identical
images on every machine. Random scenes come from :func:`random_scene`, driven by a caller-owned
``numpy.random.Generator`` so that every stream in the project is seeded explicitly.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from PIL import Image, ImageDraw

from vsp_assert.errors import VspError

SHAPES: tuple[str, ...] = ("circle", "square", "triangle")
COLORS: tuple[str, ...] = ("red", "green", "blue", "yellow")
BACKGROUNDS: tuple[str, ...] = ("plain", "stripes", "dots", "grid")
#: Every concept name a patch can carry.
CONCEPTS: tuple[str, ...] = COLORS + SHAPES + BACKGROUNDS

IMAGE_SIZE = 64  # pixels per side
PATCH_SIZE = 8  # pixels per patch side (the CLIP vision tower's patch size)
GRID = IMAGE_SIZE // PATCH_SIZE  # patches per side: 8 → 64 patches

MIN_SIZE = 20  # smallest object bounding box side, pixels (smaller squares and circles blur at 8-px patches)
MAX_SIZE = 28  # largest object bounding box side, pixels

#: A concept is put on a patch when it covers at least this fraction of the patch's pixels.
LABEL_COVERAGE = 0.25

RGB: dict[str, tuple[int, int, int]] = {
    "red": (215, 40, 40),
    "green": (40, 165, 60),
    "blue": (45, 85, 215),
    "yellow": (230, 200, 35),
}
BG_RGB = (232, 232, 228)  # paper
INK_RGB = (135, 135, 140)  # texture ink: a grey, far from every object colour
JITTER = 12  # max per-channel colour jitter of an object, seeded by the scene

#: Scene seeds below this bound belong to training; held-out generators draw seeds at or above it.
HELDOUT_SEED_START = 2**30


@dataclass(frozen=True)
class ShapeSpec:
    """One object: its shape, its colour, the centre ``(x, y)`` in pixels and its bounding-box side ``size``."""

    shape: str
    color: str
    x: int
    y: int
    size: int

    def __post_init__(self) -> None:
        if self.shape not in SHAPES:
            raise VspError(
                f"unknown shape {self.shape!r}", field="shape", received=self.shape, allowed=", ".join(SHAPES)
            )
        if self.color not in COLORS:
            raise VspError(
                f"unknown colour {self.color!r}", field="color", received=self.color, allowed=", ".join(COLORS)
            )
        if not 4 <= self.size <= IMAGE_SIZE:
            raise VspError(
                "object size out of range", field="size", received=self.size, allowed=f"4..{IMAGE_SIZE} pixels"
            )
        for name, v in (("x", self.x), ("y", self.y)):
            if not 0 <= v < IMAGE_SIZE:
                raise VspError(
                    "object centre outside the image", field=name, received=v, allowed=f"0..{IMAGE_SIZE - 1}"
                )

    @property
    def box(self) -> tuple[int, int, int, int]:
        """Inclusive bounding box ``(x0, y0, x1, y1)`` in pixels (may reach past the image edge)."""
        h = self.size // 2
        return (self.x - h, self.y - h, self.x - h + self.size - 1, self.y - h + self.size - 1)

    def mask(self) -> np.ndarray:
        """Boolean coverage mask ``(IMAGE_SIZE, IMAGE_SIZE)`` of this object alone (no occlusion)."""
        img = Image.new("L", (IMAGE_SIZE, IMAGE_SIZE), 0)
        draw = ImageDraw.Draw(img)
        x0, y0, x1, y1 = self.box
        if self.shape == "circle":
            draw.ellipse((x0, y0, x1, y1), fill=255)
        elif self.shape == "square":
            draw.rectangle((x0, y0, x1, y1), fill=255)
        else:  # triangle, apex up
            draw.polygon([((x0 + x1) / 2, y0), (x1, y1), (x0, y1)], fill=255)
        return np.asarray(img) > 0

    def to_dict(self) -> dict[str, Any]:
        return {"shape": self.shape, "color": self.color, "x": self.x, "y": self.y, "size": self.size}


@dataclass(frozen=True)
class Scene:
    """What is where: objects (drawn in order, later on top), a background texture and a seed.

    The seed fixes only the texture's phase and the objects' small colour jitter; the spec is the truth.
    Serialise with :meth:`to_dict` / :meth:`from_dict` (the form YAML cases write inline).
    """

    shapes: tuple[ShapeSpec, ...]
    background: str = "plain"
    seed: int = 0
    _cache: dict[str, Any] = field(default_factory=dict, init=False, repr=False, compare=False, hash=False)

    def __post_init__(self) -> None:
        if self.background not in BACKGROUNDS:
            raise VspError(
                f"unknown background {self.background!r}",
                field="background",
                received=self.background,
                allowed=", ".join(BACKGROUNDS),
            )
        if not isinstance(self.shapes, tuple):
            object.__setattr__(self, "shapes", tuple(self.shapes))
        if not 0 <= int(self.seed) < 2**31:
            raise VspError("scene seed out of range", field="seed", received=self.seed, allowed="0..2**31-1")

    # -- serialisation ------------------------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        return {"shapes": [s.to_dict() for s in self.shapes], "background": self.background, "seed": self.seed}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Scene:
        """Build a scene from its dict form; unknown or missing fields raise a :class:`VspError`."""
        if not isinstance(d, Mapping):
            raise VspError("a scene must be a mapping", received=type(d).__name__, fix="write {shapes: [...], ...}")
        unknown = set(d) - {"shapes", "background", "seed"}
        if unknown:
            raise VspError("unknown scene field", field=sorted(unknown)[0], allowed="shapes, background, seed")
        raw = d.get("shapes", [])
        if not isinstance(raw, Sequence) or isinstance(raw, str):
            raise VspError("scene 'shapes' must be a list", field="shapes", received=raw)
        specs = []
        for i, s in enumerate(raw):
            if not isinstance(s, Mapping):
                raise VspError("each shape must be a mapping", field=f"shapes[{i}]", received=s)
            missing = {"shape", "color", "x", "y", "size"} - set(s)
            if missing:
                raise VspError(
                    "shape spec is missing a field",
                    field=f"shapes[{i}].{sorted(missing)[0]}",
                    fix="give shape, color, x, y and size",
                )
            specs.append(ShapeSpec(str(s["shape"]), str(s["color"]), int(s["x"]), int(s["y"]), int(s["size"])))
        return cls(tuple(specs), str(d.get("background", "plain")), int(d.get("seed", 0)))

    # -- truth ----------------------------------------------------------------------------------------------------
    def visible_masks(self) -> np.ndarray:
        """Per-object visible masks ``(n_objects, IMAGE_SIZE, IMAGE_SIZE)`` bool, occlusion applied."""
        if "masks" not in self._cache:
            masks = np.zeros((len(self.shapes), IMAGE_SIZE, IMAGE_SIZE), dtype=bool)
            covered = np.zeros((IMAGE_SIZE, IMAGE_SIZE), dtype=bool)
            for i in range(len(self.shapes) - 1, -1, -1):  # topmost first
                m = self.shapes[i].mask() & ~covered
                masks[i] = m
                covered |= m
            self._cache["masks"] = masks
        return self._cache["masks"]

    def patch_coverage(self, grid: int = GRID) -> np.ndarray:
        """Visible fraction of each patch covered by each object: ``(n_objects, grid * grid)`` float, row-major."""
        if IMAGE_SIZE % grid:
            raise VspError("grid must divide the image size", field="grid", received=grid, allowed="1, 2, 4, 8, …")
        p = IMAGE_SIZE // grid
        m = self.visible_masks().reshape(len(self.shapes), grid, p, grid, p)  # (n, gy, py, gx, px)
        return m.mean(axis=(2, 4)).reshape(len(self.shapes), grid * grid)

    def patch_labels(self, grid: int = GRID) -> list[set[str]]:
        """Ground-truth concepts of each patch (row-major, ``grid * grid`` sets).

        An object's colour and shape label a patch where the object covers ≥ ``LABEL_COVERAGE`` of it; the
        background texture labels a patch where the bare background covers ≥ ``LABEL_COVERAGE`` of it. Edge
        patches therefore carry both, which is what their pixels show.
        """
        cov = self.patch_coverage(grid)  # (n, P)
        bg = 1.0 - cov.sum(axis=0) if len(self.shapes) else np.ones(grid * grid)
        labels: list[set[str]] = []
        for p in range(grid * grid):
            s: set[str] = set()
            for i, spec in enumerate(self.shapes):
                if cov[i, p] >= LABEL_COVERAGE:
                    s.update((spec.color, spec.shape))
            if bg[p] >= LABEL_COVERAGE:
                s.add(self.background)
            labels.append(s)
        return labels

    def patch_edges(self, grid: int = GRID) -> list[set[str]]:
        """Concepts each patch *touches* without carrying them (covered, but below ``LABEL_COVERAGE``).

        Labelling leaves these out of a latent's precision: an edge patch neither confirms nor refutes a latent
        that fires on the object next to it."""
        cov = self.patch_coverage(grid)  # (n, P)
        bg = 1.0 - cov.sum(axis=0) if len(self.shapes) else np.ones(grid * grid)
        labels = self.patch_labels(grid)
        edges: list[set[str]] = []
        for p in range(grid * grid):
            s: set[str] = set()
            for i, spec in enumerate(self.shapes):
                if 0 < cov[i, p] < LABEL_COVERAGE:
                    s.update((spec.color, spec.shape))
            if 0 < bg[p] < LABEL_COVERAGE:
                s.add(self.background)
            edges.append(s - labels[p])
        return edges

    # -- pixels ---------------------------------------------------------------------------------------------------
    def texture(self) -> np.ndarray:
        """Background ink mask ``(IMAGE_SIZE, IMAGE_SIZE)`` bool for this scene's texture and phase."""
        yy, xx = np.mgrid[0:IMAGE_SIZE, 0:IMAGE_SIZE]
        rng = np.random.default_rng(self.seed)
        phase = int(rng.integers(0, 6))
        if self.background == "plain":
            return np.zeros((IMAGE_SIZE, IMAGE_SIZE), dtype=bool)
        if self.background == "stripes":  # diagonal stripes, period 6, 2 px wide
            return ((xx + yy + phase) % 6) < 2
        if self.background == "dots":  # 2×2 dots on a 6-pixel lattice
            return (((xx + phase) % 6) < 2) & (((yy + phase) % 6) < 2)
        # grid: 1-pixel lines every 7 pixels
        return (((xx + phase) % 7) == 0) | (((yy + phase) % 7) == 0)

    def render(self) -> Image.Image:
        """The scene as a 64×64 RGB ``PIL.Image`` (deterministic: same spec → same bytes)."""
        img = np.empty((IMAGE_SIZE, IMAGE_SIZE, 3), dtype=np.uint8)  # (H, W, 3)
        img[:] = BG_RGB
        img[self.texture()] = INK_RGB
        rng = np.random.default_rng(self.seed + 7919)
        jitter = rng.integers(-JITTER, JITTER + 1, size=(max(len(self.shapes), 1), 3))
        for i, (spec, m) in enumerate(zip(self.shapes, self.visible_masks(), strict=True)):
            c = np.clip(np.asarray(RGB[spec.color]) + jitter[i], 0, 255).astype(np.uint8)
            img[m] = c
        return Image.fromarray(img, mode="RGB")

    # -- queries --------------------------------------------------------------------------------------------------
    def find(self, *, shape: str | None = None, color: str | None = None) -> ShapeSpec | None:
        """The first object matching the given shape and/or colour, or ``None``."""
        for s in self.shapes:
            if (shape is None or s.shape == shape) and (color is None or s.color == color):
                return s
        return None

    def with_background(self, background: str) -> Scene:
        """The same objects and seed on another background (for paired control scenes)."""
        return Scene(self.shapes, background, self.seed)


def random_scene(
    rng: np.random.Generator,
    *,
    n_objects: int | None = None,
    max_objects: int = 3,
    backgrounds: Sequence[str] = BACKGROUNDS,
    shapes: Sequence[str] = SHAPES,
    colors: Sequence[str] = COLORS,
    required_shape: str | None = None,
    required_color: str | None = None,
    heldout: bool = False,
) -> Scene:
    """Draw a scene: 1..``max_objects`` objects with distinct shapes and distinct colours, not overlapping.

    Distinct shapes and colours make "the {colour} object" and "the {shape}" unambiguous. ``required_shape`` /
    ``required_color`` force one object (the first) to have that shape/colour. ``heldout`` draws the scene seed
    from the held-out range (``>= HELDOUT_SEED_START``) so that held-out scenes can never be training scenes.
    """
    if n_objects is None:
        n_objects = int(rng.integers(1, max_objects + 1))
    shape_pool = [s for s in shapes if s != required_shape]
    color_pool = [c for c in colors if c != required_color]
    need_shapes = n_objects - (required_shape is not None)
    need_colors = n_objects - (required_color is not None)
    if need_shapes > len(shape_pool) or need_colors > len(color_pool):
        raise VspError(
            "not enough distinct shapes/colours for the requested objects",
            received={"n_objects": n_objects, "shapes": list(shapes), "colors": list(colors)},
        )
    picked_shapes = list(rng.choice(shape_pool, size=need_shapes, replace=False)) if need_shapes else []
    picked_colors = list(rng.choice(color_pool, size=need_colors, replace=False)) if need_colors else []
    if required_shape is not None:
        picked_shapes.insert(0, required_shape)
    if required_color is not None:
        picked_colors.insert(0, required_color)

    specs: list[ShapeSpec] = []
    for attempt in range(100):  # place all objects; on a dead end start over with smaller objects
        hi = max(MIN_SIZE, MAX_SIZE - attempt // 5 * 2)
        placed = _place(rng, picked_shapes, picked_colors, hi)
        if placed is not None:
            specs = placed
            break
    else:  # pragma: no cover - three objects of ≤ 16 px always fit in 64×64
        raise VspError("could not place objects without overlap", received=n_objects)
    background = str(rng.choice(list(backgrounds)))
    lo, hi_seed = (HELDOUT_SEED_START, 2**31) if heldout else (0, HELDOUT_SEED_START)
    seed = int(rng.integers(lo, hi_seed))
    return Scene(tuple(specs), background, seed)


def _place(
    rng: np.random.Generator, shapes: Sequence[str], colors: Sequence[str], max_size: int
) -> list[ShapeSpec] | None:
    """Place objects one by one with a 2-pixel gap between bounding boxes; ``None`` on a dead end."""
    specs: list[ShapeSpec] = []
    occupied = np.zeros((IMAGE_SIZE, IMAGE_SIZE), dtype=bool)
    for shape, color in zip(shapes, colors, strict=True):
        for _ in range(30):
            size = int(rng.integers(MIN_SIZE, max_size + 1))
            h = size // 2
            x = int(rng.integers(h + 1, IMAGE_SIZE - (size - h)))
            y = int(rng.integers(h + 1, IMAGE_SIZE - (size - h)))
            spec = ShapeSpec(str(shape), str(color), x, y, size)
            x0, y0, x1, y1 = spec.box
            if not occupied[max(y0 - 2, 0) : y1 + 3, max(x0 - 2, 0) : x1 + 3].any():
                occupied[y0 : y1 + 1, x0 : x1 + 1] = True
                specs.append(spec)
                break
        else:
            return None
    return specs


def to_pixel_values(images: Sequence[Image.Image]) -> np.ndarray:
    """Fast path of the shipped image processor for 64×64 RGB images: ``(B, 3, 64, 64)`` float32 in [-1, 1].

    Equal to ``processor(images=...)["pixel_values"]`` for 64×64 inputs (a test checks this); used by the
    training and report loops, where the generic processor would dominate the run time.
    """
    arr = np.stack([np.asarray(im.convert("RGB"), dtype=np.float32) for im in images])  # (B, H, W, 3)
    if arr.shape[1:3] != (IMAGE_SIZE, IMAGE_SIZE):
        raise VspError("fast path needs 64×64 images", received=arr.shape[1:3], fix="use the processor")
    arr = (arr / 255.0 - 0.5) / 0.5
    return np.ascontiguousarray(arr.transpose(0, 3, 1, 2))
