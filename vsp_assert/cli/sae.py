"""The ``vsp-assert sae`` command group: ``train`` (here) and ``import`` (from :mod:`vsp_assert.cli.sae_import`, when
that module is installed).

``sae train --model M --images SOURCE --out DIR`` trains a TopK SAE on the model's hooked vision layer over any image
source :func:`~vsp_assert.concepts.sources.open_source` reads, through :func:`vsp_assert.concepts.train.train_sae`.
Exit codes: 0 done, 2 bad input (one :class:`~vsp_assert.errors.VspError` message), 130 interrupted (the
checkpoint is written; rerun with ``--resume``). The main CLI calls :func:`add_commands`; heavy imports happen inside
the command so that ``vsp-assert --help`` stays fast.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any


def _load_model(name: str, device: str | None) -> Any:
    """The model behind ``--model`` (a seam the tests replace to train families that cannot be saved here)."""
    from vsp_assert.engine.models import load_model

    return load_model(name, device=device)


def _train(args: argparse.Namespace) -> int:
    from vsp_assert.concepts.sources import open_source
    from vsp_assert.concepts.train import Interrupted, TrainConfig, train_sae
    from vsp_assert.errors import VspError

    def say(msg: str) -> None:
        if not args.quiet:
            print(msg, file=sys.stderr)

    try:
        source = open_source(args.images, strict=args.strict)
        if source.skipped:
            say(f"skipped {len(source.skipped)} unreadable image(s), e.g. {source.skipped[0][0]}")
        cfg = TrainConfig(
            d_sae=args.d_sae, k=args.k, steps=args.steps, batch_size=args.batch_size, lr=args.lr, seed=args.seed,
            buffer=args.buffer, image_batch=args.image_batch, checkpoint_every=args.checkpoint_every,
        )
        loaded = _load_model(args.model, args.device)
        say(f"{len(source)} images ({source.kind}) from {args.images}; model {args.model}")
        folder, stats = train_sae(loaded, list(source), args.out, cfg, model_name=args.model, layer=args.layer,
                                  resume=args.resume, quiet=args.quiet,
                                  log=None if sys.stderr.isatty() or args.quiet else say)
    except Interrupted as exc:
        where = f"checkpoint {exc.checkpoint}; rerun with --resume" if exc.checkpoint else "no checkpoint written yet"
        print(f"vsp-assert: interrupted after {exc.step} steps ({where})", file=sys.stderr)
        return 130
    except KeyboardInterrupt:  # before training started: nothing was written
        print("vsp-assert: interrupted before training started (nothing written)", file=sys.stderr)
        return 130
    except VspError as exc:
        print(f"vsp-assert: error: {exc}", file=sys.stderr)
        return 2
    keys = ("explained_variance", "dead_fraction", "l0", "steps", "seconds", "activations_per_second")
    print(json.dumps({"folder": str(folder), **{k: stats[k] for k in keys}}))
    return 0


def add_train_parser(sae_sub: argparse._SubParsersAction) -> argparse.ArgumentParser:  # type: ignore[type-arg]
    from vsp_assert.concepts.defaults import TrainConfig

    d = TrainConfig()
    tr = sae_sub.add_parser("train", help="train a TopK SAE on a model's vision layer over a folder or manifest")
    tr.add_argument("--model", required=True, help="model folder, hub id available offline, or 'shapes'")
    tr.add_argument("--images", required=True, help="folder, ImageFolder tree, or .jsonl / .csv manifest")
    tr.add_argument("--out", required=True, help="SAE folder to write (SAELens format + sidecar + training.json)")
    tr.add_argument("--layer", default=None, help="vision layer to hook (default: the one the adapter feeds the LM)")
    tr.add_argument("--d-sae", type=int, default=None, help="latents (default: 8 × the layer's width)")
    tr.add_argument("--k", type=int, default=None,
                    help="active latents per patch (default: the layer's width / 8, between 4 and 32)")
    tr.add_argument("--steps", type=int, default=d.steps, help=f"training steps (default {d.steps})")
    tr.add_argument("--batch-size", type=int, default=d.batch_size, help=f"patches per step (default {d.batch_size})")
    tr.add_argument("--lr", type=float, default=d.lr, help=f"Adam learning rate (default {d.lr:g})")
    tr.add_argument("--seed", type=int, default=d.seed, help="seed (default 0)")
    tr.add_argument("--device", default=None,
                    help="cpu, cuda, cuda:N or auto: the model's device; the SAE trains beside it")
    tr.add_argument("--resume", action="store_true",
                    help="continue from DIR/checkpoint.pt (starts afresh if there is none)")
    tr.add_argument("--buffer", type=int, default=d.buffer, help=f"patches in the shuffle buffer (default {d.buffer})")
    tr.add_argument("--image-batch", type=int, default=d.image_batch, help="images per model forward (default 16)")
    tr.add_argument("--checkpoint-every", type=int, default=d.checkpoint_every,
                    help=f"steps between checkpoints (default {d.checkpoint_every}; 0: only on interrupt)")
    tr.add_argument("--strict", action="store_true", help="an unreadable image is an error, not skipped")
    tr.add_argument("--quiet", action="store_true", help="no progress bar or log lines")
    tr.set_defaults(func=_train)
    return tr


def add_commands(subparsers: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    """Add the ``sae`` group: ``train`` (here) and ``import`` (:mod:`vsp_assert.cli.sae_import`)."""
    from vsp_assert.cli.sae_import import add_import_parser

    sae = subparsers.add_parser("sae", help="train or import a sparse autoencoder for a model")
    sae_sub = sae.add_subparsers(dest="sae_command", required=True)
    add_train_parser(sae_sub)
    add_import_parser(sae_sub)
