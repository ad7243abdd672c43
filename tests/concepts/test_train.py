"""Activation streaming and the SAE trainer: the LM never runs, the buffer is bounded, training lowers the loss,
a resumed run equals an uninterrupted one, bad runs fail clearly, and other families train through the CLI."""

from __future__ import annotations

import argparse
import json
import math
import os
import signal
from pathlib import Path

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from safetensors.torch import load_file

from vsp_assert.concepts.activations import RecordStream, ShuffleBuffer, stream_activations
from vsp_assert.concepts.sources import ImageRecord, open_source
from vsp_assert.concepts.train import CHECKPOINT, Interrupted, TopKSAE, TrainConfig, train_sae
from vsp_assert.errors import InputError, ModelError, SAEError

SMALL = TrainConfig(d_sae=64, k=4, steps=12, batch_size=32, buffer=96, image_batch=4, checkpoint_every=0,
                    warmup_steps=2, dead_after=200)


@pytest.fixture(scope="module")
def records(shapes_source):
    return list(open_source(shapes_source))


# ---------------------------------------------------------------------- streaming
def test_stream_gives_per_image_patches_and_grids(tiny, records):
    batches = list(stream_activations(tiny, records[:5], batch_size=2))
    assert [len(b.records) for b in batches] == [2, 2, 1]
    width = tiny.adapter.vision_width()
    rows, cols = tiny.adapter.grid()
    for b in batches:
        assert all(a.shape == (rows * cols, width) and a.dtype == torch.float32 for a in b.acts)
        assert b.grids == [(rows, cols)] * len(b.acts)
    # batch composition does not change an image's activations
    alone = next(iter(stream_activations(tiny, records[2:3], batch_size=1))).acts[0]
    assert torch.allclose(alone, batches[1].acts[0], atol=1e-5)


def test_stream_stops_before_the_language_model(tiny, records):
    calls = {"lm": 0, "hooked": 0}
    lm_layer = tiny.adapter.lm_last_layer()
    hooked = tiny.model.get_submodule(tiny.adapter.default_hook_layer())
    h1 = lm_layer.register_forward_hook(lambda *a: calls.__setitem__("lm", calls["lm"] + 1))
    h2 = hooked.register_forward_pre_hook(lambda *a: calls.__setitem__("hooked", calls["hooked"] + 1))
    try:
        list(stream_activations(tiny, records[:2], batch_size=2))
    finally:
        h1.remove()
        h2.remove()
    assert calls == {"lm": 0, "hooked": 1}


def test_stream_layer_is_checked(tiny, records):
    with pytest.raises(ModelError) as info:
        list(stream_activations(tiny, records[:1], layer="model.vision_tower.nope"))
    assert info.value.field == "hook_layer"


class _FakeStream(RecordStream):
    """Rows ``[record index · 100 + patch]`` (3 patches a record) without a model."""

    def __init__(self, n_records: int, image_batch: int, **kw):
        recs = [ImageRecord(Path(f"{i}.png"), fields={"i": i}) for i in range(n_records)]
        super().__init__(None, recs, layer="x", image_batch=image_batch, seed=1, **kw)  # type: ignore[arg-type]

    def _extract(self) -> torch.Tensor:
        batch = [self._record(self.cursor + i) for i in range(self.image_batch)]
        self.cursor += len(batch)
        return torch.tensor([[r.fields["i"] * 100.0 + p] for r in batch for p in range(3)])  # [3·b, 1]


@settings(max_examples=40, deadline=None)
@given(n_records=st.integers(1, 6), image_batch=st.integers(1, 4),
       takes=st.lists(st.integers(1, 9), min_size=2, max_size=8), cut=st.integers(0, 7))
