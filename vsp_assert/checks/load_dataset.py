"""The loader's part for dataset cases and rate / control keys: what :func:`~.load.parse_case_file` hands over.

A case with ``each:`` (or a causal item with ``control: random``) holds keys the plain case grammar does not know:
``each`` itself, ``rate_bound`` and ``show_rows`` on the case, ``min_rate`` / ``max_rate`` / ``rate_bound`` on any
check of ``expect``, and ``control`` / ``controls`` / ``specific`` / ``mass_tolerance`` on causal items. Two
calls keep :mod:`.load` one grammar:

1. :func:`split_dataset` (before the case is validated) takes those keys out of a copy of the case mapping,
   validates them (rates within [0, 1], ``control`` only on an ablation, …), reads the rows
   (:mod:`.dataset_rows`) and checks every ``{field}`` template of ``prompt`` and ``expect`` against every row;
2. :func:`with_dataset` (after) turns the validated :class:`~.schema.Case` into a
   :class:`~.dataset_schema.DatasetCase` with one :class:`~.dataset_schema.RowCheck` per check.

A case without any of these keys passes through both unchanged. A case with ``control: random`` but no
``each:`` is a one-row dataset case over its ``image``. Every problem is one
:class:`~vsp_assert.errors.CaseError` naming file, line, field, what was received and what is allowed.
"""

from __future__ import annotations

import string
from collections.abc import Mapping
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

from vsp_assert.checks.dataset_rows import read_rows
from vsp_assert.checks.dataset_schema import DEFAULT_SHOW_ROWS, ControlSpec, DatasetCase, Row, RowCheck
from vsp_assert.checks.schema import Case
from vsp_assert.checks.yaml_lines import Ctx, LineDict, LineList, as_bool, as_int, as_number, as_str

CASE_EXTRA_KEYS = ("each", "rate_bound", "show_rows")
RATE_KEYS = ("min_rate", "max_rate", "rate_bound")
CONTROL_KEYS = ("control", "controls", "specific", "mass_tolerance")
SECTIONS = ("answer", "captured", "attended", "attributed", "causal")
BOUNDS = ("point", "interval")


@dataclass
class Pending:
    """What :func:`split_dataset` took out of a case, for :func:`with_dataset`."""

    rows: list[Row]
    source: str
    templated: bool
    missing: list[tuple[str, str]] = field(default_factory=list)
    max_missing: float = 0.0
    batch: int = 32
    show_rows: int = DEFAULT_SHOW_ROWS
    on_interval: bool = False
    rates: dict[tuple[str, int], tuple[float | None, float | None, bool | None]] = field(default_factory=dict)
    controls: dict[int, ControlSpec] = field(default_factory=dict)


def _copy(m: Mapping[str, Any], drop: tuple[str, ...]) -> LineDict:
    out = LineDict({k: v for k, v in m.items() if k not in drop})
    out.line = getattr(m, "line", 0)
    out.key_lines = dict(getattr(m, "key_lines", {}))
    return out


def _items(section: str, value: Any) -> list[tuple[int, Any]]:
    """The items of an expect section that may carry rate keys: the answer mapping itself, or list items."""
    if section == "answer":
        return [(0, value)]
    if isinstance(value, Mapping):
        return [(0, value)]
    return list(enumerate(value)) if isinstance(value, list) else []


def _has_extra(raw: Mapping[str, Any]) -> bool:
    if any(k in raw for k in CASE_EXTRA_KEYS):
        return True
    expect = raw.get("expect")
    if not isinstance(expect, Mapping):
        return False
    return any(isinstance(item, Mapping) and any(k in item for k in RATE_KEYS + CONTROL_KEYS)
               for s in SECTIONS if s in expect for _, item in _items(s, expect[s]))


