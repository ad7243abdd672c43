"""The health report of the shipped shapes model and SAE (``vsp-assert shapes report``).

This module owns the figures that say whether the embedded default is fit for purpose, measured on freshly
generated held-out scenes of one seed: clean accuracy (overall and per question type), each planted
mechanism's trigger rate (it shows where planted) and control rate (it fires where it must not), a causal
check of each mechanism by SAE-latent ablation, and the SAE's health (explained variance on held-out scenes,
dead fraction, best label precision per concept, and the per-latent table). :func:`compute_report` returns
plain data (JSON-ready); :func:`format_report` only formats it. Evaluation uses batched forward passes of the
raw HF model (answers are one token), so a full report takes seconds.

Definitions. *Captured*: a concept is captured in an image when the image-level score of its latents (the
largest, over the concept's latents, of the mean activation over the 64 patches) is at least
:data:`CAPTURE_THRESHOLD`. *Ablation*: the concept's latents are set to 0 on every patch at the hooked layer,
keeping the SAE error term (``z' = z − f[:, S] @ W_dec[S]``).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tabulate import tabulate
from transformers import AutoTokenizer, LlavaForConditionalGeneration

from vsp_assert.engine.sae import SAE, load_sae
from vsp_assert.shapes.inference import PromptEncoder, answers, edit_layer_output, layer_activations
from vsp_assert.shapes.labelling import build_labels, concept_precision
from vsp_assert.shapes.mechanisms import MECHANISMS, Probe, clean_examples
from vsp_assert.shapes.questions import QTYPES
from vsp_assert.shapes.train_sae import explained_variance, uniform_scenes
from vsp_assert.shapes.world import Scene

REPORT_SAE_STREAM = 0x4E90
#: Image-level score (max over the concept's latents of the mean activation over patches) that counts as captured.
#: Shipped SAE, held-out scenes: stripes ≥ 18 with vs ≤ 0.5 without; dots ≥ 4.2 vs ≤ 1.9; yellow ≥ 1.8 vs ≤ 0.42.
CAPTURE_THRESHOLD = 1.0

#: Thresholds of issue 3 ("done when").
THRESHOLDS: dict[str, float] = {
    "accuracy": 0.97,
    "accuracy_by_type": 0.95,
    "trigger_rate": 0.90,
    "control_rate": 0.05,
    "concept_precision": 0.9,
    "explained_variance": 0.90,
}


def load_artifacts(
    model_dir: str | Path | None = None, sae_dir: str | Path | None = None
) -> tuple[LlavaForConditionalGeneration, PromptEncoder, SAE]:
    """Load the model (eval mode, eager attention), its tokenizer and the SAE (default: the shipped ones)."""
    from vsp_assert.shapes import MODEL_DIR, SAE_DIR

    mdir = Path(model_dir or MODEL_DIR)
    model = LlavaForConditionalGeneration.from_pretrained(mdir, attn_implementation="eager").eval()
    tok = AutoTokenizer.from_pretrained(mdir)
    sae = load_sae(sae_dir or SAE_DIR)
    return model, PromptEncoder(tok), sae


def concept_scores(sae: SAE, acts: torch.Tensor, latents: Sequence[int]) -> torch.Tensor:
    """Image-level score per image ``(N,)``: max over ``latents`` of the mean activation over patches.

    ``acts``: hooked-layer patch activations ``(N, 64, d_in)``.
    """
    with torch.no_grad():
        f = sae.encode(acts)[..., list(latents)]  # (N, 64, |S|)
    return f.mean(1).max(-1).values if len(latents) else torch.zeros(len(acts))


def ablated_answers(
    model: LlavaForConditionalGeneration,
    enc: PromptEncoder,
    sae: SAE,
    latents: Sequence[int],
    scenes: Sequence[Scene],
    questions: Sequence[str],
) -> list[str]:
    """Answers with ``latents`` set to 0 on every patch of the hooked layer (SAE error term kept)."""
    idx = torch.tensor(list(latents), dtype=torch.long)

    def ablate(out: torch.Tensor) -> torch.Tensor:
        z = out[:, 1:]  # (B, P, d): patch tokens
        f = sae.encode(z)  # (B, P, d_sae)
        delta = torch.zeros_like(f)
        delta[..., idx] = -f[..., idx]
        return torch.cat([out[:, :1], z + sae.decoder_delta(delta, z)], dim=1)

    assert sae.hook_layer is not None
    with edit_layer_output(model, sae.hook_layer, ablate):
        return answers(model, enc, scenes, questions)


def _rate(flags: Sequence[bool]) -> float:
    return round(float(np.mean(flags)) if len(flags) else 0.0, 4)


def _mechanism_figures(
    model: LlavaForConditionalGeneration, enc: PromptEncoder, sae: SAE, seed: int, n: int
) -> dict[str, dict[str, Any]]:
    out: dict[str, dict[str, Any]] = {}
    for name, mech in MECHANISMS.items():
        trig: list[Probe] = mech.trigger_scenes(seed, n)
        ctrl: list[Probe] = mech.control_scenes(seed, n)
        t_ans = answers(model, enc, [p.scene for p in trig], [p.question.text for p in trig])
        c_ans = answers(model, enc, [p.scene for p in ctrl], [p.question.text for p in ctrl])
        fixes: list[str | None] = [None] * len(trig)
        if trig and trig[0].fix is not None:
            fixes = list(answers(model, enc, [p.scene for p in trig], [p.fix.text for p in trig if p.fix is not None]))
        latents = sae.labels.concepts.get(mech.concept, [])
        acts = layer_activations(model, str(sae.hook_layer), [p.scene for p in trig])  # (n, 64, d)
        captured = (concept_scores(sae, acts, latents) >= CAPTURE_THRESHOLD).tolist()
        shows = [mech.shows(p, a, f) for p, a, f in zip(trig, t_ans, fixes, strict=True)]
        if name == "unused_hidden_cue":  # the hidden cue must also be captured where it shows
            shows = [s and c for s, c in zip(shows, captured, strict=True)]
        fig: dict[str, Any] = {
            "failure_mode": mech.failure_mode,
            "concept": mech.concept,
            "trigger_rate": _rate(shows),
            "control_rate": _rate([mech.fires(p, a) for p, a in zip(ctrl, c_ans, strict=True)]),
            "captured_rate": _rate(captured),
            "n": n,
        }
        if name == "limited_alignment":
            fig["explicit_fix_rate"] = _rate([f == "yellow" for f in fixes])
        elif latents:
            abl = ablated_answers(model, enc, sae, latents, [p.scene for p in trig], [p.question.text for p in trig])
            if name == "misleading_concept":  # ablating the cue restores the true shape
                fig["ablation_restores_rate"] = _rate([a == p.question.answer for p, a in zip(trig, abl, strict=True)])
            else:  # ablating the unused cue changes nothing
                fig["ablation_unchanged_rate"] = _rate([a == b for a, b in zip(abl, t_ans, strict=True)])
        out[name] = fig
    return out


_STAT_KEYS = ("label", "precision", "firing_rate", "mean_activation", "label_entropy")


def _sae_figures(model: LlavaForConditionalGeneration, sae: SAE, seed: int, n: int) -> dict[str, Any]:
    scenes = uniform_scenes(REPORT_SAE_STREAM, seed, n)
    acts = layer_activations(model, str(sae.hook_layer), scenes).reshape(-1, sae.d_in)  # (n·64, d)
    with torch.no_grad():
        f = sae.encode(acts)  # (n·64, d_sae)
        ev = explained_variance(acts, sae.decode(f))
    _, stats = build_labels(f.numpy(), [lab for s in scenes for lab in s.patch_labels()],
                            edges=[e for s in scenes for e in s.patch_edges()])
    labels = sae.labels
    table = [
        {"latent": k, **{key: v[key] for key in _STAT_KEYS}}
        for k, v in sorted(labels.latents.items(), key=lambda kv: (str(kv[1]["label"]), -kv[1]["precision"]))
        if any(k in ids for ids in labels.concepts.values())
    ]
    return {
        "explained_variance": round(ev, 4),
        "dead_fraction": round(len(labels.dead) / sae.d_sae, 4),
        "dead": list(labels.dead),
        "d_sae": sae.d_sae,
        "k": sae.cfg.k,
        "hook_layer": sae.hook_layer,
        "concept_precision": concept_precision(stats),
        "concepts": {c: list(ids) for c, ids in sorted(labels.concepts.items())},
        "latents": table,
    }


def compute_report(
    seed: int = 1,
    n: int = 500,
    *,
    model_dir: str | Path | None = None,
    sae_dir: str | Path | None = None,
) -> dict[str, Any]:
    """All figures on freshly generated held-out scenes of ``seed`` (``n`` clean questions and ``n`` probes per
    trigger/control set). Keys: ``accuracy``, ``accuracy_by_type``, ``mechanisms``, ``sae``, ``seed``, ``n``,
    ``thresholds``, ``passed``."""
    torch.set_num_threads(min(2, torch.get_num_threads()))
    model, enc, sae = load_artifacts(model_dir, sae_dir)
    clean = clean_examples(seed, n)
    got = answers(model, enc, [e.scene for e in clean], [e.question.text for e in clean])
    ok = [a == e.label for a, e in zip(got, clean, strict=True)]
    by_type = {t: _rate([o for o, e in zip(ok, clean, strict=True) if e.question.qtype == t]) for t in QTYPES}
    mech = _mechanism_figures(model, enc, sae, seed, n)
    sae_fig = _sae_figures(model, sae, seed, max(200, n // 2))
    report: dict[str, Any] = {
        "seed": seed,
        "n": n,
        "accuracy": _rate(ok),
        "accuracy_by_type": by_type,
        "mechanisms": mech,
        "sae": sae_fig,
        "thresholds": THRESHOLDS,
    }
    report["passed"] = check(report)
    return report


def check(report: dict[str, Any]) -> dict[str, bool]:
    """Which of issue 3's thresholds the figures meet."""
    th = THRESHOLDS
    shapes_colors = ("circle", "square", "triangle", "red", "green", "blue", "yellow")
    cp = report["sae"]["concept_precision"]
    return {
        "accuracy": report["accuracy"] >= th["accuracy"],
        "accuracy_by_type": all(v >= th["accuracy_by_type"] for v in report["accuracy_by_type"].values()),
        "trigger_rates": all(m["trigger_rate"] >= th["trigger_rate"] for m in report["mechanisms"].values()),
        "control_rates": all(m["control_rate"] <= th["control_rate"] for m in report["mechanisms"].values()),
        "concept_precision": all(cp.get(c, 0.0) >= th["concept_precision"] for c in shapes_colors),
        "explained_variance": report["sae"]["explained_variance"] >= th["explained_variance"],
    }


