"""Session behaviour: one model load however many cases run; colour only where it belongs."""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET

ANSI = re.compile(r"\x1b\[[0-9;]*m")


def _cases(n, prompt="what color is the square ?"):
    body = "".join(f"""
  - id: case-{i}
    image: img.png
    prompt: "{prompt}"
    expect:
      answer: {{not: "zzz"}}
""" for i in range(n))
    return "cases:" + body


def test_model_is_loaded_once_for_yaml_and_python_cases(vsp, saved):
    vsp.makefile(".yaml", test_many=_cases(6))
    vsp.makepyfile(test_fixtures="""
        import pytest
        @pytest.mark.parametrize("i", range(3))
        def test_uses_fixtures(scratchpad, vsp_model, vsp_sae, i):
            assert scratchpad.loaded is vsp_model and scratchpad.sae is vsp_sae
    """)
    result = vsp.runpytest("--junitxml=out.xml")
    result.assert_outcomes(passed=9)
    result.stdout.fnmatch_lines(["*model loads this session: 1*"])
    # `not: "zzz"` cannot fail: each case's recorded answer must be the one a direct run gives
    import vsp_assert

    pad = vsp_assert.Scratchpad(vsp_assert.load_model(saved["model"]), vsp_assert.load_sae(saved["sae"]),
                                max_new_tokens=3)
    direct = pad.run(saved["image"], "what color is the square ?").answer
    answers = {case.get("name"): [p.get("value") for p in case.iter("property") if p.get("name") == "vsp_answer"]
               for case in ET.parse(vsp.path / "out.xml").iter("testcase") if "yaml" in case.get("classname", "")}
    assert answers == {f"case-{i}": [direct] for i in range(6)}


def test_no_colour_when_not_a_tty(vsp):
    vsp.makefile(".yaml", test_fail=_cases(1).replace('{not: "zzz"}', '"zzz"'))
    result = vsp.runpytest()
    result.assert_outcomes(failed=1)
    assert "token-latent heatmap" in result.stdout.str()
    assert not ANSI.search(result.stdout.str())


def test_colour_on_request_and_off_with_no_color(vsp, monkeypatch):
    vsp.makefile(".yaml", test_fail=_cases(1).replace('{not: "zzz"}', '"zzz"'))
    coloured = vsp.runpytest("--vsp-color", "yes")
    assert "\x1b[48;5;" in coloured.stdout.str()  # shaded heatmap cells
    monkeypatch.setenv("NO_COLOR", "1")
    monkeypatch.setenv("FORCE_COLOR", "")
    plain = vsp.runpytest("--color", "yes")
    assert "\x1b[48;5;" not in plain.stdout.str()


def test_no_hook_survives_a_case(vsp):
    """After every case — passing, failing, with interventions — the model carries no vsp-assert hook."""
    cases = _cases(4).replace('expect:\n      answer: {not: "zzz"}',
                              'expect:\n      answer: {not: "zzz"}\n      causal: [{ablate: [red], min_drop: -1.0}]')
    vsp.makefile(".yaml", test_hooks=cases + """
  - id: failing
    image: img.png
    prompt: "what color is the square ?"
    expect: {answer: "zzz", causal: [{ablate: [blue], changes: true}]}
""")
    vsp.makeconftest("""
        import pytest
        from vsp_assert.engine.hooks import count_hooks
        from vsp_assert.pytest_plugin.session import vsp_session

        counts = []
        forwards = []

        @pytest.hookimpl(trylast=True)
        def pytest_runtest_teardown(item):
            pads = vsp_session(item.config).pads.values()
            counts.extend(count_hooks(pad.model) for pad in pads)
            forwards.append(sum(pad.stats["intervention_forward"] for pad in pads))

        def pytest_terminal_summary(terminalreporter):
            terminalreporter.write_line(f"HOOK COUNTS {counts}")
            terminalreporter.write_line(f"INTERVENTION FORWARDS {forwards}")
    """)
    result = vsp.runpytest()
    result.assert_outcomes(passed=4, failed=1)
    result.stdout.fnmatch_lines(["HOOK COUNTS [[]0, 0, 0, 0, 0[]]"])
    # `min_drop: -1.0` cannot fail: every case must actually have run its intervention (one batched forward each);
    # the failing case names its right answer ('zzz'), so its why-not explanation adds one more batched forward
    result.stdout.fnmatch_lines(["INTERVENTION FORWARDS [[]1, 2, 3, 4, 6[]]"])


def test_the_model_loads_in_setup_not_in_the_first_cases_call(vsp):
    """--durations and per-test timeouts charge the load to fixture setup, as for a Python test's fixtures."""
    vsp.makefile(".yaml", test_setup=_cases(2))
    vsp.makeconftest("""
        import pytest
        from vsp_assert.pytest_plugin.session import vsp_session

        at_call = []

        @pytest.hookimpl(tryfirst=True)
        def pytest_runtest_call(item):
            at_call.append(vsp_session(item.config).loads)

        def pytest_terminal_summary(terminalreporter):
            terminalreporter.write_line(f"LOADS AT CALL {at_call}")
    """)
    result = vsp.runpytest()
    result.assert_outcomes(passed=2)
    result.stdout.fnmatch_lines(["LOADS AT CALL [[]1, 1[]]"])


def test_a_model_that_fails_to_load_is_one_setup_error(vsp, tmp_path):
    vsp.makefile(".yaml", test_setup=_cases(1))
    result = vsp.runpytest(f"--vsp-model={tmp_path / 'no-such-model'}")
    result.assert_outcomes(errors=1)
    errors = result.stdout.str().split("= ERRORS =")[1].split("short test summary")[0]
    assert "ERROR at setup of vsp case case-0" in errors
    assert errors.splitlines()[2].startswith("vsp-assert: cannot read the model")
    assert "Traceback" not in errors and "pluggy" not in errors and len(errors.splitlines()) < 8