def split_dataset(raw: Any, ctx: Ctx, base: Path, root: Path | None,
                  allow_outside: bool) -> tuple[Any, Pending | None]:
    """The case mapping without the dataset keys (validated here), and what they said; ``(raw, None)`` for a
    plain case. Reads the rows and checks the templates against them."""
    if not isinstance(raw, Mapping) or not _has_extra(raw):
        return raw, None
    each = "each" in raw
    for key in ("image", "video"):  # each: rows are still images (datasets of videos are not read)
        if each and key in raw:
            raise ctx.at(key, raw).error(f"a dataset case reads its images from each:, not {key}",
                                         received=f"{key} and each", fix=f"remove {key}")
    pending = Pending([], "", templated=each)
    if each:
        (pending.rows, pending.source, pending.missing, pending.max_missing,
         pending.batch) = read_rows(raw["each"], ctx.at("each", raw), base, root, allow_outside)
    if "rate_bound" in raw:
        pending.on_interval = _bound(raw["rate_bound"], ctx.at("rate_bound", raw))
    if "show_rows" in raw:
        pending.show_rows = as_int(raw["show_rows"], ctx.at("show_rows", raw), "show_rows", lo=0)
    out = _copy(raw, CASE_EXTRA_KEYS)
    if each:  # a placeholder the case grammar validates cheaply; with_dataset drops it
        out["image"] = {"scene": {"shapes": [{"shape": "circle", "color": "red", "x": 32, "y": 32, "size": 24}]}}
        out.key_lines["image"] = ctx.at("each", raw).line or 0
    expect = raw.get("expect")
    if isinstance(expect, Mapping):
        ectx = ctx.at("expect", raw)
        new_expect = _copy(expect, ())
        for section in SECTIONS:
            if section in expect:
                new_expect[section] = _strip(section, expect[section], ectx.at(section, expect), pending, each)
        out["expect"] = new_expect
    if each:
        _check_templates(out, ctx, pending.rows)
    return out, pending


def _bound(value: Any, ctx: Ctx) -> bool:
    text = as_str(value, ctx, "rate_bound")
    if text not in BOUNDS:
        raise ctx.error("rate_bound is point or interval", received=text, allowed="point (the rate itself), "
                        "interval (its whole Wilson 95% interval)")
    return text == "interval"


def _strip(section: str, value: Any, ctx: Ctx, pending: Pending, each: bool) -> Any:
    """The section without rate and control keys (recorded in ``pending``)."""
    single = section == "answer" or isinstance(value, Mapping)
    items = _items(section, value)
    stripped = []
    for i, item in items:
        c = ctx if single else ctx.at(i, value)
        if not isinstance(item, Mapping):
            stripped.append(item)
            continue
        rate = _rate(item, c, each)
        if rate is not None:
            pending.rates[(section, i)] = rate
        if any(k in item for k in CONTROL_KEYS):
            if section != "causal":
                key = next(k for k in CONTROL_KEYS if k in item)
                raise c.at(key, item).error(f"{key} is for causal ablations", received=key,
                                            allowed="control: random on an ablate item of causal")
            pending.controls[i] = _control(item, c)
        stripped.append(_copy(item, RATE_KEYS + CONTROL_KEYS))
    if single:
        return stripped[0]
    out = LineList(stripped)
    out.line, out.item_lines = getattr(value, "line", 0), list(getattr(value, "item_lines", []))
    return out


def _rate(item: Mapping[str, Any], c: Ctx, each: bool) -> tuple[float | None, float | None, bool | None] | None:
    if not any(k in item for k in RATE_KEYS):
        return None
    if not each:
        key = next(k for k in RATE_KEYS if k in item)
        raise c.at(key, item).error(f"{key} needs rows: a rate is over the rows of a dataset case",
                                    received=key, fix="add each: {manifest|folder|imagefolder|csv|scenes: …}")
    lo = as_number(item["min_rate"], c.at("min_rate", item), "min_rate", lo=0, hi=1) if "min_rate" in item else None
    hi = as_number(item["max_rate"], c.at("max_rate", item), "max_rate", lo=0, hi=1) if "max_rate" in item else None
    if lo is not None and hi is not None and lo > hi:
        raise c.at("max_rate", item).error("max_rate is below min_rate", received=f"min {lo:g}, max {hi:g}")
    bound = _bound(item["rate_bound"], c.at("rate_bound", item)) if "rate_bound" in item else None
    if lo is None and hi is None:
        raise c.at("rate_bound", item).error("rate_bound needs min_rate or max_rate", received="rate_bound")
    return lo, hi, bound


def _control(item: Mapping[str, Any], c: Ctx) -> ControlSpec:
    if "control" not in item:
        key = next(k for k in CONTROL_KEYS if k in item)
        raise c.at(key, item).error(f"{key} needs control: random", received=key)
    kind = item["control"]
    if kind != "random":
        raise c.at("control", item).error("unknown control", received=kind, allowed="random")
    if "steer" in item or "ablate" not in item:
        what = "steer" if "steer" in item else "sufficient"
        raise c.at("control", item).error(f"control is for ablations, not {what}: random latent sets are ablated "
                                          "beside the claimed set", received=what, allowed="control on an ablate item")
    return ControlSpec(
        n=as_int(item["controls"], c.at("controls", item), "controls") if "controls" in item else ControlSpec.n,
        specific=as_bool(item["specific"], c.at("specific", item), "specific") if "specific" in item else False,
        tolerance=as_number(item["mass_tolerance"], c.at("mass_tolerance", item), "mass_tolerance", lo=0.01, hi=10)
        if "mass_tolerance" in item else ControlSpec.tolerance,
    )


