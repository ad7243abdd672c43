"""Options: one --vsp-* group, ini twins, command line beats ini, bad values are usage errors."""

from __future__ import annotations

import subprocess
import sys


def test_cli_beats_ini_beats_default(pytester):
    pytester.makeini("""
        [pytest]
        vsp_top_k = 3
        vsp_layers = 0,1
    """)
    pytester.makepyfile(test_cfg="""
        import sys
        def test_values(vsp_config, request):
            want = int(request.config.getoption("want_top_k"))
            assert vsp_config.top_k == want
            assert vsp_config.layers == "0,1"
            assert vsp_config.model == "shapes"   # default untouched
    """)
    pytester.makeconftest("""
        def pytest_addoption(parser):
            parser.addoption("--want-top-k")
    """)
    pytester.runpytest("--want-top-k", "3").assert_outcomes(passed=1)
    pytester.runpytest("--want-top-k", "2", "--vsp-top-k", "2").assert_outcomes(passed=1)


def test_bad_option_value_is_a_usage_error(pytester):
    result = pytester.runpytest("--vsp-top-k", "0")
    assert result.ret == 4
    result.stderr.fnmatch_lines(["*--vsp-top-k / ini vsp_top_k: received 0; allowed: a positive integer*"])


def test_help_lists_the_group_and_does_not_import_torch(tmp_path):
    code = (
        "import sys, pytest\n"
        "rc = pytest.main(['--help', '-p', 'no:benchmark'])\n"
        "print('TORCH_LOADED', 'torch' in sys.modules, 'transformers' in sys.modules)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, check=True)
    assert "vsp-assert: concept-level tests of vision-language models" in out.stdout
    for flag in ("--vsp-model", "--vsp-sae", "--vsp-device", "--vsp-dtype", "--vsp-layers", "--vsp-top-k",
                 "--vsp-color", "--vsp-show"):
        assert flag in out.stdout
    assert "TORCH_LOADED False False" in out.stdout


def test_help_shows_each_options_default(pytester):
    out = pytester.runpytest("--help").stdout.str()
    flat = " ".join(out.split())  # argparse wraps the help text
    for flag, default in (("--vsp-model", "shapes"), ("--vsp-top-k", "5"), ("--vsp-color", "auto"),
                          ("--vsp-show", "off"), ("--vsp-report", "none")):
        help_text = flat.split(flag, 1)[1].split("--vsp-", 1)[0]
        assert f"(default: {default})" in help_text, (flag, help_text)


def test_ini_flags_are_booleans(pytester):
    pytester.makeini("""
        [pytest]
        vsp_allow_outside_root = true
    """)
    config = pytester.parseconfigure()
    assert config.getini("vsp_allow_outside_root") is True
    from vsp_assert.pytest_plugin.session import vsp_session

    assert vsp_session(config).options.allow_outside_root is True
    pytester.makeini("""
        [pytest]
        vsp_allow_outside_root = false
    """)
    assert pytester.parseconfigure().getini("vsp_allow_outside_root") is False
