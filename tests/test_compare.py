"""``vsp-assert compare`` on two checkpoints sharing a vision encoder and SAE."""

from __future__ import annotations

import json
import shutil

from vsp_assert.cli import main

CASES = """
cases:
  - id: color
    image: img.png
    prompt: "what color is the square ?"
    expect: {answer: {not: "zzz"}}
  - id: presence
    image: img.png
    prompt: "is there a red circle ?"
    expect: {answer: {not: "zzz"}}
"""


def test_compare_reports_changes_most_changed_first(tmp_path, saved, perturbed, capsys):
    (tmp_path / "cases.yaml").write_text(CASES)
    shutil.copy(saved["image"], tmp_path / "img.png")
    out_json = tmp_path / "cmp.json"
    rc = main(["compare", "--base", saved["model"], "--new", perturbed, "--sae", saved["sae"], "--color", "no",
               "--json", str(out_json), str(tmp_path)])
    assert rc == 0
    text = capsys.readouterr().out
    assert "color (" in text and "presence (" in text
    assert "case(s) changed (most-changed first)" in text
    rows = json.loads(out_json.read_text())
    assert {r["case"] for r in rows} == {"color", "presence"}
    assert any(r["change"] > 0 for r in rows)  # the perturbed LM layer changes something


def test_compare_same_model_changes_nothing(tmp_path, saved, capsys):
    (tmp_path / "cases.yaml").write_text(CASES)
    shutil.copy(saved["image"], tmp_path / "img.png")
    rc = main(["compare", "--base", saved["model"], "--new", saved["model"], "--sae", saved["sae"], "--color", "no",
               "--fail-on-change", str(tmp_path / "cases.yaml")])
    assert rc == 0
    assert "0 of 2 case(s) changed" in capsys.readouterr().out


def test_compare_missing_path_is_a_clear_error(tmp_path, saved, capsys):
    rc = main(["compare", "--base", saved["model"], "--new", saved["model"], "--sae", saved["sae"],
               str(tmp_path / "nope")])
    assert rc == 2
    assert "no such case file or folder" in capsys.readouterr().err


def test_compare_shapes_model_with_a_perturbed_copy(tmp_path, capsys):
    """The shipped shapes model against a copy with one LM layer perturbed: the bundled cases show the drift."""
    from pathlib import Path

    from vsp_assert.shapes import SAE_DIR

    if not (SAE_DIR / "cfg.json").exists():
        import pytest

        pytest.skip("the shapes artifacts are not built")
    assert main(["shapes", "perturb", "--out", str(tmp_path / "v2"), "--layer", "1", "--scale", "1.0"]) == 0
    cases = Path(__file__).resolve().parents[1] / "cases"
    out_json = tmp_path / "cmp.json"
    assert main(["compare", "--base", "shapes", "--new", str(tmp_path / "v2"), "--color", "no", "--json",
                 str(out_json), str(cases)]) == 0
    rows = json.loads(out_json.read_text())
    assert len(rows) >= 12
    changed = [r for r in rows if r["change"] > 0.01]
    assert changed and all(r["gained"] or r["lost"] or r["answer"][0] != r["answer"][1] for r in changed)
    text = capsys.readouterr().out
    assert f"{len(changed)} of {len(rows)} case(s) changed (most-changed first)" in text
