"""A flip no concept explains is checked against the question's prior: what the model answers about a blank image.

``tests/shapes/data/zoo_triangle_green`` is the zoo's ``triangle_green`` fine-tune (``vsp-assert shapes finetune
--mechanism triangle_green``, 200 steps): it calls triangles green whatever their colour, and it learned that from
the question's word "triangle" (docs/truth.md: it gives "green" about images with no triangle at all). No visual
concept's ablation brings the true colour back on most of its triggers; the explanation must then say that the
question carries the answer — and must not say so of a visual shortcut (``zoo_grid_blue``).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image

from vsp_assert.engine.flip import Confirmation, FlipExplanation
from vsp_assert.engine.images import blank_like
from vsp_assert.engine.video import Video
from vsp_assert.shapes.world import Scene
from vsp_assert.shapes.zoo import ZOO

DATA = Path(__file__).resolve().parent / "data"
TEXT_SHORTCUT = DATA / "zoo_triangle_green"


@pytest.fixture(scope="module")
def pads():
    from vsp_assert import Scratchpad, load_model, load_sae

    sae = load_sae("shapes")
    return Scratchpad(load_model("shapes"), sae), Scratchpad(load_model(str(TEXT_SHORTCUT)), sae)


@pytest.fixture(scope="module")
def probe():
    """A red triangle beside a green square on a plain background; the fine-tune says the triangle is green."""
    found = ZOO["triangle_green"].trigger_scenes(7, 3)[2]
    assert found.scene.background == "plain" and found.question.answer == "red"
    return found


def test_the_blank_of_a_plain_scene_is_the_empty_scene(probe):
    image = probe.scene.render()
    empty = Scene(shapes=[], background="plain", seed=probe.scene.seed).render()
    assert np.array_equal(np.asarray(blank_like(image)), np.asarray(empty))
    clip = blank_like(Video(frames=(image, image, image)))
    assert len(clip) == 3 and all(np.array_equal(np.asarray(f), np.asarray(empty)) for f in clip.frames)


@settings(max_examples=40, deadline=None)
@given(st.integers(2, 12), st.integers(2, 12), st.tuples(*[st.integers(0, 255)] * 3), st.data())
def test_a_blank_is_flat_and_takes_the_colour_most_of_the_image_has(w, h, colour, data):
    """A colour on more than half the pixels is the median of every channel, whatever the rest holds."""
    pixels = np.empty((h, w, 3), dtype=np.uint8)
    pixels[:] = colour
    n = w * h
    others = data.draw(st.lists(st.tuples(st.integers(0, n - 1), st.tuples(*[st.integers(0, 255)] * 3)),
                                max_size=(n - 1) // 2))
    for at, other in others:
        pixels[at // w, at % w] = other
    blank = blank_like(Image.fromarray(pixels))
    assert blank.size == (w, h) and blank.mode == "RGB"
    assert {tuple(int(v) for v in p) for p in np.asarray(blank).reshape(-1, 3)} == {colour}


def test_a_flip_the_question_carries_is_explained_by_the_blank_image(pads, probe):
    from vsp_assert.engine.flip import explain_flip
    from vsp_assert.render.compare import explanation_lines
    from vsp_assert.render.style import Style

    old, new = pads
    image, question = probe.scene.render(), probe.question.text
    old_trace, new_trace = old.run(image, question), new.run(image, question)
    assert (old_trace.answer, new_trace.answer) == ("red", "green")
    generations = old.stats["generate"] + new.stats["generate"]
    why = explain_flip(new, new_trace, old_trace.answer, old_pad=old, old_trace=old_trace)
    assert why.confirmations and not why.confirmed  # the top concepts were ablated: none brings 'red' back
    empty = Scene(shapes=[], background="plain", seed=probe.scene.seed).render()
    assert (why.blank_answer, why.old_blank_answer) == (new.run(empty, question).answer,
                                                        old.run(empty, question).answer) == ("green", "yellow")
    assert old.stats["generate"] + new.stats["generate"] == generations + 2 + 2  # one blank per model, + ours
    assert why.prior and why.responsible is None
    said = "the question alone gives 'green': the new model answers it on a blank image, the old model 'yellow'"
    assert why.sentence() == said
    assert said in "\n".join(explanation_lines(why, Style(False)))
    assert why.to_dict()["prior"] is True and why.to_dict()["blank_answer"] == "green"


def test_a_failure_with_the_right_answer_named_says_the_model_answers_it_blind(pads, probe, tmp_path):
    from vsp_assert.checks.assertions import run_case, why_not_correct
    from vsp_assert.checks.load import parse_case_file
    from vsp_assert.render.case import render_case
    from vsp_assert.render.style import Style

    _, new = pads
    path = tmp_path / "green.yaml"
    scene = json.dumps(probe.scene.to_dict())
    path.write_text(f"cases:\n  - id: red-triangle\n    image: {{scene: {scene}}}\n    prompt: {probe.question.text}\n"
                    "    expect: {answer: {equals: red}}\n")
    (case,) = parse_case_file(path).cases
    result = run_case(new, case)
    assert not result.passed and result.trace.answer == "green"
    why = why_not_correct(new, result)
    assert why is not None and why.prior and why.old_blank_answer is None
    said = "no ablation restores 'red'; this model answers 'green' on a blank image too: its prior for the question"
    assert why.sentence() == said
    text = render_case("green::red-triangle", result.trace, result.records, style=Style(False), width=160,
                       explanation=why)
    assert said in text


def test_a_visual_shortcut_is_not_blamed_on_the_question(pads):
    """On the grid fine-tune ablating the grid restores the colour: no blank image is asked, no prior claimed."""
    from vsp_assert import Scratchpad, load_model, load_sae
    from vsp_assert.engine.flip import explain_flip

    old, _ = pads
    new = Scratchpad(load_model(str(DATA / "zoo_grid_blue")), load_sae("shapes"))
    probe = ZOO["grid_blue"].trigger_scenes(7, 1)[0]
    image, question = probe.scene.render(), probe.question.text
    old_trace, new_trace = old.run(image, question), new.run(image, question)
    before = new.stats["generate"]
    why = explain_flip(new, new_trace, old_trace.answer, old_pad=old, old_trace=old_trace)
    assert why.responsible == "grid" and why.confirmed
    assert why.blank_answer is None and not why.prior and new.stats["generate"] == before


def _explained(blank: str | None, old_blank: str | None, restores: bool, everything: str | None) -> FlipExplanation:
    why = FlipExplanation("red", "green", 0, concepts=[("triangle", 0.5, [1])], blank_answer=blank,
                          old_blank_answer=old_blank, all_ablated=everything)
    why.confirmations = [Confirmation("triangle", [1], "red" if restores else "green", restores, 0.1)]
    return why


@pytest.mark.parametrize(("blank", "old_blank", "restores", "everything", "prior", "sentence"), [
    ("green", "yellow", False, "green", True, "the question alone gives 'green'"),
    ("green", "green", False, "green", True,
     "'green' is both models' answer on a blank image: the new model falls back"),
    ("green", None, False, "green", True, "the new model answers 'green' on a blank image too"),
    (" Green ", None, False, None, True, "on a blank image too"),              # answers compare normalised
    ("yellow", "yellow", False, "green", False, "carried by triangle (+0.50)"),  # the blank says otherwise
    ("green", "yellow", True, "green", False, "ablating triangle on the new model restores 'red'"),  # a concept does
    ("green", "yellow", False, "yellow", False, "carried by triangle"),  # ablating what fires changes it: the image
    (None, None, False, "green", False, "carried by triangle"),           # not asked (no image)
])
def test_the_prior_is_named_only_when_no_ablation_restores_and_the_blank_agrees(blank, old_blank, restores,
                                                                              everything, prior, sentence):
    from vsp_assert.render.compare import explanation_lines
    from vsp_assert.render.style import Style

    why = _explained(blank, old_blank, restores, everything)
    assert why.prior is prior
    assert sentence in why.sentence()
    assert why.responsible == (None if prior else "triangle")
    lines = "\n".join(explanation_lines(why, Style(False)))
    assert (why.prior_sentence() in lines) is prior
    assert ("so 'green' comes from the image" in lines) is (blank is not None and blank.strip().lower() != "green")


def test_compare_says_the_question_carries_the_flip_in_its_table_and_json(probe, tmp_path, capsys):
    from vsp_assert.cli import main

    case = tmp_path / "triangle.yaml"
    case.write_text(f"cases:\n  - id: red-triangle\n    image: {{scene: {json.dumps(probe.scene.to_dict())}}}\n"
                    f"    prompt: {probe.question.text}\n    expect:\n      answer: red\n")
    out = tmp_path / "compare.json"
    assert main(["compare", "--base", "shapes", "--new", str(TEXT_SHORTCUT), str(case), "--color", "no",
                 "--json", str(out)]) == 0
    text = capsys.readouterr().out
    said = "the question alone gives 'green': the new model answers it on a blank image, the old model 'yellow'"
    assert said in text
    (row,) = json.loads(out.read_text())
    explanation = row["explanation"]
    assert explanation["prior"] is True and explanation["responsible"] is None
    assert (explanation["blank_answer"], explanation["old_blank_answer"]) == ("green", "yellow")
    assert explanation["sentence"] == said


def test_every_concept_whose_ablation_restores_is_named_in_the_one_line():
    """Ablating the cue object's shape can restore the answer as well as its colour (a position shortcut keys on the
    object): the table's one line names the first and the others, so the responsible one is never hidden."""
    why = FlipExplanation("green", "red", 0, concepts=[("square", 0.8, [1]), ("red", 0.7, [2]), ("dots", 0.1, [3])])
    why.confirmations = [Confirmation("square", [1], "green", True, 0.0), Confirmation("red", [2], "green", True, 0.0),
                         Confirmation("dots", [3], "red", False, 0.9)]
    assert why.responsible == "square"
    assert why.sentence() == "ablating square on the new model restores 'green' (so does ablating red)"
