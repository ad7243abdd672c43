"""``vsp-assert run IMAGE PROMPT``: explain one answer of a VLM through its SAE, in the terminal or as JSON.

This module owns the ``run`` command only: its arguments and the function that loads the model and the SAE,
runs the case through a :class:`~vsp_assert.engine.scratchpad.Scratchpad`, optionally ablates concepts and
searches a sufficient set, then prints with :mod:`vsp_assert.render.terminal` (or ``json``). The parser lives in
:mod:`vsp_assert.cli`; heavy imports happen inside the command so that ``vsp-assert --help`` stays fast.
"""

from __future__ import annotations

import argparse
import json
from typing import Any

DESCRIPTION = """\
Run a vision-language model on one image and prompt, and show what its answer
rests on: the answer, the visual concepts the SAE finds in the image, the
concepts each answer token attends to, and the token x latent heatmap. With
--ablate, also switch concepts off and report whether the answer changes."""

EPILOG = """\
examples:
  the shipped shapes-world model and SAE (the defaults):
    vsp-assert run scene.png "What shape is the red object?"
  two ablations (the second removes red and latent #12 together), then a
  search for a small set of latents whose ablation changes the answer:
    vsp-assert run scene.png "What shape is the red object?" \\
        --ablate stripes --ablate "red,#12" --sufficient
  a real checkpoint and an SAE on its vision encoder, on a GPU:
    vsp-assert run cat.jpg "What animal is this?" --model ./llava-1.5-7b \\
        --sae ./clip-l-sae --device cuda
  the figures as JSON:
    vsp-assert run scene.png "What color is the square?" --json > trace.json
  keep what was observed (answer, concepts, the ablation's outcome) as a
  YAML case, appended to the file; then run it as a test:
    vsp-assert run scene.png "What shape is the red object?" --ablate stripes \\
        --save-case cases/triage.yaml --id stripes-triangle
    pytest cases/triage.yaml"""


