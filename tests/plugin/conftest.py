"""Fixtures for the plugin tests: a tiny LLaVA and an SAE saved to disk, loadable by throwaway sessions."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest


@pytest.fixture(scope="session")
def saved(tmp_path_factory):
    """Paths of a saved tiny model, its SAE folder and a test image, plus the model's answer to PROMPT."""
    from PIL import Image

    from vsp_assert import Scratchpad, load_model, load_sae
    from vsp_assert.labels import ConceptLabels
    from vsp_assert.sae import save_sae
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


PROMPT = "what color is the square ?"


@pytest.fixture
def vsp(pytester: pytest.Pytester, saved):
    """A pytester with the saved model configured through the ini file, plus helpers."""
    pytester.makeini(
        f"""
        [pytest]
        vsp_model = {saved['model']}
        vsp_sae = {saved['sae']}
        vsp_max_new_tokens = 3
        """
    )
    Path(pytester.path / "img.png").write_bytes(Path(saved["image"]).read_bytes())
    return pytester
