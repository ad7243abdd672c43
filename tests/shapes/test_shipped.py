"""The shipped model and SAE, measured on freshly generated held-out scenes against issue 3's thresholds."""

from __future__ import annotations

import json
from typing import Any

import pytest

from vsp_assert.shapes import MODEL_DIR, SAE_DIR
from vsp_assert.shapes.report import THRESHOLDS, compute_report, format_report

pytestmark = pytest.mark.skipif(
    not (MODEL_DIR / "model.safetensors").exists() or not (SAE_DIR / "sae_weights.safetensors").exists(),
    reason="shapes artifacts are not built",
)

SEED = 20260  # an evaluation seed; every evaluation stream is held out from training by construction
N = 200


@pytest.fixture(scope="module")
def report() -> dict[str, Any]:
    return compute_report(SEED, N)


def test_clean_accuracy(report: dict[str, Any]) -> None:
    assert report["accuracy"] >= THRESHOLDS["accuracy"]
    assert set(report["accuracy_by_type"]) == {"color", "shape", "presence", "color_terse"}
    for qtype, acc in report["accuracy_by_type"].items():
        assert acc >= THRESHOLDS["accuracy_by_type"], qtype


@pytest.mark.parametrize("name", ["misleading_concept", "unused_hidden_cue", "limited_alignment"])
def test_planted_mechanism_shows_on_triggers_only(report: dict[str, Any], name: str) -> None:
    m = report["mechanisms"][name]
    assert m["trigger_rate"] >= THRESHOLDS["trigger_rate"]
    assert m["control_rate"] <= THRESHOLDS["control_rate"]


def test_causal_diagnoses_match_the_planted_truth(report: dict[str, Any]) -> None:
    mech = report["mechanisms"]
    assert mech["misleading_concept"]["captured_rate"] >= 0.9  # stripes are seen ...
    assert mech["misleading_concept"]["ablation_restores_rate"] >= 0.8  # ... and ablating them fixes the answer
    assert mech["unused_hidden_cue"]["captured_rate"] >= 0.9  # dots are seen ...
    assert mech["unused_hidden_cue"]["ablation_unchanged_rate"] >= 0.9  # ... but not used
    assert mech["limited_alignment"]["explicit_fix_rate"] >= 0.9  # the explicit prompt says "yellow"


def test_sae_health(report: dict[str, Any]) -> None:
    sae = report["sae"]
    assert sae["explained_variance"] >= THRESHOLDS["explained_variance"]
    assert 0.0 <= sae["dead_fraction"] < 0.5
    for concept in ("circle", "square", "triangle", "red", "green", "blue", "yellow"):
        assert sae["concept_precision"][concept] >= THRESHOLDS["concept_precision"], concept
        assert sae["concepts"].get(concept), f"no latent labelled {concept}"
    assert sae["concepts"].get("stripes") and sae["concepts"].get("dots")
    assert all(report["passed"].values()), report["passed"]


def test_report_prints_every_figure(report: dict[str, Any]) -> None:
    text = format_report(report)
    for needle in (
        "accuracy",
        "misleading_concept",
        "unused_hidden_cue",
        "limited_alignment",
        "explained variance",
        "label entropy",
        f"{report['accuracy']:.3f}",
    ):
        assert needle in text


def test_cli_report_json(capsys: pytest.CaptureFixture[str]) -> None:
    from vsp_assert.shapes.cli import main

    assert main(["shapes", "report", "--seed", "5", "--n", "24", "--json"]) == 0
    d = json.loads(capsys.readouterr().out)
    assert {"accuracy", "accuracy_by_type", "mechanisms", "sae"} <= set(d)
    assert set(d["mechanisms"]["misleading_concept"]) >= {"trigger_rate", "control_rate"}
    assert {"explained_variance", "dead_fraction", "concept_precision"} <= set(d["sae"])


def test_shipped_sae_loads_by_name() -> None:
    from vsp_assert.engine.sae import load_sae

    sae = load_sae("shapes")
    assert sae.hook_layer == "model.vision_tower.encoder.layers.2"
    assert sae.labels.resolve("stripes") and sae.labels.resolve("dots")
    total = sum(p.stat().st_size for d in (MODEL_DIR, SAE_DIR) for p in d.iterdir() if p.is_file())
    assert total < 10 * 2**20
