"""VisualScratchpad's noise filter: the SAE's dead and dense latents stay out of rankings and heatmaps by
default, a check that names one still sees it, and the filter can be switched off."""

from __future__ import annotations

import dataclasses

import pytest

from vsp_assert.engine.analysis import heatmap
from vsp_assert.engine.labels import ConceptLabels


@pytest.fixture
def noisy(pad, images):
    """The tiny pad's strongest latent for the first output token, then declared dense in the labels."""
    trace = pad.run(images[0], "what color is the square ?")
    top, _ = trace.top_concepts(0, 1)[0]
    old = pad.sae.labels
    pad.sae.labels = ConceptLabels(d_sae=old.d_sae, concepts=dict(old.concepts), dense=[top])
    yield pad, top
    pad.sae.labels = old


def test_a_dense_latent_is_left_out_of_rankings_and_the_heatmap(noisy, images):
    pad, dense = noisy
    trace = pad.run(images[0], "what color is the square ?")
    assert trace.hidden == frozenset({dense})
    assert dense not in [i for i, _ in trace.top_concepts(0, 5)]
    assert dense not in [i for i, _ in trace.top_captured(50)] or float(trace.image_scores[dense]) == 0
    assert dense not in heatmap(trace).latents


def test_a_check_that_names_a_noise_latent_still_sees_it(noisy, images):
    pad, dense = noisy
    trace = pad.run(images[0], "what color is the square ?")
    assert [i for i, _ in trace.top_concepts(0, 1, keep=[dense])] == [dense]
    assert dense in heatmap(trace, extra=[dense]).latents  # asserted latents are always shown


def test_switching_the_filter_off_ranks_every_latent(noisy, images):
    pad, dense = noisy
    pad.filter_noise = False
    try:
        trace = pad.run(images[0], "what color is the square ?")
    finally:
        pad.filter_noise = True
    assert trace.hidden == frozenset()
    assert trace.top_concepts(0, 1)[0][0] == dense
    unfiltered = dataclasses.replace(trace, hidden=frozenset({dense}))
    assert unfiltered.top_concepts(0, 1)[0][0] != dense
