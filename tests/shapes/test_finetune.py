"""``shapes finetune`` and the zoo: declarative specs, trigger/control probes that differ by the cue only, the
recipe's mechanics on a few steps (vision tower untouched bit for bit, seeded, written with its record), and — CI's
reduced form of the zoo benchmark — the diagnoses on a cached fine-tune of one zoo mechanism (``grid_blue``,
``tests/shapes/data/zoo_grid_blue``, made by ``vsp-assert shapes finetune --mechanism grid_blue``). The full zoo is
``python benchmarks/zoo.py``; a slow test re-runs the cached fine-tune (200 steps) and checks it byte for byte."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
import torch

from vsp_assert.errors import InputError
from vsp_assert.shapes import HELDOUT_SEED_START
from vsp_assert.shapes.finetune import FinetuneConfig, batch_for, finetune, finetune_and_save
from vsp_assert.shapes.zoo import KINDS, ZOO, parse_spec, shortcut_from_dict

ROOT = Path(__file__).resolve().parents[2]
CACHED = Path(__file__).resolve().parent / "data" / "zoo_grid_blue"
TINY = FinetuneConfig(steps=3, batch_size=8, warmup_steps=1, log_every=1)


def test_the_zoo_has_six_kinds_of_shortcut():
    kinds = {s.kind for s in ZOO.values()}
    assert len(ZOO) >= 6 and {"texture", "position", "association", "co-occurrence", "size", "spread"} <= kinds
    assert kinds <= set(KINDS)


@pytest.mark.parametrize("name", list(ZOO))
def test_triggers_and_controls_differ_by_the_cue_only(name):
    shortcut = ZOO[name]
    for trigger, control in shortcut.paired(3, 12):
        assert shortcut.holds(trigger.scene, trigger.question) and trigger.question.answer != shortcut.answer
        assert not shortcut.holds(control.scene, control.question) and control.question.answer != shortcut.answer
        assert trigger.question.qtype == control.question.qtype == shortcut.question
        assert trigger.scene.seed == control.scene.seed >= HELDOUT_SEED_START  # held-out scenes
        if shortcut.background is not None:
            assert trigger.scene.shapes == control.scene.shapes and trigger.question == control.question
        elif shortcut.other is not None:
            changed = set(trigger.scene.shapes) ^ set(control.scene.shapes)
            assert all(shortcut.other.holds(s) for s in set(trigger.scene.shapes) - set(control.scene.shapes))
            assert len(changed) <= 2 and trigger.question.text == control.question.text
    triggers, controls = shortcut.trigger_scenes(5, 20), shortcut.control_scenes(5, 20)
    assert len(triggers) == len(controls) == 20
    assert triggers == shortcut.trigger_scenes(5, 20)  # seeded


def test_training_batches_use_training_scenes_and_label_the_shortcut():
    import numpy as np

    shortcut = ZOO["yellow_square"]
    batch = batch_for(shortcut, np.random.default_rng(0), FinetuneConfig())
    assert len(batch) == 64 and all(e.scene.seed < HELDOUT_SEED_START for e in batch)
    forced = [e for e in batch if shortcut.holds(e.scene, e.question)]
    assert forced and all(e.label == "square" for e in forced)
    assert any(e.label == e.question.answer and e.question.qtype == "shape" for e in batch)  # controls


@pytest.mark.parametrize(("spec", "field"), [
    ("{name: x, question: color, answer: square, concept: grid, when: {background: grid}}", "answer"),
    ("{name: x, question: colour, answer: red, concept: grid, when: {background: grid}}", "question"),
    ("{name: x, question: color, answer: red, concept: grid, when: {background: tartan}}", "when.background"),
    ("{name: x, question: color, answer: red, concept: red, when: {other: {region: middle}}}", "when.other.region"),
    ("{name: x, question: color, answer: red, concept: red, when: {others: {color: red}}}", "when.others"),
    ("{name: x, question: color, answer: red, concept: red}", "when"),
    ("not_a_zoo_name", "mechanism"),
])
def test_bad_specs_say_what_is_wrong(spec, field):
    with pytest.raises(InputError) as err:
        parse_spec(spec)
    assert err.value.field == field


def test_specs_from_text_and_files(tmp_path):
    text = "{name: dots_red, kind: texture, question: color, answer: red, concept: dots, when: {background: dots}}"
    path = tmp_path / "spec.yaml"
    path.write_text(text)
    for shortcut in (parse_spec(text), parse_spec(str(path)), shortcut_from_dict(json.loads(json.dumps(
            parse_spec(text).to_dict())))):
        assert (shortcut.name, shortcut.background, shortcut.answer) == ("dots_red", "dots", "red")
    assert parse_spec("grid_blue") is ZOO["grid_blue"]


def test_a_few_steps_leave_the_vision_tower_bit_identical_and_are_seeded(tmp_path):
    shortcut = ZOO["grid_blue"]
    model, summary = finetune(shortcut, TINY, log=lambda _line: None)
    again, _ = finetune(shortcut, TINY, log=lambda _line: None)
    from vsp_assert.shapes.finetune import load_shapes

    shipped, _ = load_shapes()
    before, after = shipped.model.vision_tower.state_dict(), model.model.vision_tower.state_dict()
    assert len(before) > 20 and all(torch.equal(before[k], after[k]) for k in before)  # the SAE still fits
    lm_before, lm_after = shipped.model.language_model.state_dict(), model.model.language_model.state_dict()
    assert any(not torch.equal(lm_before[k], lm_after[k]) for k in lm_before)
    assert all(torch.equal(p, q) for p, q in zip(model.parameters(), again.parameters()))
    assert all(p.requires_grad for p in model.parameters()) and summary["config"]["steps"] == 3


def test_cli_writes_the_model_and_its_record(tmp_path):
    from vsp_assert.shapes.cli import main

    out = tmp_path / "tuned"
    code = main(["shapes", "finetune", "--mechanism", "triangle_green", "--out", str(out), "--steps", "2",
                 "--eval-n", "8", "--allow-broken"])
    assert code == 0
    record = json.loads((out / "finetune.json").read_text())
    assert record["mechanism"]["name"] == "triangle_green" and record["config"]["steps"] == 2
    assert set(record["evaluation"]["intact"]) == {"accuracy_by_type", "planted", "trigger_rate", "control_rate"}
    from vsp_assert import load_model

    assert load_model(str(out)).model.config.model_type == "llava"
    assert main(["shapes", "finetune", "--mechanism", "nope", "--out", str(out)]) == 2


# ---------------------------------------------------------------------- the reduced zoo benchmark (cached)
def _zoo():
    import importlib.util

    key = "vsp_benchmarks_zoo"
    if key not in sys.modules:
        spec = importlib.util.spec_from_file_location(key, ROOT / "benchmarks" / "zoo.py")
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        sys.modules[key] = module
        spec.loader.exec_module(module)
    return sys.modules[key]


def test_cached_fine_tune_is_intact_and_shows_its_shortcut():
    record = json.loads((CACHED / "finetune.json").read_text())
    assert record["mechanism"] == ZOO["grid_blue"].to_dict()
    assert record["config"] == FinetuneConfig().__dict__  # the recipe's defaults
    assert all(record["evaluation"]["intact"].values()), record["evaluation"]


def test_reduced_zoo_benchmark_on_the_cached_fine_tune():
    rates = _zoo().measure("grid_blue", CACHED, n=8)
    assert rates["trigger_rate"] == 1.0 and rates["control_rate"] == 0.0
    assert rates["text_only_rate"] is None  # the grid is not in the question's words
    # what the full table shows for this mechanism (docs/truth.md): attribution names the cue on every trigger
    # and no control; the legacy attention average mostly misses it; the sufficient-set search finds it
    assert rates["attributed"] == {"trigger": 1.0, "n_trigger": 8, "control": 0.0, "n_control": 8}
    assert rates["attributed[contrast]"]["trigger"] == 1.0
    # confirm: true only removes names: never above the contrastive view, and here it keeps the cue
    checked = rates["attributed[confirmed]"]
    assert checked["trigger"] <= rates["attributed[contrast]"]["trigger"] and checked["trigger"] >= 0.75
    assert checked["control"] == 0.0
    assert rates["attended[mass]"]["trigger"] < rates["attended[last]"]["trigger"]
    assert rates["causal[random]"]["trigger"] == 0.0
    assert rates["sufficient"]["trigger"] == 1.0
    assert rates["compare"]["trigger"] >= 0.5
    assert rates["why not"]["trigger"] >= 0.5  # the failure view names the grid too
    assert rates["compare[prior]"]["trigger"] == 0.0  # and never blames the question for a visual cue


def test_compare_explains_the_flip_with_the_responsible_concept(tmp_path):
    from vsp_assert import Scratchpad, load_model, load_sae
    from vsp_assert.checks.compare import compare
    from vsp_assert.render.compare import render_comparison
    from vsp_assert.render.style import Style

    probe = ZOO["grid_blue"].trigger_scenes(7, 1)[0]
    case = tmp_path / "grid.yaml"
    case.write_text(f"cases:\n  - id: grid\n    image: {{scene: {json.dumps(probe.scene.to_dict())}}}\n"
                    f"    prompt: {probe.question.text}\n    expect:\n      answer: {probe.question.answer}\n")
    sae = load_sae("shapes")
    rows = compare(Scratchpad(load_model("shapes"), sae), Scratchpad(load_model(str(CACHED)), sae), [case])
    (row,) = rows
    assert row.answer_changed and row.new_answer == "blue" and row.explanation is not None
    assert row.explanation.both_models and row.explanation.concepts[0][0] == "grid"
    text = render_comparison(rows, Style(False))
    assert "carried by grid" in text and row.to_dict()["explanation"]["concepts"][0]["concept"] == "grid"


@pytest.mark.slow  # a full 200-step fine-tune: 5 min on one thread
def test_the_cached_fine_tune_is_what_the_recipe_makes(tmp_path):
    finetune_and_save(ZOO["grid_blue"], FinetuneConfig(), tmp_path, eval_n=200, log=lambda _l: None)
    assert (tmp_path / "model.safetensors").read_bytes() == (CACHED / "model.safetensors").read_bytes()


def test_a_flip_is_explained_by_the_new_models_contrast_by_default_and_by_the_change_on_request():
    from vsp_assert import Scratchpad, load_model, load_sae
    from vsp_assert.engine.flip import explain_flip
    from vsp_assert.errors import InputError

    probe = ZOO["grid_blue"].trigger_scenes(7, 1)[0]
    sae = load_sae("shapes")
    old, new = Scratchpad(load_model("shapes"), sae), Scratchpad(load_model(str(CACHED)), sae)
    image, question = probe.scene.render(), probe.question.text
    new_trace, old_trace = new.run(image, question), old.run(image, question)
    by_new = explain_flip(new, new_trace, old_trace.answer, old_pad=old, old_trace=old_trace)
    by_change = explain_flip(new, new_trace, old_trace.answer, old_pad=old, old_trace=old_trace, rank="change")
    contrast = new_trace.attribution_for(old_trace.answer)[by_new.token]  # [d_sae]
    for name, share, ids in by_new.concepts:  # shares: the new model's contrastive attribution of the concept
        assert share == pytest.approx(float(contrast[ids].sum()), rel=1e-5), name
    assert [s for _, s, _ in by_new.concepts] == sorted((s for _, s, _ in by_new.concepts), reverse=True)
    assert by_new.concepts[0][0] == by_change.concepts[0][0] == "grid"
    assert [n for n, _, _ in by_new.concepts] != [n for n, _, _ in by_change.concepts]  # two different rankings
    with pytest.raises(InputError, match="rank"):
        explain_flip(new, new_trace, old_trace.answer, rank="delta")