def test_record_stream_is_chunk_independent_and_resumable(n_records, image_batch, takes, cut):
    whole = _FakeStream(n_records, image_batch).take(sum(takes))
    s = _FakeStream(n_records, image_batch)
    cut = min(cut, len(takes) - 1)
    first = [s.take(n) for n in takes[:cut]]
    state = s.state()
    resumed = _FakeStream(n_records, image_batch, cursor=state["cursor"], pending=state["pending"])
    rest = [resumed.take(n) for n in takes[cut:]]
    assert torch.equal(torch.cat(first + rest), whole)
    # every epoch visits every record once
    epoch = _FakeStream(n_records, 1).take(3 * n_records)
    assert sorted(int(v) // 100 for v in epoch[::3, 0]) == list(range(n_records))


def test_shuffle_buffer_stays_bounded():
    stream = _FakeStream(5, 2)
    buf = ShuffleBuffer(stream, 10)
    gen = torch.Generator().manual_seed(0)
    seen = []
    for _ in range(20):
        seen.append(buf.draw(4, gen))
        assert buf.data.shape == (10, 1)
    assert len({float(v) for v in torch.cat(seen)}) > 10  # rows came from the refills, not the first fill only


# ---------------------------------------------------------------------- training
def _weights(folder: Path) -> dict[str, torch.Tensor]:
    return load_file(str(folder / "sae_weights.safetensors"))


def test_training_lowers_the_loss_and_writes_a_loadable_folder(tiny, records, tmp_path):
    from vsp_assert.engine.sae import load_sae

    evs: list[float] = []
    cfg = TrainConfig(d_sae=64, k=4, steps=30, batch_size=32, buffer=96, image_batch=4, checkpoint_every=5,
                      warmup_steps=3)
    folder, stats = train_sae(tiny, records, tmp_path / "sae", cfg,
                              log=lambda m: evs.append(float(m.split("variance ")[1].split()[0])))
    assert len(evs) == 6 and evs[-1] > evs[0] + 0.1, evs
    assert not (folder / CHECKPOINT).exists()
    sae = load_sae(folder)
    assert sae.d_in == tiny.adapter.vision_width() and sae.d_sae == 64 and sae.hook_layer == stats["hook_layer"]
    sidecar = json.loads((folder / "vsp_assert.json").read_text())
    assert sidecar == {"hook_layer": tiny.adapter.default_hook_layer(), "model": tiny.name}
    written = json.loads((folder / "training.json").read_text())
    for key in ("explained_variance", "dead_fraction", "l0", "steps", "seconds", "activations_per_second"):
        assert written[key] is not None, key
    assert written["heldout_images"] == 1 and written["train_images"] == 7 and written["l0"] <= 4
    assert 0 < written["explained_variance"] <= 1


def test_resume_reaches_the_same_weights(tiny, records, tmp_path):
    straight, _ = train_sae(tiny, records, tmp_path / "straight", SMALL)

    def stop_at_half(done: int) -> None:
        if done == SMALL.steps // 2:
            raise KeyboardInterrupt

    with pytest.raises(Interrupted) as info:
        train_sae(tiny, records, tmp_path / "resumed", SMALL, on_step=stop_at_half)
    assert info.value.step == 6 and info.value.checkpoint == tmp_path / "resumed" / CHECKPOINT
    assert sorted(p.name for p in (tmp_path / "resumed").iterdir()) == [CHECKPOINT]  # nothing half-written
    with pytest.raises(InputError, match="--resume"):
        train_sae(tiny, records, tmp_path / "resumed", SMALL)
    resumed, _ = train_sae(tiny, records, tmp_path / "resumed", SMALL, resume=True)
    a, b = _weights(straight), _weights(resumed)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_ctrl_c_is_deferred_to_the_end_of_the_step(tiny, records, tmp_path):
    def ctrl_c(done: int) -> None:
        if done == 3:
            os.kill(os.getpid(), signal.SIGINT)

    with pytest.raises(Interrupted) as info:
        train_sae(tiny, records, tmp_path / "sae", SMALL, on_step=ctrl_c)
    assert info.value.step == 3
    assert torch.load(tmp_path / "sae" / CHECKPOINT, weights_only=True)["step"] == 3


def test_an_interrupt_inside_a_step_keeps_the_last_checkpoint(tiny, records, tmp_path, monkeypatch):
    cfg = TrainConfig(**{**SMALL.__dict__, "checkpoint_every": 4})
    calls = {"n": 0}
    draw = ShuffleBuffer.draw

    def flaky(self, n, gen):
        calls["n"] += 1
        if calls["n"] == 7:
            raise KeyboardInterrupt
        return draw(self, n, gen)

    monkeypatch.setattr(ShuffleBuffer, "draw", flaky)
    with pytest.raises(Interrupted):
        train_sae(tiny, records, tmp_path / "sae", cfg)
    assert torch.load(tmp_path / "sae" / CHECKPOINT, weights_only=True)["step"] == 4


def test_resume_checks_the_checkpoint(tiny, records, tmp_path):
    out = tmp_path / "sae"
    with pytest.raises(Interrupted):
        train_sae(tiny, records, out, SMALL, on_step=lambda d: (_ for _ in ()).throw(KeyboardInterrupt))
    with pytest.raises(InputError) as info:
        train_sae(tiny, records, out, TrainConfig(**{**SMALL.__dict__, "lr": 1e-3}), resume=True)
    assert info.value.field == "lr" and info.value.file == str(out / CHECKPOINT)
    state = torch.load(out / CHECKPOINT, weights_only=True)
    state["d_in"] = 48
    torch.save(state, out / CHECKPOINT)
    with pytest.raises(SAEError) as err:
        train_sae(tiny, records, out, SMALL, resume=True)
    assert err.value.field == "d_in" and err.value.received == 48


@pytest.mark.parametrize("change, field", [
    ({"buffer": 16}, "buffer"), ({"k": 65}, "k"), ({"steps": 0}, "steps"),
])
def test_bad_options(tiny, records, tmp_path, change, field):
    with pytest.raises(InputError) as info:
        train_sae(tiny, records, tmp_path, TrainConfig(**{**SMALL.__dict__, **change}))
    assert info.value.field == field


def test_empty_source_and_bad_layer(tiny, records, tmp_path):
    with pytest.raises(InputError, match="empty"):
        train_sae(tiny, [], tmp_path, SMALL)
    with pytest.raises(ModelError):
        train_sae(tiny, records, tmp_path, SMALL, layer="model.vision_tower.nope")


def test_shapes_recipe_runs_the_shared_step():
    """The shapes recipe through the shared step equals the recipe's original inline loop (copied here)."""
    from vsp_assert.shapes.train_sae import SAETrainConfig, train_topk_sae

    x = torch.randn(600, 12, generator=torch.Generator().manual_seed(1)) * 2 + 0.5
    cfg = SAETrainConfig(d_sae=24, k=3, steps=30, batch_size=64, warmup_steps=5, dead_after=300, aux_k=4)
    sae, _ = train_topk_sae(x, cfg, log=lambda _m: None)
    ref = _reference_loop(x, cfg)
    for name in ("W_enc", "W_dec", "b_enc", "b_dec"):
        assert torch.equal(getattr(sae, name), getattr(ref, name)), name


def _reference_loop(x, cfg):
    torch.manual_seed(cfg.seed)
    gen = torch.Generator().manual_seed(cfg.seed)
    n, d_in = x.shape
    var = (x - x.mean(0)).pow(2).sum(-1).mean()
    sae = TopKSAE(d_in, cfg.d_sae, cfg.k, x.median(0).values)
    opt = torch.optim.Adam(sae.parameters(), lr=cfg.lr, betas=(0.9, 0.999))
    since_fired = torch.zeros(cfg.d_sae)
    for step in range(cfg.steps):
        if step < cfg.warmup_steps:
            lr = cfg.lr * (step + 1) / cfg.warmup_steps
        else:
            t = (step - cfg.warmup_steps) / max(1, cfg.steps - cfg.warmup_steps)
            lr = cfg.lr * (0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * t)))
        for g in opt.param_groups:
            g["lr"] = lr
        xb = x[torch.randint(0, n, (cfg.batch_size,), generator=gen)]
        pre = sae.pre(xb)
        top = pre.topk(cfg.k, dim=-1)
        f = torch.zeros_like(pre).scatter(-1, top.indices, torch.relu(top.values))
        x_hat = sae.decode(f)
        loss = (x_hat - xb).pow(2).sum(-1).mean() / var
        fired = (f > 0).any(0)
        since_fired += cfg.batch_size
        since_fired[fired] = 0
        dead = since_fired > cfg.dead_after
        if dead.any():
            resid = (xb - x_hat).detach()
            pre_dead = pre.masked_fill(~dead, float("-inf"))
            top_a = pre_dead.topk(min(cfg.aux_k, int(dead.sum())), dim=-1)
            f_aux = torch.zeros_like(pre).scatter(-1, top_a.indices, torch.relu(top_a.values))
            aux = (f_aux @ sae.W_dec - resid).pow(2).sum(-1).mean() / (
                (resid - resid.mean(0)).pow(2).sum(-1).mean().clamp_min(1e-8))
            loss = loss + cfg.aux_coef * aux
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sae.normalise_decoder()
    return sae


