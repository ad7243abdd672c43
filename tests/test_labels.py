"""Concept labels: every place a concept is named takes a name, a ``#id`` string or an int."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from vsp_assert.engine.labels import ConceptLabels
from vsp_assert.errors import InputError, SAEError

LABELS = ConceptLabels(64, {"red": [1, 2], "stripes": [4, 5, 6], "square": [2, 9]})


@given(st.integers(0, 63))
def test_ids_in_every_form_resolve_to_themselves(i):
    assert LABELS.resolve(i) == LABELS.resolve(f"#{i}") == LABELS.resolve(str(i)) == [i]


def test_names_resolve_to_all_their_latents_and_many_are_deduplicated():
    assert LABELS.resolve("stripes") == [4, 5, 6]
    assert LABELS.resolve_many(["red", "square", "#1", 9]) == [1, 2, 9]  # order kept, no repeats
    assert LABELS.resolve_many("red") == [1, 2]


def test_unknown_name_suggests_the_closest():
    with pytest.raises(InputError) as err:
        LABELS.resolve("strips")
    message = str(err.value)
    assert "unknown concept 'strips'" in message and "did you mean 'stripes'" in message
    assert "red, square, stripes" in message and "'#0'..'#63'" in message


@pytest.mark.parametrize("bad", [64, -1, "#64", "#999"])
def test_out_of_range_ids_are_refused(bad):
    with pytest.raises(InputError, match="out of range"):
        LABELS.resolve(bad)


def test_display_names_latents_by_their_first_concept():
    assert LABELS.display(2) == "red#2" and LABELS.name_of(9) == "square" and LABELS.display(30) == "#30"


def test_round_trip_through_a_file(tmp_path):
    labels = ConceptLabels(64, {"red": [1]}, {1: {"label": "red", "precision": 0.95}}, dead=[3])
    labels.save(tmp_path / "concepts.json")
    back = ConceptLabels.load(tmp_path / "concepts.json", d_sae=64)
    assert back.to_dict() == labels.to_dict()


# ------------------------------------------------------------------ version 2: statistics, thresholds, atlas
def _v2() -> ConceptLabels:
    return ConceptLabels(
        64, {"red": [1, 2], "stripes": [4]},
        {1: {"label": "red", "precision": 0.97, "recall": 0.4, "firing_rate": 0.01, "mean_activation": 1.2,
             "label_entropy": 0.3}, 7: {"firing_rate": 0.5, "mean_activation": 0.1, "label_entropy": 0.9,
                                        "dense": True}},
        dead=[3], dense=[7],
        concept_info={"red": {"level": "patch", "precision": {"1": 0.97, "2": 0.9}, "recall": {"1": 0.4, "2": 0.1},
                              "threshold": 0.25, "balanced_accuracy": 0.98}},
        build={"min_precision": 0.8}, atlas="atlas/index.json",
    )


def test_version_2_round_trips_and_answers_the_accessors(tmp_path):
    labels = _v2()
    labels.save(tmp_path / "concepts.json")
    raw = json.loads((tmp_path / "concepts.json").read_text())
    assert raw["version"] == 2 and raw["dense"] == [7] and raw["concept_stats"]["red"]["threshold"] == 0.25
    back = ConceptLabels.load(tmp_path / "concepts.json", d_sae=64)
    assert back.to_dict() == labels.to_dict()
    assert back.threshold("red") == 0.25 and back.threshold("stripes") is None
    assert back.stats(1)["precision"] == 0.97 and back.stats(1)["dead"] is False
    assert back.stats(3) == {"dead": True, "dense": False} and back.stats(7)["dense"] is True
    assert back.is_noise(3) and back.is_noise(7) and not back.is_noise(1)
    assert back.concept_stats("red")["level"] == "patch"
    assert back.references(1) == []  # the atlas index is not there
    (tmp_path / "atlas").mkdir()
    (tmp_path / "atlas" / "index.json").write_text(json.dumps(
        {"images": ["a.png", "b.png"], "latents": {"1": {"refs": [[1, 0.5], [0, 0.25]]}}}))
    again = ConceptLabels.load(tmp_path / "concepts.json", d_sae=64)
    assert again.references(1) == [("b.png", 0.5), ("a.png", 0.25)] and again.references(2) == []


def test_a_version_1_file_loads_unchanged():
    path = Path(__file__).parent / "corpus" / "concepts_v1.json"  # the shapes labels as shipped before version 2
    raw = json.loads(path.read_text())
    labels = ConceptLabels.load(path, d_sae=256)
    assert labels.to_dict() == raw  # written back in the same (version 1) form
    assert labels.threshold("red") is None and labels.concept_stats("red") == {}
    assert labels.is_noise(labels.dead[0]) and labels.references(labels.concepts["red"][0]) == []
    assert labels.stats(labels.concepts["red"][0])["label"] == "red"


@pytest.mark.parametrize(("patch", "field"), [
    ({"version": 3}, "version"),
    ({"dense": [64]}, "dense"),
    ({"dense": "7"}, "dense"),
    ({"concept_stats": {"blue": {}}}, "concept_stats.blue"),
    ({"concept_stats": {"red": {"threshold": "high"}}}, "concept_stats.red.threshold"),
    ({"atlas": 5}, "atlas"),
    ({"build": []}, "build"),
    ({"thresholds": {}}, "thresholds"),
])
def test_bad_version_2_fields_name_the_field(patch, field):
    raw = {**_v2().to_dict(), **patch}
    with pytest.raises(SAEError) as err:
        ConceptLabels.from_dict(raw, d_sae=64, source="concepts.json")
    assert f"field '{field}'" in str(err.value) and "concepts.json" in str(err.value)


def test_stats_of_an_out_of_range_latent_is_refused():
    with pytest.raises(InputError, match="out of range"):
        _v2().stats(64)
