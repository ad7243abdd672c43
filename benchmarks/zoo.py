"""The zoo benchmark: how often each diagnosis finds a shortcut nobody designed the harness for.

For every mechanism of the zoo (:data:`vsp_assert.shapes.zoo.ZOO`, six kinds: a background texture, a position,
a colour↔shape association, co-occurrence with a second object, object size, a cue spread over every bare patch)
it fine-tunes a copy of the shipped shapes model (``vsp-assert shapes finetune``'s recipe, vision tower frozen, so
the shipped SAE fits; cached in ``--cache``), then on held-out trigger and control probes of ``--seed`` measures,
per diagnosis, the **detection rate** on the triggers where the shortcut fired and the **false rate** on the
controls (and, as ``text only``, for a mechanism whose question names its cue, how often the shortcut's answer
comes from the question's words alone: each trigger's question asked about a control image, fine-tuned model and
shipped model in brackets):

- ``attended[mass]``, ``attended[layer]``, ``attended[last]``: the responsible concept is in the answer token's
  top 5 by attention-weighted score, under the legacy aggregation (raw attention averaged over layers, then
  renormalised), per-layer renormalisation before averaging, and the last LM layer alone;
- ``attributed``, ``attributed[ig8]``, ``attributed[contrast]``: the concept is in the token's top 5 by
  attribution — gradient × activation, integrated gradients with 8 steps, and gradient × activation contrasted with
  the other answer (a trigger: its true answer, as a case's ``correct:`` gives it; a control: the shortcut's answer);
- ``attributed[contrast,ig8]``: integrated gradients (8 steps) of that contrast;
- ``attributed[confirmed]``: an ``attributed`` check with ``confirm: true`` (:mod:`vsp_assert.checks.ranked`), as a
  case would run it: the concept is in the contrastive top 5 and ablating its latents lowers the same contrastive
  objective (one batched intervention checking the first-order ranking);
- ``causal``: ablating the concept's latents restores the true answer; ``causal[random]``: random sets of as many
  latents firing on the image (three per probe) do;
- ``sufficient``: the sufficient-set search finds a set holding a latent of the concept, on the triggers where
  ablating the concept restores the answer; ``sufficient[clusters]``: the same with the heatmap's clusters only (the
  search before attribution);
- ``compare``: explaining the flip from the shipped model's answer to the fine-tuned one (attributed on both models)
  names the cause: the concept first, or, for a mechanism whose question names its cue (:func:`names_the_cue`),
  the question — the explanation finds no restoring ablation and the fine-tuned model gives the shortcut's answer on
  a blank image (:attr:`~vsp_assert.engine.flip.FlipExplanation.prior`);
- ``compare[restoring]``: the concept is among those whose ablation restores the old answer (of the three
  checked); the table's line names them all ("… restores 'green' (so does ablating red)");
- ``compare[prior]``: how often the explanation says the question's prior carries the flip. On a mechanism whose cue
  is in the image only, every such claim is a wrong one;
- ``why not``: the failure view of a case that names its right answer (``why_not_correct``: the same explanation on
  the fine-tuned model alone, the true answer in the old answer's place) names the cause, as ``compare`` counts it.

    python benchmarks/zoo.py --n 40 --json zoo.json --markdown zoo.md

``--reduced`` is CI's form (tests/shapes/test_finetune.py): one mechanism, a short fine-tune, a few probes.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_CACHE = ROOT / "benchmarks" / ".zoo-cache"
EVAL_SEED = 7
TOP = 5

DIAGNOSES = ("attended[mass]", "attended[layer]", "attended[last]", "attributed", "attributed[ig8]",
             "attributed[contrast]", "attributed[contrast,ig8]", "attributed[confirmed]", "causal", "causal[random]",
             "sufficient", "sufficient[clusters]", "compare", "compare[restoring]", "compare[prior]", "why not")


def _shortcut(mechanism: Any) -> Any:
    """A zoo name, or a :class:`~vsp_assert.shapes.shortcut.Shortcut` (a held-out spec) as it is."""
    from vsp_assert.shapes.zoo import ZOO

    return ZOO[mechanism] if isinstance(mechanism, str) else mechanism


def model_for(mechanism: Any, cache: Path, *, steps: int | None = None, seed: int = 0, log: Any = print) -> Path:
    """The fine-tuned model of a mechanism (a zoo name or a Shortcut), trained into ``cache`` if not there yet."""
    from vsp_assert.shapes.finetune import FinetuneConfig, finetune_and_save, format_evaluation

    shortcut = _shortcut(mechanism)
    cfg = FinetuneConfig(seed=seed, **({"steps": steps} if steps else {}))
    folder = cache / f"{shortcut.name}-seed{seed}-steps{cfg.steps}"
    if not (folder / "finetune.json").exists():
        log(f"fine-tuning {shortcut.name} ({cfg.steps} steps) into {folder}")
        record = finetune_and_save(shortcut, cfg, folder, eval_n=200, log=lambda _line: None)
        log(format_evaluation(record["evaluation"]))
    return folder


def _in_top(row: Any, ids: set[int], hidden: frozenset[int]) -> bool:
    from vsp_assert.engine.trace import top_k

    return bool(ids & {i for i, _ in top_k(row, TOP, hidden)})


def measure(mechanism: Any, folder: Path, *, n: int, seed: int = EVAL_SEED, base: Any = None) -> dict[str, Any]:
    """Every diagnosis's rates for one mechanism, a zoo name or a Shortcut (see the module docstring)."""
    from vsp_assert import Intervention, Scratchpad, load_model, load_sae
    from vsp_assert.checks.ranked import check_attributed
    from vsp_assert.checks.schema import AttributedSpec
    from vsp_assert.engine.analysis import find_sufficient_set
    from vsp_assert.engine.attribution import attribute
    from vsp_assert.engine.flip import explain_flip
    shortcut = _shortcut(mechanism)
    name = shortcut.name
    sae = load_sae("shapes")
    loaded = load_model(str(folder))
    pads = {"mass": Scratchpad(loaded, sae), "layer": Scratchpad(loaded, sae),
            "last": Scratchpad(loaded, sae, attention_layers=[-1])}
    pads["layer"].attention_aggregation = "layer"
    pad = pads["mass"]
    base = base if base is not None else Scratchpad(load_model("shapes"), sae)
    concept = set(sae.labels.resolve(shortcut.concept))
    rng = np.random.default_rng([EVAL_SEED, seed, len(name)])
    hits: dict[str, dict[str, list[bool]]] = {"trigger": {}, "control": {}}
    sizes: list[int] = []
    fired: dict[str, list[bool]] = {"trigger": [], "control": []}
    triggers, controls = shortcut.trigger_scenes(seed, n), shortcut.control_scenes(seed, n)
    text = text_only_rates(shortcut, triggers, controls, pad, base)
    for kind, probes in (("trigger", triggers), ("control", controls)):
        for probe in probes:
            image, question, truth = probe.scene.render(), probe.question.text, probe.question.answer
            trace = pad.run(image, question)
            shows = trace.answer == shortcut.answer
            fired[kind].append(shows)
            if kind == "trigger" and not shows:
                continue  # detection is measured where the shortcut fired
            got = hits[kind]
            for agg, p in pads.items():
                t = trace if agg == "mass" else p.run(image, question)
                got.setdefault(f"attended[{agg}]", []).append(_in_top(t.scores[0], concept, t.hidden))
            got.setdefault("attributed", []).append(_in_top(trace.attribution[0], concept, trace.hidden))
            ig = attribute(pad, trace, steps=8)
            got.setdefault("attributed[ig8]", []).append(_in_top(ig[0], concept, trace.hidden))
            other = truth if kind == "trigger" else shortcut.answer
            if other != trace.answer:
                named = _in_top(trace.attribution_for(other)[0], concept, trace.hidden)
                got.setdefault("attributed[contrast]", []).append(named)
                cig = attribute(pad, trace, other, steps=8)
                got.setdefault("attributed[contrast,ig8]", []).append(_in_top(cig[0], concept, trace.hidden))
                spec = AttributedSpec(0, (shortcut.concept,), top_k=TOP, confirm=0.0)
                (record,) = check_attributed(trace, spec, TOP, other, pad)
                got.setdefault("attributed[confirmed]", []).append(record.passed)
            if kind == "control":
                continue
            firing = [int(i) for i in (trace.image_scores > 0).nonzero().flatten()]
            own = [i for i in firing if i in concept]
            pool = [i for i in firing if i not in concept]
            size = min(len(own), len(pool))
            randoms = [[int(i) for i in rng.choice(pool, size=size, replace=False)] for _ in range(3)] \
                if own and pool else []
            results = pad.intervene(trace, [Intervention.ablate(*own)] + [Intervention.ablate(*r) for r in randoms]) \
                if own else []
            restored = bool(results) and results[0].answer_after == truth
            got.setdefault("causal", []).append(restored)
            for r in results[1:]:
                got.setdefault("causal[random]", []).append(r.answer_after == truth)
            if restored:
                found = find_sufficient_set(pad, trace, 0)
                got.setdefault("sufficient", []).append(found.found and bool(concept & set(found.latents)))
                if found.found:
                    sizes.append(len(found.latents))
                legacy = find_sufficient_set(pad, trace, 0, concepts=False, attribution=False)
                got.setdefault("sufficient[clusters]", []).append(legacy.found and bool(concept & set(legacy.latents)))
            old = base.run(image, question)
            if old.answer != trace.answer:
                why = explain_flip(pad, trace, old.answer, old_pad=base, old_trace=old)
                got.setdefault("compare", []).append(names_the_cause(why, shortcut))
                got.setdefault("compare[restoring]", []).append(shortcut.concept in {c.concept for c in why.confirmed})
                got.setdefault("compare[prior]", []).append(why.prior)
            why_not = explain_flip(pad, trace, truth, model="this model")  # the failure view of a case naming it
            got.setdefault("why not", []).append(names_the_cause(why_not, shortcut))
    rates: dict[str, Any] = {"mechanism": name, "kind": shortcut.kind, "concept": shortcut.concept,
                             "question": shortcut.question, "answer": shortcut.answer, "n": n, "seed": seed,
                             "trigger_rate": round(float(np.mean(fired["trigger"])), 3),
                             "control_rate": round(float(np.mean(fired["control"])), 3),
                             "text_only_rate": text[0], "text_only_rate_base": text[1],
                             "sufficient_median_size": float(np.median(sizes)) if sizes else None}
    for diag in DIAGNOSES:
        row: dict[str, Any] = {}
        for kind in ("trigger", "control"):
            flags = hits[kind].get(diag)
            if flags:
                row[kind] = round(float(np.mean(flags)), 3)
                row[f"n_{kind}"] = len(flags)
        rates[diag] = row
    return rates


