"""Smoke tests of both training recipes: a few steps each into a tmp folder, loadable, and deterministic."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from transformers import AutoProcessor, LlavaForConditionalGeneration

from vsp_assert.engine.sae import load_sae
from vsp_assert.shapes.build import save_model_folder
from vsp_assert.shapes.train import TrainConfig, lr_at, train_and_save, train_model
from vsp_assert.shapes.train_sae import SAETrainConfig, train_and_save_sae, train_topk_sae

TINY = TrainConfig(steps=3, batch_size=4, warmup_steps=2, log_every=1)
TINY_SAE = SAETrainConfig(steps=30, batch_size=256, d_sae=64, k=4, n_scenes=16, n_label_scenes=16, log_every=10)


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[str]]:
    out = tmp_path_factory.mktemp("shapes_train")
    lines: list[str] = []
    model_dir = train_and_save(TINY, out / "model", log=lines.append)
    model = LlavaForConditionalGeneration.from_pretrained(model_dir, attn_implementation="eager")
    train_and_save_sae(model, out / "sae", TINY_SAE, log=lines.append)
    return out, lines


def test_recipes_write_loadable_artifacts(trained: tuple[Path, list[str]]) -> None:
    out, lines = trained
    assert any(line.startswith("step 3/3") for line in lines)
    assert AutoProcessor.from_pretrained(out / "model").patch_size == 8
    sae = load_sae(out / "sae")
    assert (sae.d_in, sae.d_sae, sae.cfg.k) == (64, 64, 4)
    assert sae.hook_layer == "model.vision_tower.encoder.layers.2"
    assert sae.model_name == "shapes"
    live = set(sae.labels.latents)
    assert live.isdisjoint(sae.labels.dead) and len(live) + len(sae.labels.dead) == sae.d_sae
    for stats in sae.labels.latents.values():
        assert 0.0 <= stats["precision"] <= 1.0 and 0.0 < stats["firing_rate"] <= 1.0
    assert any("dead" in line for line in lines)  # dead latents are reported


def assert_same_weights(saved: Path, again: Path) -> None:
    """The two safetensors files hold the same tensors under the same names, and are the same bytes."""
    a, b = load_file(str(saved)), load_file(str(again))
    assert a.keys() == b.keys() and len(a) > 50  # ~88 tensors: an empty or partial match is a bug
    differ = sorted(k for k in a if not torch.equal(a[k], b[k]))
    assert not differ, f"{len(differ)} of {len(a)} tensors differ, e.g. {differ[:3]}"
    assert saved.read_bytes() == again.read_bytes()


def test_model_recipe_reproduces_the_weight_file_byte_for_byte(
    trained: tuple[Path, list[str]], tmp_path: Path
) -> None:
    out, _ = trained
    again, _ = train_model(TINY, log=lambda _line: None)
    save_model_folder(again, tmp_path)
    assert_same_weights(out / "model" / "model.safetensors", tmp_path / "model.safetensors")


def test_sae_recipe_reduces_error_and_is_deterministic() -> None:
    g = torch.Generator().manual_seed(0)
    x = torch.randn(4096, 8, generator=g) @ torch.randn(8, 32, generator=g)  # (N, 32), rank 8
    cfg = SAETrainConfig(steps=300, batch_size=512, d_sae=64, k=8, log_every=1000)
    sae_a, stats_a = train_topk_sae(x, cfg, log=lambda _line: None)
    sae_b, _ = train_topk_sae(x, cfg, log=lambda _line: None)
    assert stats_a["explained_variance_train"] > 0.8
    assert torch.equal(sae_a.W_dec, sae_b.W_dec)
    assert torch.allclose(sae_a.W_dec.norm(dim=1), torch.ones(64), atol=1e-5)


def test_learning_rate_schedule_warms_up_then_decays() -> None:
    cfg = TrainConfig(steps=100, warmup_steps=10, lr=1.0, min_lr_ratio=0.1)
    lrs = [lr_at(s, cfg) for s in range(100)]
    assert lrs[0] < lrs[5] < lrs[9] == pytest.approx(1.0)
    assert all(a >= b for a, b in zip(lrs[10:], lrs[11:], strict=False))
    assert lrs[-1] == pytest.approx(0.1, abs=0.01)
