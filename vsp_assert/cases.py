"""The case schema: YAML case files → validated :class:`Case` objects, with file/line in every error.

A case file (any ``*.yaml`` / ``*.yml`` whose top level has a ``cases:`` key) holds::

    model: shapes            # optional: pin the model for this file (else --vsp-model)
    sae: shapes              # optional: pin the SAE
    defaults: {top_k: 5}     # optional: defaults for every case (top_k, min_score, max_new_tokens, tolerance)
    cases:
      - id: red-square
        image: images/red_square.png      # path relative to this file, or {scene: {...}} (shapes world)
        prompt: What color is the square?
        expect:
          answer: red                     # or {equals|contains|one_of|not: …, correct: …}
          captured: [red, square]         # or items {concept, min_score | max_rank, absent}
          attended: [{token: red, concepts: [red], absent: [stripes], top_k: 3}]
          causal: [{ablate: [red], changes: true, answer: …, min_drop: 0.3}, {sufficient: true}]
        marks: [xfail]                    # or {xfail: reason} / {skip: reason}
        tolerance: {probability: 0.1, rank_correlation: 0.8}

Parsing happens at collection time, so a bad case fails with its file, line and field before any model loads.
YAML is read with a ``SafeLoader`` subclass (never ``yaml.load`` with arbitrary tags) that records the line of
every mapping key and list item. Every check raises :class:`~vsp_assert.errors.CaseError` whose message names
the file, line, field path, what was received and what is allowed (with the closest valid key for typos).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from .errors import CaseError, did_you_mean

CASE_FILE_MARK = re.compile(r"^cases\s*:", re.MULTILINE)
ID_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-]*$")
FILE_KEYS = ("model", "sae", "defaults", "cases")
CASE_KEYS = ("id", "image", "prompt", "expect", "marks", "tolerance", "max_new_tokens", "top_k", "description")
EXPECT_KEYS = ("answer", "captured", "attended", "causal")
DEFAULT_KEYS = ("top_k", "min_score", "max_new_tokens", "tolerance")
ANSWER_KEYS = ("equals", "contains", "one_of", "not", "correct")
CAPTURED_KEYS = ("concept", "min_score", "max_rank", "absent")
ATTENDED_KEYS = ("token", "concepts", "absent", "top_k")
CAUSAL_KEYS = ("ablate", "steer", "patches", "changes", "answer", "min_drop", "sufficient", "token", "label")
STEER_KEYS = ("concepts", "value", "scale")
TOLERANCE_KEYS = ("probability", "rank_correlation", "top_k")
MARK_NAMES = ("xfail", "skip")


# ---------------------------------------------------------------------- YAML with line numbers
class LineDict(dict):  # type: ignore[type-arg]
    """A mapping that remembers its own line and the line of each key (1-based)."""

    line: int = 0
    key_lines: dict[str, int]


class LineList(list):  # type: ignore[type-arg]
    line: int = 0
    item_lines: list[int]


class _Loader(yaml.SafeLoader):
    """SafeLoader that keeps line numbers on mappings and sequences."""


def _construct_mapping(loader: _Loader, node: yaml.MappingNode) -> LineDict:
    loader.flatten_mapping(node)
    out = LineDict()
    out.line = node.start_mark.line + 1
    out.key_lines = {}
    for key_node, value_node in node.value:
        key = loader.construct_object(key_node, deep=True)
        if not isinstance(key, (str, int, float, bool)) and key is not None:
            raise CaseError("mapping keys must be plain scalars", line=key_node.start_mark.line + 1, received=key)
        if key in out:
            raise CaseError(f"duplicate key '{key}'", line=key_node.start_mark.line + 1, field=str(key))
        out[key] = loader.construct_object(value_node, deep=True)
        out.key_lines[str(key)] = key_node.start_mark.line + 1
    return out


def _construct_sequence(loader: _Loader, node: yaml.SequenceNode) -> LineList:
    out = LineList(loader.construct_object(child, deep=True) for child in node.value)
    out.line = node.start_mark.line + 1
    out.item_lines = [child.start_mark.line + 1 for child in node.value]
    return out


_Loader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)
_Loader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_SEQUENCE_TAG, _construct_sequence)


def load_yaml(text: str, source: str) -> Any:
    """Parse YAML safely, keeping line numbers; syntax errors become :class:`CaseError` with the position."""
    try:
        return yaml.load(text, Loader=_Loader)  # noqa: S506 - _Loader is a SafeLoader subclass
    except RecursionError:
        raise CaseError("malformed YAML: nested too deeply", file=source,
                        fix="a case file needs a few levels of nesting, not thousands") from None
    except CaseError as exc:
        raise exc.with_context(file=source) from None
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark
        line = mark.line + 1 if mark is not None else None
        tagged = isinstance(exc, yaml.constructor.ConstructorError) and "for the tag" in str(exc.problem)
        fix = ("case files are plain YAML: language-specific tags (!!python/…) are never executed; write the value "
               "as plain text" if tagged else "check indentation and quoting near that line")
        raise CaseError(f"malformed YAML: {exc.problem}", file=source, line=line, fix=fix) from None
    except yaml.YAMLError as exc:
        raise CaseError(f"malformed YAML: {exc}", file=source) from None


# ---------------------------------------------------------------------- the schema
@dataclass(frozen=True)
class AnswerSpec:
    equals: str | None = None
    contains: str | None = None
    one_of: tuple[str, ...] | None = None
    not_: str | None = None
    correct: str | None = None  # documentation: the right answer, for known-failure cases


@dataclass(frozen=True)
class CapturedSpec:
    concept: str | int
    min_score: float | None = None
    max_rank: int | None = None
    absent: bool = False


@dataclass(frozen=True)
class AttendedSpec:
    token: str | int
    concepts: tuple[str | int, ...] = ()
    absent: tuple[str | int, ...] = ()
    top_k: int | None = None


@dataclass(frozen=True)
class CausalSpec:
    ablate: tuple[str | int, ...] = ()
    steer: tuple[tuple[str | int, ...], float | None, float | None] | None = None  # (concepts, value, scale)
    patches: tuple[int, ...] | None = None
    changes: bool | None = None
    answer: str | None = None
    min_drop: float | None = None
    sufficient: bool = False
    token: str | int = 0
    label: str | None = None


@dataclass(frozen=True)
class Expectations:
    answer: AnswerSpec | None = None
    captured: tuple[CapturedSpec, ...] = ()
    attended: tuple[AttendedSpec, ...] = ()
    causal: tuple[CausalSpec, ...] = ()


@dataclass(frozen=True)
class Tolerance:
    """Drift tolerances against a recorded baseline (see baseline.py)."""

    probability: float = 0.15
    rank_correlation: float = 0.5
    top_k: int = 3


@dataclass(frozen=True)
class Case:
    id: str
    prompt: str
    image: str | dict[str, Any]  # resolved path, or {"scene": {...}}
    expect: Expectations
    file: str
    line: int
    marks: tuple[tuple[str, str | None], ...] = ()
    top_k: int = 5
    min_score: float = 0.0
    max_new_tokens: int | None = None
    tolerance: Tolerance = field(default_factory=Tolerance)
    description: str | None = None

    @property
    def nodeid_name(self) -> str:
        return self.id

    def load_image(self) -> Any:
        """The case's image as an RGB PIL image (file or shapes-world scene)."""
        from .images import load_image

        if isinstance(self.image, dict):
            from .shapes import Scene

            try:
                return Scene.from_dict(self.image["scene"]).render()
            except CaseError:
                raise
            except Exception as exc:  # the world's own validation errors
                raise CaseError(f"invalid scene: {exc}", file=self.file, line=self.line, field="image.scene",
                                received=self.image["scene"]) from None
        return load_image(self.image, source=f"{self.file}:{self.line}")


