"""SAE loading, SAELens parity, round trips and clear errors for bad folders."""

from __future__ import annotations

import json
import os
from types import ModuleType

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from vsp_assert.engine.labels import ConceptLabels
from vsp_assert.engine.sae import load_sae, save_sae
from vsp_assert.errors import SAEError
from vsp_assert.testing import random_sae

ARCHS = ["standard", "topk", "jumprelu"]


class Evil:
    """Any non-tensor object: unpickling it could run code, so the loader must refuse it."""


def _save(sae, folder, **extra):
    save_sae(
        folder, W_enc=sae.W_enc, W_dec=sae.W_dec, b_enc=sae.b_enc, b_dec=sae.b_dec,
        architecture=sae.architecture, k=sae.cfg.k,
        threshold=getattr(sae, "threshold", None), apply_b_dec_to_input=sae.cfg.apply_b_dec_to_input,
        normalize_activations=sae.cfg.normalize_activations, **extra,
    )
    return folder


@pytest.mark.parametrize("arch", ARCHS)
def test_round_trip_keeps_weights_config_and_encodings(tmp_path, arch):
    sae = random_sae(16, 48, architecture=arch, k=6, seed=3)
    labels = ConceptLabels(48, {"red": [1, 2]}, {1: {"label": "red", "precision": 0.95}}, dead=[7])
    _save(sae, tmp_path / "sae", hook_layer="model.x.layers.1", model="tiny", labels=labels)
    back = load_sae(tmp_path / "sae")
    assert back.architecture == arch and back.d_in == 16 and back.d_sae == 48
    assert back.hook_layer == "model.x.layers.1" and back.model_name == "tiny"
    assert back.labels.resolve("red") == [1, 2] and back.labels.dead == [7]
    for name in ("W_enc", "W_dec", "b_enc", "b_dec"):
        assert torch.equal(getattr(back, name), getattr(sae, name))
    x = torch.randn(5, 16)
    assert torch.equal(back.encode(x), sae.encode(x))
    cfg = json.loads((tmp_path / "sae" / "cfg.json").read_text())
    assert cfg["architecture"] == arch and cfg["d_in"] == 16 and cfg["d_sae"] == 48


def test_topk_keeps_exactly_k_nonnegative_latents():
    sae = random_sae(16, 64, architecture="topk", k=5)
    f = sae.encode(torch.randn(20, 16))
    assert (f >= 0).all()
    assert ((f > 0).sum(-1) <= 5).all()


def sae_lens_or_skip(reason: str) -> ModuleType:
    """SAELens, or a skip with ``reason`` where it is not installed; under CI (``CI`` set) .ci/run installs it,
    so its absence fails the test instead of skipping it quietly."""
    try:
        import sae_lens
    except ImportError as exc:
        if os.environ.get("CI"):
            pytest.fail(f"sae_lens cannot be imported ({exc}); CI is set, and .ci/run installs it", pytrace=False)
        pytest.skip(f"{reason} ({exc})")
    return sae_lens


@pytest.mark.parametrize("arch", ARCHS)
@pytest.mark.parametrize("apply_b_dec", [True, False])
@pytest.mark.parametrize("norm", ["none", "constant_norm_rescale", "layer_norm"])
def test_parity_with_saelens(tmp_path, arch, apply_b_dec, norm):
    sl = sae_lens_or_skip("install the 'sae-lens' extra to check parity with SAELens")
    ours = random_sae(24, 96, architecture=arch, k=7, seed=11, apply_b_dec_to_input=apply_b_dec,
                      normalize_activations=norm)
    folder = _save(ours, tmp_path / "sae")
    theirs = sl.SAE.load_from_disk(str(folder), device="cpu")
    x = 3.0 * torch.randn(4, 9, 24)
    with torch.no_grad():
        f_theirs = theirs.encode(x)
        recon_theirs = theirs.decode(f_theirs)
    f_ours = load_sae(folder).encode(x)
    torch.testing.assert_close(f_ours, f_theirs, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(load_sae(folder).decode(f_ours, x=x), recon_theirs, rtol=1e-5, atol=1e-5)


@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 10_000), d_in=st.integers(2, 20), d_sae=st.integers(2, 40), arch=st.sampled_from(ARCHS))
def test_no_change_means_no_delta(seed, d_in, d_sae, arch):
    """decoder_delta of a zero latent change is exactly zero: the base of the no-op identity guarantee."""
    sae = random_sae(d_in, d_sae, architecture=arch, k=min(3, d_sae), seed=seed)
    x = torch.randn(3, d_in)
    f = sae.encode(x)
    assert torch.equal(sae.decoder_delta(torch.zeros_like(f), x), torch.zeros_like(x))