# ---------------------------------------------------------------------- the command, on other families
def _parser() -> argparse.ArgumentParser:
    from vsp_assert.cli.sae import add_commands

    parser = argparse.ArgumentParser(prog="vsp-assert")
    add_commands(parser.add_subparsers(dest="command", required=True))
    return parser


CLI_SMALL = ["--d-sae", "64", "--k", "4", "--steps", "6", "--batch-size", "32", "--buffer", "64",
             "--image-batch", "4", "--quiet"]


@pytest.mark.parametrize("family", ["qwen2_vl", "gemma3"])
def test_other_families_train_through_the_command(family, shapes_source, tmp_path, monkeypatch, capsys):
    from vsp_assert import Scratchpad
    from vsp_assert.engine.sae import load_sae
    from vsp_assert.testing.families import tiny_model

    loaded = tiny_model(family)
    monkeypatch.setattr("vsp_assert.cli.sae._load_model", lambda name, device: loaded)
    args = _parser().parse_args(["sae", "train", "--model", f"tiny-{family}", "--images", str(shapes_source),
                                 "--out", str(tmp_path / "sae"), *CLI_SMALL])
    assert args.func(args) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["steps"] == 6 and summary["activations_per_second"] > 0
    sae = load_sae(tmp_path / "sae")
    assert sae.hook_layer == loaded.adapter.default_hook_layer() and sae.d_in == loaded.adapter.vision_width()
    record = open_source(shapes_source)[0]
    trace = Scratchpad(loaded, sae, max_new_tokens=2).run(record.load(), "what color is the shape ?")
    assert trace.acts.shape[-1] == 64 and trace.sae_fit is not None


