"""``vsp-assert concepts build`` and ``vsp-assert concepts show``: the commands.

``build`` labels an SAE's latents from an image source (:mod:`vsp_assert.concepts.build`); ``show`` prints a
latent's or a concept's statistics, labels and reference images (:mod:`vsp_assert.render.concepts`). The main CLI
calls :func:`add_commands`. docs/concepts.md describes the label file, the statistics and the atlas.
"""

from __future__ import annotations

import argparse
from typing import Any

BUILD_EPILOG = """\
examples (on the shapes world; your own model works the same way):
  vsp-assert shapes export --n 200 --out /tmp/shapes-200
  vsp-assert sae train --model shapes --images /tmp/shapes-200/manifest.jsonl \\
      --out /tmp/my-sae
  vsp-assert concepts build --model shapes --sae /tmp/my-sae \\
      --images /tmp/shapes-200/manifest.jsonl
  vsp-assert concepts show red --sae /tmp/my-sae

Writes the label file that the SAE's vsp_assert.json names (default
concepts.json) and atlas/ into the SAE folder."""


def add_commands(sub: Any) -> None:
    """Add ``concepts build`` and ``concepts show`` to the main CLI's subparsers."""
    from vsp_assert.concepts.defaults import ATLAS_MB, DENSE_RATE, MASK_COVERAGE, MIN_PRECISION

    group = sub.add_parser("concepts", help="name an SAE's latents from labelled images, and look at them")
    csub = group.add_subparsers(dest="concepts_command", required=True)
    b = csub.add_parser("build", help="per-latent statistics, concept names, thresholds and reference images",
                        epilog=BUILD_EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    b.add_argument("--model", required=True, help="model folder, hub id available offline, or 'shapes'")
    b.add_argument("--sae", required=True, help="SAE folder (SAELens format); the labels are written into it")
    b.add_argument("--images", required=True,
                   help="image source: a folder, an ImageFolder tree, or a .jsonl/.csv manifest with labels/masks")
    b.add_argument("--min-precision", type=float, default=MIN_PRECISION,
                   help=f"precision a latent needs to be named by a concept (default {MIN_PRECISION})")
    b.add_argument("--top-images", type=int, default=8, help="reference images kept per latent (default 8)")
    b.add_argument("--batch-size", type=int, default=16, help="images per model call (default 16)")
    b.add_argument("--no-atlas", action="store_true", help="skip the reference thumbnails (the index is kept)")
    b.add_argument("--mask-coverage", type=float, default=MASK_COVERAGE,
                   help=f"fraction of a patch a mask must cover to label it (default {MASK_COVERAGE})")
    b.add_argument("--dense-rate", type=float, default=DENSE_RATE,
                   help=f"firing rate above which a latent is dense noise (default {DENSE_RATE})")
    b.add_argument("--atlas-mb", type=float, default=ATLAS_MB,
                   help=f"size budget of the atlas in MB; thumbnails shrink to fit (default {ATLAS_MB:g})")
    b.add_argument("--device", default=None, help="torch device (cpu, cuda, …)")
    b.set_defaults(func=_build)

    s = csub.add_parser("show", help="a latent's (or a concept's latents') statistics and reference images")
    s.add_argument("name", metavar="NAME_OR_#ID", help="a concept name or a latent id ('#12' or 12)")
    s.add_argument("--sae", default="shapes", help="SAE folder or 'shapes' (default)")
    s.add_argument("--max-latents", type=int, default=8, help="latents of a concept to show (default 8)")
    s.add_argument("--color", default="auto", choices=["auto", "yes", "no"], help="colour output")
    s.set_defaults(func=_show)


def _build(args: argparse.Namespace) -> int:
    from vsp_assert.concepts.build import build_concepts

    result = build_concepts(args.model, args.sae, args.images, min_precision=args.min_precision,
                            top_images=args.top_images, batch_size=args.batch_size, atlas=not args.no_atlas,
                            mask_coverage=args.mask_coverage, dense_rate=args.dense_rate, atlas_mb=args.atlas_mb,
                            device=args.device)
    a = result.atlas
    print(f"{result.n_images} images, {result.n_patches} patches in {result.seconds:.0f}s; "
          f"{len(result.concepts)} concept(s) named, {result.dead} dead and {result.dense} dense latent(s)")
    for name, ids in sorted(result.concepts.items()):
        print(f"  {name}: {', '.join(f'#{i}' for i in ids[:12])}{' …' if len(ids) > 12 else ''}")
    thumbs = f"{a['thumb']} px thumbnails in {a['sheets']} sheet(s), " if a.get("thumb") else "no thumbnails, "
    print(f"atlas: {a['latents']} latent(s), {thumbs}{a['bytes'] / 1e6:.2f} MB (bound {a['bound'] / 1e6:.2f} MB)")
    print(f"wrote {result.label_file}")
    return 0


def _show(args: argparse.Namespace) -> int:
    from vsp_assert.concepts.atlas import thumbnails
    from vsp_assert.engine.sae import load_sae
    from vsp_assert.render.concepts import render_concept_header, render_latent
    from vsp_assert.render.style import Style, colour_enabled
    from vsp_assert.render.terminal import terminal_width

    labels = load_sae(args.sae).labels
    ids = labels.resolve(args.name)  # an unknown name is an InputError with the closest known names
    style = Style(colour_enabled(args.color))
    width = terminal_width()
    lines: list[str] = []
    is_name = args.name in labels.concepts
    if is_name:
        lines.append(render_concept_header(labels, args.name, style))
    index = labels.atlas_index()
    index_path = labels.atlas_path()
    for latent in ids[: args.max_latents if is_name else None]:
        thumbs = thumbnails(index_path, index, latent) if index is not None and index_path is not None else []
        lines.extend(render_latent(labels, latent, thumbs, style=style, width=width))
        lines.append("")
    if is_name and len(ids) > args.max_latents:
        lines.append(style.dim(f"… {len(ids) - args.max_latents} more latent(s); --max-latents shows more"))
    print("\n".join(lines).rstrip())
    return 0
