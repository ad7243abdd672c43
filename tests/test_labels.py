"""Concept labels: every place a concept is named takes a name, a ``#id`` string or an int."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from vsp_assert.engine.labels import ConceptLabels
from vsp_assert.errors import InputError

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