@dataclass(frozen=True)
class CaseFile:
    path: str
    cases: tuple[Case, ...]
    model: str | None = None
    sae: str | None = None


# ---------------------------------------------------------------------- validation helpers
class _Ctx:
    """Where we are while validating: file, field path, and the line to report."""

    def __init__(self, file: str, path: str = "", line: int | None = None) -> None:
        self.file, self.path, self.line = file, path, line

    def at(self, key: str | int, container: Any = None) -> _Ctx:
        line = self.line
        if isinstance(container, LineDict) and isinstance(key, str):
            line = container.key_lines.get(key, container.line)
        elif isinstance(container, LineList) and isinstance(key, int) and key < len(container.item_lines):
            line = container.item_lines[key]
        path = f"{self.path}[{key}]" if isinstance(key, int) else (f"{self.path}.{key}" if self.path else key)
        return _Ctx(self.file, path, line)

    def error(self, message: str, *, received: Any = None, allowed: str | None = None,
              fix: str | None = None) -> CaseError:
        return CaseError(message, file=self.file, line=self.line, field=self.path or None, received=received,
                         allowed=allowed, fix=fix)


def _mapping(value: Any, ctx: _Ctx, keys: tuple[str, ...], what: str) -> Mapping[str, Any]:
    if not isinstance(value, Mapping):
        raise ctx.error(f"{what} must be a mapping", received=_kind(value), allowed=f"keys {', '.join(keys)}")
    for key in value:
        if key not in keys:
            raise ctx.at(str(key), value).error(
                f"unknown key '{key}' in {what}", received=key, allowed=", ".join(keys),
                fix=did_you_mean(str(key), keys),
            )
    return value


