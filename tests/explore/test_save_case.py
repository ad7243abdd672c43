"""Saving a run as a YAML case (vsp_assert.checks.save_case, `vsp-assert run --save-case`): what is pinned, with
which margins, how it is appended, and that the saved case passes now and fails after a model update."""

from __future__ import annotations

import hashlib
import io
import os
import stat
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from vsp_assert import Intervention
from vsp_assert.checks.assertions import run_case
from vsp_assert.checks.load import parse_case_file
from vsp_assert.checks.save_case import lower_bound, save_case
from vsp_assert.errors import CaseError

# the README's stripes scene and question (as in tests/explore/conftest.py)
STRIPES = {"background": "stripes", "shapes": [{"shape": "square", "color": "red", "x": 32, "y": 32, "size": 26}]}
SHAPE_PROMPT = "What shape is the red object?"
MAX_NEW_TOKENS = 4


@pytest.fixture(scope="module")
def observed(shapes_pad: Any, stripes_image: Any) -> tuple[Any, list[Any]]:
    """The README's diagnosis: 'triangle' on the stripes scene, 'square' once the stripes are ablated."""
    trace = shapes_pad.run(stripes_image, SHAPE_PROMPT)
    results = shapes_pad.intervene(trace, [Intervention.ablate("stripes"), Intervention.ablate("square"),
                                           Intervention.steer("#236", scale=1.5)])
    assert trace.answer == "triangle" and results[0].answer_after == "square" and not results[1].changed
    return trace, results


def test_lower_bound_keeps_the_margin_rule() -> None:
    for value in (0.06, 0.3, 0.49, 0.99, 1.0, 2.58, 27.21, 1234.5):
        bound = lower_bound(value)
        assert bound is not None and 0 < bound <= value * 0.5 and value - bound >= 0.05
        assert float(f"{bound:.2g}") == bound  # a round number: two significant digits
    assert lower_bound(0.04) is None and lower_bound(0.0) is None


def test_the_saved_case_pins_what_was_observed_and_passes(observed: Any, shapes_pad: Any, tmp_path: Path) -> None:
    trace, results = observed
    saved = save_case(tmp_path / "triage.yaml", trace, results, case_id="stripes-triangle", scene=STRIPES,
                      max_new_tokens=MAX_NEW_TOKENS)
    case, = parse_case_file(saved.path).cases
    assert case.id == "stripes-triangle" and case.image == {"scene": STRIPES} and case.prompt == SHAPE_PROMPT
    exp = case.expect
    assert exp.answer is not None and exp.answer.equals == "triangle"
    assert [c.concept for c in exp.captured][:2] == ["stripes", "square"]
    attended, = exp.attended
    assert attended.token == "triangle" and "stripes" in attended.concepts and attended.top_k == 5
    ablate_stripes, ablate_square, steer = exp.causal
    assert ablate_stripes.ablate == ("stripes",) and ablate_stripes.answer == "square"
    assert ablate_stripes.min_drop is not None and 0 < ablate_stripes.min_drop <= results[0].drop / 2
    assert ablate_square.ablate == ("square",) and ablate_square.changes is False
    assert steer.steer == (("#236",), None, 1.5)
    # the numbers are margins, never the measured floats
    for c in exp.captured:
        if c.min_score is not None:
            assert c.min_score <= float(trace.image_scores[trace.resolve(c.concept)].sum()) / 2
    text = saved.path.read_text(encoding="utf-8")
    assert "0.9998" not in text and str(results[0].drop) not in text
    result = run_case(shapes_pad, case)
    assert result.passed, [(r.description, r.measured) for r in result.failures]
    assert len(result.records) >= 6


def test_append_keeps_comments_layout_and_mode(observed: Any, tmp_path: Path) -> None:
    trace, results = observed
    path = tmp_path / "cases.yaml"
    original = ("# my triage notes\ndefaults:\n  top_k: 5\ncases:\n    - id: first   # keep me\n"
                "      image: {scene: {background: plain, shapes: [{shape: circle, color: blue, x: 30, y: 34, "
                "size: 24}]}}\n      prompt: What shape is the blue object?\n      expect: {answer: circle}\n")
    path.write_text(original, encoding="utf-8")
    os.chmod(path, 0o640)
    save_case(path, trace, results[:1], scene=STRIPES)
    again = save_case(path, trace, results[:1], scene=STRIPES)
    text = path.read_text(encoding="utf-8")
    assert text.startswith(original)  # appended as text: comments and layout above are untouched
    assert stat.S_IMODE(path.stat().st_mode) == 0o640
    ids = [c.id for c in parse_case_file(path).cases]
    assert ids == ["first", "what-shape-is-the-red-object-triangle", "what-shape-is-the-red-object-triangle-2"]
    assert again.case_id == ids[-1]
    assert "\n    - id: what-shape" in text  # the file's own item indentation
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]


