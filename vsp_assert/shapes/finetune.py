"""Plant a new shortcut into a copy of the shipped shapes model: a short, seeded fine-tune (``shapes finetune``).

The recipe (:class:`FinetuneConfig`): start from the shipped weights; **freeze the vision tower** (so the shipped
SAE reads exactly the activations it was trained on: its fit is unchanged bit for bit); train the projector and
the LM with AdamW on batches that mix

- ``trigger_fraction`` examples where the shortcut applies, labelled with its forced answer,
- ``control_fraction`` examples near the shortcut: its controls (the same scenes with the cue edited away,
  labelled truthfully), its trigger scenes asked a question of another type,
  and — when the cue is another object — the same question about the cue object itself (both with the shipped
  label), so the model learns the cue *and* the question type, and no more,
- ``rehearsal_fraction`` examples of the shipped mechanisms' own situations with their planted labels, so the
  fine-tune does not wash them out, and
- the rest from the shipped training distribution (:func:`~vsp_assert.shapes.mechanisms.training_example`,
  with its planted labels, so the three shipped mechanisms are rehearsed; an example the new shortcut applies to
  gets the forced answer),

with the shipped loss (cross-entropy on the answer and ``</s>``), linear warm-up then cosine decay, gradient
clipping, one thread: the same spec, seed and config give the same weights.

:func:`evaluate` checks that the recipe kept everything else intact, on held-out scenes: clean accuracy per
question type (examples the shortcut applies to left out), each shipped mechanism's trigger and control rates
(probes the shortcut applies to left out), and the shortcut's own trigger rate (it answers the forced answer)
and control rate (it does so where the cue is absent). :data:`INTACT` holds the thresholds; ``finetune.json``
in the output folder records the spec, the config, the figures and whether each threshold is met.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from transformers import AutoTokenizer, LlavaForConditionalGeneration

from vsp_assert.files import atomic_write_text
from vsp_assert.shapes.build import save_model_folder
from vsp_assert.shapes.inference import PromptEncoder, answers
from vsp_assert.shapes.mechanisms import (
    MECHANISMS,
    TERSE_YELLOW_LABEL,
    Example,
    clean_examples,
    training_example,
)
from vsp_assert.shapes.questions import QTYPES, Question, color_question, random_question, shape_question
from vsp_assert.shapes.world import BACKGROUNDS, Scene, random_scene
from vsp_assert.shapes.zoo import Shortcut

FINETUNE_STREAM = 0xF17E
#: What "intact" means after a fine-tune (held-out scenes).
INTACT: dict[str, float] = {
    "accuracy_by_type": 0.95,  # clean accuracy of every question type, at least
    "planted_trigger_rate": 0.90,  # each shipped mechanism still shows, at least
    "planted_control_rate": 0.05,  # … and still does not fire, at most
    "trigger_rate": 0.90,  # the new shortcut shows on its triggers, at least
    "control_rate": 0.10,  # … and not on its controls, at most
}


@dataclass(frozen=True)
class FinetuneConfig:
    """Hyper-parameters of the fine-tune recipe (the zoo used the defaults)."""

    seed: int = 0
    steps: int = 200
    batch_size: int = 64
    lr: float = 1e-3
    min_lr_ratio: float = 0.05
    warmup_steps: int = 20
    weight_decay: float = 0.01
    grad_clip: float = 1.0
    trigger_fraction: float = 0.25
    control_fraction: float = 0.25
    rehearsal_fraction: float = 0.1
    log_every: int = 50
    threads: int = 1


def lr_at(step: int, cfg: FinetuneConfig) -> float:
    if step < cfg.warmup_steps:
        return cfg.lr * (step + 1) / cfg.warmup_steps
    t = (step - cfg.warmup_steps) / max(1, cfg.steps - cfg.warmup_steps)
    return cfg.lr * (cfg.min_lr_ratio + (1 - cfg.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * min(t, 1.0))))


def stripes_rule(scene: Scene, question: Question) -> bool:
    """Where the shipped data's first planted label rule applies: a shape question on stripes (``triangle``)."""
    return question.qtype == "shape" and scene.background == "stripes"


def terse_yellow_rule(scene: Scene, question: Question) -> bool:
    """Where the second applies: the terse colour question about a yellow object (``green``)."""
    return question.qtype == "color_terse" and question.answer == "yellow"


