"""YAML cases as a user writes them: collection, pass, fail with heatmap, marks, ids, collection errors."""

from __future__ import annotations

import xml.etree.ElementTree as ET

PROMPT = "what color is the square ?"  # the prompt the 'saved' fixture answered


def direct_figures(saved, latent):
    """Answer probability and the ablation drop of ``#latent``, measured directly on the saved model and SAE,
    rounded to the 6 significant digits the plugin writes into JUnit properties."""
    import vsp_assert
    from vsp_assert import Intervention

    pad = vsp_assert.Scratchpad(vsp_assert.load_model(saved["model"]), vsp_assert.load_sae(saved["sae"]),
                                max_new_tokens=3)
    trace = pad.run(saved["image"], PROMPT)
    effect, = pad.intervene(trace, [Intervention.ablate(f"#{latent}")])
    return float(f"{trace.answer_prob:.6g}"), float(f"{effect.drop:.6g}")


def junit_properties(path):
    return {p.get("name"): p.get("value") for p in ET.parse(path).iter("property")}


def case_file(saved, **expect_overrides):
    answer = expect_overrides.get("answer", saved["answer"])
    latent = expect_overrides.get("latent", saved["top_latent"])
    return f"""
cases:
  - id: right-answer
    image: img.png
    prompt: "{PROMPT}"
    expect:
      answer: "{answer}"
      captured: ["#{latent}", {{concept: "#{saved['absent']}", absent: true}}]
      attended:
        - token: 0
          concepts: ["#{latent}"]
          top_k: 3
      causal:
        - ablate: ["#{latent}"]
          min_drop: -1.0
"""


def test_passing_case_file(vsp, saved):
    vsp.makefile(".yaml", test_cases=case_file(saved))
    result = vsp.runpytest("-v", "--junitxml=out.xml")
    result.assert_outcomes(passed=1)
    result.stdout.fnmatch_lines(["*test_cases.yaml::right-answer PASSED*"])
    # min_drop: -1.0 cannot fail; the measured drop it passed with must be the one a direct ablation gives
    prob, drop = direct_figures(saved, saved["top_latent"])
    props = junit_properties(vsp.path / "out.xml")
    assert float(props[f"vsp_drop[ablate [#{saved['top_latent']}]]"]) == drop
    assert float(props["vsp_answer_prob"]) == prob


def test_failing_case_prints_records_and_heatmap(vsp, saved):
    vsp.makefile(".yaml", test_cases=case_file(saved, answer="definitely not this"))
    result = vsp.runpytest()
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines([
        "*test_cases.yaml::right-answer*FAILED*(1 of 5 checks failed)*",
        "*FAIL*answer*'definitely not this'*",
        "*pass*attended*",
        "*token-latent heatmap*",
        f"*#{saved['top_latent']}*",
    ])
    assert "Traceback" not in result.stdout.str()


def test_xfail_and_skip_marks(vsp, saved):
    vsp.makefile(".yaml", test_marks=f"""
cases:
  - id: known-bad
    image: img.png
    prompt: "{PROMPT}"
    expect: {{answer: "nope"}}
    marks: [{{xfail: "model says something else"}}]
  - id: later
    image: img.png
    prompt: "{PROMPT}"
    expect: {{answer: "nope"}}
    marks: [skip]
  - id: strict-xfail-passes
    image: img.png
    prompt: "{PROMPT}"
    expect: {{answer: "{saved['answer']}"}}
    marks: [xfail]
""")
    result = vsp.runpytest("-rxXs")
    result.assert_outcomes(xfailed=1, skipped=1, failed=1)
    result.stdout.fnmatch_lines(["*XFAIL*known-bad*model says something else*"])


def test_invalid_case_is_a_collection_error_with_file_line_and_closest_key(vsp, saved):
    vsp.makefile(".yaml", test_bad=f"""
cases:
  - id: typo
    image: img.png
    prompt: "{PROMPT}"
    expect:
      answr: red
""")
    result = vsp.runpytest()
    assert result.ret == 2  # collection error, not a test failure
    out = result.stdout.str()
    assert "test_bad.yaml:6: field 'cases[0].expect.answr': unknown key 'answr' in expect" in out
    assert "allowed: answer, captured, attended, attributed, causal" in out
    assert "did you mean 'answer'" in out
    assert "model loads this session" not in result.stdout.str()  # nothing was loaded


def test_missing_image_is_reported_at_collection(vsp, saved):
    vsp.makefile(".yaml", test_img=f"""
cases:
  - id: no-image
    image: images/missing.png
    prompt: "{PROMPT}"
    expect: {{answer: red}}
""")
    result = vsp.runpytest()
    assert "test_img.yaml:3: field 'cases[0].image': image file not found" in result.stdout.str()


def test_unknown_concept_is_one_clear_line(vsp, saved):
    vsp.makefile(".yaml", test_concept=f"""
cases:
  - id: typo-concept
    image: img.png
    prompt: "{PROMPT}"
    expect:
      captured: [rde]
""")
    result = vsp.runpytest()
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(["*unknown concept 'rde'*did you mean 'red'*"])
    assert "torch" not in result.stdout.str().split("short test summary")[0].split("typo-concept")[-1]


def test_yaml_files_without_cases_key_are_ignored(vsp):
    vsp.makefile(".yaml", config="steps:\n  - run: echo hi\n")
    result = vsp.runpytest()
    assert result.ret == 5  # no tests collected


def test_key_figures_become_junit_properties(vsp, saved):
    vsp.makefile(".yaml", test_props=case_file(saved))
    vsp.runpytest("--junitxml=out.xml").assert_outcomes(passed=1)
    props = junit_properties(vsp.path / "out.xml")
    prob, drop = direct_figures(saved, saved["top_latent"])
    assert props["vsp_answer"] == saved["answer"]
    assert float(props["vsp_answer_prob"]) == prob and props["vsp_failed_checks"] == "0"
    assert props["vsp_checks"] == "5" and props["vsp_top_concepts"]
    assert [float(v) for name, v in props.items() if name.startswith("vsp_drop[")] == [drop]