def _kind(value: Any) -> str:
    if isinstance(value, Mapping):
        return "a mapping"
    if isinstance(value, list):
        return "a list"
    return f"{type(value).__name__} {value!r}"


def _str(value: Any, ctx: _Ctx, what: str, *, allow_empty: bool = False) -> str:
    if isinstance(value, bool) or not isinstance(value, (str, int, float)):
        raise ctx.error(f"{what} must be text", received=_kind(value))
    text = str(value)
    if not allow_empty and not text.strip():
        raise ctx.error(f"{what} is empty", received=value, fix=f"write the {what}")
    return text


def _concept(value: Any, ctx: _Ctx) -> str | int:
    if isinstance(value, bool) or not isinstance(value, (str, int)):
        raise ctx.error("a concept is a name, '#id' or an integer latent id", received=_kind(value))
    if isinstance(value, int) and value < 0:
        raise ctx.error("latent ids are non-negative", received=value)
    if isinstance(value, str) and not value.strip():
        raise ctx.error("a concept name is empty")
    return value


def _concepts(value: Any, ctx: _Ctx) -> tuple[str | int, ...]:
    if isinstance(value, (str, int)) and not isinstance(value, bool):
        return (_concept(value, ctx),)
    if not isinstance(value, list) or not value:
        raise ctx.error("expected a concept or a non-empty list of concepts", received=_kind(value),
                        allowed="[red, square, '#12']")
    return tuple(_concept(v, ctx.at(i, value)) for i, v in enumerate(value))


def _number(value: Any, ctx: _Ctx, what: str, *, lo: float | None = None, hi: float | None = None) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ctx.error(f"{what} must be a number", received=_kind(value))
    try:
        x = float(value)
    except OverflowError:
        x = float("inf") if value > 0 else float("-inf")
    if x != x or x in (float("inf"), float("-inf")):
        raise ctx.error(f"{what} must be finite", received=value)
    if (lo is not None and x < lo) or (hi is not None and x > hi):
        raise ctx.error(f"{what} out of range", received=value,
                        allowed=f"{lo if lo is not None else '-inf'} .. {hi if hi is not None else 'inf'}")
    return x


