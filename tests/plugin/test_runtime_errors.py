"""Bad input in a YAML case keeps its place: file, line, field, what was received, what is allowed.

What collection can see (an image path that is a folder, a file whose top level is a list) fails collection
before any model loads; what only a run can see (a concept the SAE does not know) fails that one check, naming
its field and line, while the case's other checks still run and are reported.
"""

from __future__ import annotations

import pytest

PROMPT = "what color is the square ?"  # the prompt the 'saved' fixture answered


def _case_items(reprec: pytest.HookRecorder) -> list:
    return [call.item for call in reprec.getcalls("pytest_itemcollected")]


def test_an_unknown_concept_fails_its_own_check_and_the_other_checks_are_reported(vsp, saved):
    vsp.makefile(".yaml", test_typo=f"""
cases:
  - id: typo
    image: img.png
    prompt: "{PROMPT}"
    expect:
      answer: "{saved['answer']}"
      captured: ["#{saved['top_latent']}", rde]
      causal:
        - {{ablate: [strips], changes: true}}
        - {{ablate: ["#{saved['top_latent']}"], min_drop: -1.0}}
""")
    reprec = vsp.inline_run()
    reprec.assertoutcome(failed=1)
    (item,) = _case_items(reprec)
    assert item.result is not None, "the case ran to the end instead of stopping at the unknown concept"
    records = [(r.kind, r.passed, r.measured) for r in item.result.records]
    assert [(kind, passed) for kind, passed, _ in records] == [
        ("answer", True), ("captured", True), ("captured", False), ("causal", False), ("causal", True)]
    # makefile drops the leading newline: 'captured' is line 7, the causal items lines 9 and 10
    assert records[2][2] == "unknown concept 'rde' (did you mean 'red'?) at cases[0].expect.captured[1], line 7"
    assert records[3][2].startswith("unknown concept 'strips' (did you mean 'stripes'?) at "
                                    "cases[0].expect.causal[0].ablate[0], line 9")
    assert item.result.records[4].intervention is not None  # the good spec's intervention still ran


def test_an_unknown_concept_is_shown_in_the_case_report_not_as_an_error(vsp, saved):
    vsp.makefile(".yaml", test_typo=f"""
cases:
  - id: typo
    image: img.png
    prompt: "{PROMPT}"
    expect:
      answer: "{saved['answer']}"
      attended: [{{token: 0, concepts: [bleu]}}]
""")
    result = vsp.runpytest()
    result.assert_outcomes(failed=1)
    out = result.stdout.str()
    assert "(1 of 2 checks failed)" in out  # the case's report, with every check, not a one-line error
    assert "unknown concept 'bleu'" in out and "vsp-assert: " + str(vsp.path) not in out


def test_an_image_path_that_is_a_folder_fails_collection_with_its_line(vsp):
    (vsp.path / "photos").mkdir()
    vsp.makefile(".yaml", test_folder=f"""
cases:
  - id: folder
    prompt: "{PROMPT}"
    image: photos
    expect: {{answer: red}}
""")
    result = vsp.runpytest()
    result.assert_outcomes(errors=1)
    out = result.stdout.str()
    path = vsp.path / "test_folder.yaml"
    assert f"{path}:4: field 'cases[0].image': expected an image file, got a folder" in out
    assert f"{path}:2:2" not in out and f"{path}:4:4" not in out
    assert "model loads this session: 1" not in out  # refused before any model loaded


def test_a_case_file_with_a_list_at_the_top_fails_collection(vsp):
    vsp.makefile(".yaml", test_list=f"""
- cases:
    - id: listed
      image: img.png
      prompt: "{PROMPT}"
      expect: {{answer: red}}
""")
    result = vsp.runpytest()
    result.assert_outcomes(errors=1)
    out = result.stdout.str()
    path = vsp.path / "test_list.yaml"
    assert (f"{path}:1: field '[0].cases': the top level is a list; a case file is a mapping with a 'cases:' key"
            in out)
    assert "fix: remove the '- ' in front of line 1" in out


def test_a_misspelt_cases_key_fails_collection_instead_of_being_skipped(vsp):
    vsp.makefile(".yaml", test_typo_key=f"""
case:
  - id: singular
    image: img.png
    prompt: "{PROMPT}"
    expect: {{answer: red}}
""")
    result = vsp.runpytest()
    result.assert_outcomes(errors=1)
    assert "field 'case': unknown key 'case' in a case file" in result.stdout.str()


def test_unrelated_yaml_files_in_the_tree_are_not_collected(vsp, saved):
    vsp.makefile(".yml", ci="""
name: tests
on: push
jobs:
  test:
    strategy:
      matrix:
        cases: [unit, e2e]
    steps:
      - run: pytest
""")
    vsp.makefile(".yml", **{"docker-compose": "services:\n  web:\n    image: nginx\n"})
    vsp.makefile(".yaml", test_ok=f"""
cases:
  - id: fine
    image: img.png
    prompt: "{PROMPT}"
    expect: {{answer: "{saved['answer']}"}}
""")
    result = vsp.runpytest("-v")
    result.assert_outcomes(passed=1)
    assert "ci.yml" not in result.stdout.str() and "docker-compose" not in result.stdout.str()
