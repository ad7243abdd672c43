"""`vsp-assert sae import`: each format's checkpoint, written here in that format's own layout and key names, is
imported and our encode/decode are checked against the format's forward formula, written out independently here
(from saev ``nn/modeling.py``, ViT-Prisma ``sae/sae.py``, PatchSAE ``sparse_autoencoder.py``)."""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import io
import json
import pickle
import sys
import types
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from vsp_assert.cli.sae_import import add_import_parser
from vsp_assert.concepts.importers import FORMATS, import_sae, read_checkpoint
from vsp_assert.engine.sae import SAE, load_sae
from vsp_assert.errors import SAEError

ATOL = 1e-6


def _weights(d_in: int, d_sae: int, seed: int, b_enc_shift: float = 0.0,
             dtype: torch.dtype = torch.float32) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return {name: t.to(dtype) for name, t in {
        "W_enc": torch.randn(d_in, d_sae, generator=g) / d_in**0.5,
        "b_enc": torch.randn(d_sae, generator=g) * 0.1 + b_enc_shift,
        "W_dec": torch.randn(d_sae, d_in, generator=g) / d_sae**0.5,
        "b_dec": torch.randn(d_in, generator=g) * 0.5,
    }.items()}


def _check(sae: SAE, x: torch.Tensor, f_ref: torch.Tensor, x_hat_ref: torch.Tensor) -> None:
    f = sae.encode(x)
    torch.testing.assert_close(f, f_ref, atol=ATOL, rtol=0)
    torch.testing.assert_close(sae.decode(f, x=x), x_hat_ref, atol=ATOL, rtol=0)


@contextlib.contextmanager
def _importable(qualname: str, cls: type) -> Iterator[None]:
    """Make ``cls`` picklable as ``qualname`` (a trainer's config class) while the checkpoint is saved, then
    remove it again, as on a machine without that trainer's package."""
    module, _, name = qualname.rpartition(".")
    parts = module.split(".")
    added = []
    for i in range(1, len(parts) + 1):
        mod_name = ".".join(parts[:i])
        if mod_name not in sys.modules:
            sys.modules[mod_name] = types.ModuleType(mod_name)
            added.append(mod_name)
    cls.__module__, cls.__qualname__ = module, name
    setattr(sys.modules[module], name, cls)
    try:
        yield
    finally:
        for mod_name in added:
            del sys.modules[mod_name]


# ============================================================================================== saev
def _write_saev(path: Path, header: dict[str, Any], state: dict[str, torch.Tensor]) -> Path:
    """saev ``nn.dump``: one JSON line, then ``torch.save(state_dict)`` into the same file."""
    buf = io.BytesIO()
    torch.save(state, buf)
    path.write_bytes(json.dumps(header).encode() + b"\n" + buf.getvalue())
    return path


