"""vsp-assert combined with the pytest plugins a user's CI adds: xdist, rerunfailures, hypothesis, --tb styles."""

from __future__ import annotations

import json
import re

from vsp_assert.checks.assertions import AssertionRecord, CaseResult

PROMPT = "what color is the square ?"


def _yaml(answer: str) -> str:
    return f"""
cases:
  - id: right
    image: img.png
    prompt: "{PROMPT}"
    expect: {{answer: "{answer}"}}
  - id: wrong
    image: img.png
    prompt: "{PROMPT}"
    expect: {{answer: "zzz"}}
"""


def test_under_xdist_the_controller_reports_the_workers_cases_loads_and_colour(vsp, saved):
    vsp.makefile(".yaml", test_cases=_yaml(saved["answer"]))
    vsp.makepyfile(test_fluent=f"""
        def test_checked(scratchpad):
            scratchpad.run("img.png", "{PROMPT}").assert_answer({saved['answer']!r})
    """)
    vsp.makeconftest("""
        import pytest

        @pytest.hookimpl(trylast=True)
        def pytest_configure(config):
            if not hasattr(config, "workerinput"):  # the controller is on a terminal, its workers are not
                config.get_terminal_writer().hasmarkup = True
    """)
    result = vsp.runpytest("-n", "2", "-v", "--vsp-report", "out/")
    result.assert_outcomes(passed=2, failed=1)
    out = result.stdout.str()
    workers = set(re.findall(r"\[(gw\d)\]", out))
    assert workers and re.search(rf"3 concept case\(s\) recorded, 1 with failing checks;.*"
                                 rf"model loads this session: {len(workers)}\b", out)
    assert "2 case(s) have no baseline entry" in out
    assert "\x1b[48;5;" in out  # the failure view's shaded heatmap: the workers used the controller's colour
    assert "HTML report: out/index.html" in out
    doc = json.loads((vsp.path / "out" / "report.json").read_text())
    assert (doc["cases"], doc["failed"]) == (3, 1)
    assert doc["results"][0]["nodeid"] == "test_cases.yaml::wrong"
    page = (vsp.path / "out" / "index.html").read_text()
    assert [page.count(f'id="case-{i}"') for i in range(4)] == [1, 1, 1, 0]


def test_a_rerun_case_counts_once(vsp, saved):
    vsp.makefile(".yaml", test_cases=_yaml(saved["answer"]))
    result = vsp.runpytest("-p", "rerunfailures", "--reruns", "2")
    assert result.parseoutcomes() == {"passed": 1, "failed": 1, "rerun": 2}
    result.stdout.fnmatch_lines([
        "2 concept case(s) recorded, 1 with failing checks;*model loads this session: 1",
        "2 case(s) have no baseline entry*",
    ])


def test_tb_line_and_the_short_summary_name_the_first_failing_check(vsp, saved, monkeypatch):
    monkeypatch.setenv("COLUMNS", "200")
    vsp.makefile(".yaml", test_line=_yaml(saved["answer"]))
    result = vsp.runpytest("--tb=line", "-rf")
    result.assert_outcomes(passed=1, failed=1)
    out = result.stdout.str()
    check = "answer == 'zzz': measured 'yellow image' (p=0.000)".replace("yellow image", saved["answer"])
    line = (vsp.path / "test_line.yaml").read_text().splitlines().index("  - id: wrong") + 1
    assert [text for text in out.splitlines() if check in text] == [
        f"test_line.yaml:{line}: {check}",  # --tb=line: one line per failing case
        f"FAILED test_line.yaml::wrong - {check}",  # the short summary
    ]
    assert "token-latent heatmap" not in out
    full = vsp.runpytest().stdout.str()
    assert "token-latent heatmap" in full and f"FAILED test_line.yaml::wrong - {check}" in full


def test_an_unhandled_error_in_a_case_shows_its_cause_not_pytest_internals(vsp, saved):
    vsp.makefile(".yaml", test_boom=_yaml(saved["answer"]))
    vsp.makeconftest("""
        import torch

        def boom(module, args):
            raise RuntimeError("simulated failure inside torch")

        def pytest_runtest_call(item):
            item.hook_handle = torch.nn.modules.module.register_module_forward_pre_hook(boom)

        def pytest_runtest_teardown(item):
            item.hook_handle.remove()
    """)
    result = vsp.runpytest()
    result.assert_outcomes(failed=2)
    failures = result.stdout.str().split("= FAILURES =")[1].split("short test summary")[0]
    assert failures.count("RuntimeError: simulated failure inside torch") == 2
    assert "collect.py" in failures and "vsp_assert/checks/assertions.py" in failures  # the project's frames
    for internal in ("pluggy", "_pytest/", "torch/nn/modules/module.py"):
        assert internal not in failures
    assert len(failures.splitlines()) < 120
    assert "pluggy" in vsp.runpytest("--fulltrace").stdout.str()  # still there on request


def test_a_hypothesis_test_is_one_case_however_many_examples_run(vsp, saved):
    vsp.makepyfile(test_prop=f"""
        from hypothesis import given, settings, strategies as st

        @settings(max_examples=4, deadline=None, database=None)
        @given(st.sampled_from(["{PROMPT}", "is there a red circle ?"]))
        def test_any_prompt(scratchpad, prompt):
            scratchpad.run("img.png", prompt).assert_answer(not_="zzz")
    """)
    result = vsp.runpytest("--vsp-show")
    result.assert_outcomes(passed=1)
    out = result.stdout.str()
    assert "1 concept case(s) recorded, 0 with failing checks" in out
    assert out.count("token-latent heatmap") == 1


def test_the_report_assembled_from_digests_is_the_report_of_the_traces(pad, images, tmp_path):
    from vsp_assert.pytest_plugin.digest import digest, render_page
    from vsp_assert.render.html import render_report, report_json

    def record(ok: bool) -> AssertionRecord:
        return AssertionRecord("answer", "answer == 'x'", "'x'", "'y'", ok, latents=[1, 3], tokens=[0],
                               concept="red")

    results = [(f"test_x.py::t{i}", CaseResult(None, pad.run(image, "what is it ?"), [record(ok)]))
               for i, (image, ok) in enumerate(zip(images, (True, False, True)))]
    digests = [digest(nodeid, r, show=None, report=True, top_k=5) for nodeid, r in results]
    digests = [json.loads(json.dumps(d)) for d in digests]  # plain data, as xdist ships it
    page, doc = render_page(digests, title="vsp-assert report")
    traces = [(nodeid, r.trace, r.records) for nodeid, r in results]
    assert page == render_report(traces, title="vsp-assert report", top_k=5)
    ordered = [traces[1], traces[0], traces[2]]
    assert doc == report_json(ordered, "vsp-assert report")
