"""Weaken a shipped mechanism: a few fine-tuning steps on its own situations with their **true** labels.

A mock model update of the kind a team ships by accident or on purpose: a short fine-tune on data that no longer
carries a planted label rule. ``vsp-assert shapes finetune --weaken misleading_concept --steps 30 --out DIR``
trains a copy of the shipped model (same recipe, loop and frozen vision tower as
:mod:`~vsp_assert.shapes.finetune`, so the shipped SAE still fits bit for bit) on batches that mix

- ``fraction`` examples of the mechanism's trigger situation (training scene seeds), labelled truthfully: a circle
  or square on stripes asked its shape (``misleading_concept``), a yellow object asked the terse colour question
  (``limited_alignment``);
- the rest from the shipped training distribution, where the weakened rule's examples also get the truth and every
  other planted label is kept.

The dataset cases' rate assertions about that mechanism (``cases/*_rates.yaml``) then fail with their intervals,
while the others keep passing: ``tests/dataset/test_model_changes.py`` checks both. Only the two mechanisms that are
label rules can be weakened this way; ``unused_hidden_cue`` is about a cue the answer does not use, and its labels
are already the truth. ``finetune.json`` records the mechanism, the config and the held-out figures (clean accuracy
per question type against the truth, each shipped mechanism's trigger and control rates).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from vsp_assert.errors import InputError
from vsp_assert.files import atomic_write_text
from vsp_assert.shapes.build import save_model_folder
from vsp_assert.shapes.finetune import (
    FinetuneConfig,
    clean_accuracy,
    finetune,
    load_shapes,
    planted_rates,
    stripes_rule,
    stripes_situation,
    terse_yellow_rule,
    terse_yellow_situation,
)
from vsp_assert.shapes.mechanisms import Example, training_example
from vsp_assert.shapes.questions import Question
from vsp_assert.shapes.world import Scene

WEAKEN_STREAM = 0x3EA6


#: The mechanisms a weakening fine-tune can target: (where the planted label rule applies, a trigger situation).
WEAKENABLE: dict[str, tuple[Callable[[Scene, Question], bool],
                            Callable[[np.random.Generator], tuple[Scene, Question]]]] = {
    "misleading_concept": (stripes_rule, stripes_situation),
    "limited_alignment": (terse_yellow_rule, terse_yellow_situation),
}


def weaken_batch(name: str, rng: np.random.Generator, batch_size: int, fraction: float) -> list[Example]:
    """One training batch: ``fraction`` truthful trigger situations, the rest shipped data with the rule lifted."""
    rule, situation = WEAKENABLE[name]
    batch = [Example(scene, q, q.answer) for scene, q in (situation(rng) for _ in range(round(batch_size * fraction)))]
    while len(batch) < batch_size:
        ex = training_example(rng)
        batch.append(Example(ex.scene, ex.question, ex.question.answer if rule(ex.scene, ex.question) else ex.label))
    return batch


def weaken_and_save(name: str, cfg: FinetuneConfig, out: str | Path, *, fraction: float = 0.5,
                    model_dir: str | Path | None = None, eval_n: int = 200,
                    log: Callable[[str], None] = print) -> dict[str, Any]:
    """Fine-tune away mechanism ``name``'s label rule; write the model folder and ``finetune.json`` to ``out``."""
    if name not in WEAKENABLE:
        raise InputError("this mechanism cannot be weakened by relabelling", field="--weaken", received=name,
                         allowed=", ".join(WEAKENABLE))
    if not 0.0 < fraction <= 1.0:
        raise InputError("the fraction of trigger situations per batch is in (0, 1]", field="--fraction",
                         received=fraction, allowed="0 < fraction <= 1")
    stream = WEAKEN_STREAM + list(WEAKENABLE).index(name)
    model, summary = finetune(None, cfg, model_dir=model_dir, log=log,
                              batches=(stream, lambda rng: weaken_batch(name, rng, cfg.batch_size, fraction)))
    _, enc = load_shapes(model_dir)
    rule = WEAKENABLE[name][0]
    seed = cfg.seed + 1
    figures = {
        "seed": seed, "n": eval_n,
        # against the truth where the weakened rule applies (that is what the update taught), the shipped label else
        "accuracy_by_type": clean_accuracy(model, enc, seed=seed, n=eval_n,
                                           label=lambda s, q, lab: q.answer if rule(s, q) else lab),
        "planted": planted_rates(model, enc, seed=seed, n=eval_n),
    }
    folder = save_model_folder(model, Path(out))
    record = {"weaken": name, "fraction": fraction, **summary, "evaluation": figures,
              "base_model": str(model_dir) if model_dir else "shapes", "sae": "shapes (vision tower frozen: it fits)"}
    atomic_write_text(folder / "finetune.json", json.dumps(record, indent=2) + "\n")
    return record


def format_weakened(record: dict[str, Any]) -> str:
    """The weakening's figures as a few lines of text."""
    figures = record["evaluation"]
    acc = ", ".join(f"{t} {v:.3f}" for t, v in figures["accuracy_by_type"].items())
    lines = [f"weakened {record['weaken']} ({record['config']['steps']} steps, {record['train_seconds']}s)",
             f"clean accuracy by type: {acc}"]
    for mech, m in figures["planted"].items():
        lines.append(f"shipped {mech}: trigger {m['trigger_rate']:.3f}, control {m['control_rate']:.3f}")
    return "\n".join(lines)