def _saev_header(schema: int | None, d_in: int, d_sae: int, act: str, top_k: int = 4) -> dict[str, Any]:
    params = {"key": {"Relu": "relu", "TopK": "top-k", "BatchTopK": "batch-top-k"}[act], "top_k": top_k}
    if schema is None:  # 2024: flat config, ReLU only
        return {"d_vit": d_in, "exp_factor": d_sae // d_in, "sparsity_coeff": 4e-4, "n_reinit_samples": 10,
                "ghost_grads": False, "remove_parallel_grads": True, "normalize_w_dec": True, "seed": 0}
    if schema == 1:  # format 1A: the activation's class name in "cls"
        return {"schema": 1, "cls": act, "cfg": {"d_vit": d_in, "exp_factor": d_sae // d_in, "top_k": top_k}}
    width = {"d_vit": d_in, "exp_factor": d_sae // d_in} if schema == 2 else (
        {"d_model": d_in, "exp_factor": d_sae // d_in} if schema == 3 else {"d_model": d_in, "d_sae": d_sae})
    return {"schema": schema, "cfg": {**width, "activation": {"cls": act, "params": params},
                                      "normalize_w_dec": True}, "commit": "abc1234", "lib": "0.1.0"}


def saev_forward(state: dict[str, torch.Tensor], x: torch.Tensor, *, subtract: bool, act: str, top_k: int = 4,
                 theta: float = 0.0) -> tuple[torch.Tensor, torch.Tensor]:
    """saev SparseAutoencoder.encode/decode (eval mode), from the schema's modeling.py."""
    enc_in = x - state["b_dec"] if subtract else x
    h = enc_in @ state["W_enc"] + state["b_enc"]
    if act == "Relu":
        f = torch.relu(h)
    elif act == "TopK":
        idx = torch.topk(h, min(top_k, h.shape[-1]), dim=-1, sorted=False).indices
        f = torch.zeros_like(h).scatter(-1, idx, 1.0) * h
    else:  # BatchTopK, eval: JumpReLU with the running threshold
        f = torch.where(h > (theta if theta > 0 else 0.0), h, torch.zeros_like(h))
    return f, f @ state["W_dec"] + state["b_dec"]


@pytest.mark.parametrize(("schema", "act", "subtract"), [
    (None, "Relu", True), (1, "Relu", True), (1, "TopK", True), (3, "Relu", False), (4, "TopK", False),
    (5, "Relu", False), (5, "TopK", False), (5, "BatchTopK", False),
])
def test_saev_matches_its_forward(tmp_path, schema, act, subtract):
    d_in, d_sae = 8, 32
    state = _weights(d_in, d_sae, seed=1, b_enc_shift=3.0 if act == "TopK" else 0.0)
    if act == "BatchTopK":
        state["activation.threshold"] = torch.tensor(0.2)
    ckpt = _write_saev(tmp_path / "sae.pt", _saev_header(schema, d_in, d_sae, act), state)
    folder, imported = import_sae("saev", ckpt, tmp_path / "out", hook_layer="model.vit.layers.3", model="clip")
    sae = load_sae(folder)
    assert sae.hook_layer == "model.vit.layers.3" and sae.model_name == "clip"
    assert sae.cfg.apply_b_dec_to_input is subtract
    x = torch.randn(6, d_in) * 2
    _check(sae, x, *saev_forward(state, x, subtract=subtract, act=act, theta=0.2))
    assert sae.architecture == {"Relu": "standard", "TopK": "topk", "BatchTopK": "jumprelu"}[act]


def test_saev_folder_path_and_cli(tmp_path, capsys):
    d_in, d_sae = 4, 16
    state = _weights(d_in, d_sae, seed=2)
    (tmp_path / "ckpt").mkdir()
    _write_saev(tmp_path / "ckpt" / "sae.pt", _saev_header(5, d_in, d_sae, "Relu"), state)
    parser = argparse.ArgumentParser(prog="vsp-assert")
    sae_group = parser.add_subparsers(dest="command").add_parser("sae").add_subparsers(dest="sae_command")
    add_import_parser(sae_group)
    args = parser.parse_args(["sae", "import", "saev", str(tmp_path / "ckpt"), "--out", str(tmp_path / "o"),
                              "--hook-layer", "model.vit.layers.1"])
    assert args.func(args) == 0
    assert "d_in=4, d_sae=16" in capsys.readouterr().out
    assert load_sae(tmp_path / "o").hook_layer == "model.vit.layers.1"
    with pytest.raises(SystemExit):
        parser.parse_args(["sae", "import", "sparsify", str(tmp_path), "--out", str(tmp_path / "o")])


def test_saev_schema_2_needs_the_b_dec_convention(tmp_path):
    d_in, d_sae = 4, 8
    state = _weights(d_in, d_sae, seed=3)
    ckpt = _write_saev(tmp_path / "sae.pt", _saev_header(2, d_in, d_sae, "Relu"), state)
    with pytest.raises(SAEError, match="--subtract-b-dec"):
        read_checkpoint("saev", ckpt)
    x = torch.randn(5, d_in)
    for subtract in (True, False):
        folder, _ = import_sae("saev", ckpt, tmp_path / f"o{subtract}", subtract_b_dec=subtract)
        _check(load_sae(folder), x, *saev_forward(state, x, subtract=subtract, act="Relu"))
    with pytest.raises(SAEError, match="saev checkpoints only"):
        read_checkpoint("patchsae", ckpt, subtract_b_dec=True)


def test_saev_topk_keeps_negative_values_and_says_so(tmp_path):
    """saev's TopK keeps negative values among the top k; ours zeroes them. The import must say so."""
    d_in, d_sae = 4, 8
    state = _weights(d_in, d_sae, seed=4, b_enc_shift=-10.0)  # every pre-activation negative
    ckpt = _write_saev(tmp_path / "sae.pt", _saev_header(5, d_in, d_sae, "TopK", top_k=3), state)
    folder, imported = import_sae("saev", ckpt, tmp_path / "o")
    assert any("negative" in note for note in imported.notes)
    f_ref, _ = saev_forward(state, torch.zeros(1, d_in), subtract=False, act="TopK", top_k=3)
    assert (f_ref < 0).sum() == 3 and (load_sae(folder).encode(torch.zeros(1, d_in)) == 0).all()


def test_saev_input_mean_and_scale_are_folded(tmp_path):
    """2024 saev trained on (x - mean) / scalar; folding them in lets the SAE read raw activations. In float64:
    the fold is exact, but raw activations are ~10x larger, so float32 rounding alone would exceed 1e-6."""
    d_in, d_sae = 6, 24
    state = _weights(d_in, d_sae, seed=5, dtype=torch.float64)
    mean, scale = torch.randn(d_in, dtype=torch.float64) * 3, 7.5
    torch.save(mean, tmp_path / "mean.pt")
    for schema, subtract in ((None, True), (5, False)):
        ckpt = _write_saev(tmp_path / f"s{schema}.pt", _saev_header(schema, d_in, d_sae, "Relu"), state)
        folder, _ = import_sae("saev", ckpt, tmp_path / f"o{schema}", input_mean=tmp_path / "mean.pt",
                               input_scale=scale)
        x = torch.randn(5, d_in, dtype=torch.float64) * 10 + mean
        f_ref, x_hat_norm = saev_forward(state, (x - mean) / scale, subtract=subtract, act="Relu")
        _check(load_sae(folder), x, f_ref, x_hat_norm * scale + mean)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(d_in=st.integers(1, 12), mult=st.integers(1, 4), act=st.sampled_from(["Relu", "TopK", "BatchTopK"]),
       schema=st.sampled_from([1, 5]), seed=st.integers(0, 2**16))
def test_saev_any_small_shape(tmp_path_factory, d_in, mult, act, schema, seed):
    d_sae = d_in * mult
    top_k = max(1, d_sae // 2)
    state = _weights(d_in, d_sae, seed=seed, b_enc_shift=4.0 if act == "TopK" else 0.0)
    if act == "BatchTopK":
        if schema == 1:
            act = "Relu"
        else:
            state["activation.threshold"] = torch.tensor(0.1)
    tmp = tmp_path_factory.mktemp("saev")
    ckpt = _write_saev(tmp / "sae.pt", _saev_header(schema, d_in, d_sae, act, top_k=top_k), state)
    folder, _ = import_sae("saev", ckpt, tmp / "out")
    x = torch.randn(3, d_in)
    _check(load_sae(folder), x, *saev_forward(state, x, subtract=schema == 1, act=act, top_k=top_k, theta=0.1))


def test_saev_refusals(tmp_path):
    d_in, d_sae = 4, 8
    state = _weights(d_in, d_sae, seed=6)
    bad = _write_saev(tmp_path / "keys.pt", _saev_header(5, d_in, d_sae, "Relu"),
                      {"encoder.weight": state["W_enc"].T, "b_enc": state["b_enc"], "W_dec": state["W_dec"],
                       "b_dec": state["b_dec"]})
    with pytest.raises(SAEError, match=r"missing \['W_enc'\]; unexpected \['encoder.weight'\]"):
        read_checkpoint("saev", bad)
    no_threshold = _write_saev(tmp_path / "btk.pt", _saev_header(5, d_in, d_sae, "BatchTopK"), state)
    with pytest.raises(SAEError, match="batch-dependent"):
        read_checkpoint("saev", no_threshold)
    wrong_width = _write_saev(tmp_path / "w.pt", {"schema": 4, "cfg": {"d_model": 5, "d_sae": d_sae, "activation": {
        "cls": "Relu", "params": {}}}}, state)
    with pytest.raises(SAEError, match="d_model=5"):
        read_checkpoint("saev", wrong_width)
    buf = io.BytesIO()
    torch.save(state, buf)
    (tmp_path / "bare.pt").write_bytes(buf.getvalue())
    with pytest.raises(SAEError, match="first line is not a JSON header"):
        read_checkpoint("saev", tmp_path / "bare.pt")


# ============================================================================================== ViT-Prisma
def _prisma_config(d_in: int, d_sae: int, fn: str, k: int | None, norm: str) -> dict[str, Any]:
    """What ``VisionModelSAERunnerConfig.save_config`` writes (the fields the importer reads, and some others)."""
    return {"model_class_name": "HookedViT", "model_name": "open-clip:laion/CLIP-ViT-B-32-DataComp.XL-s13B-b90K",
            "hook_point_layer": 9, "layer_subtype": "hook_resid_post", "architecture": "standard",
            "expansion_factor": d_sae // d_in, "d_in": d_in, "activation_fn_str": fn,
            "activation_fn_kwargs": {"k": k} if k else {}, "normalize_activations": norm, "is_transcoder": False,
            "cls_token_only": False, "_dtype": "float32", "_device": "cuda", "l1_coefficient": 1e-5}


def prisma_forward(state: dict[str, torch.Tensor], x: torch.Tensor, *, fn: str, k: int | None,
                   norm: str) -> tuple[torch.Tensor, torch.Tensor]:
    """StandardSparseAutoencoder.encode/decode with its run-time normalisation (vit_prisma/sae/sae.py)."""
    if norm == "constant_norm_rescale":
        coeff = x.shape[-1] ** 0.5 / x.norm(dim=-1, keepdim=True)
        sae_in, out_fn = x * coeff, (lambda y: y / coeff)
    elif norm == "layer_norm":
        mu = x.mean(dim=-1, keepdim=True)
        std = (x - mu).std(dim=-1, keepdim=True)
        sae_in, out_fn = (x - mu) / (std + 1e-5), (lambda y: y * std + mu)
    else:
        sae_in, out_fn = x, (lambda y: y)
    pre = (sae_in - state["b_dec"]) @ state["W_enc"] + state["b_enc"]
    if fn == "topk":
        top = torch.topk(pre, k=k, dim=-1)
        f = torch.zeros_like(pre).scatter(-1, top.indices, torch.relu(top.values))
    else:
        f = torch.relu(pre)
    return f, out_fn(f @ state["W_dec"] + state["b_dec"])


@pytest.mark.parametrize(("fn", "k", "norm"), [
    ("relu", None, "none"), ("topk", 5, "layer_norm"), ("relu", None, "constant_norm_rescale"),
    ("topk", 3, "none"),
])
def test_prisma_matches_its_forward(tmp_path, fn, k, norm):
    d_in, d_sae = 8, 32
    state = _weights(d_in, d_sae, seed=7)
    repo = tmp_path / "repo"
    repo.mkdir()
    torch.save(state, repo / "weights.pt")
    (repo / "config.json").write_text(json.dumps(_prisma_config(d_in, d_sae, fn, k, norm)))
    folder, imported = import_sae("prisma", repo, tmp_path / "out", hook_layer="model.vit.layers.9")
    assert imported.hook_name == "blocks.9.hook_resid_post"
    sae = load_sae(folder)
    assert sae.model_name == "open-clip:laion/CLIP-ViT-B-32-DataComp.XL-s13B-b90K"
    x = torch.randn(6, d_in) * 3 + 1
    _check(sae, x, *prisma_forward(state, x, fn=fn, k=k, norm=norm))


@dataclasses.dataclass
class VisionModelSAERunnerConfig:  # stands for vit_prisma's class (pickled by name, absent when loading)
    d_in: int = 8
    expansion_factor: int = 4
    activation_fn_str: str = "topk"
    activation_fn_kwargs: dict = dataclasses.field(default_factory=lambda: {"k": 4})
    normalize_activations: str = "layer_norm"
    architecture: str = "standard"
    hook_point_layer: int = 10
    layer_subtype: str = "hook_resid_post"
    model_name: str = "open-clip:laion/CLIP-ViT-B-32-DataComp.XL-s13B-b90K"
    _dtype: str = "float32"


def test_prisma_pickled_checkpoint_needs_allow_pickle(tmp_path):
    """``save_model`` writes {"cfg": VisionModelSAERunnerConfig, "state_dict"}: refused weights-only, read with
    allow_pickle even though vit_prisma is not installed (its config becomes a record of its fields)."""
    state = _weights(8, 32, seed=8)
    with _importable("vit_prisma.sae.config.VisionModelSAERunnerConfig", VisionModelSAERunnerConfig):
        torch.save({"cfg": VisionModelSAERunnerConfig(), "state_dict": state}, tmp_path / "n_images_100.pt")
    assert "vit_prisma" not in sys.modules
    with pytest.raises(SAEError, match="--allow-pickle") as err:
        read_checkpoint("prisma", tmp_path / "n_images_100.pt")
    assert "VisionModelSAERunnerConfig" in str(err.value)
    folder, imported = import_sae("prisma", tmp_path / "n_images_100.pt", tmp_path / "out", allow_pickle=True)
    assert any("unpickling" in note for note in imported.notes) and imported.k == 4
    x = torch.randn(5, 8)
    _check(load_sae(folder), x, *prisma_forward(state, x, fn="topk", k=4, norm="layer_norm"))


def test_prisma_refusals(tmp_path):
    d_in, d_sae = 4, 16
    state = _weights(d_in, d_sae, seed=9)
    torch.save({**state, "b_gate": torch.zeros(d_sae), "r_mag": torch.zeros(d_sae)}, tmp_path / "weights.pt")
    (tmp_path / "config.json").write_text(json.dumps(_prisma_config(d_in, d_sae, "relu", None, "none")))
    with pytest.raises(SAEError, match=r"unexpected \['b_gate', 'r_mag'\]"):
        read_checkpoint("prisma", tmp_path)
    torch.save(state, tmp_path / "weights.pt")
    for key, value, message in (("architecture", "gated", "only standard"), ("activation_fn_str", "tanh-relu",
                                "unsupported Prisma activation"), ("activation_fn_kwargs", {}, "needs activation_fn")):
        cfg = _prisma_config(d_in, d_sae, "topk", 2, "none")
        cfg[key] = value
        (tmp_path / "config.json").write_text(json.dumps(cfg))
        with pytest.raises(SAEError, match=message):
            read_checkpoint("prisma", tmp_path)
    (tmp_path / "config.json").unlink()
    with pytest.raises(SAEError, match="config.json is missing"):
        read_checkpoint("prisma", tmp_path)


# ============================================================================================== PatchSAE
@dataclasses.dataclass
class ViTSAERunnerConfig:  # stands for patchsae's class
    d_in: int = 8
    expansion_factor: int = 4
    model_name: str = "openai/clip-vit-base-patch16"
    module_name: str = "resid"
    block_layer: int = -2
    gated_sae: bool = False
    class_token: bool = True
    dtype: torch.dtype = torch.float32
    device: Any = dataclasses.field(default_factory=lambda: torch.device("cpu"))

    def __post_init__(self) -> None:
        self.d_sae = self.d_in * self.expansion_factor


def patchsae_forward(state: dict[str, torch.Tensor], x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """SparseAutoencoder.forward_standard (src/sae_training/sparse_autoencoder.py)."""
    f = torch.relu((x - state["b_dec"]) @ state["W_enc"] + state["b_enc"])
    return f, f @ state["W_dec"] + state["b_dec"]


def test_patchsae_pickled_checkpoint_needs_allow_pickle(tmp_path):
    state = _weights(8, 32, seed=10)
    path = tmp_path / "final_sparse_autoencoder_openai_clip-vit-base-patch16_-2_resid_32.pt"
    with _importable("src.sae_training.config.ViTSAERunnerConfig", ViTSAERunnerConfig):
        torch.save({"cfg": ViTSAERunnerConfig(), "state_dict": state}, path)
    with pytest.raises(SAEError, match="--allow-pickle"):
        import_sae("patchsae", path, tmp_path / "out")
    assert not (tmp_path / "out").exists()
    folder, imported = import_sae("patchsae", path, tmp_path / "out", allow_pickle=True,
                                  hook_layer="model.vision_tower.vision_model.encoder.layers.10")
    assert imported.hook_name == "vision_model.encoder.layers[-2]"
    sae = load_sae(folder)
    assert sae.model_name == "openai/clip-vit-base-patch16" and sae.architecture == "standard"
    x = torch.randn(6, 8) * 2
    _check(sae, x, *patchsae_forward(state, x))


@settings(max_examples=20, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(d_in=st.integers(1, 16), mult=st.integers(1, 4), seed=st.integers(0, 2**16))
def test_patchsae_plain_config_loads_weights_only(tmp_path_factory, d_in, mult, seed):
    """``tasks/utils.load_sae`` also accepts a plain-dict "config": that file needs no unpickling."""
    state = _weights(d_in, d_in * mult, seed=seed)
    tmp = tmp_path_factory.mktemp("patchsae")
    cfg = {"d_in": d_in, "expansion_factor": mult, "block_layer": 10, "module_name": "resid",
           "model_name": "openai/clip-vit-base-patch16", "dtype": torch.float32, "device": torch.device("cpu")}
    torch.save({"config": cfg, "state_dict": state}, tmp / "out.pt")
    folder, imported = import_sae("patchsae", tmp / "out.pt", tmp / "sae")
    assert not any("unpickling" in note for note in imported.notes)
    x = torch.randn(4, d_in)
    _check(load_sae(folder), x, *patchsae_forward(state, x))


def test_patchsae_refusals(tmp_path):
    state = _weights(4, 8, seed=11)
    cfg = {"d_in": 4, "expansion_factor": 2, "block_layer": 3, "gated_sae": True}
    torch.save({"cfg": cfg, "state_dict": {**state, "r_mag": torch.zeros(8), "b_mag": torch.zeros(8)}},
               tmp_path / "g.pt")
    with pytest.raises(SAEError, match="gated"):
        read_checkpoint("patchsae", tmp_path / "g.pt")
    torch.save({"cfg": {**cfg, "expansion_factor": 3, "gated_sae": False}, "state_dict": state}, tmp_path / "w.pt")
    with pytest.raises(SAEError, match="expansion_factor"):
        read_checkpoint("patchsae", tmp_path / "w.pt")


# ============================================================================================== across formats
def test_a_checkpoint_of_another_format_is_refused_by_name(tmp_path):
    state = _weights(4, 8, seed=12)
    torch.save(state, tmp_path / "weights.pt")  # a Prisma bare state dict …
    (tmp_path / "config.json").write_text(json.dumps(_prisma_config(4, 8, "relu", None, "none")))
    with pytest.raises(SAEError, match=r"not a PatchSAE checkpoint.*\n.*received: \['W_dec', 'W_enc'"):
        read_checkpoint("patchsae", tmp_path / "weights.pt")  # … is not a PatchSAE one
    with pytest.raises(SAEError, match="not a saev checkpoint"):
        read_checkpoint("saev", tmp_path / "weights.pt")
    torch.save({"cfg": {"d_in": 4, "expansion_factor": 2, "block_layer": 3}, "state_dict": state},
               tmp_path / "p.pt")  # a PatchSAE file given to the Prisma importer
    with pytest.raises(SAEError, match=r"not look like a prisma config: missing \['activation_fn_str'\]"):
        read_checkpoint("prisma", tmp_path / "p.pt")
    saev_file = _write_saev(tmp_path / "sae.pt", _saev_header(5, 4, 8, "Relu"), state)
    with pytest.raises(SAEError, match="cannot read it as a torch checkpoint"):
        read_checkpoint("patchsae", saev_file)
    with pytest.raises(SAEError, match="unknown SAE format"):
        read_checkpoint("sparsify", saev_file)
    assert set(FORMATS) == {"saev", "prisma", "patchsae"}


def test_unpickling_never_imports_unknown_modules_or_calls_builtins(tmp_path):
    """With allow_pickle, classes outside torch/the standard containers become inert records, and builtins like
    exec are not resolved: a crafted file cannot call them."""

    class Evil:
        def __reduce__(self):
            return (exec, ("import sys; sys._vsp_pwned = True",))

    from vsp_assert.concepts.importers._common import _LenientUnpickler

    _LenientUnpickler(io.BytesIO(pickle.dumps(Evil()))).load()
    assert not hasattr(sys, "_vsp_pwned")
    for fn in (torch.load, torch.hub.load, torch.from_file, getattr, __import__):  # functions are never resolved
        module, name = fn.__module__ or "builtins", fn.__name__
        record = _LenientUnpickler(io.BytesIO(b"")).find_class(module, name)
        assert record is not fn and getattr(record, "_vsp_name", None) == f"{module}.{name}"
    torch.save({"cfg": Evil(), "state_dict": _weights(4, 8, seed=13)}, tmp_path / "evil.pt")
    with pytest.raises(SAEError, match="--allow-pickle"):
        read_checkpoint("patchsae", tmp_path / "evil.pt")
    with pytest.raises(SAEError, match="does not look like a patchsae config"):  # refused, and nothing ran
        read_checkpoint("patchsae", tmp_path / "evil.pt", allow_pickle=True)
    assert not hasattr(sys, "_vsp_pwned")
