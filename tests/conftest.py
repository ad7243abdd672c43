"""Shared fixtures for the project's tests: a seeded RNG, tiny random LLaVA models and SAEs built in-process."""

from __future__ import annotations

import random
from pathlib import Path

import numpy as np
import pytest
import torch

# torch.manual_seed imports torch._dynamo lazily; a first import inside an in-process pytester run is undone after
# the run, and importing it again then fails to re-register torch's test ops. So it is imported once, here.
import torch._dynamo  # noqa: F401, E402


@pytest.fixture(autouse=True)
def _seeded() -> None:
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


PROMPT = "what color is the square ?"


@pytest.fixture(scope="session")
def saved(tmp_path_factory):
    """Paths of a saved tiny model, its SAE folder and a test image, plus the model's answer to PROMPT."""
    from PIL import Image

    from vsp_assert import Scratchpad, load_model, load_sae
    from vsp_assert.engine.labels import ConceptLabels
    from vsp_assert.engine.sae import save_sae
    from vsp_assert.testing import random_sae, save_model, tiny_llava

    root = tmp_path_factory.mktemp("vsp")
    model = tiny_llava(seed=0)
    save_model(model, root / "model")
    sae = random_sae(model.adapter.vision_width(), 64, k=8, seed=0)
    labels = ConceptLabels(64, {"red": [1, 2], "blue": [3], "stripes": [4, 5, 6]})
    save_sae(root / "sae", W_enc=sae.W_enc, W_dec=sae.W_dec, b_enc=sae.b_enc, b_dec=sae.b_dec, k=8,
             hook_layer=model.adapter.default_hook_layer(), labels=labels)
    image = root / "img.png"
    Image.fromarray((np.random.RandomState(0).rand(40, 40, 3) * 255).astype("uint8")).save(image)
    pad = Scratchpad(load_model(root / "model"), load_sae(root / "sae"), max_new_tokens=3)
    trace = pad.run(image, PROMPT)
    top = trace.top_concepts(0, 3)
    return {
        "model": str(root / "model"), "sae": str(root / "sae"), "image": str(image), "answer": trace.answer,
        "token": trace.output_tokens[0], "top_latent": top[0][0],
        "absent": int(trace.image_scores.argmin()),
    }


@pytest.fixture(scope="session")
def perturbed(saved, tmp_path_factory):
    """A copy of the saved model with one LM layer perturbed (same vision encoder, so the SAE still fits)."""
    from vsp_assert import load_model
    from vsp_assert.testing import save_model

    loaded = load_model(saved["model"])
    layer = loaded.model.model.language_model.layers[1]
    gen = torch.Generator().manual_seed(7)
    with torch.no_grad():
        for p in layer.parameters():
            p.add_(0.5 * p.abs().mean() * torch.randn(p.shape, generator=gen))
    out = tmp_path_factory.mktemp("perturbed") / "model"
    save_model(loaded, out)
    return str(out)


@pytest.fixture
def vsp(pytester: pytest.Pytester, saved):
    """A throwaway pytest session configured (through its ini file) to load the saved tiny model, with the
    test image beside it as ``img.png``. The tiny SAE has random weights, so it does not fit the model by
    construction: the SAE-fit floor is off here (tests/plugin/test_sae_fit.py checks it on the shapes model)."""
    pytester.makeini(
        f"""
        [pytest]
        vsp_model = {saved['model']}
        vsp_sae = {saved['sae']}
        vsp_max_new_tokens = 3
        vsp_min_sae_fit = -1e6
        """
    )
    (pytester.path / "img.png").write_bytes(Path(saved["image"]).read_bytes())
    return pytester
