"""Shared fixtures for the project's tests: a seeded RNG, tiny random LLaVA models and SAEs built in-process."""

from __future__ import annotations

import random

import numpy as np
import pytest


@pytest.fixture(autouse=True)
def _seeded() -> None:
    import torch

    random.seed(0)
    np.random.seed(0)
    torch.manual_seed(0)


@pytest.fixture(scope="session")
def tiny():
    """A random-weight LLaVA (2+2 layers, 4×4 patches) with its processor, wrapped for the engine."""
    from vsp_assert.testing import tiny_llava

    return tiny_llava(seed=0)


@pytest.fixture(scope="session")
def tiny_sae(tiny):
    from vsp_assert.testing import random_sae

    return random_sae(
        tiny.adapter.vision_width(), 64, k=8, hook_layer=tiny.adapter.default_hook_layer(),
        concepts={"red": [1, 2], "blue": [3], "stripes": [4, 5, 6]},
    )


@pytest.fixture(scope="session")
def images():
    """Three deterministic RGB test images of different sizes."""
    from PIL import Image

    rng = np.random.RandomState(1)
    return [Image.fromarray((rng.rand(h, w, 3) * 255).astype("uint8")) for h, w in ((40, 40), (32, 48), (64, 50))]


@pytest.fixture
def pad(tiny, tiny_sae):
    from vsp_assert import Scratchpad

    return Scratchpad(tiny, tiny_sae, max_new_tokens=4)