def format_report(d: dict[str, Any]) -> str:
    """The report as text: accuracy, mechanisms, SAE summary and the SAE health table (tabulate)."""
    parts = [f"shapes world report — seed {d['seed']}, n {d['n']} per set (held-out scenes)", ""]
    acc_rows = [["all", d["accuracy"]]] + [[t, v] for t, v in d["accuracy_by_type"].items()]
    parts.append(tabulate(acc_rows, headers=["question type", "accuracy"], floatfmt=".3f"))
    parts.append("")
    mrows = []
    for name, m in d["mechanisms"].items():
        extra = {k: v for k, v in m.items() if k.endswith("_rate") and k not in ("trigger_rate", "control_rate")}
        mrows.append(
            [
                name,
                m["concept"],
                m["trigger_rate"],
                m["control_rate"],
                ", ".join(f"{k.removesuffix('_rate')} {v:.3f}" for k, v in extra.items()),
            ]
        )
    parts.append(tabulate(mrows, headers=["mechanism", "concept", "trigger", "control", "diagnosis"], floatfmt=".3f"))
    parts.append("")
    s = d["sae"]
    parts.append(
        f"SAE at {s['hook_layer']}: d_sae {s['d_sae']}, k {s['k']}, explained variance {s['explained_variance']:.3f}, "
        f"dead {s['dead_fraction']:.1%} ({len(s['dead'])} latents{': ' + str(s['dead']) if s['dead'] else ''})"
    )
    parts.append(
        tabulate(
            [[c, p, ", ".join(map(str, s["concepts"].get(c, [])[:8]))] for c, p in s["concept_precision"].items()],
            headers=["concept", "best precision", "latents"],
            floatfmt=".3f",
        )
    )
    parts.append("")
    parts.append(
        tabulate(
            [
                [r["latent"], r["label"], r["precision"], r["firing_rate"], r["mean_activation"], r["label_entropy"]]
                for r in s["latents"]
            ],
            headers=["latent", "label", "precision", "firing rate", "mean act", "label entropy"],
            floatfmt=".3f",
        )
    )
    parts.append("")
    parts.append("thresholds: " + ", ".join(f"{k} {'ok' if v else 'FAIL'}" for k, v in d.get("passed", {}).items()))
    return "\n".join(parts)