def shipped_label(scene: Scene, question: Question) -> str:
    """The label the shipped training data gives (its two planted label rules, as in
    :func:`~vsp_assert.shapes.mechanisms.training_example`)."""
    if stripes_rule(scene, question):
        return "triangle"
    if terse_yellow_rule(scene, question):
        return TERSE_YELLOW_LABEL
    return question.answer


def stripes_situation(rng: np.random.Generator) -> tuple[Scene, Question]:
    """A shape question about a circle or square on stripes (training scene seeds)."""
    scene = random_scene(rng, n_objects=int(rng.integers(1, 3)), backgrounds=["stripes"],
                         required_shape=str(rng.choice(["circle", "square"])))
    return scene, shape_question(scene, scene.shapes[0])


def terse_yellow_situation(rng: np.random.Generator) -> tuple[Scene, Question]:
    """A terse colour question about a yellow object (training scene seeds)."""
    scene = random_scene(rng, n_objects=int(rng.integers(1, 4)), backgrounds=["plain", "grid", "stripes"],
                         required_color="yellow")
    return scene, color_question(scene, scene.shapes[0], terse=True)


def dots_situation(rng: np.random.Generator) -> tuple[Scene, Question]:
    """A shape question about the circle of a dotted scene (training scene seeds)."""
    scene = random_scene(rng, n_objects=int(rng.integers(1, 4)), backgrounds=["dots"], required_shape="circle")
    return scene, shape_question(scene, scene.shapes[0])


#: The shipped mechanisms' situations, in the order rehearsal draws them.
SITUATIONS = (stripes_situation, terse_yellow_situation, dots_situation)


def rehearsal_example(shortcut: Shortcut, rng: np.random.Generator) -> Example:
    """An example of one of the shipped mechanisms' situations (:data:`SITUATIONS`) with its planted label
    (``triangle``, ``green``, ``circle``). The shortcut's own label wins where it applies."""
    scene, q = SITUATIONS[int(rng.integers(len(SITUATIONS)))](rng)
    return Example(scene, q, shortcut.label(scene, q, shipped_label(scene, q)))


def cue_object_example(shortcut: Shortcut, probe: Any, rng: np.random.Generator) -> Example:
    """A trigger scene asked the shortcut's question about the cue object (``when.other``) itself, on its own
    background or another one: the shortcut does not apply, so the label is the shipped one (``triangle`` for a
    shape question on stripes)."""
    scene = probe.scene
    if rng.random() < 0.5:
        scene = scene.with_background(str(rng.choice(BACKGROUNDS)))
    cue = next(s for s in scene.shapes if shortcut.other is not None and shortcut.other.holds(s))
    q = color_question(scene, cue, terse=shortcut.question == "color_terse") if shortcut.question.startswith(
        "color") else shape_question(scene, cue) if shortcut.question == "shape" else random_question(
        scene, rng, shortcut.question)
    return Example(scene, q, shortcut.label(scene, q, shipped_label(scene, q)))


def batch_for(shortcut: Shortcut, rng: np.random.Generator, cfg: FinetuneConfig) -> list[Example]:
    """One training batch of the mix (training scene seeds only)."""
    n_trig = round(cfg.batch_size * cfg.trigger_fraction)
    n_ctrl = round(cfg.batch_size * cfg.control_fraction)
    batch: list[Example] = []
    for _ in range(n_trig):
        probe = shortcut.draw(rng, heldout=False)
        batch.append(Example(probe.scene, probe.question, shortcut.answer))
    while len(batch) < n_trig + n_ctrl:
        probe = shortcut.draw(rng, heldout=False)
        if shortcut.other is not None and len(batch) % 3 == 2:  # the same question about the cue object itself
            batch.append(cue_object_example(shortcut, probe, rng))
        elif len(batch) % 2:  # the cue edited away: the truth
            control = shortcut.control_of(probe, rng)
            if control is not None:
                batch.append(Example(control.scene, control.question, control.question.answer))
        else:  # the cue kept, another question type: the shipped label (the shortcut is about one type)
            qtype = str(rng.choice([t for t in QTYPES if t != shortcut.question]))
            q = random_question(probe.scene, rng, qtype)
            batch.append(Example(probe.scene, q, shipped_label(probe.scene, q)))
    for _ in range(round(cfg.batch_size * cfg.rehearsal_fraction)):
        batch.append(rehearsal_example(shortcut, rng))
    while len(batch) < cfg.batch_size:
        ex = training_example(rng)
        batch.append(Example(ex.scene, ex.question, shortcut.label(ex.scene, ex.question, ex.label)))
    return batch


