"""Fixtures of the concepts tests: a small exported shapes source (known truth) and image-writing helpers."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image


def _write_image(path: Path, size: tuple[int, int] = (16, 12), seed: int = 0) -> Path:
    """An RGB PNG of ``size`` (width, height) with seeded noise."""
    path.parent.mkdir(parents=True, exist_ok=True)
    w, h = size
    Image.fromarray((np.random.RandomState(seed).rand(h, w, 3) * 255).astype("uint8")).save(path)
    return path


def _write_mask(path: Path, size: tuple[int, int] = (16, 12)) -> Path:
    """A greyscale mask of ``size``: the left half set."""
    path.parent.mkdir(parents=True, exist_ok=True)
    w, h = size
    arr = np.zeros((h, w), dtype=np.uint8)
    arr[:, : w // 2] = 255
    Image.fromarray(arr, mode="L").save(path)
    return path


@pytest.fixture(scope="session")
def shapes_source(tmp_path_factory) -> Path:
    """``shapes export --n 8 --seed 3``: the manifest of eight scenes with per-concept masks."""
    from vsp_assert.shapes.export import export

    return export(tmp_path_factory.mktemp("shapes_export"), 8, seed=3)


@pytest.fixture(scope="session")
def write_image():
    """``write_image(path, size=(w, h), seed=0)``: an RGB PNG of seeded noise."""
    return _write_image


@pytest.fixture(scope="session")
def write_mask():
    """``write_mask(path, size=(w, h))``: a greyscale mask, left half set."""
    return _write_mask