# ---------------------------------------------------------------------- templates
def _templates(value: Any, ctx: Ctx) -> list[tuple[str, Ctx]]:
    if isinstance(value, str):
        return [(value, ctx)]
    if isinstance(value, Mapping):
        return [t for k, v in value.items() for t in _templates(v, ctx.at(str(k), value))]
    if isinstance(value, list):
        return [t for i, v in enumerate(value) for t in _templates(v, ctx.at(i, value))]
    return []


def template_fields(text: str) -> list[str]:
    """The ``{field}`` names of a template (``ValueError`` for unbalanced braces)."""
    return [name for _, name, _, _ in string.Formatter().parse(text) if name is not None]


def _check_templates(case: Mapping[str, Any], ctx: Ctx, rows: list[Row]) -> None:
    found = _templates(case.get("prompt"), ctx.at("prompt", case)) + \
        _templates(case.get("expect"), ctx.at("expect", case))
    for text, c in found:
        try:
            names = template_fields(text)
        except ValueError as exc:
            raise c.error(f"bad template ({exc})", received=text, fix="write {field}; a literal brace is {{ or }}") \
                from None
        for name in names:
            if not name.isidentifier():
                raise c.error("a template field is a plain name", received="{" + name + "}", allowed="{shape}")
            lacking = next((r for r in rows if name not in r.fields), None)
            if lacking is not None:
                raise c.error(f"the template names field '{name}', which {lacking.where} lacks", received=text,
                              allowed="fields " + (", ".join(sorted(lacking.fields)) or "(none)"))


def fill(value: Any, row_fields: Mapping[str, Any]) -> Any:
    """``value`` (a spec, a tuple or a string) with its ``{field}`` templates filled from a row."""
    if isinstance(value, str):
        return value.format_map({k: v for k, v in row_fields.items()}) if "{" in value else value
    if isinstance(value, tuple):
        return tuple(fill(v, row_fields) for v in value)
    if hasattr(value, "__dataclass_fields__") and not isinstance(value, type):
        changes = {f.name: fill(getattr(value, f.name), row_fields) for f in fields(value) if f.name != "where"}
        return replace(value, **{k: v for k, v in changes.items() if v is not getattr(value, k)})
    return value


def with_dataset(pending: Pending | None, case: Case) -> Case:
    """The validated case as a :class:`DatasetCase` (``case`` itself without dataset keys)."""
    if pending is None:
        return case
    exp = case.expect
    specs: list[tuple[str, int, Any]] = []
    if exp.answer is not None:
        specs.append(("answer", 0, exp.answer))
    specs += [("captured", i, s) for i, s in enumerate(exp.captured)]
    specs += [("attended", i, s) for i, s in enumerate(exp.attended)]
    specs += [("attributed", i, s) for i, s in enumerate(exp.attributed)]
    specs += [("causal", i, s) for i, s in enumerate(exp.causal)]
    checks = []
    for section, i, spec in specs:
        lo, hi, bound = pending.rates.get((section, i), (None, None, None))
        kind = "sufficient" if section == "causal" and spec.sufficient else section
        checks.append(RowCheck(kind, spec, lo, hi, pending.on_interval if bound is None else bound,
                               pending.controls.get(i) if section == "causal" else None, where=spec.where))
    rows = pending.rows
    if not pending.templated:  # a one-row dataset over the case's own image (a controlled single case)
        rows = [Row(0, case.image, {}, "the case image")]
    base = {f.name: getattr(case, f.name) for f in fields(Case)}
    base["image"] = case.image if not pending.templated else ""
    return DatasetCase(**base, rows=tuple(rows), checks=tuple(checks), source=pending.source or "the case image",
                       missing=tuple(pending.missing), max_missing=pending.max_missing, show_rows=pending.show_rows,
                       batch=pending.batch, templated=pending.templated)


__all__ = ["Pending", "fill", "split_dataset", "template_fields", "with_dataset"]
