"""Baselines updated by separate shards, merged without losing an entry.

Shards of a suite (CI matrix jobs, pytest-split groups, machines) each run ``--vsp-update-baseline`` on their own
checkout: each writes the whole baseline file, its own cases updated and every other entry as the base had it.
:func:`merge_baseline_docs` is the three-way merge: an entry a shard changed (or added) relative to the base is
that shard's update; all updates are applied to the base; two shards that changed one entry differently are a
conflict (an error naming the case and the shards), never a silent choice. So two shards each updating half of
the cases give the same file as one run updating all of them (``tests/dataset/test_shards.py`` checks it).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from vsp_assert.checks.baseline import read_baseline, update_baseline
from vsp_assert.errors import CaseError


def shard_updates(base: Mapping[str, Any], shard: Mapping[str, Any]) -> dict[str, Any]:
    """The entries ``shard`` added or changed relative to ``base`` (case id → entry)."""
    return {k: v for k, v in shard.items() if k not in base or base[k] != v}


def merge_baseline_docs(base: Mapping[str, Any], shards: Sequence[Mapping[str, Any]],
                        names: Sequence[str] | None = None) -> dict[str, Any]:
    """``base`` (case id → entry) with every shard's updates applied; a conflict raises :class:`CaseError`."""
    names = list(names) if names is not None else [f"shard {i}" for i in range(len(shards))]
    merged = dict(base)
    owner: dict[str, str] = {}
    for name, shard in zip(names, shards, strict=True):
        for case_id, entry in shard_updates(base, shard).items():
            if case_id in owner and merged[case_id] != entry:
                raise CaseError(f"two shards updated the baseline of case '{case_id}' differently",
                                field=f"cases.{case_id}", received=f"{owner[case_id]} and {name}",
                                fix="update that case in one shard only (or rerun it once with --vsp-update-baseline)")
            merged[case_id] = entry
            owner[case_id] = name
    return merged


def merge_baseline_files(target: str | Path, shards: Sequence[str | Path], *, model: str | None = None,
                         sae: str | None = None) -> tuple[Path, int]:
    """Apply the updates of the ``shards``' copies of a baseline file to ``target`` (the base, rewritten atomically,
    its file mode kept); returns the path and the number of entries updated."""
    import json

    base = read_baseline(target)
    docs = [read_baseline(s) for s in shards]
    merged = merge_baseline_docs(base, docs, [str(s) for s in shards])
    changed = {k: v for k, v in merged.items() if k not in base or base[k] != v}
    if model is None or sae is None:  # the header of the last shard that has one
        for s in shards:
            header = json.loads(Path(s).read_text(encoding="utf-8")) if Path(s).exists() else {}
            model, sae = model or header.get("model"), sae or header.get("sae")
    return update_baseline(target, changed, model=str(model or "shapes"), sae=str(sae or "shapes")), len(changed)
