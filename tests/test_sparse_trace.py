"""Sparse traces: a trace keeps the latents that fired, not ``[P, d_sae]``; the SAE encode is bounded; a bf16 SAE
agrees with its float32 weights. (Speed lives in benchmarks/wide.py; here only structure and numbers.)"""

from __future__ import annotations

import os

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten

from vsp_assert.engine.fit import sae_fit
from vsp_assert.engine.interventions import Intervention
from vsp_assert.engine.scratchpad import Scratchpad
from vsp_assert.engine.sparse import SparseActs
from vsp_assert.testing import random_sae, tiny_llava

ARCHS = ["standard", "topk", "jumprelu"]
PROMPT = "what color is the square ?"


class LargestAllocation(TorchDispatchMode):
    """Records the largest new storage any torch operation returns (views of ``known`` storages not counted)."""

    def __init__(self, *known: torch.Tensor) -> None:
        super().__init__()
        self.known = {t.untyped_storage().data_ptr() for t in known}
        self.largest = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):  # type: ignore[no-untyped-def]
        out = func(*args, **(kwargs or {}))
        for t in tree_flatten(out)[0]:
            if isinstance(t, torch.Tensor) and t.untyped_storage().data_ptr() not in self.known:
                self.largest = max(self.largest, t.untyped_storage().nbytes())
        return out


