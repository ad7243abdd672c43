"""Sharded runs: the data a report carries for ``vsp-assert report merge``, and the merge itself.

A run's ``report.json`` (``--vsp-report DIR``) holds the key figures per case and, under ``digests``, the plain
digests its page was built from (each case's rendered HTML section and JSON entry, :mod:`.digest`). Dataset cases
add their figures under ``dataset`` in their entry (rates, intervals, counts, controls, rows). So runs made
anywhere — xdist workers, CI matrix shards, pytest-split groups — merge into one report by concatenating digests
and building the page again with the same code a single run uses (:func:`.digest.write_report`): the merged page
shows the same cases and figures as one run of the whole suite. A case present in several shards (a rerun) keeps
its last shard's digest.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from vsp_assert.errors import InputError

#: the digest keys a report keeps for merging (``show`` is terminal text, not needed)
DIGEST_KEYS = ("nodeid", "passed", "checked", "html", "json", "answer_prob", "sae_fit")


def add_merge_data(doc: dict[str, Any], digests: Sequence[dict[str, Any]]) -> None:
    """Add the dataset figures and the digests to a ``report.json`` document (in place)."""
    shown = [d for d in digests if d.get("html") is not None]
    ordered = [d for d in shown if not d["passed"]] + [d for d in shown if d["passed"]]
    for entry, d in zip(doc.get("results", []), ordered, strict=False):
        if isinstance(d.get("json"), dict) and "dataset" in d["json"]:
            entry["dataset"] = d["json"]["dataset"]
    doc["digests"] = [{k: d.get(k) for k in DIGEST_KEYS} for d in ordered]


def read_digests(folder: str | Path) -> list[dict[str, Any]]:
    """The digests of one run's report folder (or its ``report.json``)."""
    path = Path(folder)
    path = path / "report.json" if path.is_dir() else path
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise InputError(f"cannot read the report ({exc})", file=str(path), field="report.json",
                         fix="pass folders written by pytest --vsp-report DIR") from None
    digests = doc.get("digests") if isinstance(doc, dict) else None
    if not isinstance(digests, list):
        raise InputError("this report.json carries no digests to merge", file=str(path), field="digests",
                         received=sorted(doc) if isinstance(doc, dict) else type(doc).__name__,
                         fix="write the shard reports with this version of vsp-assert (pytest --vsp-report DIR)")
    return digests


def merge_digests(runs: Sequence[Sequence[dict[str, Any]]]) -> list[dict[str, Any]]:
    """The digests of several runs as one run's: in run order, a node id seen again replacing the earlier
    digests of that node id (a test rerun in another shard)."""
    by_node: dict[str, list[dict[str, Any]]] = {}
    for run in runs:
        fresh: dict[str, list[dict[str, Any]]] = {}
        for d in run:
            fresh.setdefault(str(d.get("nodeid")), []).append(d)
        for nodeid, items in fresh.items():
            by_node.pop(nodeid, None)
            by_node[nodeid] = items
    return [d for items in by_node.values() for d in items]
