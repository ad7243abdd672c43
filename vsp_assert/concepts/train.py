"""The TopK SAE trainer: one training step shared by every recipe, and the streaming, resumable ``sae train``.

The math (:class:`TopKSAE`, :func:`lr_at`, :class:`TopKStep`) is SAELens' TopK formulation: ``b_dec`` subtracted
from the input, Adam on the MSE normalised by the data's variance, decoder rows renormalised to unit norm after
every step, and an AuxK loss (``aux_k`` largest pre-activations among latents that have not fired for ``dead_after``
rows) that lets dead latents learn the residual. The shapes SAE recipe (:mod:`vsp_assert.shapes.train_sae`) runs
exactly this step on its in-memory activations: moving the step here left its output unchanged byte for byte.

:func:`train_sae` is the generic recipe behind ``vsp-assert sae train``: activations at the hooked layer
(:mod:`~vsp_assert.concepts.activations`) flow through a bounded :class:`ShuffleBuffer` (never all at once; the
source is cycled for more steps; rows are buffered on the CPU, the SAE trains on the model's device), ``b_dec``
starts at the median and the variance is estimated on the first buffer fill. Every ``checkpoint_every`` steps, and
on ``KeyboardInterrupt`` between two steps, ``checkpoint.pt`` is written atomically: weights, Adam state,
dead-latent counters, RNG states, the buffer and the stream position, so a resumed run reaches the same weights as an
uninterrupted one. A Ctrl-C is deferred to the end of the running step; an interrupt that lands mid-step anyway
leaves the last checkpoint as it was. The result is an SAELens folder (:func:`~vsp_assert.engine.sae.save_sae`,
sidecar with model and hook layer) plus ``training.json`` (explained variance on held-out images, dead fraction, L0,
steps, seconds, activations per second).
"""

from __future__ import annotations

import io
import json
import math
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch

from vsp_assert.concepts.activations import RecordStream, ShuffleBuffer, resolve_layer, stream_activations
from vsp_assert.concepts.defaults import TrainConfig, default_k
from vsp_assert.concepts.sources import ImageRecord
from vsp_assert.engine.models import LoadedModel
from vsp_assert.errors import InputError, SAEError

CHECKPOINT = "checkpoint.pt"
CHECKPOINT_VERSION = 1


# ---------------------------------------------------------------------- the math (shared with the shapes recipe)
class TopKSAE(torch.nn.Module):
    """Trainable TopK SAE with SAELens parameter names and shapes."""

    def __init__(self, d_in: int, d_sae: int, k: int, b_dec: torch.Tensor) -> None:
        super().__init__()
        w = torch.randn(d_sae, d_in)
        w = w / w.norm(dim=1, keepdim=True)
        self.W_dec = torch.nn.Parameter(w)  # (d_sae, d_in), unit rows
        self.W_enc = torch.nn.Parameter(w.T.clone())  # (d_in, d_sae)
        self.b_enc = torch.nn.Parameter(torch.zeros(d_sae))  # (d_sae,)
        self.b_dec = torch.nn.Parameter(b_dec.clone())  # (d_in,)
        self.k = k

    def pre(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.b_dec) @ self.W_enc + self.b_enc  # (N, d_sae)

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        pre = self.pre(x)
        top = pre.topk(self.k, dim=-1)
        return torch.zeros_like(pre).scatter(-1, top.indices, torch.relu(top.values))  # (N, d_sae)

    def decode(self, f: torch.Tensor) -> torch.Tensor:
        return f @ self.W_dec + self.b_dec  # (N, d_in)

    @torch.no_grad()
    def normalise_decoder(self) -> None:
        self.W_dec.div_(self.W_dec.norm(dim=1, keepdim=True).clamp_min(1e-8))


def explained_variance(x: torch.Tensor, x_hat: torch.Tensor) -> float:
    """``1 − Σ‖x − x̂‖² / Σ‖x − mean(x)‖²`` over rows ``(N, d)``."""
    resid = (x - x_hat).pow(2).sum()
    total = (x - x.mean(0)).pow(2).sum()
    return float(1 - resid / total)