def test_a_file_that_cannot_take_the_case_is_left_as_it_was(observed: Any, tmp_path: Path) -> None:
    trace, results = observed
    path = tmp_path / "cases.yaml"
    save_case(path, trace, results, case_id="one", scene=STRIPES)
    before = path.read_bytes()
    with pytest.raises(CaseError, match="already has a case 'one'"):
        save_case(path, trace, results, case_id="one", scene=STRIPES)
    with pytest.raises(CaseError, match="ids are letters"):
        save_case(path, trace, results, case_id="no spaces", scene=STRIPES)
    assert path.read_bytes() == before
    trailing = tmp_path / "trailing.yaml"
    trailing.write_text("cases:\n  - id: a\n    image: {scene: {background: plain, shapes: []}}\n    prompt: Hi?\n"
                        "    expect: {answer: x}\nmodel: shapes\n", encoding="utf-8")
    kept = trailing.read_bytes()
    with pytest.raises(CaseError, match="last top-level key"):
        save_case(trailing, trace, results, scene=STRIPES)
    assert trailing.read_bytes() == kept
    broken = tmp_path / "broken.yaml"
    broken.write_text("cases: [\n", encoding="utf-8")
    with pytest.raises(CaseError):
        save_case(broken, trace, results, scene=STRIPES)
    assert broken.read_text(encoding="utf-8") == "cases: [\n"


def test_an_upload_is_stored_next_to_the_case_under_its_content_hash(observed: Any, stripes_image: Any,
                                                                      tmp_path: Path) -> None:
    trace, results = observed
    buffer = io.BytesIO()
    stripes_image.save(buffer, format="JPEG", quality=95)
    data = buffer.getvalue()
    first = save_case(tmp_path / "sub" / "c.yaml", trace, results, data=data)
    second = save_case(tmp_path / "sub" / "c.yaml", trace, results, data=data)
    name = f"img-{hashlib.sha256(data).hexdigest()[:16]}.jpg"
    assert first.image_path == second.image_path == tmp_path / "sub" / name
    assert (tmp_path / "sub" / name).read_bytes() == data
    assert sorted(p.name for p in (tmp_path / "sub").iterdir()) == ["c.yaml", name]
    assert [c.image for c in parse_case_file(tmp_path / "sub" / "c.yaml").cases] == [str(tmp_path / "sub" / name)] * 2


def test_the_saved_case_fails_when_the_model_changes(observed: Any, tmp_path: Path) -> None:
    """A mock update (noise on the LM's last layer; the vision tower and so the SAE unchanged) keeps 'triangle'
    but weakens the stripes shortcut: the pinned ablation outcome no longer holds."""
    from vsp_assert import Scratchpad, load_model, load_sae
    from vsp_assert.shapes.cli import main as shapes_main

    trace, results = observed
    saved = save_case(tmp_path / "c.yaml", trace, results, scene=STRIPES, max_new_tokens=MAX_NEW_TOKENS)
    assert shapes_main(["shapes", "perturb", "--out", str(tmp_path / "v2"), "--layer", "2", "--scale", "3"]) == 0
    updated = Scratchpad(load_model(tmp_path / "v2"), load_sae("shapes"), max_new_tokens=MAX_NEW_TOKENS)
    result = run_case(updated, parse_case_file(saved.path).cases[0])
    assert not result.passed
    assert {r.kind for r in result.failures} == {"causal"}


@pytest.mark.slow
def test_run_save_case_then_pytest_passes(tmp_path: Path, stripes_image: Any) -> None:
    """The whole loop from the command line: `vsp-assert run … --save-case`, then pytest on the file."""
    from vsp_assert.cli import main

    image = tmp_path / "scene.png"
    stripes_image.save(image)
    cases = tmp_path / "cases"
    cases.mkdir()
    assert main(["run", str(image), SHAPE_PROMPT, "--ablate", "stripes", "--sufficient", "--max-new-tokens", "4",
                 "--save-case", str(cases / "triage.yaml"), "--id", "stripes-triangle", "--color", "no"]) == 0
    stored = list(cases.glob("img-*.png"))
    assert len(stored) == 1 and stored[0].read_bytes() == image.read_bytes()
    done = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "triage.yaml"],
                          cwd=cases, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0 and "1 passed" in done.stdout, done.stdout[-3000:] + done.stderr[-2000:]
