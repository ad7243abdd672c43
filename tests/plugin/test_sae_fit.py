"""Whether the SAE still fits the model under test, the noise filter switch, and baselines made with another SAE,
as a user sees them in a pytest run of the bundled cases."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

CASES = Path(__file__).resolve().parents[2] / "cases"


@pytest.fixture
def stripes(pytester: pytest.Pytester) -> pytest.Pytester:
    """A copy of the bundled misleading-concept cases with their baseline."""
    for name in ("misleading_concept.yaml", "misleading_concept.baseline.json"):
        shutil.copy(CASES / name, pytester.path / name)
    return pytester


@pytest.fixture(scope="module")
def new_tower(tmp_path_factory) -> str:
    """The shapes model with noise on its last vision layer (the one the SAE reads): an update that changed the
    vision tower under the SAE. Made by the command a user would run, in its own process."""
    import subprocess
    import sys

    out = tmp_path_factory.mktemp("tower") / "v2"
    subprocess.run([sys.executable, "-m", "vsp_assert.cli", "shapes", "perturb", "--out", str(out), "--tower",
                    "vision", "--layer", "2", "--scale", "3"], check=True, capture_output=True)
    return str(out)


def test_a_vision_tower_the_sae_no_longer_fits_is_an_error_not_drift(stripes, new_tower):
    model = new_tower
    result = stripes.runpytest("-p", "no:cacheprovider", f"--vsp-model={model}")
    result.assert_outcomes(failed=3)
    out = result.stdout.str()
    reports = [line for line in out.splitlines()
               if line.startswith("vsp-assert: ") and "the SAE does not fit this model" in line]
    assert len(reports) == 3  # one error per case (the short summary may repeat it, at any terminal width)
    assert "below --vsp-min-sae-fit 0.5" in out and "vsp-assert sae train" in out
    assert "concept drift since baseline" not in out and "unchanged since baseline" not in out  # no drift report


def test_the_summary_reports_the_sae_fit_of_the_case_images(stripes):
    from vsp_assert import Scratchpad, load_model, load_sae
    from vsp_assert.checks.load import parse_case_file

    result = stripes.runpytest("-p", "no:cacheprovider")
    result.assert_outcomes(passed=3)
    pad = Scratchpad(load_model("shapes"), load_sae("shapes"))
    fits = [pad.run(c.load_image(), c.prompt, max_new_tokens=c.max_new_tokens).sae_fit
            for c in parse_case_file(stripes.path / "misleading_concept.yaml").cases]
    result.stdout.fnmatch_lines([f"SAE fit (explained variance at the hooked layer): mean {sum(fits) / 3:.3f}, "
                                 f"lowest {min(fits):.3f} over 3 case image(s)"])


def test_a_looser_fit_floor_lets_a_degraded_sae_run(stripes, new_tower):
    result = stripes.runpytest("-p", "no:cacheprovider", f"--vsp-model={new_tower}", "--vsp-min-sae-fit=-100")
    assert "the SAE does not fit this model" not in result.stdout.str()


def test_dense_latents_are_hidden_unless_kept(stripes):
    from vsp_assert import load_sae

    dense = sorted(load_sae("shapes").labels.dense)
    assert dense, "the shipped labels flag dense latents"
    shown = stripes.runpytest("-p", "no:cacheprovider", "--vsp-show", "-k", "stripes-square").stdout.str()
    kept = stripes.runpytest("-p", "no:cacheprovider", "--vsp-show", "--vsp-keep-noise", "-k",
                             "stripes-square").stdout.str()
    assert not any(f"#{i} " in shown for i in dense)
    assert any(f"#{i} " in kept for i in dense)


def test_baselines_recorded_with_another_sae_are_not_compared(stripes, tmp_path):
    from safetensors.torch import load_file, save_file

    from vsp_assert.shapes import SAE_DIR

    folder = tmp_path / "other-sae"
    shutil.copytree(SAE_DIR, folder)
    weights = load_file(folder / "sae_weights.safetensors")
    weights["W_dec"][0, 0] += 1e-4  # another SAE: its latents mean nearly the same, but it is not the same SAE
    save_file(weights, folder / "sae_weights.safetensors")
    result = stripes.runpytest("-p", "no:cacheprovider", f"--vsp-sae={folder}")
    result.assert_outcomes(passed=3)
    result.stdout.fnmatch_lines(["3 case(s) have baselines recorded with another SAE (not compared); record them "
                                 "with --vsp-update-baseline"])