def _layers(text: str) -> list[int]:
    try:
        return [int(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated layer indices, got {text!r}") from None


def add_commands(sub: Any) -> None:
    """Add ``run`` to the main CLI's subparsers."""
    p = sub.add_parser("run", help="explain one (image, prompt) answer with the SAE", description=DESCRIPTION,
                       epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("image", help="image file")
    p.add_argument("prompt", help="question to ask about the image")
    p.add_argument("--model", default="shapes",
                   help="model folder, hub id available offline, or 'shapes' (default: shapes)")
    p.add_argument("--sae", default="shapes", help="SAE folder (SAELens format) or 'shapes' (default: shapes)")
    p.add_argument("--device", default=None,
                   help="torch device (cpu, cuda, cuda:1, …) or auto (device_map='auto', several GPUs)")
    p.add_argument("--dtype", default=None, choices=["float32", "float16", "bfloat16"],
                   help="model dtype (default: the checkpoint's)")
    p.add_argument("--max-new-tokens", type=int, default=8, metavar="N", help="generation length (default: 8)")
    p.add_argument("--top-k", type=int, default=5, metavar="K",
                   help="concepts per token in tables and heatmap (default: 5)")
    p.add_argument("--layers", type=_layers, default=None, metavar="L,L,…",
                   help="LM layers to average attention over (default: all)")
    p.add_argument("--ablate", action="append", default=[], metavar="CONCEPT",
                   help="ablate a concept (name or #id); repeat for several, comma-separate to ablate together")
    p.add_argument("--sufficient", action="store_true", help="search a small sufficient set among the clusters")
    p.add_argument("--color", default="auto", choices=["auto", "yes", "no"],
                   help="colour output (default: auto, on for a terminal unless NO_COLOR is set)")
    p.add_argument("--json", action="store_true", help="print the figures as JSON instead of text")
    p.add_argument("--save-case", default=None, metavar="FILE.yaml",
                   help="append a YAML case pinning what this run observed (answer, captured and attended "
                        "concepts, the interventions' outcomes) to FILE.yaml; the image is stored next to it")
    p.add_argument("--id", default=None, metavar="ID", dest="case_id",
                   help="the saved case's id (default: made from the prompt and the answer)")
    p.set_defaults(func=_cmd_run)


def _cmd_run(args: argparse.Namespace) -> int:
    from vsp_assert import Scratchpad, load_model, load_sae
    from vsp_assert.engine.analysis import find_sufficient_set
    from vsp_assert.engine.interventions import Intervention
    from vsp_assert.render.style import Style, colour_enabled
    from vsp_assert.render.terminal import render_trace

    model = load_model(args.model, device=args.device, dtype=args.dtype)
    sae = load_sae(args.sae)
    pad = Scratchpad(model, sae, attention_layers=args.layers, max_new_tokens=args.max_new_tokens)
    trace = pad.run(args.image, args.prompt)
    ablations = [Intervention.ablate(*[c.strip() for c in group.split(",") if c.strip()]) for group in args.ablate]
    results = pad.intervene(trace, ablations) if ablations else []
    sufficient = find_sufficient_set(pad, trace, 0) if args.sufficient and trace.n_tokens else None
    saved = _save_case(args, trace, results, sufficient) if args.save_case else None
    if args.json:
        out = {
            "answer": trace.answer,
            "answer_prob": trace.answer_prob,
            "output_tokens": trace.output_tokens,
            "top_concepts": {str(t): [[sae.labels.display(i), s] for i, s in trace.top_concepts(t, args.top_k)]
                             for t in range(trace.n_tokens)},
            "captured": [[sae.labels.display(i), s] for i, s in trace.top_captured(args.top_k)],
            "interventions": [r.to_dict() for r in results],
        }
        if sufficient is not None:
            out["sufficient_set"] = [sae.labels.display(i) for i in sufficient.latents]
        if saved is not None:
            out["saved_case"] = {"file": str(saved.path), "id": saved.case_id}
        print(json.dumps(out, indent=2))
        return 0
    style = Style(colour_enabled(args.color))
    highlight = [i for r in results for i in r.latents]
    print(render_trace(trace, style=style, top_k=args.top_k, highlight_latents=highlight,
                       spatial=[("ablated", highlight, 0 if trace.n_tokens else None)] if highlight else ()))
    for r in results:
        verdict = style.red("changed") if r.changed else style.green("unchanged")
        print(f"\n{style.bold('intervention')} {r.intervention.describe()}: answer {r.answer_before!r} → "
              f"{r.answer_after!r} ({verdict}); p(original) {r.p_before:.3f} → {r.p_after:.3f} "
              f"(drop {r.drop:+.3f})")
    if sufficient is not None:
        if sufficient.found and sufficient.result is not None:
            names = ", ".join(sae.labels.display(i) for i in sufficient.latents)
            print(f"\n{style.bold('sufficient set:')} {names} → answer {sufficient.result.answer_after!r}")
        else:
            print(f"\n{style.bold('sufficient set:')} none among the top clusters")
    if saved is not None:
        print(f"\n{style.bold('saved case')} {saved.case_id!r} to {saved.path}"
              + (f" (image {saved.image_path.name})" if saved.image_path else ""))
    return 0


def _save_case(args: argparse.Namespace, trace: Any, results: list[Any], sufficient: Any) -> Any:
    """Append the case pinning this run to ``--save-case`` (see vsp_assert.checks.save_case)."""
    from vsp_assert.checks.save_case import save_case

    tried = list(results)
    if sufficient is not None and sufficient.found and sufficient.result is not None:
        tried.append(sufficient.result)
    hint = " ".join(f"--vsp-{k}={v}" for k, v in (("model", args.model), ("sae", args.sae)) if v != "shapes")
    return save_case(args.save_case, trace, tried, case_id=args.case_id, source=args.image,
                     max_new_tokens=args.max_new_tokens, run_hint=hint)
