"""``vsp-assert compare --base OLD --new NEW CASES…``: the command; the comparison is
:mod:`vsp_assert.checks.compare`, its text :mod:`vsp_assert.render.compare`."""

from __future__ import annotations

import argparse
import json
from typing import Any


def add_commands(sub: Any) -> None:
    p = sub.add_parser("compare", help="run the same cases on two checkpoints and diff their concepts")
    p.add_argument("cases", nargs="+", help="case files or folders")
    p.add_argument("--base", required=True, help="the old model (folder, offline hub id, or 'shapes')")
    p.add_argument("--new", required=True, help="the new model (same vision encoder as --base)")
    p.add_argument("--sae", default="shapes", help="SAE folder (SAELens format) or 'shapes'")
    p.add_argument("--device", default=None, help="torch device")
    p.add_argument("--json", dest="json_path", default=None, help="also write the comparison as JSON here")
    p.add_argument("--fail-on-change", action="store_true", help="exit 1 when any answer changed")
    p.add_argument("--color", default="auto", choices=["auto", "yes", "no"], help="colour output")
    p.set_defaults(func=_cmd_compare)


def _cmd_compare(args: argparse.Namespace) -> int:
    from vsp_assert import Scratchpad, load_model, load_sae
    from vsp_assert.checks.compare import case_files, compare
    from vsp_assert.files import atomic_write_text
    from vsp_assert.render.compare import render_comparison
    from vsp_assert.render.style import Style, colour_enabled

    files = case_files(args.cases)
    sae = load_sae(args.sae)
    base = Scratchpad(load_model(args.base, device=args.device), sae)
    new = Scratchpad(load_model(args.new, device=args.device), sae)
    rows = compare(base, new, files)
    print(render_comparison(rows, Style(colour_enabled(args.color))))
    if args.json_path:
        atomic_write_text(args.json_path, json.dumps([r.to_dict() for r in rows], indent=1) + "\n")
    return 1 if args.fail_on_change and any(r.answer_changed for r in rows) else 0
