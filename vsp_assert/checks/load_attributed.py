"""The ``attended:`` and ``attributed:`` sections of a case file: one grammar, two rankings.

Both are a list (or one mapping) of items ``{token, concepts, absent, top_k}``: the output token (its text or
index), the concepts that must be among its top-k latents, those that must not, and k (default: the case's
``top_k``). ``attended`` ranks latents by attention-weighted activation (``Trace.scores``); ``attributed`` by
attribution (``Trace.attribution``, contrastive against the case's ``answer.correct`` when it gives one), and its
items also take ``confirm`` (``true``, the default; ``false``; or a drop ≥ 0 in nats: a named concept counts as used
only when ablating it lowers the token's objective by more than that; :mod:`vsp_assert.checks.ranked`). Split from
:mod:`vsp_assert.checks.load` (which calls :func:`token_concepts` for both keys) under the 400-line rule.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from vsp_assert.checks.schema import AttendedSpec
from vsp_assert.checks.yaml_lines import (
    Ctx,
    LineList,
    as_concepts,
    as_int,
    as_mapping,
    as_number,
    as_token,
    concept_parts,
    ctx_where,
    kind_of,
)

ATTENDED_KEYS = ("token", "concepts", "absent", "top_k")
ATTRIBUTED_KEYS = (*ATTENDED_KEYS, "confirm")


def token_concepts(value: Any, ctx: Ctx, spec: type[AttendedSpec] = AttendedSpec,
                   section: str = "attended") -> tuple[Any, ...]:
    """The items of an ``attended:`` (``spec=AttendedSpec``) or ``attributed:`` (``AttributedSpec``) section."""
    if isinstance(value, Mapping):
        value = LineList([value])
        value.line, value.item_lines = ctx.line or 0, [ctx.line or 0]
    if not isinstance(value, list) or not value:
        raise ctx.error(f"{section} must be a non-empty list of {{token, concepts}}", received=kind_of(value))
    keys = ATTRIBUTED_KEYS if section == "attributed" else ATTENDED_KEYS
    out = []
    for i, item in enumerate(value):
        c = ctx.at(i, value)
        m = as_mapping(item, c, keys, f"an {section} item")
        if "token" not in m:
            raise c.error(f"an {section} item needs 'token' (its text or index)", allowed=", ".join(keys))
        if "concepts" not in m and "absent" not in m:
            raise c.error(f"an {section} item needs 'concepts' and/or 'absent'")
        parts = [("token", c.at("token", m).line)]
        for key in ("concepts", "absent"):
            if key in m:
                parts += concept_parts(key, m[key], c.at(key, m))
        extra = {"confirm": _confirm(m["confirm"], c.at("confirm", m))} if "confirm" in m else {}
        out.append(spec(
            **extra,
            where=ctx_where(c, parts),
            token=as_token(m["token"], c.at("token", m)),
            concepts=as_concepts(m["concepts"], c.at("concepts", m)) if "concepts" in m else (),
            absent=as_concepts(m["absent"], c.at("absent", m)) if "absent" in m else (),
            top_k=as_int(m["top_k"], c.at("top_k", m), "top_k") if "top_k" in m else None,
        ))
    return tuple(out)


def _confirm(value: Any, ctx: Ctx) -> float | None:
    """``confirm:`` — true (the ablation must lower the objective at all), false (no ablation), or the drop in
    nats it must exceed."""
    if value is True or value is False:
        return 0.0 if value else None
    if not isinstance(value, (int, float)):
        raise ctx.error("confirm must be true, false or a drop in nats (a number >= 0)", received=kind_of(value),
                        allowed="true, false, a number >= 0")
    return as_number(value, ctx, "confirm", lo=0.0)
