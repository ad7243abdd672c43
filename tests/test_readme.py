"""The README's examples run as written, and the outputs it shows are the outputs the code prints.

The ```text blocks of "When a case fails" (the failing case's records table and evidence) and "Guarding a model
across updates" (the pass counts of the three steps, the drift lines, the compare table) are parsed and compared
with real runs, whitespace-insensitively, so that a change to either the code or the README fails here.
"""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
TEXT = README.read_text()
TEXT_BLOCKS = re.findall(r"```text\n(.*?)```", TEXT, re.S)

# "A copy of the bundled stripes-square case, edited to expect the right answer", as the README's table shows it
BROKEN = """
cases:
  - id: stripes-square
    image: {scene: {background: stripes, shapes: [{shape: square, color: red, x: 32, y: 32, size: 26}]}}
    prompt: What shape is the red object?
    expect:
      answer: square
      captured: [square, stripes]
      attended: [{token: triangle, concepts: [square], top_k: 3}]
      causal: [{ablate: [stripes], changes: false}]
"""


@pytest.fixture(scope="module", autouse=True)
def _shapes_artifacts() -> None:
    from vsp_assert.shapes import SAE_DIR

    if not (SAE_DIR / "cfg.json").exists():
        pytest.skip("the shapes artifacts are not built")


def block(containing: str) -> list[str]:
    """The lines of the README's one ```text block that contains ``containing``."""
    (found,) = [b for b in TEXT_BLOCKS if containing in b]
    return found.splitlines()


def norm(line: str) -> str:
    """A line with runs of whitespace collapsed, and a ``---- title ----`` rule reduced to its title."""
    line = " ".join(line.split())
    rule = re.fullmatch(r"-{3,} (.+?) -{3,}", line)
    return f"-- {rule.group(1)} --" if rule else line


def table(lines: list[str], header: str) -> list[list[str]]:
    """The rows of the ``tabulate`` table whose header line starts with ``header`` (after whitespace), cells
    stripped and whitespace-collapsed; a wrapped cell's continuation lines are joined to its row."""
    at = next(i for i, line in enumerate(lines) if line.split()[:1] and norm(line).startswith(header))
    rule = lines[at + 1]
    starts = [i for i, ch in enumerate(rule) if ch == "-" and (i == 0 or rule[i - 1] == " ")]
    spans = list(zip(starts, [*starts[1:], None]))
    rows: list[list[str]] = []
    for line in lines[at + 2:]:
        if not line.strip():
            break
        cells = [line[a:b].strip() for a, b in spans]
        if rows and not cells[0] and not cells[1]:  # a wrapped cell goes on
            rows[-1] = [norm(f"{old} {new}") for old, new in zip(rows[-1], cells)]
        else:
            rows.append([norm(c) for c in cells])
    return rows


def contiguous(expected: list[str], actual: list[str]) -> bool:
    """Whether the non-empty normalised ``expected`` lines occur as one run in the normalised ``actual`` lines;
    when not, prints a diff against the real lines that start the same way (pytest shows it with the failure)."""
    import difflib

    want = [norm(line) for line in expected if line.strip()]
    have = [norm(line) for line in actual if line.strip()]
    if any(have[i:i + len(want)] == want for i in range(len(have) - len(want) + 1)):
        return True
    at = have.index(want[0]) if want[0] in have else 0
    print("\n".join(difflib.unified_diff(want, have[at:at + len(want)], "README", "real output", lineterm="")))
    return False


def outcome_counts(text: str) -> dict[str, int]:
    return {word: int(n) for n, word in re.findall(r"(\d+) (passed|failed|errors?)", text)}


# ---------------------------------------------------------------------- examples run
def test_python_example_and_fluent_test_run(capsys):
    python = re.findall(r"```python\n(.*?)```", TEXT, re.S)
    namespace: dict = {}
    exec(compile(python[0], "README.md", "exec"), namespace)  # noqa: S102 - our own README
    out = capsys.readouterr().out
    assert out.startswith("triangle ") and "stripes" in out  # the known failure and its cue
    assert "\nsquare p(original)" in out  # ablating the cue restores the truth
    exec(compile(python[1], "README.md", "exec"), namespace)  # noqa: S102
    namespace["test_stripes_mislead"](namespace["pad"])


def test_yaml_example_passes_as_a_case(pytester):
    yaml_blocks = re.findall(r"```yaml\n(.*?)```", TEXT, re.S)
    pytester.makefile(".yaml", test_readme=yaml_blocks[0])
    pytester.runpytest("-p", "no:cacheprovider").assert_outcomes(passed=1)


