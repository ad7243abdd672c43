"""The generic concept path end to end on the shapes world, exactly as a user runs it (issue's done-when):
``shapes export --n 3000`` → ``sae train --seed 1`` → ``concepts build`` → ``pytest cases --vsp-sae S``.

A freshly trained SAE, labelled from the export's masks, must pass every bundled case; the cases' baselines,
recorded with the shipped SAE, are reported as not comparable rather than as drift. Slow (about three minutes
on two quiet cores: the training is most of it), so it runs in CI through ``.ci/run``, not in the quick loop."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from vsp_assert.cli import main
from vsp_assert.shapes.world import CONCEPTS

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.slow
def test_a_freshly_trained_and_labelled_sae_passes_every_bundled_case(tmp_path):
    data, sae = tmp_path / "D", tmp_path / "S"
    assert main(["shapes", "export", "--n", "3000", "--out", str(data)]) == 0
    assert main(["sae", "train", "--model", "shapes", "--images", str(data), "--out", str(sae), "--seed", "1",
                 "--quiet"]) == 0
    assert main(["concepts", "build", "--model", "shapes", "--sae", str(sae), "--images", str(data)]) == 0

    labels = json.loads((sae / "concepts.json").read_text())
    assert labels["build"]["n_images"] == 3000  # the manifest's scenes, not its mask files
    best = {c: max(info["precision"].values()) for c, info in labels["concept_stats"].items()}
    assert set(best) == set(CONCEPTS) and min(best.values()) >= 0.9, best

    env = {**os.environ, "NO_COLOR": "1"}
    run = subprocess.run([sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-q", "cases", "--vsp-sae",
                          str(sae)], cwd=ROOT, capture_output=True, text=True, timeout=900, env=env)
    out = run.stdout + run.stderr
    assert run.returncode == 0, out[-4000:]
    assert "failed" not in out.splitlines()[-1] and re.search(r"\d+ passed", out.splitlines()[-1])
    assert "baselines recorded with another SAE (not compared)" in out
