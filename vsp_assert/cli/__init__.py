"""The ``vsp-assert`` command line.

Subcommands:

- ``run IMAGE PROMPT --model M --sae S``: answer, captured concepts, top concepts per token, the clustered
  heatmap, optional ablations (``--ablate red --ablate "#12"``) and a sufficient-set search (``--sufficient``);
- ``shapes train|report``: the shapes-world recipe and its report (from :mod:`vsp_assert.shapes.cli`);
- ``compare --base OLD --new NEW CASES…``: the same cases on two checkpoints (:mod:`vsp_assert.cli.compare`).

Every :class:`~vsp_assert.errors.VspError` is printed as its one message and exits with status 2; ``--debug``
shows the traceback instead.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from typing import Any


def _layers(text: str) -> list[int]:
    try:
        return [int(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated layer indices, got {text!r}") from None


def _add_run(sub: Any) -> None:
    p = sub.add_parser("run", help="explain one (image, prompt) answer with the SAE")
    p.add_argument("image", help="image file")
    p.add_argument("prompt", help="question to ask about the image")
    p.add_argument("--model", default="shapes", help="model folder, hub id available offline, or 'shapes'")
    p.add_argument("--sae", default="shapes", help="SAE folder (SAELens format) or 'shapes'")
    p.add_argument("--device", default=None,
                   help="torch device (cpu, cuda, cuda:1, …) or auto (device_map='auto', several GPUs)")
    p.add_argument("--dtype", default=None, choices=["float32", "float16", "bfloat16"], help="model dtype")
    p.add_argument("--max-new-tokens", type=int, default=8, help="generation length")
    p.add_argument("--top-k", type=int, default=5, help="concepts per token in tables and heatmap")
    p.add_argument("--layers", type=_layers, default=None, help="LM layers to average attention over (0,1,…)")
    p.add_argument("--ablate", action="append", default=[], metavar="CONCEPT",
                   help="ablate a concept (name or #id); repeat for several, comma-separate to ablate together")
    p.add_argument("--sufficient", action="store_true", help="search a small sufficient set among the clusters")
    p.add_argument("--color", default="auto", choices=["auto", "yes", "no"], help="colour output")
    p.add_argument("--json", action="store_true", help="print the figures as JSON instead of text")
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
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="vsp-assert", description=__doc__.splitlines()[0])
    parser.add_argument("--debug", action="store_true", help="show tracebacks instead of one-line errors")
    sub = parser.add_subparsers(dest="command", required=True)
    _add_run(sub)
    from vsp_assert.cli.compare import add_commands as add_compare
    from vsp_assert.shapes.cli import add_commands as add_shapes

    add_shapes(sub)
    add_compare(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    from vsp_assert.errors import VspError

    parser = build_parser()
    args = parser.parse_args(argv)
    try:  # no download-style progress bars: everything here loads from local folders
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()
    except ImportError:  # pragma: no cover - transformers is a dependency
        pass
    try:
        return int(args.func(args) or 0)
    except VspError as exc:
        if args.debug:
            raise
        print(f"vsp-assert: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("vsp-assert: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