#: the target property each question type names (``What color is the {shape}?`` names the shape)
NAMED = {"color": ("shape",), "color_terse": ("shape",), "shape": ("color",), "presence": ("color", "shape")}


def names_the_cue(shortcut: Any) -> bool:
    """Whether the question itself can carry the shortcut's cue: its condition is on the very property of the target
    that the question names (triangles called "green": the question says "triangle")."""
    target = shortcut.target
    return target is not None and any(getattr(target, key) is not None for key in NAMED[shortcut.question])


def names_the_cause(why: Any, shortcut: Any) -> bool:
    """Whether a flip explanation names the shortcut's cause: its concept, or — for a mechanism whose question names
    its cue — the question (the explanation found the answer to be the model's prior for it)."""
    return why.responsible == shortcut.concept or (why.prior and names_the_cue(shortcut))


def text_only_rates(shortcut: Any, triggers: list[Any], controls: list[Any], pad: Any,
                    base: Any) -> tuple[float | None, float | None]:
    """For a mechanism whose question names its cue (:func:`names_the_cue`): how often the shortcut's answer comes
    from the question's words alone — each trigger's question asked about a control image, where no object has the
    named property, on the fine-tuned model and on the shipped one. A fine-tune that answers it far more often than
    the shipped model reads its cue from the text, and no diagnosis of the vision encoder can (or should) name a
    visual concept for it. ``(None, None)`` for the other mechanisms: their cue is in the image only."""
    if not names_the_cue(shortcut):
        return None, None
    pairs = [(c.scene.render(), t.question.text) for t, c in zip(triggers, controls)]
    tuned = np.mean([pad.run(image, q).answer == shortcut.answer for image, q in pairs])
    shipped = np.mean([base.run(image, q).answer == shortcut.answer for image, q in pairs])
    return round(float(tuned), 3), round(float(shipped), 3)


