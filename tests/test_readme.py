"""The README's examples run as written (so the docs stay true to the code)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

README = Path(__file__).resolve().parents[1] / "README.md"


@pytest.fixture(scope="module")
def blocks():
    from vsp_assert.shapes import SAE_DIR

    if not (SAE_DIR / "cfg.json").exists():
        pytest.skip("the shapes artifacts are not built")
    text = README.read_text()
    return re.findall(r"```python\n(.*?)```", text, re.S), re.findall(r"```yaml\n(.*?)```", text, re.S)


def test_python_example_and_fluent_test_run(blocks, capsys):
    python, _ = blocks
    namespace: dict = {}
    exec(compile(python[0], "README.md", "exec"), namespace)  # noqa: S102 - our own README
    out = capsys.readouterr().out
    assert out.startswith("triangle ") and "stripes" in out  # the known failure and its cue
    assert "\nsquare p(original)" in out  # ablating the cue restores the truth
    exec(compile(python[1], "README.md", "exec"), namespace)  # noqa: S102
    namespace["test_stripes_mislead"](namespace["pad"])


def test_yaml_example_passes_as_a_case(blocks, pytester):
    _, yaml_blocks = blocks
    pytester.makefile(".yaml", test_readme=yaml_blocks[0])
    pytester.runpytest("-p", "no:cacheprovider").assert_outcomes(passed=1)
