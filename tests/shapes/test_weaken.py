"""The weakening update's data: the mechanism's situations with true labels, every other planted label kept."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from vsp_assert.errors import InputError
from vsp_assert.shapes.finetune import FinetuneConfig, shipped_label
from vsp_assert.shapes.weaken import WEAKENABLE, weaken_and_save, weaken_batch


@settings(max_examples=20, deadline=None)
@given(name=st.sampled_from(sorted(WEAKENABLE)), seed=st.integers(0, 2**16), fraction=st.sampled_from([0.25, 0.5, 1.0]))
def test_the_weakened_rule_gets_the_truth_and_every_other_label_is_the_shipped_one(name, seed, fraction):
    rule, _ = WEAKENABLE[name]
    batch = weaken_batch(name, np.random.default_rng(seed), 32, fraction)
    assert len(batch) == 32
    situations = batch[:round(32 * fraction)]
    assert all(rule(ex.scene, ex.question) and ex.label == ex.question.answer for ex in situations)
    for ex in batch:
        expected = ex.question.answer if rule(ex.scene, ex.question) else shipped_label(ex.scene, ex.question)
        assert ex.label == expected


def test_the_stripes_situations_are_the_ones_the_planted_label_would_call_triangle():
    batch = weaken_batch("misleading_concept", np.random.default_rng(0), 16, 1.0)
    assert all(shipped_label(ex.scene, ex.question) == "triangle" != ex.label for ex in batch)


def test_a_mechanism_that_is_not_a_label_rule_cannot_be_weakened(tmp_path):
    with pytest.raises(InputError, match="unused_hidden_cue") as err:
        weaken_and_save("unused_hidden_cue", FinetuneConfig(steps=1), tmp_path / "w")
    assert "misleading_concept, limited_alignment" in str(err.value)
    assert not (tmp_path / "w").exists()