def test_command_errors_and_interrupt(tiny, shapes_source, tmp_path, monkeypatch, capsys):
    monkeypatch.setattr("vsp_assert.cli.sae._load_model", lambda name, device: tiny)
    parser = _parser()
    empty = tmp_path / "empty"
    empty.mkdir()
    args = parser.parse_args(["sae", "train", "--model", "m", "--images", str(empty), "--out", str(tmp_path / "o"),
                              *CLI_SMALL])
    assert args.func(args) == 2
    assert "no readable image" in capsys.readouterr().err

    import vsp_assert.concepts.train as train_mod

    real = train_mod.train_sae

    def interrupted(*a, **kw):
        return real(*a, **kw, on_step=lambda done: (_ for _ in ()).throw(KeyboardInterrupt) if done == 2 else None)

    monkeypatch.setattr(train_mod, "train_sae", interrupted)
    args = parser.parse_args(["sae", "train", "--model", "m", "--images", str(shapes_source),
                              "--out", str(tmp_path / "o"), *CLI_SMALL])
    assert args.func(args) == 130
    assert "--resume" in capsys.readouterr().err and (tmp_path / "o" / CHECKPOINT).exists()
    monkeypatch.setattr(train_mod, "train_sae", real)
    args = parser.parse_args(["sae", "train", "--model", "m", "--images", str(shapes_source),
                              "--out", str(tmp_path / "o"), "--resume", *CLI_SMALL])
    assert args.func(args) == 0 and not (tmp_path / "o" / CHECKPOINT).exists()
