"""YAML with line numbers, and the validation helpers every case-file section uses.

A ``SafeLoader`` subclass (never ``yaml.load`` with arbitrary tags) records the line of every mapping key and
list item (:class:`LineDict`, :class:`LineList`); :class:`Ctx` carries the file, field path and line while a
section is validated, so every :class:`~vsp_assert.errors.CaseError` names them, and :func:`ctx_where` turns it
into the :class:`~vsp_assert.checks.schema.Where` a spec keeps for run time. :func:`is_case_file` decides, from
the text alone, which YAML files are case files.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml

from vsp_assert.checks.schema import Where
from vsp_assert.errors import CaseError, did_you_mean


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



# ---------------------------------------------------------------------- validation helpers
class Ctx:
    """Where we are while validating: file, field path, and the line to report."""

    def __init__(self, file: str, path: str = "", line: int | None = None) -> None:
        self.file, self.path, self.line = file, path, line

    def at(self, key: str | int, container: Any = None) -> Ctx:
        line = self.line
        if isinstance(container, LineDict) and isinstance(key, str):
            line = container.key_lines.get(key, container.line)
        elif isinstance(container, LineList) and isinstance(key, int) and key < len(container.item_lines):
            line = container.item_lines[key]
        path = f"{self.path}[{key}]" if isinstance(key, int) else (f"{self.path}.{key}" if self.path else key)
        return Ctx(self.file, path, line)

    def error(self, message: str, *, received: Any = None, allowed: str | None = None,
              fix: str | None = None) -> CaseError:
        return CaseError(message, file=self.file, line=self.line, field=self.path or None, received=received,
                         allowed=allowed, fix=fix)


def ctx_where(ctx: Ctx, parts: list[tuple[str, int | None]] | None = None) -> Where:
    """The place a spec is validated at, which the spec carries for problems only a run can find."""
    return Where(ctx.path, ctx.line, tuple(parts or ()))


def concept_parts(name: str, value: Any, ctx: Ctx) -> list[tuple[str, int | None]]:
    """The lines of a concept list's items (``name[i]``), or of ``name`` itself for a single concept."""
    if isinstance(value, list):
        return [(f"{name}[{i}]", ctx.at(i, value).line) for i in range(len(value))]
    return [(name, ctx.line)]


def as_mapping(value: Any, ctx: Ctx, keys: tuple[str, ...], what: str) -> Mapping[str, Any]:
    if not isinstance(value, Mapping):
        raise ctx.error(f"{what} must be a mapping", received=kind_of(value), allowed=f"keys {', '.join(keys)}")
    for key in value:
        if key not in keys:
            raise ctx.at(str(key), value).error(
                f"unknown key '{key}' in {what}", received=key, allowed=", ".join(keys),
                fix=did_you_mean(str(key), keys),
            )
    return value


def kind_of(value: Any) -> str:
    if isinstance(value, Mapping):
        return "a mapping"
    if isinstance(value, list):
        return "a list"
    return f"{type(value).__name__} {value!r}"


def as_str(value: Any, ctx: Ctx, what: str, *, allow_empty: bool = False) -> str:
    if isinstance(value, bool) or not isinstance(value, (str, int, float)):
        raise ctx.error(f"{what} must be text", received=kind_of(value))
    text = str(value)
    if not allow_empty and not text.strip():
        raise ctx.error(f"{what} is empty", received=value, fix=f"write the {what}")
    return text


def as_concept(value: Any, ctx: Ctx) -> str | int:
    if isinstance(value, bool) or not isinstance(value, (str, int)):
        raise ctx.error("a concept is a name, '#id' or an integer latent id", received=kind_of(value))
    if isinstance(value, int) and value < 0:
        raise ctx.error("latent ids are non-negative", received=value)
    if isinstance(value, str) and not value.strip():
        raise ctx.error("a concept name is empty")
    return value


def as_concepts(value: Any, ctx: Ctx) -> tuple[str | int, ...]:
    if isinstance(value, (str, int)) and not isinstance(value, bool):
        return (as_concept(value, ctx),)
    if not isinstance(value, list) or not value:
        raise ctx.error("expected a concept or a non-empty list of concepts", received=kind_of(value),
                        allowed="[red, square, '#12']")
    return tuple(as_concept(v, ctx.at(i, value)) for i, v in enumerate(value))


def as_number(value: Any, ctx: Ctx, what: str, *, lo: float | None = None, hi: float | None = None) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ctx.error(f"{what} must be a number", received=kind_of(value))
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


def as_int(value: Any, ctx: Ctx, what: str, *, lo: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ctx.error(f"{what} must be an integer", received=kind_of(value), allowed=f"an integer >= {lo}")
    if value < lo:
        raise ctx.error(f"{what} out of range", received=value, allowed=f"an integer >= {lo}")
    return value


def as_bool(value: Any, ctx: Ctx, what: str) -> bool:
    if not isinstance(value, bool):
        raise ctx.error(f"{what} must be true or false", received=kind_of(value))
    return value


def as_token(value: Any, ctx: Ctx) -> str | int:
    if isinstance(value, bool) or not isinstance(value, (str, int)):
        raise ctx.error("token must be the token text or its index", received=kind_of(value))
    if isinstance(value, str) and not value.strip():
        raise ctx.error("token text is empty")
    return value


# ---------------------------------------------------------------------- which YAML files are case files
TOP_KEY = re.compile(r"""(-\s+)?["']?cases?["']?\s*:(\s|$)""", re.IGNORECASE)


def is_case_file(path: Path) -> bool:
    """Whether a YAML file looks like a case file (cheap text check, no YAML parsing).

    It does when a key ``cases:`` (or the typo ``case:``, any letter case, quoted or not) sits at the file's top
    level: at the indentation of its first line of content, or as a key of a top-level list item (``- cases:``,
    the mistake of a list at the top). Such a file is collected and validated, so a broken one fails with its
    file, line and field instead of being skipped; ``cases:`` nested deeper (a CI matrix, say) does not count.
    """
    if path.suffix not in (".yaml", ".yml"):
        return False
    try:
        with path.open("r", encoding="utf-8", errors="replace") as handle:
            text = handle.read(1 << 20)
    except OSError:
        return False
    top: int | None = None
    item_keys: set[int] = set()  # indentations of the keys of top-level list items
    for raw in text.lstrip("\ufeff").splitlines():
        body = raw.lstrip(" ")
        if not body or body.startswith(("#", "%")) or body.rstrip() in ("---", "..."):
            continue
        indent = len(raw) - len(body)
        if top is None:
            top = indent
        if indent == top:
            dash = re.match(r"-\s+", body)
            if dash:
                item_keys.add(indent + dash.end())
            if TOP_KEY.match(body):
                return True
        elif indent in item_keys and TOP_KEY.match(body):
            return True
    return False
