"""Two model changes make the relevant bundled rate assertions fail, each printing its interval (issue's done-when).

- a weakening fine-tune: ``shapes finetune --weaken misleading_concept`` trains striped scenes with their true
  shapes for a few steps; the stripes trigger rate (answer "triangle" on >= 0.9 of striped scenes) fails, and the
  case about the same objects without stripes still passes;
- a noisy LM layer: ``shapes perturb --layer 2 --scale 3``; the rate cases whose answers it flips fail.

Slow (minutes: a fine-tune and a few hundred traced rows), so CI runs it through ``.ci/run``.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from vsp_assert.cli import main

ROOT = Path(__file__).resolve().parents[2]
INTERVAL = re.compile(r"rate (\d\.\d{3}) \[(\d\.\d{3}), (\d\.\d{3})\] \((\d+)/(\d+)\)")


def run_cases(model: Path, *files: str) -> tuple[int, str]:
    env = {**os.environ, "NO_COLOR": "1", "COLUMNS": "160"}
    run = subprocess.run([sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-rA", *files,
                          "--vsp-model", str(model)], cwd=ROOT, capture_output=True, text=True, timeout=1200,
                         env=env)
    return run.returncode, run.stdout + run.stderr


def failed_rate(out: str, case_id: str) -> tuple[float, float, float]:
    """The failing answer rate and its interval printed under ``case_id``'s failure."""
    section = out.split(f"vsp case {case_id} ")[1]
    line = next(ln for ln in section.splitlines() if ln.startswith("✘ FAIL  answer"))
    rate, lo, hi, k, n = INTERVAL.search(line).groups()  # type: ignore[union-attr]
    assert int(n) == 100 and abs(float(rate) - int(k) / int(n)) < 1e-3
    return float(rate), float(lo), float(hi)


@pytest.mark.slow
def test_a_weakening_finetune_fails_the_stripes_trigger_rate_with_its_interval(tmp_path: Path) -> None:
    model = tmp_path / "weak"
    assert main(["shapes", "finetune", "--weaken", "misleading_concept", "--steps", "10", "--eval-n", "50",
                 "--out", str(model)]) == 0
    record = json.loads((model / "finetune.json").read_text())
    planted = record["evaluation"]["planted"]
    assert planted["misleading_concept"]["trigger_rate"] < 0.9  # the update weakened the mechanism …
    assert planted["unused_hidden_cue"]["trigger_rate"] >= 0.9  # … and left the others as they were
    assert planted["limited_alignment"]["trigger_rate"] >= 0.9

    code, out = run_cases(model, "cases/misleading_concept_rates.yaml")
    assert code == 1, out[-3000:]
    assert "FAILED cases/misleading_concept_rates.yaml::stripes-trigger-rates" in out
    assert "PASSED cases/misleading_concept_rates.yaml::stripes-control-rates" in out
    rate, lo, hi = failed_rate(out, "stripes-trigger-rates")
    assert lo <= rate <= hi < 0.9  # the whole interval sits below the bound


@pytest.mark.slow
def test_a_perturbed_lm_layer_fails_the_rates_it_changes_with_their_intervals(tmp_path: Path) -> None:
    model = tmp_path / "noisy"
    assert main(["shapes", "perturb", "--out", str(model), "--layer", "2", "--scale", "3"]) == 0
    code, out = run_cases(model, "cases/limited_alignment_rates.yaml", "cases/unused_hidden_cue_rates.yaml")
    assert code == 1, out[-3000:]
    for case_id in ("terse-control-rates", "dots-trigger-rates"):
        assert re.search(rf"FAILED cases/\w+_rates\.yaml::{case_id}\b", out), case_id
        rate, lo, hi = failed_rate(out, case_id)
        assert lo <= rate <= hi and rate < 0.9
