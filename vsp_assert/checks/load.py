"""YAML case files → validated :class:`~vsp_assert.checks.schema.Case` objects, with file/line in every error.

A case file (a ``*.yaml`` / ``*.yml`` with a top-level ``cases:`` key: :func:`~.yaml_lines.is_case_file`) holds::

    model: shapes            # optional: pin the model for this file (else --vsp-model)
    sae: shapes              # optional: pin the SAE
    defaults: {top_k: 5}     # optional: defaults for every case (top_k, min_score, max_new_tokens, tolerance)
    cases:
      - id: red-square
        image: images/red_square.png      # path relative to this file, or {scene: {...}} (shapes world);
                                          # or video: [frame paths or scenes] | clip.gif (families that take video)
        prompt: What color is the square?
        expect:
          answer: red                     # or {equals|contains|one_of|not: …, correct: …}
          captured: [red, square]         # or items {concept, min_score | max_rank, absent}
          attended: [{token: red, concepts: [red], absent: [stripes], top_k: 3}]
          attributed: [{token: red, concepts: [red]}]   # same grammar, ranked by attribution
          causal: [{ablate: [red], changes: true, answer: …, min_drop: 0.3}, {sufficient: true}]
        marks: [xfail]                    # or {xfail: reason} / {skip: reason}
        tolerance: {probability: 0.1, rank_correlation: 0.8}

Parsing happens at collection time, so a bad case fails with its file, line and field before any model loads
(image files are checked there too, from their header). Each spec carries its :class:`~.schema.Where` (field path
and line), so a problem only a run can find, such as a concept the SAE does not know, names them as well.
YAML is read with a ``SafeLoader`` subclass (never ``yaml.load`` with arbitrary tags) that records the line of
every mapping key and list item. Every check raises :class:`~vsp_assert.errors.CaseError` whose message names
the file, line, field path, what was received and what is allowed (with the closest valid key for typos).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from vsp_assert.checks.load_attributed import token_concepts
from vsp_assert.checks.load_dataset import split_dataset, with_dataset
from vsp_assert.checks.load_media import case_media
from vsp_assert.checks.schema import (
    AnswerSpec,
    AttributedSpec,
    CapturedSpec,
    Case,
    CaseFile,
    CausalSpec,
    Expectations,
    Tolerance,
)
from vsp_assert.checks.yaml_lines import (
    Ctx,
    LineList,
    as_bool,
    as_concept,
    as_concepts,
    as_int,
    as_mapping,
    as_number,
    as_str,
    as_token,
    concept_parts,
    ctx_where,
    is_case_file,
    kind_of,
    load_yaml,
)
from vsp_assert.errors import CaseError, did_you_mean

__all__ = ["is_case_file", "parse_case_file"]

ID_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-]*$")
FILE_KEYS = ("model", "sae", "defaults", "cases")
CASE_KEYS = ("id", "image", "video", "prompt", "expect", "marks", "tolerance", "max_new_tokens", "top_k", "description")
EXPECT_KEYS = ("answer", "captured", "attended", "attributed", "causal")
DEFAULT_KEYS = ("top_k", "min_score", "max_new_tokens", "tolerance")
ANSWER_KEYS = ("equals", "contains", "one_of", "not", "correct")
CAPTURED_KEYS = ("concept", "min_score", "max_rank", "absent")
CAUSAL_KEYS = ("ablate", "steer", "patches", "changes", "answer", "min_drop", "sufficient", "token", "label")
STEER_KEYS = ("concepts", "value", "scale")
TOLERANCE_KEYS = ("probability", "rank_correlation", "top_k")
MARK_NAMES = ("xfail", "skip")


# ---------------------------------------------------------------------- sections
def _answer(value: Any, ctx: Ctx) -> AnswerSpec:
    if isinstance(value, (str, int, float)) and not isinstance(value, bool):
        return AnswerSpec(equals=as_str(value, ctx, "answer"))
    m = as_mapping(value, ctx, ANSWER_KEYS, "answer")
    checks = [k for k in ("equals", "contains", "one_of", "not") if k in m]
    if len(checks) != 1:
        raise ctx.error("answer needs exactly one of equals, contains, one_of, not", received=checks or None,
                        allowed="equals | contains | one_of | not (plus an optional 'correct')")
    one_of = None
    if "one_of" in m:
        raw = m["one_of"]
        c = ctx.at("one_of", m)
        if not isinstance(raw, list) or not raw:
            raise c.error("one_of must be a non-empty list of answers", received=kind_of(raw))
        one_of = tuple(as_str(v, c.at(i, raw), "answer") for i, v in enumerate(raw))
    return AnswerSpec(
        where=ctx_where(ctx),
        equals=as_str(m["equals"], ctx.at("equals", m), "answer") if "equals" in m else None,
        contains=as_str(m["contains"], ctx.at("contains", m), "answer") if "contains" in m else None,
        one_of=one_of,
        not_=as_str(m["not"], ctx.at("not", m), "answer") if "not" in m else None,
        correct=as_str(m["correct"], ctx.at("correct", m), "correct answer") if "correct" in m else None,
    )


def _captured(value: Any, ctx: Ctx) -> tuple[CapturedSpec, ...]:
    if not isinstance(value, list) or not value:
        raise ctx.error("captured must be a non-empty list", received=kind_of(value),
                        allowed="[red, {concept: square, min_score: 0.1}, {concept: blue, absent: true}]")
    out = []
    for i, item in enumerate(value):
        c = ctx.at(i, value)
        if not isinstance(item, Mapping):
            out.append(CapturedSpec(as_concept(item, c), where=ctx_where(c)))
            continue
        m = as_mapping(item, c, CAPTURED_KEYS, "a captured item")
        if "concept" not in m:
            raise c.error("a captured item needs 'concept'", allowed=", ".join(CAPTURED_KEYS))
        if "min_score" in m and "max_rank" in m:
            raise c.error("use min_score or max_rank, not both")
        out.append(CapturedSpec(
            where=ctx_where(c, [("concept", c.at("concept", m).line)]),
            concept=as_concept(m["concept"], c.at("concept", m)),
            min_score=as_number(m["min_score"], c.at("min_score", m), "min_score", lo=0) if "min_score" in m else None,
            max_rank=as_int(m["max_rank"], c.at("max_rank", m), "max_rank") if "max_rank" in m else None,
            absent=as_bool(m["absent"], c.at("absent", m), "absent") if "absent" in m else False,
        ))
    return tuple(out)


def _causal(value: Any, ctx: Ctx) -> tuple[CausalSpec, ...]:
    if isinstance(value, Mapping):
        value = LineList([value])
        value.line, value.item_lines = ctx.line or 0, [ctx.line or 0]
    if not isinstance(value, list) or not value:
        raise ctx.error("causal must be a non-empty list", received=kind_of(value))
    out = []
    for i, item in enumerate(value):
        c = ctx.at(i, value)
        m = as_mapping(item, c, CAUSAL_KEYS, "a causal item")
        sufficient = as_bool(m["sufficient"], c.at("sufficient", m), "sufficient") if "sufficient" in m else False
        kinds = [k for k in ("ablate", "steer") if k in m] + (["sufficient"] if sufficient else [])
        if len(kinds) != 1:
            raise c.error("a causal item needs exactly one of ablate, steer, sufficient: true", received=kinds or None,
                          allowed="ablate: [concepts] | steer: {concepts, value|scale} | sufficient: true")
        steer = None
        if "steer" in m:
            sc = c.at("steer", m)
            s = as_mapping(m["steer"], sc, STEER_KEYS, "steer")
            if "concepts" not in s or ("value" in s) == ("scale" in s):
                raise sc.error("steer needs concepts and exactly one of value, scale")
            steer = (
                as_concepts(s["concepts"], sc.at("concepts", s)),
                as_number(s["value"], sc.at("value", s), "value") if "value" in s else None,
                as_number(s["scale"], sc.at("scale", s), "scale") if "scale" in s else None,
            )
        checks = [k for k in ("changes", "answer", "min_drop") if k in m]
        if not sufficient and not checks:
            raise c.error("say what the intervention must do", allowed="changes: true|false, answer: …, min_drop: …")
        if sufficient and ("changes" in m or "answer" in m):
            raise c.error("sufficient searches a set that changes the answer; use min_drop to relax it",
                          allowed="sufficient: true, token, min_drop")
        patches = None
        if "patches" in m and m["patches"] != "all":
            pc = c.at("patches", m)
            raw = m["patches"]
            if not isinstance(raw, list) or not raw:
                raise pc.error("patches must be 'all' or a list of patch indices", received=kind_of(raw))
            patches = tuple(as_int(p, pc.at(j, raw), "patch index", lo=0) for j, p in enumerate(raw))
        parts = [(key, c.at(key, m).line) for key in ("ablate", "steer", "patches", "token") if key in m]
        if "ablate" in m:
            parts += concept_parts("ablate", m["ablate"], c.at("ablate", m))
        if steer is not None:
            sc = c.at("steer", m)
            parts += concept_parts("steer.concepts", m["steer"]["concepts"], sc.at("concepts", m["steer"]))
        out.append(CausalSpec(
            where=ctx_where(c, parts),
            ablate=as_concepts(m["ablate"], c.at("ablate", m)) if "ablate" in m else (),
            steer=steer,
            patches=patches,
            changes=as_bool(m["changes"], c.at("changes", m), "changes") if "changes" in m else None,
            answer=as_str(m["answer"], c.at("answer", m), "answer") if "answer" in m else None,
            min_drop=as_number(m["min_drop"], c.at("min_drop", m), "min_drop", lo=-1, hi=1)
            if "min_drop" in m else None,
            sufficient=sufficient,
            token=as_token(m["token"], c.at("token", m)) if "token" in m else 0,
            label=as_str(m["label"], c.at("label", m), "label") if "label" in m else None,
        ))
    return tuple(out)


def _tolerance(value: Any, ctx: Ctx, base: Tolerance) -> Tolerance:
    m = as_mapping(value, ctx, TOLERANCE_KEYS, "tolerance")
    return Tolerance(
        probability=as_number(m["probability"], ctx.at("probability", m), "probability", lo=0, hi=1)
        if "probability" in m else base.probability,
        rank_correlation=as_number(m["rank_correlation"], ctx.at("rank_correlation", m), "rank_correlation",
                                 lo=-1, hi=1) if "rank_correlation" in m else base.rank_correlation,
        top_k=as_int(m["top_k"], ctx.at("top_k", m), "top_k") if "top_k" in m else base.top_k,
    )


def _marks(value: Any, ctx: Ctx) -> tuple[tuple[str, str | None], ...]:
    items = value if isinstance(value, list) else [value]
    out = []
    for i, item in enumerate(items):
        c = ctx.at(i, value) if isinstance(value, list) else ctx
        if isinstance(item, str):
            name, reason = item, None
        elif isinstance(item, Mapping) and len(item) == 1:
            name, raw = next(iter(item.items()))
            reason = as_str(raw, c, "reason")
        else:
            raise c.error("a mark is 'xfail', 'skip', or {xfail: reason}", received=kind_of(item))
        if name not in MARK_NAMES:
            raise c.error(f"unknown mark '{name}'", received=name, allowed=", ".join(MARK_NAMES),
                          fix=did_you_mean(str(name), MARK_NAMES))
        out.append((name, reason))
    return tuple(out)


def parse_case_file(
    path: str | Path,
    text: str | None = None,
    *,
    root: str | Path | None = None,
    allow_outside_root: bool = False,
) -> CaseFile:
    """Validate a case file; raises :class:`CaseError` naming file, line and field on the first problem."""
    p = Path(path)
    source = str(path)
    if text is None:
        try:
            text = p.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise CaseError(f"cannot read the case file ({exc})", file=source) from None
    doc = load_yaml(text, source)
    ctx = Ctx(source, "", 1)
    if isinstance(doc, list):
        raise _top_level_list(doc, ctx)
    top = as_mapping(doc, ctx, FILE_KEYS, "a case file")
    if "cases" not in top:
        raise ctx.error("a case file needs a 'cases' list", allowed=", ".join(FILE_KEYS))
    defaults_raw = top.get("defaults", {})
    dctx = ctx.at("defaults", top)
    defaults = as_mapping(defaults_raw, dctx, DEFAULT_KEYS, "defaults") if "defaults" in top else {}
    d_top_k = as_int(defaults["top_k"], dctx.at("top_k", defaults), "top_k") if "top_k" in defaults else 5
    d_min = as_number(defaults["min_score"], dctx.at("min_score", defaults), "min_score", lo=0) \
        if "min_score" in defaults else None
    d_new = as_int(defaults["max_new_tokens"], dctx.at("max_new_tokens", defaults), "max_new_tokens") \
        if "max_new_tokens" in defaults else None
    d_tol = _tolerance(defaults["tolerance"], dctx.at("tolerance", defaults), Tolerance()) \
        if "tolerance" in defaults else Tolerance()
    items, cctx = top["cases"], ctx.at("cases", top)
    if not isinstance(items, list) or not items:
        raise cctx.error("'cases' must be a non-empty list of cases", received=kind_of(items))
    base, root_path = p.parent.resolve(), (Path(root) if root is not None else None)
    cases: list[Case] = []
    seen: dict[str, int] = {}
    for i, raw in enumerate(items):
        c = cctx.at(i, items)
        raw, dataset = split_dataset(raw, c, base, root_path, allow_outside_root)  # each:, rates, controls
        m = as_mapping(raw, c, CASE_KEYS, "a case")
        for required in ("id", "prompt", "expect"):
            if required not in m:
                raise c.error(f"a case needs '{required}'", allowed=", ".join(CASE_KEYS))
        image, ictx = case_media(m, c, base, root_path, allow_outside_root)  # image: or video:
        case_id = as_str(m["id"], c.at("id", m), "id")
        if not ID_PATTERN.fullmatch(case_id):
            raise c.at("id", m).error("ids are letters, digits, '-', '_' and '.'", received=case_id,
                                      fix="e.g. stripes-triangle")
        if case_id in seen:
            raise c.at("id", m).error(f"duplicate case id '{case_id}' (first at line {seen[case_id]})",
                                      received=case_id)
        seen[case_id] = c.line or 0
        ectx = c.at("expect", m)
        e = as_mapping(m["expect"], ectx, EXPECT_KEYS, "expect")
        if not e:
            raise ectx.error("expect is empty", allowed=", ".join(EXPECT_KEYS))
        expect = Expectations(
            answer=_answer(e["answer"], ectx.at("answer", e)) if "answer" in e else None,
            captured=_captured(e["captured"], ectx.at("captured", e)) if "captured" in e else (),
            attended=token_concepts(e["attended"], ectx.at("attended", e)) if "attended" in e else (),
            attributed=token_concepts(e["attributed"], ectx.at("attributed", e), AttributedSpec, "attributed")
            if "attributed" in e else (),
            causal=_causal(e["causal"], ectx.at("causal", e)) if "causal" in e else (),
        )
        cases.append(with_dataset(dataset, Case(
            id=case_id,
            image_where=ctx_where(ictx),
            prompt=as_str(m["prompt"], c.at("prompt", m), "prompt"),
            image=image,
            expect=expect,
            file=source,
            line=c.line or 0,
            marks=_marks(m["marks"], c.at("marks", m)) if "marks" in m else (),
            top_k=as_int(m["top_k"], c.at("top_k", m), "top_k") if "top_k" in m else d_top_k,
            min_score=d_min,
            max_new_tokens=as_int(m["max_new_tokens"], c.at("max_new_tokens", m), "max_new_tokens")
            if "max_new_tokens" in m else d_new,
            tolerance=_tolerance(m["tolerance"], c.at("tolerance", m), d_tol) if "tolerance" in m else d_tol,
            description=as_str(m["description"], c.at("description", m), "description")
            if "description" in m else None,
        )))
    return CaseFile(
        path=source,
        cases=tuple(cases),
        model=as_str(top["model"], ctx.at("model", top), "model") if "model" in top else None,
        sae=as_str(top["sae"], ctx.at("sae", top), "sae") if "sae" in top else None,
    )


def _top_level_list(doc: list[Any], ctx: Ctx) -> CaseError:
    """The error for a case file whose top level is a list (``- cases:`` rather than ``cases:``)."""
    item = next((i for i, v in enumerate(doc) if isinstance(v, Mapping) and any(
        str(k).lower() in ("cases", "case") for k in v)), None)
    message = "the top level is a list; a case file is a mapping with a 'cases:' key"
    allowed = f"a mapping with keys {', '.join(FILE_KEYS)}"
    if item is None:
        return ctx.at(0, doc).error(message, received="a list", allowed=allowed,
                                    fix="put the cases under a top-level 'cases:' key")
    key = next(str(k) for k in doc[item] if str(k).lower() in ("cases", "case"))
    return ctx.at(item, doc).at(key, doc[item]).error(
        message, received="a list", allowed=allowed,
        fix=f"remove the '- ' in front of line {ctx.at(item, doc).line}: {', '.join(FILE_KEYS)} are top-level keys")