def markdown(results: list[dict[str, Any]]) -> str:
    """The table: one row per mechanism, per diagnosis ``detected on triggers / false on controls``."""
    head = ["mechanism (kind, concept)", "shows", "text only", *DIAGNOSES]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in results:
        cells = [f"{r['mechanism']} ({r['kind']}, {r['concept']})",
                 f"{r['trigger_rate']:.2f} / {r['control_rate']:.2f}",
                 f"{r['text_only_rate']:.2f} ({r['text_only_rate_base']:.2f})"
                 if r.get("text_only_rate") is not None else "–"]
        for diag in DIAGNOSES:
            row = r[diag]
            t = f"{row['trigger']:.2f}" if "trigger" in row else "–"
            c = f" / {row['control']:.2f}" if "control" in row else ""
            cells.append(t + c)
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def run(mechanisms: list[Any], *, n: int, seed: int, cache: Path, steps: int | None = None,
        log: Any = print) -> list[dict[str, Any]]:
    """Fine-tune (or reuse) and measure each mechanism: zoo names or Shortcuts."""
    from vsp_assert import Scratchpad, load_model, load_sae

    base = Scratchpad(load_model("shapes"), load_sae("shapes"))
    out = []
    for mechanism in mechanisms:
        folder = model_for(mechanism, cache, steps=steps, log=log)
        t0 = time.perf_counter()
        result = measure(mechanism, folder, n=n, seed=seed, base=base)
        result["seconds"] = round(time.perf_counter() - t0, 1)
        log(json.dumps(result))
        out.append(result)
    return out