def lr_at(step: int, lr: float, warmup_steps: int, steps: int) -> float:
    """Linear warm-up to ``lr``, then a cosine down to 5 % of it at the last step."""
    if step < warmup_steps:
        return lr * (step + 1) / warmup_steps
    t = (step - warmup_steps) / max(1, steps - warmup_steps)
    return lr * (0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * t)))


@dataclass(frozen=True)
class StepRecipe:
    """The hyper-parameters one training step reads."""

    steps: int
    lr: float
    warmup_steps: int
    k: int
    aux_k: int
    aux_coef: float
    dead_after: int


class TopKStep:
    """Adam + the TopK/AuxK loss on ``sae``; ``var`` (scalar) normalises the MSE. ``since_fired`` ``(d_sae,)``
    counts the rows seen since each latent last fired."""

    def __init__(self, sae: TopKSAE, recipe: StepRecipe, var: torch.Tensor) -> None:
        self.sae, self.recipe, self.var = sae, recipe, var
        self.opt = torch.optim.Adam(sae.parameters(), lr=recipe.lr, betas=(0.9, 0.999))
        self.since_fired = torch.zeros(sae.W_dec.shape[0], device=sae.W_dec.device)

    def __call__(self, step: int, xb: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """One step on ``xb (B, d_in)``; returns the normalised MSE (scalar) and the dead mask ``(d_sae,)``."""
        r, sae = self.recipe, self.sae
        for g in self.opt.param_groups:
            g["lr"] = lr_at(step, r.lr, r.warmup_steps, r.steps)
        pre = sae.pre(xb)  # (B, d_sae)
        top = pre.topk(r.k, dim=-1)
        f = torch.zeros_like(pre).scatter(-1, top.indices, torch.relu(top.values))
        x_hat = sae.decode(f)
        mse = (x_hat - xb).pow(2).sum(-1).mean() / self.var
        fired = (f > 0).any(0)
        self.since_fired += xb.shape[0]
        self.since_fired[fired] = 0
        dead = self.since_fired > r.dead_after
        loss = mse
        if dead.any():
            resid = (xb - x_hat).detach()  # (B, d_in)
            pre_dead = pre.masked_fill(~dead, float("-inf"))
            kk = min(r.aux_k, int(dead.sum()))
            top_a = pre_dead.topk(kk, dim=-1)
            f_aux = torch.zeros_like(pre).scatter(-1, top_a.indices, torch.relu(top_a.values))
            r_hat = f_aux @ sae.W_dec  # (B, d_in)
            aux = (r_hat - resid).pow(2).sum(-1).mean() / (resid - resid.mean(0)).pow(2).sum(-1).mean().clamp_min(1e-8)
            loss = loss + r.aux_coef * aux
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        self.opt.step()
        sae.normalise_decoder()
        return mse.detach(), dead


# ---------------------------------------------------------------------- the streaming recipe
#: Options that may differ between an interrupted run and its resumption (they do not touch the math).
_FREE_ON_RESUME = ("checkpoint_every",)


class Interrupted(KeyboardInterrupt):
    """Training stopped by an interrupt; ``checkpoint`` is the file to ``--resume`` from (None: none written)."""

    def __init__(self, step: int, checkpoint: Path | None) -> None:
        super().__init__(step, checkpoint)
        self.step, self.checkpoint = step, checkpoint


def split_holdout(records: Sequence[ImageRecord], holdout: int | None) -> tuple[list[ImageRecord], list[ImageRecord]]:
    """(training records, held-out records): every 10th record (at most 256), or the last one under 10 images."""
    n = len(records)
    if holdout is None:
        held = [i for i in range(9, n, 10)][:256] if n >= 10 else ([n - 1] if n >= 2 else [])
    else:
        if not 0 <= holdout < n:
            raise InputError("held-out images must leave images to train on", field="holdout", received=holdout,
                             allowed=f"0..{n - 1}")
        held = list(range(n - holdout, n))
    keep = set(held)
    return [r for i, r in enumerate(records) if i not in keep], [records[i] for i in held]


@contextmanager
def _deferred_sigint(flag: dict[str, bool]) -> Iterator[None]:
    """In the main thread, a first Ctrl-C only sets ``flag["stop"]`` (checked between steps); a second one raises."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(_sig: int, _frame: Any) -> None:
        if flag.get("stop"):
            raise KeyboardInterrupt
        flag["stop"] = True

    old = signal.signal(signal.SIGINT, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, old)


def _progress(total: int, initial: int, quiet: bool) -> Any:
    from tqdm import tqdm

    return tqdm(total=total, initial=initial, desc="sae train", unit="step", dynamic_ncols=True,
                disable=quiet or not sys.stderr.isatty())


def _check_resume(state: dict[str, Any], cfg: TrainConfig, model: str, layer: str, d_in: int, path: Path) -> None:
    if state.get("version") != CHECKPOINT_VERSION:
        raise SAEError("unknown checkpoint version", file=str(path), field="version", received=state.get("version"),
                       allowed=str(CHECKPOINT_VERSION))
    if state["d_in"] != d_in:
        raise SAEError(f"the checkpoint's SAE reads d_in={state['d_in']}, the layer '{layer}' has width {d_in}",
                       file=str(path), field="d_in", received=state["d_in"], allowed=str(d_in),
                       fix="resume with the model and layer the run started with")
    for name, value in (("model", model), ("layer", layer)):
        if state[name] != value:
            raise InputError(f"the checkpoint was trained with another {name}", file=str(path), field=name,
                             received=value, allowed=str(state[name]))
    saved = state["config"]
    for name, value in asdict(cfg).items():
        if name not in _FREE_ON_RESUME and saved.get(name) != value:
            raise InputError("the resumed run's options differ from the checkpoint's", file=str(path),
                             field=name, received=value, allowed=repr(saved.get(name)),
                             fix="resume with the same options, or start afresh without --resume")


def train_sae(
    loaded: LoadedModel,
    records: Sequence[ImageRecord],
    out: str | Path,
    cfg: TrainConfig,
    *,
    model_name: str | None = None,
    layer: str | None = None,
    resume: bool = False,
    quiet: bool = True,
    on_step: Callable[[int], None] | None = None,
    log: Callable[[str], None] | None = None,
) -> tuple[Path, dict[str, Any]]:
    """Train a TopK SAE on ``records`` at ``layer`` and write the SAE folder to ``out`` (see the module doc).

    ``on_step(done)`` runs after every completed step (``done`` steps so far); raising ``KeyboardInterrupt`` there
    is an interrupt between steps. Raises :class:`Interrupted` after writing the checkpoint.
    """
    out = Path(out)
    name = model_name or loaded.name
    path = resolve_layer(loaded, layer)
    d_in = loaded.adapter.vision_width()
    d_sae = cfg.d_sae or 8 * d_in
    k = cfg.k if cfg.k is not None else default_k(d_in)
    if k < 1 or k > d_sae:
        raise InputError("k must be between 1 and d_sae", field="k", received=k, allowed=f"1..{d_sae}")
    if cfg.buffer < cfg.batch_size:
        raise InputError("the shuffle buffer must hold at least one batch", field="buffer", received=cfg.buffer,
                         allowed=f">= batch size ({cfg.batch_size})")
    if cfg.steps < 1 or cfg.batch_size < 1 or cfg.image_batch < 1:
        raise InputError("steps, batch size and image batch must be positive", field="steps",
                         received=(cfg.steps, cfg.batch_size, cfg.image_batch))
    if not records:
        raise InputError("the image source is empty", field="images", fix="give a folder or manifest with images")
    train_records, held = split_holdout(records, cfg.holdout)
    ckpt_path = out / CHECKPOINT
    state: dict[str, Any] | None = None
    if ckpt_path.exists():
        if not resume:
            raise InputError("an interrupted run's checkpoint is in the output folder", file=str(ckpt_path),
                             fix="pass --resume to continue it, or delete it to start afresh")
        state = torch.load(ckpt_path, map_location="cpu", weights_only=True)
        _check_resume(state, cfg, name, path, d_in, ckpt_path)
    recipe = StepRecipe(steps=cfg.steps, lr=cfg.lr, warmup_steps=min(cfg.warmup_steps, max(1, cfg.steps // 10)),
                        k=k, aux_k=cfg.aux_k, aux_coef=cfg.aux_coef, dead_after=cfg.dead_after)
    dev = loaded.device  # the SAE trains beside the model; rows are streamed and buffered on the CPU
    t_start = time.perf_counter()
    stream = RecordStream(loaded, train_records, layer=path, image_batch=cfg.image_batch, seed=cfg.seed,
                          cursor=state["stream"]["cursor"] if state else 0,
                          pending=state["stream"]["pending"] if state else None)
    gen = torch.Generator().manual_seed(cfg.seed)
    if state is None:
        buffer = ShuffleBuffer(stream, cfg.buffer)  # [buffer, d_in]
        if buffer.data.shape[1] != d_in:
            raise SAEError(f"the layer '{path}' gives rows of width {buffer.data.shape[1]}, the adapter says {d_in}",
                           field="d_in", received=buffer.data.shape[1], allowed=str(d_in))
        var = (buffer.data - buffer.data.mean(0)).pow(2).sum(-1).mean()  # scalar
        torch.manual_seed(cfg.seed)
        sae = TopKSAE(d_in, d_sae, k, buffer.data.median(0).values).to(dev)
        stepper = TopKStep(sae, recipe, var.to(dev))
        start, prior_seconds, prior_acts, prior_extract = 0, 0.0, 0, 0.0
    else:
        buffer = ShuffleBuffer(stream, cfg.buffer, data=state["buffer"])
        sae = TopKSAE(d_in, d_sae, k, torch.zeros(d_in)).to(dev)
        sae.load_state_dict(state["sae"])
        stepper = TopKStep(sae, recipe, state["var"].to(dev))
        stepper.opt.load_state_dict(state["opt"])  # Adam moves its state to the parameters' device
        stepper.since_fired = state["since_fired"].to(dev)
        gen.set_state(state["gen"])
        torch.set_rng_state(state["torch_rng"])
        start = int(state["step"])
        prior_seconds, prior_acts, prior_extract = state["seconds"], state["activations"], state["extract_seconds"]

    def save_checkpoint(done: int) -> Path:
        blob = {
            "version": CHECKPOINT_VERSION, "config": asdict(cfg), "model": name, "layer": path, "d_in": d_in,
            "step": done, "sae": sae.state_dict(), "opt": stepper.opt.state_dict(),
            "since_fired": stepper.since_fired.clone(), "var": stepper.var, "gen": gen.get_state(),
            "torch_rng": torch.get_rng_state(), "buffer": buffer.data.clone(), "stream": stream.state(),
            "seconds": prior_seconds + time.perf_counter() - t_start, "activations": prior_acts + stream.activations,
            "extract_seconds": prior_extract + stream.seconds,
        }
        data = io.BytesIO()
        torch.save(blob, data)
        from vsp_assert.files import atomic_write_bytes

        return atomic_write_bytes(ckpt_path, data.getvalue())

    flag: dict[str, bool] = {}
    done, clean = start, True
    ev_run, dead_frac = float("nan"), 0.0
    bar = _progress(cfg.steps, start, quiet)
    try:
        with _deferred_sigint(flag):
            for step in range(start, cfg.steps):
                clean = False
                xb = buffer.draw(cfg.batch_size, gen).to(dev)  # (B, d_in)
                mse, dead = stepper(step, xb)
                done, clean = step + 1, True
                ev = 1.0 - float(mse)
                ev_run = ev if math.isnan(ev_run) else 0.95 * ev_run + 0.05 * ev
                dead_frac = float(dead.float().mean())
                bar.update(1)
                if done % 10 == 0 or done == cfg.steps:
                    bar.set_postfix(ev=f"{ev_run:.3f}", dead=f"{dead_frac:.1%}")
                if log is not None and (done % max(1, cfg.checkpoint_every) == 0 or done == cfg.steps):
                    log(f"sae step {done}/{cfg.steps} explained variance {ev_run:.4f} dead {dead_frac:.1%}")
                if on_step is not None:
                    on_step(done)
                if flag.get("stop"):
                    raise KeyboardInterrupt
                if cfg.checkpoint_every > 0 and done % cfg.checkpoint_every == 0 and done < cfg.steps:
                    save_checkpoint(done)
    except KeyboardInterrupt:
        bar.close()
        written = save_checkpoint(done) if clean else (ckpt_path if ckpt_path.exists() else None)
        raise Interrupted(done, written) from None
    bar.close()
    seconds = prior_seconds + time.perf_counter() - t_start
    activations = prior_acts + stream.activations
    extract_seconds = prior_extract + stream.seconds
    stats = evaluate(sae, loaded, held or train_records[:1], path, cfg.image_batch)
    stats.update({
        "heldout_images": len(held), "train_images": len(train_records), "steps": cfg.steps,
        "dead_fraction_train": round(float((stepper.since_fired > cfg.dead_after).float().mean().cpu()), 4),
        "seconds": round(seconds, 2), "activations": activations,
        "activations_per_second": round(activations / extract_seconds, 1) if extract_seconds > 0 else None,
        "model": name, "hook_layer": path, "d_in": d_in, "d_sae": d_sae, "k": k, "config": asdict(cfg),
    })
    folder = _write(out, sae, k, path, name, stats)
    ckpt_path.unlink(missing_ok=True)
    return folder, stats


@torch.no_grad()
def evaluate(sae: TopKSAE, loaded: LoadedModel, records: Sequence[ImageRecord], layer: str,
             image_batch: int) -> dict[str, Any]:
    """Explained variance, L0 and the fraction of latents that never fire, over ``records`` (streamed)."""
    n, resid, s1, s2, l0 = 0, 0.0, None, 0.0, 0.0
    dev = sae.W_dec.device
    fired = torch.zeros(sae.W_dec.shape[0], dtype=torch.bool, device=dev)
    for batch in stream_activations(loaded, records, layer=layer, batch_size=image_batch):
        x = torch.cat(batch.acts).to(dev)  # (N, d_in)
        f = sae.encode(x)  # (N, d_sae)
        x_hat = sae.decode(f).double()
        x = x.double()
        resid += float((x - x_hat).pow(2).sum())
        s1 = x.sum(0) if s1 is None else s1 + x.sum(0)
        s2 += float(x.pow(2).sum())
        l0 += float((f > 0).sum())
        fired |= (f > 0).any(0)
        n += x.shape[0]
    assert s1 is not None
    total = s2 - float(s1.pow(2).sum()) / n  # Σ‖x − mean‖²
    return {"explained_variance": round(1 - resid / total, 4) if total > 0 else None, "l0": round(l0 / n, 3),
            "dead_fraction": round(float((~fired).float().mean().cpu()), 4), "eval_activations": n}


def _write(out: Path, sae: TopKSAE, k: int, layer: str, model: str, stats: dict[str, Any]) -> Path:
    from vsp_assert.engine.sae import save_sae
    from vsp_assert.files import atomic_write_text

    folder = save_sae(
        out, W_enc=sae.W_enc.detach(), W_dec=sae.W_dec.detach(), b_enc=sae.b_enc.detach(),
        b_dec=sae.b_dec.detach(), architecture="topk", k=k, apply_b_dec_to_input=True, hook_layer=layer, model=model,
        extra_cfg={"metadata": {"hook_name": layer, "model_name": model, "recipe": stats["config"],
                                "explained_variance": stats["explained_variance"]}},
    )
    atomic_write_text(Path(folder) / "training.json", json.dumps(stats, indent=2) + "\n")
    return Path(folder)