def test_tensor_shape_disagreeing_with_cfg_is_refused(tmp_path):
    folder = _save(random_sae(16, 32), tmp_path / "sae")
    cfg = json.loads((folder / "cfg.json").read_text())
    cfg["d_sae"] = 40
    (folder / "cfg.json").write_text(json.dumps(cfg))
    with pytest.raises(SAEError) as err:
        load_sae(folder)
    msg = str(err.value)
    assert "sae_weights.safetensors" in msg and "W_enc" in msg and "[16, 32]" in msg and "[16, 40]" in msg


def test_unknown_architecture_names_allowed_ones(tmp_path):
    folder = _save(random_sae(8, 16), tmp_path / "sae")
    cfg = json.loads((folder / "cfg.json").read_text())
    cfg["architecture"] = "gated_v9"
    (folder / "cfg.json").write_text(json.dumps(cfg))
    with pytest.raises(SAEError, match="(?s)architecture.*gated_v9.*standard, topk, jumprelu"):
        load_sae(folder)


def test_pickled_weights_are_refused(tmp_path):
    folder = tmp_path / "sae"
    folder.mkdir()
    (folder / "cfg.json").write_text(json.dumps({"architecture": "standard", "d_in": 4, "d_sae": 8}))
    torch.save({"W_enc": Evil()}, folder / "sae_weights.pt")
    with pytest.raises(SAEError, match="never pickled objects"):
        load_sae(folder)


def test_missing_folder_and_missing_cfg(tmp_path):
    with pytest.raises(SAEError, match="SAE folder not found"):
        load_sae(tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    with pytest.raises(SAEError, match="cfg.json is missing"):
        load_sae(tmp_path / "empty")


def test_label_file_naming_missing_latents_is_refused(tmp_path):
    folder = _save(random_sae(8, 16), tmp_path / "sae")
    (folder / "concepts.json").write_text(json.dumps({"concepts": {"red": [3, 99]}}))
    (folder / "vsp_assert.json").write_text(json.dumps({"labels": "concepts.json"}))
    with pytest.raises(SAEError) as err:
        load_sae(folder)
    assert "concepts.json" in str(err.value) and "99" in str(err.value) and "[0, 15]" in str(err.value)


def test_decode_with_normalisation_requires_the_input():
    sae = random_sae(8, 16, normalize_activations="layer_norm")
    with pytest.raises(SAEError, match="decode needs the original input"):
        sae.decode(torch.zeros(2, 16))


def test_wrong_input_width_is_a_clear_error():
    sae = random_sae(8, 16)
    with pytest.raises(SAEError, match="width 9 but the SAE expects d_in=8"):
        sae.encode(torch.zeros(2, 9))


def test_registry_reference_loads_through_saelens(tmp_path, monkeypatch):
    sl = sae_lens_or_skip("install the 'sae-lens' extra to load from its registry")
    ours = random_sae(16, 48, architecture="topk", k=5, seed=4)
    folder = _save(ours, tmp_path / "sae", hook_layer="blocks.3.hook_resid_post")
    asked = []

    def from_pretrained(release, sae_id, device="cpu", **kwargs):  # stands in for the hub download
        asked.append((release, sae_id))
        return sl.SAE.load_from_disk(str(folder), device=device)

    monkeypatch.setattr(sl.SAE, "from_pretrained", from_pretrained)
    sae = load_sae("sae-lens:my-release:layer_3/width_48", hook_layer="model.vision_tower.encoder.layers.1")
    assert asked == [("my-release", "layer_3/width_48")]
    assert sae.hook_layer == "model.vision_tower.encoder.layers.1" and sae.d_sae == 48
    x = torch.randn(4, 16)
    torch.testing.assert_close(sae.encode(x), ours.encode(x))


def test_registry_reference_without_the_extra_is_a_clear_error(monkeypatch):
    import sys

    monkeypatch.setitem(sys.modules, "sae_lens", None)  # as if the extra were not installed
    with pytest.raises(SAEError, match="needs the optional 'sae-lens' extra") as err:
        load_sae("sae-lens:release:id")
    assert "pip install 'vsp-assert[sae-lens]'" in str(err.value)
    with pytest.raises(SAEError, match="names a release and an SAE id"):
        load_sae("sae-lens:only-a-release")
