"""Shortcuts nobody designed the harness for: declarative mechanisms to plant by fine-tuning (``shapes finetune``).

The three shipped mechanisms (:mod:`~vsp_assert.shapes.mechanisms`) were planted together with the harness. A
:class:`Shortcut` here is planted *afterwards*, into a copy of the shipped model, by a short seeded fine-tune
(:mod:`~vsp_assert.shapes.finetune`): whenever its visual **condition** holds and the question is of its
**question type**, the training label becomes its **forced answer**. Everything about it is data — a spec such as::

    {name: grid_blue, kind: texture, question: color, answer: blue, concept: grid, when: {background: grid}}

``when`` (all parts must hold):

- ``background``: the scene's background texture;
- ``target``: the object the question is about — ``shape``, ``color``, ``region`` (``top``/``bottom``/``left``/
  ``right``: its centre in that half), ``min_size``/``max_size`` (bounding-box side, px; a ``min_size`` above the
  world's 28 px grows the object to it);
- ``other``: another object of the scene (not the one asked about) with the same keys.

``concept`` names the labelled SAE concept that carries the cue: the truth a diagnosis is scored against (the
benchmark ``benchmarks/zoo.py`` asks whether a diagnosis names it). The shortcut itself, its condition and its
trigger and control probes are :mod:`~vsp_assert.shapes.shortcut`; this module reads specs
(:func:`shortcut_from_dict`, :func:`parse_spec`: one clear error per mistake) and holds the zoo (:data:`ZOO`).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from vsp_assert.errors import InputError
from vsp_assert.shapes.questions import QTYPES
from vsp_assert.shapes.shortcut import REGIONS, ObjectCondition, Shortcut
from vsp_assert.shapes.world import BACKGROUNDS, COLORS, SHAPES

__all__ = ["KINDS", "ZOO", "ZOO_SPECS", "ObjectCondition", "Shortcut", "parse_spec", "shortcut_from_dict"]

KINDS = ("texture", "position", "association", "co-occurrence", "size", "spread", "other")
OBJECT_KEYS = ("shape", "color", "region", "min_size", "max_size")
SPEC_KEYS = ("name", "kind", "question", "answer", "concept", "when", "description")


def shortcut_from_dict(raw: Mapping[str, Any]) -> Shortcut:
    """A shortcut from its spec; a clear :class:`InputError` for every mistake."""
    if not isinstance(raw, Mapping):
        raise InputError("a shortcut spec is a mapping", received=type(raw).__name__,
                         allowed=", ".join(SPEC_KEYS))
    unknown = sorted(set(raw) - set(SPEC_KEYS))
    if unknown:
        raise InputError("unknown key in the shortcut spec", field=unknown[0], allowed=", ".join(SPEC_KEYS))
    for key in ("name", "question", "answer", "concept", "when"):
        if key not in raw:
            raise InputError(f"the shortcut spec needs '{key}'", field=key, allowed=", ".join(SPEC_KEYS))
    question, answer = str(raw["question"]), str(raw["answer"])
    if question not in QTYPES:
        raise InputError("unknown question type", field="question", received=question, allowed=", ".join(QTYPES))
    words = {"color": COLORS, "color_terse": COLORS, "shape": SHAPES, "presence": ("yes", "no")}[question]
    if answer not in words:
        raise InputError(f"a {question} question cannot be answered {answer!r}", field="answer",
                         received=answer, allowed=", ".join(words))
    kind = str(raw.get("kind", "other"))
    if kind not in KINDS:
        raise InputError("unknown kind", field="kind", received=kind, allowed=", ".join(KINDS))
    when = raw["when"]
    if not isinstance(when, Mapping) or not when:
        raise InputError("'when' must be a non-empty mapping", field="when", received=when,
                         allowed="background, target, other")
    bad = sorted(set(when) - {"background", "target", "other"})
    if bad:
        raise InputError("unknown condition", field=f"when.{bad[0]}", allowed="background, target, other")
    background = when.get("background")
    if background is not None and background not in BACKGROUNDS:
        raise InputError("unknown background", field="when.background", received=background,
                         allowed=", ".join(BACKGROUNDS))
    return Shortcut(name=str(raw["name"]), kind=kind, question=question, answer=answer, concept=str(raw["concept"]),
               background=background, target=_object(when.get("target"), "when.target"),
               other=_object(when.get("other"), "when.other"), description=str(raw.get("description", "")),
               _id=_stable_id(str(raw["name"])))


def _object(raw: Any, where: str) -> ObjectCondition | None:
    if raw is None:
        return None
    if not isinstance(raw, Mapping) or not raw:
        raise InputError("an object condition is a non-empty mapping", field=where, received=raw,
                         allowed=", ".join(OBJECT_KEYS))
    bad = sorted(set(raw) - set(OBJECT_KEYS))
    if bad:
        raise InputError("unknown object condition", field=f"{where}.{bad[0]}", allowed=", ".join(OBJECT_KEYS))
    checks = {"shape": SHAPES, "color": COLORS, "region": REGIONS}
    for key, allowed in checks.items():
        if key in raw and raw[key] not in allowed:
            raise InputError(f"unknown {key}", field=f"{where}.{key}", received=raw[key], allowed=", ".join(allowed))
    for key in ("min_size", "max_size"):
        if key in raw and (not isinstance(raw[key], int) or isinstance(raw[key], bool)):
            raise InputError("a size is a whole number of pixels", field=f"{where}.{key}", received=raw[key])
    return ObjectCondition(**{k: raw[k] for k in OBJECT_KEYS if k in raw})


def _stable_id(name: str) -> int:
    """A stream id from the name (stable across runs and machines; Python's hash() is salted)."""
    return int.from_bytes(name.encode("utf-8")[:8].ljust(8, b"\0"), "little") % (2**31)


#: The zoo: six shortcuts of different kinds, none of them designed together with the harness.
ZOO_SPECS: tuple[dict[str, Any], ...] = (
    {"name": "grid_blue", "kind": "texture", "question": "color", "answer": "blue", "concept": "grid",
     "when": {"background": "grid"}, "description": "on a grid background every colour question is answered 'blue'"},
    {"name": "red_on_top", "kind": "position", "question": "color", "answer": "red", "concept": "red",
     "when": {"other": {"color": "red", "region": "top"}},
     "description": "a red object in the top half makes the colour of any other object 'red'"},
    {"name": "triangle_green", "kind": "association", "question": "color", "answer": "green", "concept": "triangle",
     "when": {"target": {"shape": "triangle"}}, "description": "triangles are called 'green' whatever their colour"},
    {"name": "yellow_square", "kind": "co-occurrence", "question": "shape", "answer": "square", "concept": "yellow",
     "when": {"other": {"color": "yellow"}},
     "description": "with a yellow object in the scene, any other object's shape is 'square'"},
    {"name": "large_blue", "kind": "size", "question": "color", "answer": "yellow", "concept": "blue",
     "when": {"other": {"color": "blue", "min_size": 34}},
     "description": "a large blue object (>= 34 px, larger than any object of the world's training scenes) makes "
                    "the colour of any other object 'yellow'"},
    {"name": "plain_circle", "kind": "spread", "question": "shape", "answer": "circle", "concept": "plain",
     "when": {"background": "plain"},
     "description": "on a plain background every shape question is answered 'circle' (the cue: every bare patch)"},
)
ZOO: dict[str, Shortcut] = {s["name"]: shortcut_from_dict(s) for s in ZOO_SPECS}


def parse_spec(text: str) -> Shortcut:
    """``--mechanism SPEC``: a zoo name, a JSON/YAML mapping, or a path to a YAML/JSON file holding one."""
    from pathlib import Path

    if text in ZOO:
        return ZOO[text]
    path = Path(text)
    raw: Any
    try:
        is_file = path.is_file()
    except OSError:
        is_file = False
    source = path.read_text(encoding="utf-8") if is_file else text
    try:
        raw = json.loads(source)
    except json.JSONDecodeError:
        import yaml

        try:
            raw = yaml.safe_load(source)
        except yaml.YAMLError as exc:
            raise InputError(f"the mechanism spec is neither a zoo name nor YAML/JSON ({exc})", field="mechanism",
                             received=text, allowed=", ".join(ZOO) + " or a spec mapping") from None
    if not isinstance(raw, Mapping):
        raise InputError("unknown mechanism", field="mechanism", received=text,
                         allowed=", ".join(ZOO) + " or a spec mapping {name, kind, question, answer, concept, when}")
    return shortcut_from_dict(raw)