# ---------------------------------------------------------------------- "When a case fails"
@pytest.fixture(scope="module")
def broken_run(tmp_path_factory) -> list[str]:
    """``pytest broken.yaml`` in a subprocess, colour off, on a terminal as wide as the README's (the width of its
    ``---- vsp-assert ----`` rule: the heatmap shows as many columns as fit), its output lines."""
    import os
    import subprocess
    import sys

    (rule,) = [line for line in block("$ pytest broken.yaml") if norm(line) == "-- vsp-assert --"]
    folder = tmp_path_factory.mktemp("broken")
    (folder / "broken.yaml").write_text(BROKEN)
    env = {**os.environ, "NO_COLOR": "1", "COLUMNS": str(len(rule))}
    run = subprocess.run([sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "broken.yaml"], cwd=folder,
                         capture_output=True, text=True, timeout=300, env=env)
    assert run.returncode == 1, run.stdout[-3000:] + run.stderr[-3000:]
    return run.stdout.splitlines()


def test_failing_case_records_table_is_the_readme_table(broken_run):
    shown = block("$ pytest broken.yaml")
    assert shown[0] == "$ pytest broken.yaml"
    assert norm(shown[1]) == "broken.yaml::stripes-square FAILED (2 of 5 checks failed)"
    assert norm(shown[1]) in [norm(line) for line in broken_run]
    header = "check assertion expected measured"
    readme_rows, real_rows = table(shown, header), table(broken_run, header)
    assert [r[1] for r in readme_rows] == ["answer", "captured", "captured", "attended", "causal"]
    assert real_rows == readme_rows


def test_failing_case_evidence_is_the_readme_evidence(broken_run):
    """The lines under the records table — why not the right answer (the ablation that brings it back), answer,
    captured, attended concepts, heatmap, spatial maps and the session summary — as the README shows them."""
    shown = block("$ pytest broken.yaml")
    start = next(i for i, line in enumerate(shown) if line.startswith("why 'square' → 'triangle'"))
    assert "ablating stripes on this model restores 'square'" in shown[start + 1]
    evidence, summary = shown[start:], []
    rule = next(i for i, line in enumerate(evidence) if norm(line) == "-- vsp-assert --")
    evidence, summary = evidence[:rule], evidence[rule:]
    assert contiguous(evidence, broken_run), "README 'When a case fails' evidence differs from the real output"
    assert contiguous(summary, broken_run), "README 'When a case fails' summary differs from the real output"


# ---------------------------------------------------------------------- "Guarding a model across updates"
def guarding_steps() -> list[tuple[list[str], dict[str, int]]]:
    """The three ``pytest cases`` commands of the README's bash block and the outcome counts their comments
    claim (``# 2. 1 failed, 11 passed: …``)."""
    (bash,) = [b for b in re.findall(r"```bash\n(.*?)```", TEXT, re.S) if "shapes perturb" in b]
    steps = []
    for line in bash.splitlines():
        command, _, comment = line.partition("#")
        if command.split()[:1] == ["pytest"]:
            steps.append((command.split()[1:], outcome_counts(comment)))
    return steps


@pytest.fixture(scope="module")
def v2(tmp_path_factory) -> Path:
    """The README's mock update: ``vsp-assert shapes perturb --out DIR --scale 1.0``."""
    from vsp_assert.cli import main

    (bash,) = [b for b in re.findall(r"```bash\n(.*?)```", TEXT, re.S) if "shapes perturb" in b]
    (line,) = [line for line in bash.splitlines() if "shapes perturb" in line]
    args = line.partition("#")[0].split()[1:]
    out = tmp_path_factory.mktemp("v2") / "shapes-v2"
    args[args.index("--out") + 1] = str(out)
    assert main(args) == 0
    return out


@pytest.mark.slow
def test_guarding_steps_give_the_readme_counts_and_drift(pytester, v2, monkeypatch):
    (rule,) = [line for line in block("$ pytest broken.yaml") if norm(line) == "-- vsp-assert --"]
    monkeypatch.setenv("COLUMNS", str(len(rule)))  # the README's terminal width: the heatmaps' columns fit it
    steps = guarding_steps()
    assert [counts for _, counts in steps] == [{"passed": 19}, {"failed": 1, "passed": 18}, {"passed": 19}]
    shutil.copytree(ROOT / "cases", pytester.path / "cases")  # step 3 rewrites the baselines: on a copy
    drift_shown = block("concept drift since baseline")
    for args, counts in steps:
        args = [a.replace("/tmp/shapes-v2", str(v2)) for a in args]
        result = pytester.runpytest("-p", "no:cacheprovider", *args)
        text = result.stdout.str()
        assert outcome_counts(text.splitlines()[-1]) == counts, (args, text.splitlines()[-1])
        if counts.get("failed"):
            assert contiguous(drift_shown, result.outlines), "README drift lines differ from the real output"


@pytest.mark.slow
def test_compare_table_is_the_readme_table(v2, capsys):
    from vsp_assert.cli import main

    shown = block("$ vsp-assert compare")
    args = shown[0].split()[2:]
    args = [str(ROOT / "cases") if a == "cases/" else a.replace("/tmp/shapes-v2", str(v2)) for a in args]
    assert main([*args, "--color", "no"]) == 0
    real = capsys.readouterr().out.splitlines()
    claim = next(line for line in shown if "case(s) changed" in line)
    assert norm(claim) in [norm(line) for line in real]
    header = "case answer Δp gained lost expectations why"
    assert table(real, header) == table(shown, header)
