"""Concept baselines: the lifecycle a user walks through, drift on a perturbed checkpoint, safe writes."""

from __future__ import annotations

import json
import os

import pytest

from vsp_assert.checks.baseline import baseline_path, read_baseline, update_baseline
from vsp_assert.errors import CaseError

CASES = """
cases:
  - id: first
    image: img.png
    prompt: "what color is the square ?"
    expect: {answer: {not: "zzz"}}
  - id: second
    image: img.png
    prompt: "is there a red circle ?"
    expect: {answer: {not: "zzz"}}
"""


def direct_trace(saved, prompt="what color is the square ?"):
    """The trace of ``prompt`` on the saved image, run directly on the saved model and SAE."""
    import vsp_assert

    pad = vsp_assert.Scratchpad(vsp_assert.load_model(saved["model"]), vsp_assert.load_sae(saved["sae"]),
                                max_new_tokens=3)
    return pad.run(saved["image"], prompt)


def test_baseline_lifecycle(vsp, saved, perturbed):
    vsp.makefile(".yaml", test_drift=CASES)
    baseline = vsp.path / "test_drift.baseline.json"
    first = vsp.runpytest()
    first.assert_outcomes(passed=2)
    first.stdout.fnmatch_lines(["*2 case(s) have no baseline entry*--vsp-update-baseline*"])
    assert not baseline.exists()

    vsp.runpytest("--vsp-update-baseline").assert_outcomes(passed=2)
    doc = json.loads(baseline.read_text())
    assert sorted(doc["cases"]) == ["first", "second"] and doc["version"] == 1
    assert doc["cases"]["first"]["answer"] == saved["answer"]
    # `not: "zzz"` cannot fail: the recorded profile must be the one a direct run of the case gives
    trace, entry = direct_trace(saved), doc["cases"]["first"]
    assert entry["answer_prob"] == round(trace.answer_prob, 4)
    assert [t["text"] for t in entry["tokens"]] == list(trace.output_tokens)
    for t, token in enumerate(entry["tokens"]):
        assert [(i, s) for _, i, s in token["top"]] == [(i, round(s, 4)) for i, s in trace.top_concepts(t, 10)]
    assert [(i, s) for _, i, s in entry["captured"]] == [(i, round(s, 4)) for i, s in trace.top_captured(10)]
    assert entry["tokens"][0]["top"][0][1] == saved["top_latent"]

    vsp.runpytest().assert_outcomes(passed=2)  # same model: no drift

    drifted = vsp.runpytest(f"--vsp-model={perturbed}")
    drifted.assert_outcomes(failed=2)
    drifted.stdout.fnmatch_lines(["*FAIL*drift*", "*concept drift since baseline*", "*then (baseline)*", "*now*"])

    vsp.runpytest(f"--vsp-model={perturbed}", "--vsp-update-baseline").assert_outcomes(passed=2)
    vsp.runpytest(f"--vsp-model={perturbed}").assert_outcomes(passed=2)


def test_update_keeps_entries_of_cases_that_did_not_run(vsp):
    vsp.makefile(".yaml", test_keep=CASES)
    vsp.runpytest("--vsp-update-baseline").assert_outcomes(passed=2)
    path = vsp.path / "test_keep.baseline.json"
    before = json.loads(path.read_text())
    edited = json.loads(path.read_text())
    edited["cases"]["first"]["answer"] = "hand-edited"
    edited["cases"]["first"]["answer_prob"] = 0.5
    path.write_text(json.dumps(edited))
    vsp.runpytest("--vsp-update-baseline", "-k", "first").assert_outcomes(passed=1, deselected=1)
    after = json.loads(path.read_text())
    assert after["cases"]["second"] == before["cases"]["second"]
    assert sorted(after["cases"]) == ["first", "second"]
    assert after["cases"]["first"] == before["cases"]["first"]  # the case that ran was rewritten, edit gone


def test_baseline_files_are_identical_across_runs(vsp):
    vsp.makefile(".yaml", test_same=CASES)
    path = vsp.path / "test_same.baseline.json"
    vsp.runpytest("--vsp-update-baseline")
    once = path.read_bytes()
    assert once and sorted(json.loads(once)["cases"]) == ["first", "second"]
    vsp.runpytest("--vsp-update-baseline", "-p", "no:randomly")
    assert path.read_bytes() == once


def test_interrupted_write_leaves_the_old_file_intact(tmp_path, monkeypatch):
    path = baseline_path(tmp_path / "cases.yaml")
    entry = {"answer": "red", "answer_prob": 0.9, "tokens": [], "captured": [], "interventions": []}
    update_baseline(path, {"a": entry}, model="m", sae="s")
    before = path.read_bytes()

    def crash(src, dst):
        raise KeyboardInterrupt("killed mid-write")

    monkeypatch.setattr(os, "replace", crash)
    with pytest.raises(KeyboardInterrupt):
        update_baseline(path, {"b": entry}, model="m", sae="s")
    monkeypatch.undo()
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir() if p.name.endswith(".tmp")] == []


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("{not json", "not valid JSON"),
        ('{"version": 1}', "a 'cases' mapping"),
        ('{"version": 9, "cases": {}}', "unsupported baseline version"),
        ('{"version": 1, "cases": {"a": {"answer": 3}}}', "cases.a.answer"),
        ('{"version": 1, "cases": {"a": {"answer": "x", "answer_prob": 2, "tokens": [], "captured": [], '
         '"interventions": []}}}', "cases.a.answer_prob"),
    ],
)
def test_corrupt_baselines_are_clear_errors(tmp_path, content, message):
    path = tmp_path / "c.baseline.json"
    path.write_text(content)
    with pytest.raises(CaseError, match=message):
        read_baseline(path)
