"""``vsp-assert compare`` on two checkpoints sharing a vision encoder and SAE: the values it reports (answers,
Δp, concepts gained and lost, pass → pass) and the most-changed-first order of its summary table."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from vsp_assert.checks.compare import CaseComparison, changed_cases
from vsp_assert.cli import main
from vsp_assert.render.compare import render_comparison
from vsp_assert.render.style import Style

# ``not: "zzz"`` passes on any answer: these cases are plumbing; the tests check the measured values instead
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
PROMPTS = {"color": "what color is the square ?", "presence": "is there a red circle ?"}
HEADERS = ["case", "answer", "Δp", "gained", "lost", "expectations", "why"]


def summary_table(text: str) -> list[list[str]]:
    """The rows of the summary table (cells stripped), read by the column spans of its ``----`` rule."""
    lines = text.splitlines()
    at = next(i for i, line in enumerate(lines) if line.split() == HEADERS)
    rule = lines[at + 1]
    starts = [i for i, ch in enumerate(rule) if ch == "-" and (i == 0 or rule[i - 1] == " ")]
    spans = list(zip(starts, [*starts[1:], None]))
    return [[line[a:b].strip() for a, b in spans] for line in lines[at + 2:] if line.strip()]


def row(case: str, answers: tuple[str, str], probs: tuple[float, float], gained: int, lost: int,
        passed: tuple[bool, bool]) -> CaseComparison:
    return CaseComparison(case, "f.yaml", *answers, *probs, gained={0: [f"+{i}" for i in range(gained)]} if gained
                          else {}, lost={0: [f"-{i}" for i in range(lost)]} if lost else {},
                          base_passed=passed[0], new_passed=passed[1])


def test_summary_ranks_answer_changes_then_verdict_flips_then_churn_then_probability() -> None:
    rows = [
        row("same", ("red", "red"), (0.9, 0.9), 0, 0, (True, True)),
        row("p-only", ("red", "red"), (0.9, 0.7), 0, 0, (True, True)),
        row("churn", ("red", "red"), (0.9, 0.9), 2, 1, (True, True)),
        row("flip", ("red", "red"), (0.9, 0.9), 0, 0, (True, False)),
        row("answer", ("red", "blue"), (0.9, 0.2), 0, 1, (True, False)),
    ]
    assert [c.case_id for c in changed_cases(rows)] == ["answer", "flip", "churn", "p-only"]
    text = render_comparison(rows, Style(False))
    assert "\n4 of 5 case(s) changed (most-changed first)\n" in text
    assert summary_table(text) == [
        ["answer", "red → blue", "-0.700", "0", "1", "pass → FAIL", "-"],  # no explanation recorded here
        ["flip", "red → red", "+0.000", "0", "0", "pass → FAIL", "-"],
        ["churn", "red → red", "+0.000", "2", "1", "pass → pass", "-"],
        ["p-only", "red → red", "-0.200", "0", "0", "pass → pass", "-"],
    ]
    assert "answer (f.yaml): 'red' → 'blue' [answer changed], p 0.900 → 0.200" in text
    assert "same (f.yaml): 'red' → 'red' [same answer], p 0.900 → 0.900" in text


def test_summary_of_nothing_changed_says_none() -> None:
    text = render_comparison([row("same", ("red", "red"), (0.5, 0.5), 0, 0, (False, False))], Style(False))
    assert text.splitlines()[-2:] == ["0 of 1 case(s) changed (most-changed first)", "  (none)"]


def measured(files: list[Path], models: tuple[str, str], sae_ref: str) -> dict[str, dict]:
    """What compare must report per case, measured by running the case on each model directly: both answers,
    both probabilities, and per token the concepts that entered / left its top 3 (the drift rule's top-k)."""
    from vsp_assert import Scratchpad, load_model, load_sae
    from vsp_assert.checks.load import parse_case_file

    sae = load_sae(sae_ref)
    pads = [Scratchpad(load_model(m), sae) for m in models]
    out = {}
    for path in files:
        for case in parse_case_file(path, allow_outside_root=True).cases:
            if hasattr(case, "rows"):  # dataset cases (each:) are not compared
                continue
            image = case.load_image()
            base, new = (pad.run(image, case.prompt, max_new_tokens=case.max_new_tokens) for pad in pads)
            gained: dict[str, list[str]] = {}
            lost: dict[str, list[str]] = {}
            for t in range(min(base.n_tokens, new.n_tokens)):
                then = [i for i, _ in base.top_concepts(t, case.tolerance.top_k)]
                now = [i for i, _ in new.top_concepts(t, case.tolerance.top_k)]
                entered = [new.display(i) for i in now if i not in then]
                left = [base.display(i) for i in then if i not in now]
                gained.update({str(t): entered} if entered else {})
                lost.update({str(t): left} if left else {})
            out[case.id] = {"answer": [base.answer, new.answer], "p": [base.answer_prob, new.answer_prob],
                            "gained_names": gained, "lost_names": lost,
                            "gained": sum(map(len, gained.values())), "lost": sum(map(len, lost.values()))}
    return out


def check_report(text: str, rows: list[dict], want: dict[str, dict]) -> None:
    """The JSON rows, the per-case lines and the summary table of one compare run all show the measured values;
    the table lists exactly the changed cases, most-changed first."""
    assert {r["case"] for r in rows} == set(want)
    for r in rows:
        w = want[r["case"]]
        assert r["answer"] == w["answer"]
        assert r["answer_prob"] == pytest.approx(w["p"], abs=1e-4)
        assert (r["gained"], r["lost"]) == (w["gained_names"], w["lost_names"])
        verdict = "same answer" if w["answer"][0] == w["answer"][1] else "answer changed"
        assert (f"{r['case']} ({r['file']}): {w['answer'][0]!r} → {w['answer'][1]!r} [{verdict}], "
                f"p {w['p'][0]:.3f} → {w['p'][1]:.3f}") in text
    changed = {r["case"]: r for r in rows if r["change"] > 0.01}
    assert f"\n{len(changed)} of {len(rows)} case(s) changed (most-changed first)\n" in text
    table = summary_table(text)
    assert sorted(cells[0] for cells in table) == sorted(changed)
    changes = [changed[cells[0]]["change"] for cells in table]
    assert changes == sorted(changes, reverse=True), "most-changed first"
    for cells in table:
        r, w = changed[cells[0]], want[cells[0]]
        passed = " → ".join("pass" if ok else "FAIL" for ok in r["passed"])
        why = r["explanation"]["sentence"] if r["explanation"] is not None else "-"  # a flip says why
        assert (r["explanation"] is not None) == (w["answer"][0] != w["answer"][1])
        assert cells[1:] == [" → ".join(w["answer"]).strip(), f"{w['p'][1] - w['p'][0]:+.3f}", str(w["gained"]),
                             str(w["lost"]), passed, why]


def test_compare_reports_each_case_measured_on_both_models(tmp_path, saved, perturbed, capsys):
    (tmp_path / "cases.yaml").write_text(CASES)
    shutil.copy(saved["image"], tmp_path / "img.png")
    out_json = tmp_path / "cmp.json"
    rc = main(["compare", "--base", saved["model"], "--new", perturbed, "--sae", saved["sae"], "--color", "no",
               "--json", str(out_json), str(tmp_path)])
    assert rc == 0
    rows = json.loads(out_json.read_text())
    assert all(r["passed"] == [True, True] for r in rows)
    want = measured([tmp_path / "cases.yaml"], (saved["model"], perturbed), saved["sae"])
    assert any(w["answer"][0] != w["answer"][1] for w in want.values()), "the perturbation changes an answer"
    check_report(capsys.readouterr().out, rows, want)


def test_compare_same_model_changes_nothing(tmp_path, saved, capsys):
    (tmp_path / "cases.yaml").write_text(CASES)
    shutil.copy(saved["image"], tmp_path / "img.png")
    out_json = tmp_path / "cmp.json"
    rc = main(["compare", "--base", saved["model"], "--new", saved["model"], "--sae", saved["sae"], "--color", "no",
               "--fail-on-change", "--json", str(out_json), str(tmp_path / "cases.yaml")])
    assert rc == 0
    assert "0 of 2 case(s) changed" in capsys.readouterr().out
    for r in json.loads(out_json.read_text()):
        assert r["answer"][0] == r["answer"][1] and r["answer_prob"][0] == r["answer_prob"][1]
        assert (r["gained"], r["lost"], r["change"]) == ({}, {}, 0.0)


def test_compare_missing_path_is_a_clear_error(tmp_path, saved, capsys):
    rc = main(["compare", "--base", saved["model"], "--new", saved["model"], "--sae", saved["sae"],
               str(tmp_path / "nope")])
    assert rc == 2
    assert "no such case file or folder" in capsys.readouterr().err


def test_compare_shapes_model_with_a_perturbed_copy(tmp_path, capsys):
    """The shipped shapes model against a copy with one LM layer perturbed: the bundled cases show the drift."""
    from vsp_assert.shapes import SAE_DIR

    if not (SAE_DIR / "cfg.json").exists():
        pytest.skip("the shapes artifacts are not built")
    assert main(["shapes", "perturb", "--out", str(tmp_path / "v2"), "--layer", "1", "--scale", "1.0"]) == 0
    cases = Path(__file__).resolve().parents[1] / "cases"
    out_json = tmp_path / "cmp.json"
    assert main(["compare", "--base", "shapes", "--new", str(tmp_path / "v2"), "--color", "no", "--json",
                 str(out_json), str(cases)]) == 0
    rows = json.loads(out_json.read_text())
    assert len(rows) >= 12
    assert all(r["passed"] == [True, True] for r in rows)  # the bundled cases pass on the shipped model
    assert any(r["gained"] or r["lost"] for r in rows)  # the drift shows as concept churn
    want = measured(sorted(cases.glob("*.yaml")), ("shapes", str(tmp_path / "v2")), "shapes")
    check_report(capsys.readouterr().out, rows, want)
