"""How per-layer attention becomes ``Trace.attention``: the legacy mass-weighted average, per-layer renormalisation
(layers that hardly looked at the image left out), per-head selection and attention sinks."""

from __future__ import annotations

import pytest
import torch

from vsp_assert.engine.attention import aggregate_attention
from vsp_assert.errors import InputError


def identity(x: torch.Tensor) -> torch.Tensor:
    return x


def rows() -> torch.Tensor:
    """[L=2, T=1, H=2, N=4]: layer 0 puts 2 % of its attention on the image (on patch 0), layer 1 90 % (patch 3)."""
    r = torch.zeros(2, 1, 2, 4)
    r[0, 0, :, 0] = 0.02
    r[1, 0, 0, 3] = 0.9
    r[1, 0, 1, 2] = 0.9
    return r


def test_mass_mode_is_the_legacy_average_then_renormalise():
    r = rows()
    got = aggregate_attention(r, identity, mode="mass")
    mean = r.mean(2).mean(0)  # heads, then layers, raw
    torch.testing.assert_close(got.attention, mean / mean.sum(-1, keepdim=True))
    torch.testing.assert_close(got.mass, torch.tensor([[0.02], [0.9]]))
    torch.testing.assert_close(got.by_layer.sum(-1), torch.ones(2, 1))


def test_layer_mode_renormalises_each_layer_and_skips_layers_that_did_not_look():
    r = rows()
    every = aggregate_attention(r, identity, mode="layer", min_mass=0.0)
    assert float(every.attention[0, 0]) == pytest.approx(0.5)  # layer 0's crumbs count as a whole layer
    looked = aggregate_attention(r, identity, mode="layer", min_mass=0.05)
    torch.testing.assert_close(looked.attention[0], torch.tensor([0.0, 0.0, 0.5, 0.5]))
    nobody = aggregate_attention(r * 0.01, identity, mode="layer", min_mass=0.5)  # all below: all count
    assert float(nobody.attention.sum()) == pytest.approx(1.0)
    with pytest.raises(InputError):
        aggregate_attention(r, identity, mode="median")


def test_head_selection_and_dropping_a_layer():
    r = rows()
    head0 = aggregate_attention(r, identity, mode="mass", layers=[0, 1], heads={1: [0], 0: []})
    torch.testing.assert_close(head0.attention[0], torch.tensor([0.0, 0.0, 0.0, 1.0]))


def test_a_sink_drawing_attention_from_every_head_and_token_is_removed():
    r = torch.zeros(1, 2, 3, 5)
    r[..., 4] = 0.5  # patch 4 takes half of everything, whatever the token
    r[0, 0, :, 1] = 0.3
    r[0, 1, :, 2] = 0.3
    got = aggregate_attention(r, identity, sink_share=0.4)
    assert got.sinks == (4,)
    assert float(got.attention[:, 4].abs().sum()) == 0.0
    torch.testing.assert_close(got.attention[0], torch.tensor([0.0, 1.0, 0.0, 0.0, 0.0]))


def test_the_scratchpad_records_mass_and_reads_its_settings(pad, images):
    trace = pad.run(images[0], "what color is the square ?")
    assert trace.attention_mass is not None and trace.attention_mass.shape == (len(pad.layers), trace.n_tokens)
    legacy = trace.attention
    pad.attention_aggregation = "layer"
    try:
        again = pad.run(images[0], "what color is the square ?")
    finally:
        pad.attention_aggregation = "mass"
    torch.testing.assert_close(again.attention_by_layer, trace.attention_by_layer)
    assert again.attention.shape == legacy.shape