def _int(value: Any, ctx: _Ctx, what: str, *, lo: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ctx.error(f"{what} must be an integer", received=_kind(value), allowed=f"an integer >= {lo}")
    if value < lo:
        raise ctx.error(f"{what} out of range", received=value, allowed=f"an integer >= {lo}")
    return value


def _bool(value: Any, ctx: _Ctx, what: str) -> bool:
    if not isinstance(value, bool):
        raise ctx.error(f"{what} must be true or false", received=_kind(value))
    return value


def _token(value: Any, ctx: _Ctx) -> str | int:
    if isinstance(value, bool) or not isinstance(value, (str, int)):
        raise ctx.error("token must be the token text or its index", received=_kind(value))
    if isinstance(value, str) and not value.strip():
        raise ctx.error("token text is empty")
    return value


# ---------------------------------------------------------------------- sections
def _answer(value: Any, ctx: _Ctx) -> AnswerSpec:
    if isinstance(value, (str, int, float)) and not isinstance(value, bool):
        return AnswerSpec(equals=_str(value, ctx, "answer"))
    m = _mapping(value, ctx, ANSWER_KEYS, "answer")
    checks = [k for k in ("equals", "contains", "one_of", "not") if k in m]
    if len(checks) != 1:
        raise ctx.error("answer needs exactly one of equals, contains, one_of, not", received=checks or None,
                        allowed="equals | contains | one_of | not (plus an optional 'correct')")
    one_of = None
    if "one_of" in m:
        raw = m["one_of"]
        c = ctx.at("one_of", m)
        if not isinstance(raw, list) or not raw:
            raise c.error("one_of must be a non-empty list of answers", received=_kind(raw))
        one_of = tuple(_str(v, c.at(i, raw), "answer") for i, v in enumerate(raw))
    return AnswerSpec(
        equals=_str(m["equals"], ctx.at("equals", m), "answer") if "equals" in m else None,
        contains=_str(m["contains"], ctx.at("contains", m), "answer") if "contains" in m else None,
        one_of=one_of,
        not_=_str(m["not"], ctx.at("not", m), "answer") if "not" in m else None,
        correct=_str(m["correct"], ctx.at("correct", m), "correct answer") if "correct" in m else None,
    )


def _captured(value: Any, ctx: _Ctx) -> tuple[CapturedSpec, ...]:
    if not isinstance(value, list) or not value:
        raise ctx.error("captured must be a non-empty list", received=_kind(value),
                        allowed="[red, {concept: square, min_score: 0.1}, {concept: blue, absent: true}]")
    out = []
    for i, item in enumerate(value):
        c = ctx.at(i, value)
        if not isinstance(item, Mapping):
            out.append(CapturedSpec(_concept(item, c)))
            continue
        m = _mapping(item, c, CAPTURED_KEYS, "a captured item")
        if "concept" not in m:
            raise c.error("a captured item needs 'concept'", allowed=", ".join(CAPTURED_KEYS))
        if "min_score" in m and "max_rank" in m:
            raise c.error("use min_score or max_rank, not both")
        out.append(CapturedSpec(
            concept=_concept(m["concept"], c.at("concept", m)),
            min_score=_number(m["min_score"], c.at("min_score", m), "min_score", lo=0) if "min_score" in m else None,
            max_rank=_int(m["max_rank"], c.at("max_rank", m), "max_rank") if "max_rank" in m else None,
            absent=_bool(m["absent"], c.at("absent", m), "absent") if "absent" in m else False,
        ))
    return tuple(out)


def _attended(value: Any, ctx: _Ctx) -> tuple[AttendedSpec, ...]:
    if isinstance(value, Mapping):
        value = LineList([value])
        value.line, value.item_lines = ctx.line or 0, [ctx.line or 0]
    if not isinstance(value, list) or not value:
        raise ctx.error("attended must be a non-empty list of {token, concepts}", received=_kind(value))
    out = []
    for i, item in enumerate(value):
        c = ctx.at(i, value)
        m = _mapping(item, c, ATTENDED_KEYS, "an attended item")
        if "token" not in m:
            raise c.error("an attended item needs 'token' (its text or index)", allowed=", ".join(ATTENDED_KEYS))
        if "concepts" not in m and "absent" not in m:
            raise c.error("an attended item needs 'concepts' and/or 'absent'")
        out.append(AttendedSpec(
            token=_token(m["token"], c.at("token", m)),
            concepts=_concepts(m["concepts"], c.at("concepts", m)) if "concepts" in m else (),
            absent=_concepts(m["absent"], c.at("absent", m)) if "absent" in m else (),
            top_k=_int(m["top_k"], c.at("top_k", m), "top_k") if "top_k" in m else None,
        ))
    return tuple(out)


def _causal(value: Any, ctx: _Ctx) -> tuple[CausalSpec, ...]:
    if isinstance(value, Mapping):
        value = LineList([value])
        value.line, value.item_lines = ctx.line or 0, [ctx.line or 0]
    if not isinstance(value, list) or not value:
        raise ctx.error("causal must be a non-empty list", received=_kind(value))
    out = []
    for i, item in enumerate(value):
        c = ctx.at(i, value)
        m = _mapping(item, c, CAUSAL_KEYS, "a causal item")
        sufficient = _bool(m["sufficient"], c.at("sufficient", m), "sufficient") if "sufficient" in m else False
        kinds = [k for k in ("ablate", "steer") if k in m] + (["sufficient"] if sufficient else [])
        if len(kinds) != 1:
            raise c.error("a causal item needs exactly one of ablate, steer, sufficient: true", received=kinds or None,
                          allowed="ablate: [concepts] | steer: {concepts, value|scale} | sufficient: true")
        steer = None
        if "steer" in m:
            sc = c.at("steer", m)
            s = _mapping(m["steer"], sc, STEER_KEYS, "steer")
            if "concepts" not in s or ("value" in s) == ("scale" in s):
                raise sc.error("steer needs concepts and exactly one of value, scale")
            steer = (
                _concepts(s["concepts"], sc.at("concepts", s)),
                _number(s["value"], sc.at("value", s), "value") if "value" in s else None,
                _number(s["scale"], sc.at("scale", s), "scale") if "scale" in s else None,
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
                raise pc.error("patches must be 'all' or a list of patch indices", received=_kind(raw))
            patches = tuple(_int(p, pc.at(j, raw), "patch index", lo=0) for j, p in enumerate(raw))
        out.append(CausalSpec(
            ablate=_concepts(m["ablate"], c.at("ablate", m)) if "ablate" in m else (),
            steer=steer,
            patches=patches,
            changes=_bool(m["changes"], c.at("changes", m), "changes") if "changes" in m else None,
            answer=_str(m["answer"], c.at("answer", m), "answer") if "answer" in m else None,
            min_drop=_number(m["min_drop"], c.at("min_drop", m), "min_drop", lo=-1, hi=1) if "min_drop" in m else None,
            sufficient=sufficient,
            token=_token(m["token"], c.at("token", m)) if "token" in m else 0,
            label=_str(m["label"], c.at("label", m), "label") if "label" in m else None,
        ))
    return tuple(out)


def _tolerance(value: Any, ctx: _Ctx, base: Tolerance) -> Tolerance:
    m = _mapping(value, ctx, TOLERANCE_KEYS, "tolerance")
    return Tolerance(
        probability=_number(m["probability"], ctx.at("probability", m), "probability", lo=0, hi=1)
        if "probability" in m else base.probability,
        rank_correlation=_number(m["rank_correlation"], ctx.at("rank_correlation", m), "rank_correlation",
                                 lo=-1, hi=1) if "rank_correlation" in m else base.rank_correlation,
        top_k=_int(m["top_k"], ctx.at("top_k", m), "top_k") if "top_k" in m else base.top_k,
    )


def _marks(value: Any, ctx: _Ctx) -> tuple[tuple[str, str | None], ...]:
    items = value if isinstance(value, list) else [value]
    out = []
    for i, item in enumerate(items):
        c = ctx.at(i, value) if isinstance(value, list) else ctx
        if isinstance(item, str):
            name, reason = item, None
        elif isinstance(item, Mapping) and len(item) == 1:
            name, raw = next(iter(item.items()))
            reason = _str(raw, c, "reason")
        else:
            raise c.error("a mark is 'xfail', 'skip', or {xfail: reason}", received=_kind(item))
        if name not in MARK_NAMES:
            raise c.error(f"unknown mark '{name}'", received=name, allowed=", ".join(MARK_NAMES),
                          fix=did_you_mean(str(name), MARK_NAMES))
        out.append((name, reason))
    return tuple(out)


def _image(value: Any, ctx: _Ctx, base: Path, root: Path | None, allow_outside: bool) -> str | dict[str, Any]:
    if isinstance(value, Mapping):
        m = _mapping(value, ctx, ("scene",), "image")
        if "scene" not in m or not isinstance(m["scene"], Mapping):
            raise ctx.error("image needs a path or {scene: {...}}", received=_kind(value))
        scene = _plain(m["scene"])
        from .errors import VspError
        from .shapes.world import Scene  # numpy + PIL only: cheap enough for collection

        sctx = ctx.at("scene", m)
        try:
            Scene.from_dict(scene)
        except VspError as exc:
            field_path = f"{sctx.path}.{exc.field}" if exc.field else sctx.path
            raise CaseError(f"invalid scene: {exc.message}", file=sctx.file, line=sctx.line, field=field_path,
                            received=exc.received, allowed=exc.allowed, fix=exc.fix) from None
        except (TypeError, ValueError, OverflowError) as exc:  # int(inf) in a coordinate overflows
            raise sctx.error(f"invalid scene: {exc}", received=scene) from None
        return {"scene": scene}
    text = _str(value, ctx, "image path")
    path = Path(text)
    try:
        resolved = (path if path.is_absolute() else base / path).resolve()
        exists = resolved.exists()
    except (OSError, ValueError) as exc:  # embedded NUL byte, name too long, …
        raise ctx.error(f"unusable image path ({type(exc).__name__}: {exc})", received=text,
                        allowed="a file path relative to the case file") from None
    if root is not None and not allow_outside:
        try:
            resolved.relative_to(root.resolve())
        except ValueError:
            raise ctx.error("image path escapes the cases root", received=text, allowed=f"files under {root}",
                            fix="move the image under the cases folder or pass --vsp-allow-outside-root") from None
    if not exists:
        raise ctx.error("image file not found", received=text, allowed=f"a path relative to {base}",
                        fix="check the file name; paths are relative to the case file")
    return str(resolved)


def _plain(value: Any) -> Any:
    """LineDict/LineList → plain dict/list (for scene specs handed to other code)."""
    if isinstance(value, Mapping):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_plain(v) for v in value]
    return value


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
    ctx = _Ctx(source, "", 1)
    top = _mapping(doc, ctx, FILE_KEYS, "a case file")
    if "cases" not in top:
        raise ctx.error("a case file needs a 'cases' list", allowed=", ".join(FILE_KEYS))
    defaults_raw = top.get("defaults", {})
    dctx = ctx.at("defaults", top)
    defaults = _mapping(defaults_raw, dctx, DEFAULT_KEYS, "defaults") if "defaults" in top else {}
    d_top_k = _int(defaults["top_k"], dctx.at("top_k", defaults), "top_k") if "top_k" in defaults else 5
    d_min = _number(defaults["min_score"], dctx.at("min_score", defaults), "min_score", lo=0) \
        if "min_score" in defaults else 0.0
    d_new = _int(defaults["max_new_tokens"], dctx.at("max_new_tokens", defaults), "max_new_tokens") \
        if "max_new_tokens" in defaults else None
    d_tol = _tolerance(defaults["tolerance"], dctx.at("tolerance", defaults), Tolerance()) \
        if "tolerance" in defaults else Tolerance()
    items = top["cases"]
    cctx = ctx.at("cases", top)
    if not isinstance(items, list) or not items:
        raise cctx.error("'cases' must be a non-empty list of cases", received=_kind(items))
    base = p.parent.resolve()
    root_path = Path(root) if root is not None else None
    cases: list[Case] = []
    seen: dict[str, int] = {}
    for i, raw in enumerate(items):
        c = cctx.at(i, items)
        m = _mapping(raw, c, CASE_KEYS, "a case")
        for required in ("id", "image", "prompt", "expect"):
            if required not in m:
                raise c.error(f"a case needs '{required}'", allowed=", ".join(CASE_KEYS))
        case_id = _str(m["id"], c.at("id", m), "id")
        if not ID_PATTERN.fullmatch(case_id):
            raise c.at("id", m).error("ids are letters, digits, '-', '_' and '.'", received=case_id,
                                      fix="e.g. stripes-triangle")
        if case_id in seen:
            raise c.at("id", m).error(f"duplicate case id '{case_id}' (first at line {seen[case_id]})",
                                      received=case_id)
        seen[case_id] = c.line or 0
        ectx = c.at("expect", m)
        e = _mapping(m["expect"], ectx, EXPECT_KEYS, "expect")
        if not e:
            raise ectx.error("expect is empty", allowed=", ".join(EXPECT_KEYS))
        expect = Expectations(
            answer=_answer(e["answer"], ectx.at("answer", e)) if "answer" in e else None,
            captured=_captured(e["captured"], ectx.at("captured", e)) if "captured" in e else (),
            attended=_attended(e["attended"], ectx.at("attended", e)) if "attended" in e else (),
            causal=_causal(e["causal"], ectx.at("causal", e)) if "causal" in e else (),
        )
        cases.append(Case(
            id=case_id,
            prompt=_str(m["prompt"], c.at("prompt", m), "prompt"),
            image=_image(m["image"], c.at("image", m), base, root_path, allow_outside_root),
            expect=expect,
            file=source,
            line=c.line or 0,
            marks=_marks(m["marks"], c.at("marks", m)) if "marks" in m else (),
            top_k=_int(m["top_k"], c.at("top_k", m), "top_k") if "top_k" in m else d_top_k,
            min_score=d_min,
            max_new_tokens=_int(m["max_new_tokens"], c.at("max_new_tokens", m), "max_new_tokens")
            if "max_new_tokens" in m else d_new,
            tolerance=_tolerance(m["tolerance"], c.at("tolerance", m), d_tol) if "tolerance" in m else d_tol,
            description=_str(m["description"], c.at("description", m), "description")
            if "description" in m else None,
        ))
    return CaseFile(
        path=source,
        cases=tuple(cases),
        model=_str(top["model"], ctx.at("model", top), "model") if "model" in top else None,
        sae=_str(top["sae"], ctx.at("sae", top), "sae") if "sae" in top else None,
    )


def is_case_file(path: Path) -> bool:
    """A YAML file is a case file when its top level has a ``cases:`` key (cheap text check)."""
    if path.suffix not in (".yaml", ".yml"):
        return False
    try:
        with path.open("r", encoding="utf-8", errors="replace") as handle:
            return bool(CASE_FILE_MARK.search(handle.read(65536)))
    except OSError:
        return False
