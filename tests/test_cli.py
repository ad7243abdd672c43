"""The ``vsp-assert`` command line on a saved tiny LLaVA and an SAE folder."""

from __future__ import annotations

import json
import subprocess
import sys

from vsp_assert.cli import main


def test_run_prints_answer_concepts_heatmap_and_ablation(saved, capsys):
    rc = main(["run", saved["image"], "what color is the square ?", "--model", saved["model"], "--sae",
               saved["sae"], "--ablate", "red", "--ablate", "blue,stripes", "--color", "no", "--max-new-tokens", "3"])
    assert rc == 0
    out = capsys.readouterr().out
    assert f"answer: {saved['answer']!r}" in out
    assert "top-5 attended concepts" in out and "token-latent heatmap" in out
    assert "intervention ablate [red]" in out and "intervention ablate [blue, stripes]" in out
    assert "\x1b[" not in out


def test_run_json_output(saved, capsys):
    rc = main(["run", saved["image"], "what color is the square ?", "--model", saved["model"], "--sae",
               saved["sae"], "--json", "--max-new-tokens", "3", "--sufficient"])
    assert rc == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["answer"] == saved["answer"]
    assert set(doc) >= {"answer_prob", "output_tokens", "top_concepts", "captured", "interventions"}


def test_run_errors_are_one_message(saved, capsys, tmp_path):
    rc = main(["run", saved["image"], "what ?", "--model", saved["model"], "--sae", str(tmp_path / "missing")])
    assert rc == 2
    err = capsys.readouterr().err
    assert err.startswith("vsp-assert: error:") and "SAE folder not found" in err and "Traceback" not in err


def test_console_script_is_installed():
    out = subprocess.run([sys.executable, "-m", "vsp_assert.cli", "--help"], capture_output=True, text=True,
                         check=True)
    assert "run" in out.stdout and "shapes" in out.stdout and "compare" in out.stdout
