"""``vsp-assert sae import FORMAT PATH --out DIR``: turn a published vision SAE into our SAE folder.

:func:`add_import_parser` adds the ``import`` subcommand to the ``sae`` command group (the group itself lives in
:mod:`vsp_assert.cli.sae`); the work is :func:`vsp_assert.concepts.importers.import_sae`.
"""

from __future__ import annotations

import argparse
from typing import Any

FORMAT_HELP = """\
formats:
  saev      OSU-NLP-Group/saev sae.pt (JSON header line + state dict)
  prisma    ViT-Prisma weights .pt + config.json (the folder or the .pt)
  patchsae  dynamical-inference/patchsae .pt ({cfg, state_dict})

Checkpoints are read weights-only; one that holds pickled Python objects is
refused unless --allow-pickle is given (only for files you trust).
--hook-layer is the module path of the layer in the VLM, e.g.
model.vision_tower.vision_model.encoder.layers.22 for LLaVA-1.5.
See docs/sae-import.md for each format's conventions and which published
SAEs fit which model families."""


def add_import_parser(sae_subparsers: Any) -> argparse.ArgumentParser:
    """Add ``import`` to the ``sae`` group's subparsers; returns the new parser."""
    from vsp_assert.concepts.defaults import FORMATS

    p = sae_subparsers.add_parser(
        "import", help="convert a published vision SAE (saev, prisma, patchsae) to an SAE folder",
        epilog=FORMAT_HELP, formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("format", choices=FORMATS, metavar="FORMAT", help="one of: " + ", ".join(FORMATS))
    p.add_argument("path", metavar="PATH", help="the checkpoint file (or, for saev and prisma, its folder)")
    p.add_argument("--out", required=True, metavar="DIR", help="the SAE folder to write (SAELens format)")
    p.add_argument("--hook-layer", default=None, metavar="NAME",
                   help="module path of the layer the SAE reads in the VLM (stored in vsp_assert.json)")
    p.add_argument("--model", default=None, metavar="ID", help="what the SAE was trained on (default: the file's)")
    p.add_argument("--allow-pickle", action="store_true",
                   help="unpickle checkpoints that hold Python objects (trusted files only)")
    p.add_argument("--subtract-b-dec", choices=["yes", "no"], default=None,
                   help="saev only: whether the encoder subtracts b_dec (needed for schema-2 files)")
    p.add_argument("--input-mean", default=None, metavar="FILE",
                   help="mean [d_in] (.pt or .npy) subtracted from activations in training; folded into the weights")
    p.add_argument("--input-scale", type=float, default=None, metavar="S",
                   help="activations were divided by S in training; folded into the weights")
    p.set_defaults(func=_cmd_import)
    return p


def _cmd_import(args: argparse.Namespace) -> int:
    from vsp_assert.concepts.importers import import_sae

    subtract = None if args.subtract_b_dec is None else args.subtract_b_dec == "yes"
    folder, imported = import_sae(
        args.format, args.path, args.out, hook_layer=args.hook_layer, model=args.model,
        allow_pickle=args.allow_pickle, subtract_b_dec=subtract, input_mean=args.input_mean,
        input_scale=args.input_scale,
    )
    arch = imported.architecture + (f" k={imported.k}" if imported.k else "")
    print(f"wrote {folder}: {args.format} SAE, d_in={imported.d_in}, d_sae={imported.d_sae}, {arch}, "
          f"normalize_activations={imported.normalize_activations}")
    if imported.hook_name:
        print(f"  the file's own hook name: {imported.hook_name}")
    print(f"  hook layer: {args.hook_layer or '(none; pass --hook-layer or load_sae(..., hook_layer=...))'}")
    for note in imported.notes:
        print(f"  note: {note}")
    return 0