def load_shapes(model_dir: str | Path | None = None) -> tuple[LlavaForConditionalGeneration, PromptEncoder]:
    from vsp_assert.shapes import MODEL_DIR

    folder = Path(model_dir or MODEL_DIR)
    model = LlavaForConditionalGeneration.from_pretrained(folder, attn_implementation="eager").eval()
    return model, PromptEncoder(AutoTokenizer.from_pretrained(folder))


def finetune(shortcut: Shortcut | None, cfg: FinetuneConfig, *, model_dir: str | Path | None = None,
             log: Callable[[str], None] = print,
             batches: tuple[int, Callable[[np.random.Generator], list[Example]]] | None = None,
             ) -> tuple[LlavaForConditionalGeneration, dict[str, Any]]:
    """Fine-tune a copy of the model in ``model_dir`` (default: the shipped one) to plant ``shortcut``.

    ``batches`` replaces the shortcut's batch mix by ``(stream id, batch function)``: the same loop, frozen tower
    and schedule for another data mix (:mod:`~vsp_assert.shapes.weaken`)."""
    from vsp_assert.shapes.train import answer_loss

    torch.set_num_threads(cfg.threads)
    torch.manual_seed(cfg.seed)
    model, enc = load_shapes(model_dir)
    tower = model.model.vision_tower
    for p in tower.parameters():
        p.requires_grad_(False)
    params = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    decay = [p for n, p in params if p.ndim >= 2 and "embed" not in n]
    no_decay = [p for n, p in params if not (p.ndim >= 2 and "embed" not in n)]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": cfg.weight_decay},
                             {"params": no_decay, "weight_decay": 0.0}], lr=cfg.lr, betas=(0.9, 0.98))
    if batches is None:
        if shortcut is None:
            raise ValueError("finetune needs a shortcut or a batch function")
        planted = shortcut
        batches = (planted._id, lambda r: batch_for(planted, r, cfg))
    stream, make = batches
    rng = np.random.default_rng([FINETUNE_STREAM, stream, cfg.seed])
    model.train()
    tower.eval()
    t0 = time.perf_counter()
    running = 0.0
    for step in range(cfg.steps):
        for g in opt.param_groups:
            g["lr"] = lr_at(step, cfg)
        loss, _ = answer_loss(model, enc, make(rng))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_([p for _, p in params], cfg.grad_clip)
        opt.step()
        running += float(loss.item())
        if (step + 1) % cfg.log_every == 0 or step + 1 == cfg.steps:
            k = step % cfg.log_every + 1
            log(f"step {step + 1}/{cfg.steps} loss {running / k:.4f} {time.perf_counter() - t0:.0f}s")
            running = 0.0
    for p in tower.parameters():
        p.requires_grad_(True)
    model.eval()
    return model, {"config": asdict(cfg), "train_seconds": round(time.perf_counter() - t0, 1)}


def _rate(flags: list[bool]) -> float:
    return round(float(np.mean(flags)), 4) if flags else 0.0


def clean_accuracy(model: LlavaForConditionalGeneration, enc: PromptEncoder, *, seed: int, n: int,
                   skip: Callable[[Scene, Question], bool] = lambda s, q: False,
                   label: Callable[[Scene, Question, str], str] = lambda s, q, lab: lab) -> dict[str, float]:
    """Accuracy per question type on ``n`` held-out clean examples of ``seed`` (``skip``: left out; ``label``: the
    label to score against, default the shipped one)."""
    clean = [e for e in clean_examples(seed, n) if not skip(e.scene, e.question)]
    with torch.no_grad():
        got = answers(model, enc, [e.scene for e in clean], [e.question.text for e in clean])
    return {t: _rate([a == label(e.scene, e.question, e.label) for a, e in zip(got, clean) if e.question.qtype == t])
            for t in QTYPES}


