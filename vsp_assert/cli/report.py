"""``vsp-assert report merge OUT DIR…`` and ``vsp-assert report merge-baselines TARGET SHARD…``: one report and
one set of baselines from a suite run in shards (xdist workers, CI matrix jobs, pytest-split groups).

The merge of reports reads each shard's ``report.json`` (written by ``pytest --vsp-report DIR``, carrying its
cases' digests, :mod:`vsp_assert.pytest_plugin.shards`) and writes ``OUT/index.html`` and ``OUT/report.json`` with
the code a single run uses, then prints a one-line summary (``--json`` writes it too). The merge of baselines is
:mod:`vsp_assert.checks.baseline_merge`. docs/ci.md has a GitHub Actions recipe.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any


def add_commands(sub: Any) -> None:
    group = sub.add_parser("report", help="merge the reports and baselines of a suite run in shards")
    inner = group.add_subparsers(dest="report_command", required=True, metavar="COMMAND", title="commands")
    m = inner.add_parser("merge", help="combine shards' report.json files into one HTML report and summary")
    m.add_argument("out", help="folder to write index.html and report.json into")
    m.add_argument("dirs", nargs="+", help="the shards' report folders (pytest --vsp-report DIR)")
    m.add_argument("--title", default="vsp-assert report", help="the page title")
    m.add_argument("--json", dest="json_path", default=None, help="also write the summary as JSON here")
    m.add_argument("--fail-on-failure", action="store_true", help="exit 1 when a merged case failed")
    m.set_defaults(func=_cmd_merge)
    b = inner.add_parser("merge-baselines", help="apply shards' baseline updates to one baseline file")
    b.add_argument("target", help="the baseline file as it was before the shards ran (rewritten in place)")
    b.add_argument("shards", nargs="+", help="the shards' copies of that file after --vsp-update-baseline")
    b.set_defaults(func=_cmd_merge_baselines)


def merge_reports(out: str | Path, folders: Sequence[str | Path], *,
                  title: str = "vsp-assert report") -> tuple[Path, dict[str, Any]]:
    """Merge the reports of ``folders`` into ``out``; returns the page's path and the summary."""
    from vsp_assert.pytest_plugin.digest import write_report
    from vsp_assert.pytest_plugin.shards import merge_digests, read_digests

    runs = [read_digests(f) for f in folders]
    merged = merge_digests(runs)
    page = write_report(out, merged, title=title)
    failed = sum(1 for d in merged if not d["passed"])
    return page, {"cases": len(merged), "passed": len(merged) - failed, "failed": failed,
                  "shards": {str(f): len(r) for f, r in zip(folders, runs, strict=True)}}


def _cmd_merge(args: argparse.Namespace) -> int:
    from vsp_assert.files import atomic_write_text

    page, summary = merge_reports(args.out, args.dirs, title=args.title)
    print(f"{summary['cases']} case(s) from {len(args.dirs)} shard(s): {summary['passed']} passed, "
          f"{summary['failed']} failed; report: {page}")
    if args.json_path:
        atomic_write_text(args.json_path, json.dumps(summary, indent=1) + "\n")
    return 1 if args.fail_on_failure and summary["failed"] else 0


def _cmd_merge_baselines(args: argparse.Namespace) -> int:
    from vsp_assert.checks.baseline_merge import merge_baseline_files

    path, n = merge_baseline_files(args.target, args.shards)
    print(f"{n} baseline entr{'y' if n == 1 else 'ies'} updated from {len(args.shards)} shard(s): {path}")
    return 0
