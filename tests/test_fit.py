"""The SAE-fit figures: explained variance at the hooked layer, the SAE's identity, and baselines that refuse to
compare against an entry recorded with another SAE."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from vsp_assert.checks.baseline import BaselineStore, check_result, update_baseline
from vsp_assert.engine.fit import explained_variance, sae_identity
from vsp_assert.testing import random_sae


@pytest.fixture(scope="module")
def shapes_pad():
    from vsp_assert import Scratchpad, load_model, load_sae

    return Scratchpad(load_model("shapes"), load_sae("shapes"))


@pytest.fixture(scope="module")
def stripes_image():
    from vsp_assert.shapes import Scene

    return Scene.from_dict({"background": "stripes",
                            "shapes": [{"shape": "square", "color": "red", "x": 32, "y": 32, "size": 26}]}).render()


@settings(max_examples=40, deadline=None, database=None)
@given(p=st.integers(2, 12), d=st.integers(1, 8), noise=st.floats(0.0, 2.0), seed=st.integers(0, 2**16))
def test_explained_variance_is_one_minus_residual_over_total_variance(p, d, noise, seed):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(p, d, generator=g, dtype=torch.float64)
    x_hat = x + noise * torch.randn(p, d, generator=g, dtype=torch.float64)
    expected = 1 - ((x - x_hat) ** 2).sum() / ((x - x.mean(0)) ** 2).sum()
    assert abs(explained_variance(x, x_hat) - float(expected)) < 1e-9
    assert explained_variance(x, x) == 1.0
    assert explained_variance(x, x.mean(0, keepdim=True).expand_as(x)) < 1e-9  # the mean patch explains nothing


def test_sae_identity_changes_with_any_weight_and_only_then():
    a = random_sae(d_in=8, d_sae=16, seed=0)
    b = random_sae(d_in=8, d_sae=16, seed=0)
    assert sae_identity(a) == sae_identity(b)
    c = random_sae(d_in=8, d_sae=16, seed=0)
    with torch.no_grad():
        c.W_dec[3, 2] += 1e-3
    assert sae_identity(c) != sae_identity(a)


def test_a_trace_records_how_well_the_sae_fits_its_image(shapes_pad, stripes_image):
    trace = shapes_pad.run(stripes_image, "What shape is the red object?")
    assert trace.sae_fit is not None and 0.9 < trace.sae_fit <= 1.0  # the shipped SAE fits its model (0.987 held out)
    codes = shapes_pad.sae.encode(_patches(shapes_pad, stripes_image))
    assert abs(trace.sae_fit - explained_variance(_patches(shapes_pad, stripes_image),
                                                  shapes_pad.sae.decode(codes))) < 1e-6  # sparse decode: float32 sums


def _patches(pad, image):
    from vsp_assert.engine.hooks import forward_hook

    seen = {}
    inputs = pad.adapter.prepare([image], ["What shape is the red object?"])
    with forward_hook(pad.hook_module, lambda h: seen.setdefault("z", h.detach())), torch.inference_mode():
        pad.model(**inputs)
    return pad.adapter.patches_of(seen["z"], 1, inputs)[0]


def test_a_baseline_recorded_with_another_sae_is_not_compared(shapes_pad, stripes_image, tmp_path):
    from vsp_assert.checks.assertions import CaseResult
    from vsp_assert.checks.schema import AnswerSpec, Case, Expectations

    case = Case(id="c", prompt="What shape is the red object?", image="x.png",
                expect=Expectations(answer=AnswerSpec(equals="triangle")), file=str(tmp_path / "c.yaml"), line=1)
    trace = shapes_pad.run(stripes_image, case.prompt)
    store = BaselineStore(model="shapes", sae="shapes")
    check_result(store, CaseResult(case, trace, []), update=True, sae_id="aaaa")
    store.flush()
    entry = BaselineStore(model="shapes", sae="shapes").entry(case.file, "c")
    assert entry is not None and entry["sae_identity"] == "aaaa" and entry["sae_fit"] == round(trace.sae_fit, 4)

    other = BaselineStore(model="shapes", sae="shapes")
    tampered = dict(entry, answer="square")  # would be drift, were it comparable
    update_baseline(tmp_path / "c.baseline.json", {"c": tampered}, model="shapes", sae="shapes")
    assert check_result(other, CaseResult(case, trace, []), update=False, sae_id="bbbb") == []
    assert other.incomparable == {f"{_rel(case.file)}::c"}
    same = BaselineStore(model="shapes", sae="shapes")
    records = check_result(same, CaseResult(case, trace, []), update=False, sae_id="aaaa")
    assert any(not r.passed for r in records) and not same.incomparable  # same SAE: the change is drift


def _rel(path: str) -> str:
    import os

    return os.path.relpath(path)
