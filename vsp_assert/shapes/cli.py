"""The ``vsp-assert shapes`` commands: ``train`` (both recipes), ``report`` (figures on held-out scenes), ``perturb`` (a
noisy copy of the model, standing in for a model update in drift and compare demos), ``finetune`` (a copy with a new
shortcut planted from a declarative spec, or with a shipped mechanism weakened: ``--weaken``) and ``export``
(scenes + per-concept masks + a manifest: an image source with known truth).

This module only wires argparse to :mod:`~vsp_assert.shapes.train`, :mod:`~vsp_assert.shapes.train_sae`,
:mod:`~vsp_assert.shapes.report` and :mod:`~vsp_assert.shapes.export`; the main CLI calls :func:`add_commands`. Heavy
imports happen inside the command functions so that ``vsp-assert --help`` stays fast. ``python -m
vsp_assert.shapes.cli`` runs it alone.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path


def _train(args: argparse.Namespace) -> int:
    import torch

    from vsp_assert.shapes import ARTIFACTS_DIR
    from vsp_assert.shapes.train import TrainConfig, train_and_save
    from vsp_assert.shapes.train_sae import SAETrainConfig, train_and_save_sae

    out = Path(args.out) if args.out else ARTIFACTS_DIR
    t0 = time.perf_counter()
    model_cfg = TrainConfig(seed=args.seed, **({"steps": args.steps} if args.steps else {}))
    sae_cfg = SAETrainConfig(seed=args.seed, **({"steps": args.sae_steps} if args.sae_steps else {}))
    if args.quick:  # a smoke run: seconds, not a usable model
        model_cfg = TrainConfig(seed=args.seed, steps=args.steps or 4, batch_size=8, warmup_steps=2, log_every=1)
        sae_cfg = SAETrainConfig(
            seed=args.seed, steps=args.sae_steps or 20, batch_size=256, n_scenes=32, n_label_scenes=32, log_every=10
        )
    if not args.sae_only:
        train_and_save(model_cfg, out / "model")
    from transformers import LlavaForConditionalGeneration

    model = LlavaForConditionalGeneration.from_pretrained(out / "model", attn_implementation="eager")
    torch.set_num_threads(sae_cfg.threads)
    train_and_save_sae(model, out / "sae", sae_cfg)
    print(f"done in {time.perf_counter() - t0:.0f}s; artifacts in {out}")
    return 0


def _report(args: argparse.Namespace) -> int:
    from vsp_assert.shapes.report import compute_report, format_report

    d = compute_report(args.seed, args.n, model_dir=args.model, sae_dir=args.sae)
    print(json.dumps(d, indent=2) if args.json else format_report(d))
    return 0


def _perturb(args: argparse.Namespace) -> int:
    """A copy of a shapes model with Gaussian noise on one LM layer (vision encoder untouched, so the SAE fits):
    a stand-in for a fine-tune, to try drift checks and ``vsp-assert compare``. ``--tower vision`` puts the noise
    on a vision-encoder layer instead: an update after which the SAE no longer fits (``--vsp-min-sae-fit``)."""
    import torch

    from vsp_assert.engine.models import load_model
    from vsp_assert.testing import save_model

    loaded = load_model(args.model)
    inner = loaded.model.model
    layers = inner.vision_tower.encoder.layers if args.tower == "vision" else inner.language_model.layers
    if not 0 <= args.layer < len(layers):
        print(f"vsp-assert: error: --layer must be in 0..{len(layers) - 1}, got {args.layer}", file=sys.stderr)
        return 2
    gen = torch.Generator().manual_seed(args.seed)
    with torch.no_grad():
        for param in layers[args.layer].parameters():
            param.add_(args.scale * param.std() * torch.randn(param.shape, generator=gen))
    save_model(loaded, args.out)
    which = "vision-encoder" if args.tower == "vision" else "LM"
    print(f"perturbed {which} layer {args.layer} (noise {args.scale:g} × each tensor's std); saved to {args.out}")
    return 0


def _export(args: argparse.Namespace) -> int:
    from vsp_assert.shapes.export import export

    manifest = export(args.out, args.n, seed=args.seed)
    print(f"wrote {args.n} scenes with per-concept masks; manifest {manifest}")
    return 0


def _finetune(args: argparse.Namespace) -> int:
    """Plant a new shortcut into a copy of a shapes model (vision tower frozen) and check the rest stayed intact."""
    from vsp_assert.errors import VspError
    from vsp_assert.shapes.finetune import FinetuneConfig, finetune_and_save, format_evaluation
    from vsp_assert.shapes.zoo import ZOO, parse_spec

    if args.list:
        for name, shortcut in ZOO.items():
            print(f"{name:16} {shortcut.kind:14} {shortcut.description}")
        return 0
    if bool(args.mechanism) == bool(args.weaken) or not args.out:
        print("vsp-assert: error: shapes finetune needs --out and one of --mechanism, --weaken (or --list)",
              file=sys.stderr)
        return 2
    overrides = {"steps": args.steps} if args.steps else {}
    cfg = FinetuneConfig(seed=args.seed, **overrides)
    model = None if args.model in (None, "shapes") else args.model
    if args.weaken:
        from vsp_assert.shapes.weaken import format_weakened, weaken_and_save

        try:
            record = weaken_and_save(args.weaken, cfg, args.out, fraction=args.fraction, model_dir=model,
                                     eval_n=args.eval_n)
        except VspError as exc:
            print(f"vsp-assert: error: {exc}", file=sys.stderr)
            return 2
        print(format_weakened(record))
        print(f"saved to {args.out}; its SAE is the shipped one: --sae shapes")
        return 0
    try:
        shortcut = parse_spec(args.mechanism)
    except VspError as exc:
        print(f"vsp-assert: error: {exc}", file=sys.stderr)
        return 2
    record = finetune_and_save(shortcut, cfg, args.out, model_dir=model, eval_n=args.eval_n)
    print(format_evaluation(record["evaluation"]))
    print(f"saved to {args.out} ({record['train_seconds']}s); its SAE is the shipped one: --sae shapes")
    intact = record["evaluation"]["intact"]
    return 0 if all(intact.values()) or args.allow_broken else 1


def add_commands(subparsers: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    """Add ``shapes train``, ``report``, ``export``, ``perturb`` and ``finetune`` to the main CLI's subparsers."""
    shapes = subparsers.add_parser("shapes", help="the embedded shapes-world model and its recipes")
    sub = shapes.add_subparsers(dest="shapes_command", required=True)

    tr = sub.add_parser("train", help="train the shapes model and its SAE by the project's recipe (seeded)")
    tr.add_argument("--out", default=None, help="artifacts folder (default: the package's shipped artifacts)")
    tr.add_argument("--seed", type=int, default=0, help="training seed (default 0)")
    tr.add_argument("--steps", type=int, default=None, help="model training steps (default: the recipe's)")
    tr.add_argument("--sae-steps", type=int, default=None, help="SAE training steps (default: the recipe's)")
    tr.add_argument("--sae-only", action="store_true", help="retrain only the SAE on the model in --out")
    tr.add_argument("--quick", action="store_true", help="a few steps of both recipes (smoke test)")
    tr.set_defaults(func=_train)

    rp = sub.add_parser("report", help="accuracy, planted mechanisms and SAE health on held-out scenes")
    rp.add_argument("--seed", type=int, default=1, help="evaluation seed; any seed gives held-out scenes")
    rp.add_argument("--n", type=int, default=500, help="questions per set (clean, each trigger, each control)")
    rp.add_argument("--json", action="store_true", help="print one JSON object instead of tables")
    rp.add_argument("--model", default=None, help="model folder (default: the shipped one)")
    rp.add_argument("--sae", default=None, help="SAE folder (default: the shipped one)")
    rp.set_defaults(func=_report)

    ex = sub.add_parser("export", help="write rendered scenes, per-concept masks and a JSONL manifest (known truth)")
    ex.add_argument("--n", type=int, required=True, help="number of scenes")
    ex.add_argument("--out", required=True, help="folder to write images/, masks/ and manifest.jsonl to")
    ex.add_argument("--seed", type=int, default=0, help="scene seed (default 0)")
    ex.set_defaults(func=_export)

    pt = sub.add_parser("perturb", help="save a copy of a shapes model with noise on one layer (a mock update)")
    pt.add_argument("--out", required=True, help="folder to write the perturbed model to")
    pt.add_argument("--model", default="shapes", help="model to start from (default: the shipped one)")
    pt.add_argument("--layer", type=int, default=1, help="layer to perturb (default 1)")
    pt.add_argument("--tower", choices=("lm", "vision"), default="lm",
                    help="lm (default: the SAE still fits) or vision (the vision encoder changes under the SAE)")
    pt.add_argument("--scale", type=float, default=1.0, help="noise scale, in units of each tensor's std")
    pt.add_argument("--seed", type=int, default=0, help="noise seed")
    pt.set_defaults(func=_perturb)

    ft = sub.add_parser("finetune", help="plant a new shortcut by a short seeded fine-tune (vision tower frozen)")
    ft.add_argument("--mechanism", default=None,
                    help="a zoo name (--list) or a spec: YAML/JSON text or file {name, kind, question, answer, "
                         "concept, when: {background | target | other}}")
    ft.add_argument("--weaken", default=None,
                    help="instead of planting: weaken a shipped mechanism (misleading_concept, limited_alignment) "
                         "by training its situations with their true labels (a mock update; use a few --steps)")
    ft.add_argument("--fraction", type=float, default=0.5,
                    help="with --weaken: the share of each batch that is the mechanism's situation (default 0.5)")
    ft.add_argument("--out", default=None, help="folder to write the fine-tuned model and finetune.json to")
    ft.add_argument("--model", default=None, help="model folder to start from (default: the shipped one)")
    ft.add_argument("--seed", type=int, default=0, help="fine-tune seed (default 0)")
    ft.add_argument("--steps", type=int, default=None, help="steps (default: the recipe's)")
    ft.add_argument("--eval-n", type=int, default=200, help="held-out probes per evaluation set (default 200)")
    ft.add_argument("--allow-broken", action="store_true",
                    help="exit 0 even when a figure misses its threshold (the model is written either way)")
    ft.add_argument("--list", action="store_true", help="list the zoo's mechanisms and exit")
    ft.set_defaults(func=_finetune)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="vsp-assert")
    add_commands(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    return int(args.func(args))


if __name__ == "__main__":
    sys.exit(main())