def main(argv: list[str] | None = None) -> int:
    from vsp_assert.shapes.zoo import ZOO

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--mechanisms", default=",".join(ZOO), help="comma list (default: the whole zoo)")
    parser.add_argument("--n", type=int, default=40, help="trigger and control probes per mechanism")
    parser.add_argument("--seed", type=int, default=EVAL_SEED, help="evaluation seed (held-out scenes)")
    parser.add_argument("--steps", type=int, default=None, help="fine-tune steps (default: the recipe's)")
    parser.add_argument("--cache", default=str(DEFAULT_CACHE), help="folder of the fine-tuned models")
    parser.add_argument("--json", default=None, help="write the figures here")
    parser.add_argument("--markdown", default=None, help="write the table here")
    parser.add_argument("--specs", default=None,
                        help="a JSON file holding a list of mechanism specs to measure instead of the zoo "
                             "(held-out mechanisms, e.g. benchmarks/zoo-heldout.json)")
    parser.add_argument("--reduced", action="store_true", help="CI's form: grid_blue, 60 steps, 6 probes")
    args = parser.parse_args(argv)
    import torch

    torch.set_num_threads(1)
    mechanisms: list[Any] = [s.strip() for s in args.mechanisms.split(",") if s.strip()]
    if args.specs:
        from vsp_assert.shapes.zoo import shortcut_from_dict

        mechanisms = [shortcut_from_dict(spec) for spec in json.loads(Path(args.specs).read_text())]
    if args.reduced:
        mechanisms, args.n, args.steps = ["grid_blue"], 6, 60
    results = run(mechanisms, n=args.n, seed=args.seed, cache=Path(args.cache), steps=args.steps)
    table = markdown(results)
    print(table)
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1) + "\n")
    if args.markdown:
        Path(args.markdown).write_text(table + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