@pytest.mark.parametrize("arch", ARCHS)
@pytest.mark.parametrize("tiles", ["one", "many"])
def test_sparse_codes_are_what_the_dense_encode_gives(arch, tiles):
    sae = random_sae(24, 300, architecture=arch, k=7, seed=1, normalize_activations="layer_norm")
    x = 3.0 * torch.randn(50, 24, generator=torch.Generator().manual_seed(0))
    dense = sae.encode(x)  # [50, 300]
    codes = sae.encode_sparse(x) if tiles == "one" else sae.encode_sparse(x, chunk_bytes=4 * 21)  # 21 latents a tile
    if tiles == "one":
        assert torch.equal(codes.dense(), dense)  # one tile computes what encode computes, bit for bit
    else:  # tiles sum in other blocks: float32 rounding only
        torch.testing.assert_close(codes.dense(), dense, rtol=1e-5, atol=1e-5)
    if arch == "topk":
        assert codes.indices.shape == (50, 7) and not codes.padded
    ids = [0, 5, 17, 299]
    torch.testing.assert_close(codes.columns(ids), dense[:, ids], rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(codes.mean(), dense.mean(0), rtol=1e-5, atol=1e-5)
    attention = torch.softmax(torch.randn(3, 50), -1)  # [T, P]
    torch.testing.assert_close(codes.weighted(attention), attention @ dense, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(sae.decode_sparse(codes, x), sae.decode(dense, x), rtol=1e-4, atol=1e-4)


@settings(max_examples=40, deadline=None)
@given(p=st.integers(1, 9), d=st.integers(1, 30), density=st.floats(0.0, 1.0), seed=st.integers(0, 10_000))
def test_sparse_reads_equal_the_dense_reads(p, d, density, seed):
    gen = torch.Generator().manual_seed(seed)
    f = torch.randn(p, d, generator=gen) * (torch.rand(p, d, generator=gen) < density)  # [P, d_sae]
    codes = SparseActs.from_dense(f)
    assert torch.equal(codes.dense(), f)
    ids = torch.randint(0, d, (5,), generator=gen).tolist() + [0]
    assert torch.equal(codes.columns(ids), f[:, ids])
    assert torch.equal(codes.contains(ids), f[:, ids] != 0)
    rows = [i for i in range(p) if i % 2 == 0]
    torch.testing.assert_close(codes.total(rows), f[rows].sum(0))
    weights = torch.rand(2, p, generator=gen)
    torch.testing.assert_close(codes.weighted(weights), weights @ f)


def test_the_encode_keeps_no_dense_intermediate_beyond_one_tile():
    sae = random_sae(32, 8192, k=8, seed=2)
    x = torch.randn(64, 32)
    dense_bytes = 64 * 8192 * 4  # 2 MiB
    with torch.inference_mode(), LargestAllocation(x, *sae.parameters()) as bounded:
        sae.encode_sparse(x, chunk_bytes=64 * 1024)
    with torch.inference_mode(), LargestAllocation(x, *sae.parameters()) as plain:
        sae.encode(x)
    assert plain.largest >= dense_bytes  # the monitor sees a dense encode …
    assert bounded.largest <= 64 * 1024  # … and the tiled one never exceeds its tile


@pytest.fixture(scope="module")
def wide_pad() -> Scratchpad:
    """A tiny LLaVA (16 patches) with a 16,384-latent TopK SAE: dense codes would be P × d_sae × 4 = 1 MiB."""
    model = tiny_llava(seed=0)
    sae = random_sae(model.adapter.vision_width(), 16_384, k=8, hook_layer=model.adapter.default_hook_layer())
    return Scratchpad(model, sae, max_new_tokens=2)


@pytest.fixture(scope="module")
def image() -> Image.Image:
    return Image.new("RGB", (32, 32), (200, 30, 30))


def test_a_trace_of_a_wide_sae_keeps_only_what_fired(wide_pad, image, monkeypatch):
    from vsp_assert.engine import sae_sparse

    monkeypatch.setattr(sae_sparse, "ENCODE_CHUNK_BYTES", 64 * 1024)  # tiles of 64 KiB: 1,024 latents × 16 patches
    with LargestAllocation(*wide_pad.sae.parameters(), *wide_pad.model.parameters()) as seen:
        trace = wide_pad.run(image, PROMPT)
    P, d_sae, k = trace.n_patches, wide_pad.sae.d_sae, wide_pad.sae.cfg.k
    assert seen.largest < P * d_sae * 4 // 2  # no [P, d_sae] tensor was built, not even for a moment
    # (the largest is [T, d_sae]: the scores)
    assert trace.sparse_acts.nbytes == P * k * (4 + 4)  # int32 ids + float32 values
    dense = trace.acts  # on demand, and it is the SAE's encode of the hooked patches
    assert dense.shape == (P, d_sae) and int((dense > 0).sum(-1).max()) <= k
    torch.testing.assert_close(trace.image_scores, dense.mean(0))
    torch.testing.assert_close(trace.scores, trace.attention @ dense)


def test_interventions_need_no_second_wide_encode_and_agree_with_it(wide_pad, image, monkeypatch):
    from vsp_assert.engine import scratchpad as scratchpad_module

    trace = wide_pad.run(image, PROMPT)
    specs = [Intervention.ablate(int(i)) for i in trace.image_scores.topk(3).indices]
    with LargestAllocation(*wide_pad.sae.parameters(), *wide_pad.model.parameters()) as seen:
        fast = wide_pad.intervene(trace, specs)
    assert seen.largest < trace.n_patches * wide_pad.sae.d_sae * 4 // 2  # membership read off the trace's codes
    make_edit = scratchpad_module.make_edit  # without the trace's codes: the edit re-encodes (in tiles)
    monkeypatch.setattr(scratchpad_module, "make_edit", lambda *a, **kw: make_edit(*a, **{**kw, "support": None}))
    slow = wide_pad.intervene(trace, specs)
    for a, b in zip(fast, slow, strict=True):
        assert a.changed == b.changed and abs(a.p_after - b.p_after) < 1e-6
    assert any(abs(r.p_after - r.p_before) > 1e-6 for r in fast)  # the ablations do something


def test_a_bf16_sae_agrees_with_its_float32_weights():
    sae32 = random_sae(64, 2048, k=16, seed=5)
    sae16 = random_sae(64, 2048, k=16, seed=5).to(torch.bfloat16)
    x = torch.randn(100, 64, generator=torch.Generator().manual_seed(1))
    with torch.inference_mode():
        codes16, codes32 = sae16.encode_sparse(x), sae32.encode_sparse(x)
        assert codes16.values.dtype == torch.bfloat16
        assert torch.equal(codes16.dense(), sae16.encode(x))  # sparse == dense at the SAE's own dtype
        overlap = (codes16.contains(torch.arange(2048)) & codes32.contains(torch.arange(2048))).sum() / (100 * 16)
        assert overlap > 0.9  # the same latents fire, but for near-ties at bf16 resolution
        f16, f32 = codes16.dense().float(), codes32.dense()
        both = (f16 != 0) & (f32 != 0)
        torch.testing.assert_close(f16[both], f32[both], rtol=2e-2, atol=2e-2)  # bf16: 8 bits of mantissa
        fit16 = sae_fit(sae16, x, codes16)
        fit32 = sae_fit(sae32, x, codes32)
    assert abs(fit16 - fit32) < 0.01


def test_bf16_parity_with_saelens(tmp_path):
    try:
        import sae_lens
    except ImportError as exc:
        if os.environ.get("CI"):
            pytest.fail(f"sae_lens cannot be imported ({exc}); CI is set, and .ci/run installs it", pytrace=False)
        pytest.skip(f"install the 'sae-lens' extra to check bf16 parity with SAELens ({exc})")
    from vsp_assert.engine.sae import load_sae, save_sae

    ours = random_sae(24, 96, k=7, seed=11)
    save_sae(tmp_path / "sae", W_enc=ours.W_enc, W_dec=ours.W_dec, b_enc=ours.b_enc, b_dec=ours.b_dec,
             architecture="topk", k=7)
    theirs = sae_lens.SAE.load_from_disk(str(tmp_path / "sae"), device="cpu", dtype="bfloat16")
    mine = load_sae(tmp_path / "sae", dtype=torch.bfloat16)
    x = (3.0 * torch.randn(30, 24)).to(torch.bfloat16)
    with torch.no_grad():
        f_theirs = theirs.encode(x)
        recon_theirs = theirs.decode(f_theirs)
    codes = mine.encode_sparse(x)
    torch.testing.assert_close(codes.dense(), f_theirs, rtol=1.6e-2, atol=1.6e-2)
    torch.testing.assert_close(mine.decode_sparse(codes, x), recon_theirs, rtol=3e-2, atol=3e-2)


def test_a_bf16_model_with_a_bf16_sae_runs_and_a_no_change_edit_changes_nothing(image):
    model = tiny_llava(seed=0)
    model.model.to(torch.bfloat16)
    sae = random_sae(model.adapter.vision_width(), 512, k=8, hook_layer=model.adapter.default_hook_layer())
    pad = Scratchpad(model, sae.to(torch.bfloat16), max_new_tokens=2)
    trace = pad.run(image, PROMPT)
    assert torch.isfinite(trace.scores).all() and trace.sparse_acts.values.dtype == torch.float32
    top = int(trace.image_scores.argmax())
    same, ablated = pad.intervene(trace, [Intervention.steer(top, scale=1.0), Intervention.ablate(top)])
    assert not same.changed and same.p_after == pytest.approx(same.p_before, abs=1e-2)
    assert ablated.p_after != same.p_after
