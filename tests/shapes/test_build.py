"""The model/tokenizer/processor builder: real HF classes, loadable with Auto*, processor agreeing with the model."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from transformers import AutoProcessor, AutoTokenizer, LlavaForConditionalGeneration

from vsp_assert.shapes import MODEL_DIR
from vsp_assert.shapes.build import build_model, build_tokenizer, save_model_folder, vocabulary
from vsp_assert.shapes.inference import N_IMAGE_TOKENS, PromptEncoder
from vsp_assert.shapes.questions import ANSWERS, TEMPLATES
from vsp_assert.shapes.world import random_scene, to_pixel_values


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return save_model_folder(build_model(0), tmp_path_factory.mktemp("shapes_model"))


def test_tokenizer_covers_the_world_and_decodes_readably() -> None:
    tok = build_tokenizer()
    assert len(tok) == len(vocabulary())
    for a in ANSWERS:
        ids = tok(a, add_special_tokens=False)["input_ids"]
        assert len(ids) == 1 and tok.decode(ids) == a
    text = TEMPLATES["color"].format(shape="square")
    ids = tok(text)["input_ids"]
    assert ids[0] == tok.bos_token_id
    assert tok.unk_token_id not in ids
    assert tok.decode(ids, skip_special_tokens=True) == text.lower()


@pytest.mark.parametrize("where", ["built", "shipped"])
def test_auto_classes_load_the_folder(where: str, folder: Path) -> None:
    path = folder if where == "built" else MODEL_DIR
    if where == "shipped" and not (MODEL_DIR / "model.safetensors").exists():
        pytest.skip("no shipped model yet")
    processor = AutoProcessor.from_pretrained(path)
    tok = AutoTokenizer.from_pretrained(path)
    model = LlavaForConditionalGeneration.from_pretrained(path)
    scene = random_scene(np.random.default_rng(0))
    messages = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "What color is the circle?"}]}]
    prompt = processor.apply_chat_template(messages, add_generation_prompt=True)
    assert prompt == "USER: <image>\nWhat color is the circle? ASSISTANT:"
    inputs = processor(images=[scene.render()], text=[prompt], return_tensors="pt")
    assert int((inputs["input_ids"] == model.config.image_token_id).sum()) == N_IMAGE_TOKENS
    # the fast paths used by training and the report agree with the processor exactly
    assert torch.equal(inputs["pixel_values"], torch.from_numpy(to_pixel_values([scene.render()])))
    assert inputs["input_ids"][0].tolist() == list(PromptEncoder(tok).prompt("What color is the circle?"))
    with torch.no_grad():
        out = model(**inputs)
    assert out.logits.shape == (1, inputs["input_ids"].shape[1], len(tok))


def test_vision_layer_feeds_the_projector(folder: Path) -> None:
    """An edit of the hooked layer's output reaches the LM (the layer is the one LLaVA projects)."""
    from vsp_assert.shapes.inference import answer_logits, edit_layer_output
    from vsp_assert.shapes.train import hook_layer_path

    model = LlavaForConditionalGeneration.from_pretrained(folder).eval()
    enc = PromptEncoder(AutoTokenizer.from_pretrained(folder))
    scenes = [random_scene(np.random.default_rng(1))]
    base = answer_logits(model, enc, scenes, ["What color is the circle?"])
    with edit_layer_output(model, hook_layer_path(model), lambda out: out * 0):
        edited = answer_logits(model, enc, scenes, ["What color is the circle?"])
    with edit_layer_output(model, hook_layer_path(model), lambda out: None):
        same = answer_logits(model, enc, scenes, ["What color is the circle?"])
    assert not torch.allclose(base, edited)
    assert torch.equal(base, same)
