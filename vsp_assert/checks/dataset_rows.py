"""The rows of a dataset case (``each:``), read at collection time: image sources and shapes-world scenes.

``each`` names exactly one source, read from the case file's folder when relative:

- ``{manifest: rows.jsonl}`` (or a ``.csv``), ``{csv: rows.csv}``: one row per manifest row, its fields the row's
  other keys (``image``, ``labels`` joined by ``;`` and ``name`` are fields too);
- ``{folder: DIR}``: every image under DIR (fields ``image``, ``name``);
- ``{imagefolder: DIR}``: images one level under class folders (field ``label``: the class folder's name);
- ``{scenes: {mechanism: NAME, set: trigger|control}, n: 200, seed: 3}``: the probes of a planted mechanism of
  the shapes world (fields ``question``, ``answer`` — the truthful one —, ``shape``, ``color``, ``background``,
  ``objects``, and ``fix``, the explicit phrasing, where the mechanism has one);
- ``{scenes: {backgrounds: [...], shapes: [...], colors: [...], objects: 1|[1, 3]}, n, seed}``: random scenes
  (fields ``shape``, ``color`` of the first object, ``background``, ``objects``).

Options beside the source: ``n`` (the first n rows; required for scenes), ``seed`` (scenes), ``max_missing``
(the fraction of manifest rows whose image may be missing or unreadable before collection fails; default 0;
those rows are counted and listed in the result) and ``batch`` (rows per batched generate).

Image files are read through :func:`vsp_assert.concepts.sources.open_source` (headers only); scenes are drawn as
specs, not rendered, so collecting even a few thousand rows costs little.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from vsp_assert.checks.dataset_schema import DEFAULT_BATCH, Row
from vsp_assert.checks.yaml_lines import Ctx, as_int, as_mapping, as_number, as_str, kind_of
from vsp_assert.errors import VspError

SOURCE_KINDS = ("manifest", "csv", "folder", "imagefolder", "scenes")
EACH_KEYS = (*SOURCE_KINDS, "n", "seed", "max_missing", "batch")
SCENE_KEYS = ("mechanism", "set", "backgrounds", "shapes", "colors", "objects")
#: how many missing images an error or a note names
SHOW_MISSING = 5


def read_rows(value: Any, ctx: Ctx, base: Path, root: Path | None,
              allow_outside: bool) -> tuple[list[Row], str, list[tuple[str, str]], float, int]:
    """``(rows, source description, missing images, max_missing, batch)`` of an ``each:`` mapping; one
    :class:`~vsp_assert.errors.CaseError` naming the field and line for any problem."""
    m = as_mapping(value, ctx, EACH_KEYS, "each")
    kinds = [k for k in SOURCE_KINDS if k in m]
    if len(kinds) != 1:
        raise ctx.error("each needs exactly one source", received=kinds or kind_of(value),
                        allowed="manifest: FILE | csv: FILE | folder: DIR | imagefolder: DIR | scenes: {...}")
    kind = kinds[0]
    n = as_int(m["n"], ctx.at("n", m), "n") if "n" in m else None
    max_missing = as_number(m["max_missing"], ctx.at("max_missing", m), "max_missing", lo=0, hi=1) \
        if "max_missing" in m else 0.0
    batch = as_int(m["batch"], ctx.at("batch", m), "batch") if "batch" in m else DEFAULT_BATCH
    if "seed" in m and kind != "scenes":
        raise ctx.at("seed", m).error("seed is for scenes only", received=m["seed"])
    kctx = ctx.at(kind, m)
    if kind == "scenes":
        if n is None:
            raise ctx.error("scenes need n, the number of rows", allowed="n: 200")
        seed = as_int(m["seed"], ctx.at("seed", m), "seed", lo=0) if "seed" in m else 0
        rows, text = _scene_rows(m[kind], kctx, n, seed)
        return rows, text, [], max_missing, batch
    rows, text, missing = _file_rows(kind, as_str(m[kind], kctx, f"{kind} path"), kctx, base, root, allow_outside)
    total = len(rows) + len(missing)
    if missing and len(missing) / total > max_missing:
        shown = "; ".join(f"{p} ({why})" for p, why in missing[:SHOW_MISSING])
        more = f" and {len(missing) - SHOW_MISSING} more" if len(missing) > SHOW_MISSING else ""
        raise kctx.error(f"{len(missing)} of {total} rows have a missing or unreadable image: {shown}{more}",
                         received=f"{len(missing) / total:.1%} missing", allowed=f"at most max_missing {max_missing:g}",
                         fix="fix the paths, or allow a fraction with each.max_missing (e.g. 0.05)")
    if n is not None:
        rows = rows[:n]
    return rows, text, missing, max_missing, batch


def _file_rows(kind: str, text: str, ctx: Ctx, base: Path, root: Path | None,
               allow_outside: bool) -> tuple[list[Row], str, list[tuple[str, str]]]:
    from vsp_assert.concepts.sources import open_source

    path = Path(text)
    resolved = (path if path.is_absolute() else base / path).resolve()
    if root is not None and not allow_outside and not resolved.is_relative_to(Path(root).resolve()):
        raise ctx.error("the source escapes the cases root", received=text, allowed=f"paths under {root}",
                        fix="move it under the cases folder or pass --vsp-allow-outside-root")
    if kind in ("manifest", "csv") and not resolved.is_file():
        raise ctx.error(f"{kind} file not found", received=text, allowed=f"a path relative to {base}")
    if kind in ("folder", "imagefolder") and not resolved.is_dir():
        raise ctx.error(f"{kind} is not a folder", received=text, allowed=f"a folder relative to {base}")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the skipped images are reported by the case instead
            source = open_source(resolved)
    except VspError as exc:
        empty = "no readable image" in exc.message
        message = "the source is empty: " + exc.message if empty else exc.message
        where = f"line {exc.line} of {exc.file}" if exc.line else None
        raise ctx.error(message, received=exc.received if exc.received is not None else text,
                        allowed=exc.allowed, fix=exc.fix or where) from None
    if kind == "imagefolder" and source.kind != "imagefolder":
        raise ctx.error("not an ImageFolder tree", received=f"a {source.kind} source",
                        allowed="images one level under at least two class folders")
    if kind == "csv" and source.kind != "csv":
        raise ctx.error("csv needs a .csv file", received=text)
    rows = []
    for i, record in enumerate(source):
        fields: dict[str, Any] = {"image": _relative(record.path, source.root), "name": record.path.stem}
        if record.labels:
            fields["labels"] = ";".join(record.labels)
        if source.kind == "imagefolder":
            fields["label"] = record.labels[0]
        fields.update({str(k): v for k, v in record.fields.items()})
        rows.append(Row(i, str(record.path), fields, f"{Path(text).name} #{i}"))
    return rows, f"{source.kind} {text}", list(source.skipped)


def _relative(path: Path, root: Path) -> str:
    try:
        return path.relative_to(root).as_posix()
    except ValueError:
        return str(path)


def _scene_rows(value: Any, ctx: Ctx, n: int, seed: int) -> tuple[list[Row], str]:
    from vsp_assert.shapes.mechanisms import MECHANISMS
    from vsp_assert.shapes.world import BACKGROUNDS, COLORS, SHAPES

    m = as_mapping(value, ctx, SCENE_KEYS, "scenes")
    if "mechanism" in m:
        other = [k for k in m if k not in ("mechanism", "set")]
        if other:
            raise ctx.at(other[0], m).error("a mechanism's probes take only set", received=other[0])
        name = as_str(m["mechanism"], ctx.at("mechanism", m), "mechanism")
        if name not in MECHANISMS:
            raise ctx.at("mechanism", m).error("unknown mechanism", received=name, allowed=", ".join(MECHANISMS))
        which = as_str(m.get("set", "trigger"), ctx.at("set", m), "set")
        if which not in ("trigger", "control"):
            raise ctx.at("set", m).error("set is trigger or control", received=which, allowed="trigger, control")
        mech = MECHANISMS[name]
        probes = mech.trigger_scenes(seed, n) if which == "trigger" else mech.control_scenes(seed, n)
        rows = []
        for i, p in enumerate(probes):
            target = p.question.target
            fields: dict[str, Any] = {"question": p.question.text, "answer": p.question.answer,
                                      "shape": target.shape if target else "", "color": target.color if target else "",
                                      "background": p.scene.background, "objects": len(p.scene.shapes)}
            if p.fix is not None:
                fields["fix"] = p.fix.text
            rows.append(Row(i, {"scene": p.scene.to_dict()}, fields, f"{name} {which} scene {i}"))
        return rows, f"scenes: {name} {which} probes (seed {seed})"
    return _random_scene_rows(m, ctx, n, seed, BACKGROUNDS, SHAPES, COLORS)


def _names(m: Mapping[str, Any], key: str, ctx: Ctx, known: tuple[str, ...]) -> tuple[str, ...]:
    if key not in m:
        return known
    raw = m[key]
    c = ctx.at(key, m)
    items = raw if isinstance(raw, list) else [raw]
    out = tuple(as_str(v, c, key) for v in items)
    bad = [v for v in out if v not in known]
    if bad or not out:
        raise c.error(f"unknown {key}", received=bad or raw, allowed=", ".join(known))
    return out


def _random_scene_rows(m: Mapping[str, Any], ctx: Ctx, n: int, seed: int, backgrounds: tuple[str, ...],
                       shapes: tuple[str, ...], colors: tuple[str, ...]) -> tuple[list[Row], str]:
    import numpy as np

    from vsp_assert.shapes.world import random_scene

    bgs, shs, cols = (_names(m, "backgrounds", ctx, backgrounds), _names(m, "shapes", ctx, shapes),
                      _names(m, "colors", ctx, colors))
    objects = m.get("objects", [1, 3])
    octx = ctx.at("objects", m)
    span = objects if isinstance(objects, list) else [objects, objects]
    if len(span) != 2:
        raise octx.error("objects is a count or [low, high]", received=objects)
    lo, hi = (as_int(v, octx, "objects") for v in span)
    if hi < lo or hi > min(len(shs), len(cols), 3):
        raise octx.error("objects out of range", received=objects,
                         allowed=f"1..{min(len(shs), len(cols), 3)} (distinct shapes and colours, at most 3)")
    rng = np.random.default_rng([0x5CE7E, seed])
    rows = []
    for i in range(n):
        scene = random_scene(rng, n_objects=int(rng.integers(lo, hi + 1)), backgrounds=bgs, shapes=shs,
                             colors=cols, heldout=True)
        first = scene.shapes[0]
        rows.append(Row(i, {"scene": scene.to_dict()},
                        {"shape": first.shape, "color": first.color, "background": scene.background,
                         "objects": len(scene.shapes)}, f"scene {i}"))
    return rows, f"scenes: random (seed {seed})"
