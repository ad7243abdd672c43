"""Analysis: clustering of latents, column selection, and the sufficient-set search finding the planted cue."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from vsp_assert.engine.analysis import cluster_latents, find_sufficient_set, heatmap, select_latents


@settings(max_examples=40, deadline=None)
@given(sizes=st.lists(st.integers(1, 5), min_size=2, max_size=4), seed=st.integers(0, 10_000))
def test_latents_with_the_same_pattern_share_a_cluster(sizes, seed):
    rng = np.random.default_rng(seed)
    bases = np.eye(len(sizes), 12)  # orthogonal pattern per group
    rows, groups = [], []
    for g, n in enumerate(sizes):
        for _ in range(n):
            rows.append(bases[g] * rng.uniform(0.5, 3.0) + rng.normal(0, 0.01, 12).clip(0))
            groups.append(g)
    order, clusters = cluster_latents(np.array(rows))
    assert sorted(order) == list(range(len(rows)))
    for a in range(len(rows)):
        for b in range(len(rows)):
            assert (clusters[a] == clusters[b]) == (groups[a] == groups[b])
    # dendrogram order keeps each cluster contiguous, and cluster ids read 1, 2, … left to right
    seen = [clusters[i] for i in order]
    assert seen == sorted(seen)


def test_zero_patterns_do_not_break_clustering():
    order, clusters = cluster_latents(np.zeros((3, 5)))
    assert sorted(order) == [0, 1, 2] and len(set(clusters)) == 3


def test_columns_hold_top_latents_and_the_strongest_asserted_ones(pad, images):
    trace = pad.run(images[0], "what color is the square ?")
    weakest = [int(i) for i in torch.argsort(trace.scores.max(0).values)[:20]]
    cols = select_latents(trace, top_k=3, extra=weakest, max_columns=9)
    assert len(cols) <= 9
    top0 = [i for i, _ in trace.top_concepts(0, 3)]
    assert all(i in cols for i in top0)
    assert any(i in cols for i in weakest)  # some asserted latents always stay visible
    hm = heatmap(trace, top_k=3, extra=weakest, max_columns=9)
    np.testing.assert_allclose(hm.values, trace.scores[:, hm.latents].numpy())
    assert len(hm.clusters) == len(hm.latents)


@pytest.fixture(scope="module")
def shapes_pad():
    from vsp_assert import Scratchpad, load_model, load_sae
    from vsp_assert.shapes import SAE_DIR

    if not (SAE_DIR / "cfg.json").exists():
        pytest.skip("the shapes artifacts are not built")
    return Scratchpad(load_model("shapes"), load_sae("shapes"), max_new_tokens=3)


def _scene(background: str, shape: str, color: str):
    from vsp_assert.shapes import Scene

    return Scene.from_dict({"background": background,
                            "shapes": [{"shape": shape, "color": color, "x": 32, "y": 32, "size": 26}]}).render()


@pytest.mark.parametrize(("shape", "color"), [("square", "red"), ("circle", "blue")])
def test_sufficient_set_finds_the_planted_misleading_cue(shapes_pad, shape, color):
    trace = shapes_pad.run(_scene("stripes", shape, color), f"What shape is the {color} object?")
    assert trace.answer == "triangle"
    found = find_sufficient_set(shapes_pad, trace, 0)
    assert found.found and found.result is not None
    assert found.result.answer_after == shape  # removing the set restores the truth
    stripes = set(shapes_pad.labels.resolve("stripes"))
    cue = [i for i in found.latents if i in stripes]
    assert len(cue) >= len(found.latents) / 2  # the set is mostly the planted cue …
    assert shapes_pad.ablate(trace, *cue).answer_after == shape  # … and its stripes latents alone suffice


def test_control_scene_gives_no_stripes_evidence(shapes_pad):
    trace = shapes_pad.run(_scene("plain", "circle", "blue"), "What shape is the blue object?")
    assert trace.answer == "circle"
    stripes = set(shapes_pad.labels.resolve("stripes"))
    assert not stripes & {i for i, _ in trace.top_concepts(0, 10)}