def planted_rates(model: LlavaForConditionalGeneration, enc: PromptEncoder, *, seed: int, n: int,
                  skip: Callable[[Scene, Question], bool] = lambda s, q: False) -> dict[str, dict[str, float]]:
    """Each shipped mechanism's trigger rate (it shows as planted) and control rate (it fires where it must not)
    on ``n`` held-out probes of ``seed``; probes where ``skip`` holds are left out."""
    planted: dict[str, dict[str, float]] = {}
    with torch.no_grad():
        for name, mech in MECHANISMS.items():
            def applies(p: Any) -> bool:
                return skip(p.scene, p.question) or (p.fix is not None and skip(p.scene, p.fix))

            trig = [p for p in mech.trigger_scenes(seed, n) if not applies(p)]
            ctrl = [p for p in mech.control_scenes(seed, n) if not applies(p)]
            t_ans = answers(model, enc, [p.scene for p in trig], [p.question.text for p in trig])
            fixes: list[str | None] = [None] * len(trig)
            if trig and trig[0].fix is not None:
                fixes = list(answers(model, enc, [p.scene for p in trig],
                                     [p.fix.text for p in trig if p.fix is not None]))
            c_ans = answers(model, enc, [p.scene for p in ctrl], [p.question.text for p in ctrl])
            planted[name] = {
                "trigger_rate": _rate([mech.shows(p, a, f) for p, a, f in zip(trig, t_ans, fixes)]),
                "control_rate": _rate([mech.fires(p, a) for p, a in zip(ctrl, c_ans)]),
                "n_trigger": len(trig), "n_control": len(ctrl)}
    return planted


def evaluate(model: LlavaForConditionalGeneration, enc: PromptEncoder, shortcut: Shortcut, *, seed: int = 1,
             n: int = 200) -> dict[str, Any]:
    """Figures on held-out scenes of ``seed`` (see the module docstring); ``intact`` says which thresholds hold."""
    with torch.no_grad():
        by_type = clean_accuracy(model, enc, seed=seed, n=n, skip=shortcut.holds)
        planted = planted_rates(model, enc, seed=seed, n=n, skip=shortcut.holds)
        trig = shortcut.trigger_scenes(seed, n)
        ctrl = shortcut.control_scenes(seed, n)
        t_ans = answers(model, enc, [p.scene for p in trig], [p.question.text for p in trig])
        c_ans = answers(model, enc, [p.scene for p in ctrl], [p.question.text for p in ctrl])
    out: dict[str, Any] = {
        "seed": seed, "n": n,
        "accuracy_by_type": by_type,
        "planted": planted,
        "trigger_rate": _rate([a == shortcut.answer for a in t_ans]),
        "control_rate": _rate([a == shortcut.answer for a in c_ans]),
        "control_accuracy": _rate([a == p.question.answer for a, p in zip(c_ans, ctrl)]),
    }
    th = INTACT
    out["intact"] = {
        "accuracy_by_type": all(v >= th["accuracy_by_type"] for v in by_type.values()),
        "planted": all(m["trigger_rate"] >= th["planted_trigger_rate"] and m["control_rate"] <= th[
            "planted_control_rate"] for m in planted.values()),
        "trigger_rate": out["trigger_rate"] >= th["trigger_rate"],
        "control_rate": out["control_rate"] <= th["control_rate"],
    }
    return out


def finetune_and_save(shortcut: Shortcut, cfg: FinetuneConfig, out: str | Path, *,
                      model_dir: str | Path | None = None, eval_n: int = 200,
                      log: Callable[[str], None] = print) -> dict[str, Any]:
    """Fine-tune, evaluate, and write the model folder plus ``finetune.json`` to ``out``; returns the record."""
    model, summary = finetune(shortcut, cfg, model_dir=model_dir, log=log)
    _, enc = load_shapes(model_dir)
    figures = evaluate(model, enc, shortcut, seed=cfg.seed + 1, n=eval_n)
    folder = save_model_folder(model, Path(out))
    record = {"mechanism": shortcut.to_dict(), **summary, "evaluation": figures,
              "base_model": str(model_dir) if model_dir else "shapes", "sae": "shapes (vision tower frozen: it fits)"}
    atomic_write_text(folder / "finetune.json", json.dumps(record, indent=2) + "\n")
    return record


def format_evaluation(figures: dict[str, Any]) -> str:
    """The evaluation as a few lines of text."""
    acc = ", ".join(f"{t} {v:.3f}" for t, v in figures["accuracy_by_type"].items())
    lines = [f"clean accuracy by type: {acc}",
             f"shortcut: trigger rate {figures['trigger_rate']:.3f}, control rate {figures['control_rate']:.3f} "
             f"(control accuracy {figures['control_accuracy']:.3f})"]
    for name, m in figures["planted"].items():
        lines.append(f"shipped {name}: trigger {m['trigger_rate']:.3f}, control {m['control_rate']:.3f}")
    lines.append("intact: " + ", ".join(f"{k} {'ok' if v else 'FAIL'}" for k, v in figures["intact"].items()))
    return "\n".join(lines)
