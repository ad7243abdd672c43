"""Python cases with the fluent API on the ``scratchpad`` fixture, as a user writes them."""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET

PROMPT = "what color is the square ?"


def direct_ablation(saved, latent):
    """The ablation of ``#latent`` measured directly, outside pytest, on the same saved model and SAE."""
    import vsp_assert
    from vsp_assert import Intervention

    pad = vsp_assert.Scratchpad(vsp_assert.load_model(saved["model"]), vsp_assert.load_sae(saved["sae"]),
                                max_new_tokens=3)
    trace = pad.run(saved["image"], PROMPT)
    return pad.intervene(trace, [Intervention.ablate(f"#{latent}")])[0]


def test_fluent_assertions_pass_and_fail_with_evidence(vsp, saved):
    vsp.makepyfile(test_fluent=f"""
        def test_good(scratchpad):
            trace = scratchpad.run("img.png", "what color is the square ?")
            trace.assert_answer({saved['answer']!r})
            trace.assert_attended(0, "#{saved['top_latent']}", top_k=3)
            trace.assert_causal(ablate=["#{saved['top_latent']}"], min_drop=-1.0)

        def test_bad(scratchpad):
            trace = scratchpad.run("img.png", "what color is the square ?")
            trace.assert_captured("#{saved['absent']}", min_score=100.0)
    """)
    result = vsp.runpytest("--junitxml=out.xml", "--vsp-report", "out")
    result.assert_outcomes(passed=1, failed=1)
    result.stdout.fnmatch_lines([
        "*trace.assert_captured(*",  # the failure points at the user's line
        "E * is captured: expected captured (score > 100), measured score*",
        "*vsp-assert: concept evidence*",
        "*FAIL*captured*",
        "*token-latent heatmap*",
    ])
    assert "assertions.py" not in result.stdout.str()  # __tracebackhide__ hides our frames
    # min_drop=-1.0 cannot fail: the figures the plugin reports must equal a direct ablation on the same model
    direct = direct_ablation(saved, saved["top_latent"])
    props = {p.get("name"): p.get("value") for p in ET.parse(vsp.path / "out.xml").iter("property")}
    drops = [float(v) for k, v in props.items() if k.startswith("vsp_drop[")]
    assert drops == [float(f"{direct.drop:.6g}")]
    report = json.loads((vsp.path / "out" / "report.json").read_text(encoding="utf-8"))
    good, = (c for c in report["results"] if c["nodeid"].endswith("test_good"))
    shown = [r["intervention"] for r in good["records"] if r.get("intervention")]
    assert len(shown) == 1
    assert shown[0]["drop"] == direct.drop
    assert shown[0]["p_after"] == direct.p_after
    assert shown[0]["answer_after"] == direct.answer_after


def test_vsp_error_in_a_test_is_one_message(vsp):
    vsp.makepyfile(test_err="""
        def test_typo(scratchpad):
            scratchpad.run("img.png", "what color is the square ?").assert_captured("bleu")
    """)
    result = vsp.runpytest()
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(["vsp-assert: unknown concept 'bleu'*", "*did you mean 'blue'*"])
    assert "Traceback" not in result.stdout.str()


def test_show_prints_the_view_of_passing_cases_without_other_flags(vsp, saved):
    vsp.makepyfile(test_show="""
        def test_ok(scratchpad):
            scratchpad.run("img.png", "what color is the square ?")
    """)
    vsp.makefile(".yaml", test_show_yaml="""
cases:
  - id: passing-yaml
    image: img.png
    prompt: "what color is the square ?"
    expect: {answer: {not: "zzz"}}
""")
    quiet = vsp.runpytest()
    assert "token-latent heatmap" not in quiet.stdout.str()
    shown = vsp.runpytest("--vsp-show")
    shown.assert_outcomes(passed=2)
    shown.stdout.fnmatch_lines(["*vsp-assert: passing cases*", "*test_show.py::test_ok*passed*",
                                "*token-latent heatmap*", "*test_show_yaml.yaml::passing-yaml*passed*"])
    assert shown.stdout.str().count("token-latent heatmap") == 2  # once each, not again with -rP
    assert vsp.runpytest("--vsp-show", "-rP").stdout.str().count("token-latent heatmap") == 2


def test_passing_fluent_checks_count_as_concept_cases(vsp, saved):
    vsp.makepyfile(test_count=f"""
        def test_ok(scratchpad):
            scratchpad.run("img.png", "what color is the square ?").assert_answer({saved['answer']!r})

        def test_two_traces(scratchpad):
            scratchpad.run("img.png", "what color is the square ?").assert_answer({saved['answer']!r})
            scratchpad.run("img.png", "is there a red circle ?").assert_answer(not_="zzz")

        def test_unchecked(scratchpad):
            scratchpad.run("img.png", "what color is the square ?")
    """)
    result = vsp.runpytest()
    result.assert_outcomes(passed=3)
    result.stdout.fnmatch_lines(["3 concept case(s) recorded, 0 with failing checks;*model loads this session: 1"])


def test_failing_python_case_records_junit_properties(vsp, saved):
    vsp.makepyfile(test_props="""
        def test_bad(scratchpad):
            scratchpad.run("img.png", "what color is the square ?").assert_answer("not this")
    """)
    vsp.runpytest("--junitxml=out.xml").assert_outcomes(failed=1)
    props = {p.get("name"): p.get("value") for p in ET.parse(vsp.path / "out.xml").iter("property")}
    assert props["vsp_answer"] == saved["answer"] and props["vsp_failed_checks"] == "1"
