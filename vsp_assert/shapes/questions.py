"""Question templates of the shapes world and their truthful answers.

This module owns the *language* side of the world: four templates, each a question type, and the truthful
answer a scene gives to each. Every answer is one word of the closed vocabulary, so a model's answer is one
token and can be read from the logits at the last prompt position. The planted (untruthful) training labels
live in :mod:`vsp_assert.shapes.mechanisms`, not here: this module is the ground truth.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from vsp_assert.errors import VspError
from vsp_assert.shapes.world import COLORS, SHAPES, Scene, ShapeSpec

#: Question type → template. ``color_terse`` is the vague phrasing of the colour question.
TEMPLATES: dict[str, str] = {
    "color": "What color is the {shape}?",
    "shape": "What shape is the {color} object?",
    "presence": "Is there a {color} {shape}?",
    "color_terse": "What about the {shape}?",
}
QTYPES: tuple[str, ...] = tuple(TEMPLATES)
ANSWERS: tuple[str, ...] = COLORS + SHAPES + ("yes", "no")

#: The prompt the LM sees (the shipped chat template produces exactly this).
PROMPT_FORMAT = "USER: <image>\n{question} ASSISTANT:"


@dataclass(frozen=True)
class Question:
    """A question about one scene: its text, its truthful one-word answer, its type and its target object."""

    text: str
    answer: str
    qtype: str
    target: ShapeSpec | None = None  # the object asked about (for presence: the matching object, if any)

    @property
    def prompt(self) -> str:
        return PROMPT_FORMAT.format(question=self.text)


def color_question(scene: Scene, target: ShapeSpec, *, terse: bool = False) -> Question:
    """Ask the colour of ``target`` (explicit phrasing, or the vague one with ``terse``)."""
    qtype = "color_terse" if terse else "color"
    return Question(TEMPLATES[qtype].format(shape=target.shape), target.color, qtype, target)


def shape_question(scene: Scene, target: ShapeSpec) -> Question:
    """Ask the shape of ``target``, naming it by its colour."""
    return Question(TEMPLATES["shape"].format(color=target.color), target.shape, "shape", target)


def presence_question(scene: Scene, color: str, shape: str) -> Question:
    """Ask whether a ``color`` ``shape`` is in the scene."""
    hit = scene.find(shape=shape, color=color)
    return Question(TEMPLATES["presence"].format(color=color, shape=shape), "yes" if hit else "no", "presence", hit)


def random_question(scene: Scene, rng: np.random.Generator, qtype: str) -> Question:
    """A random truthful question of type ``qtype`` about ``scene``.

    Presence questions are yes half of the time; a "no" question names a colour or a shape that *is* in the
    scene (bound to the wrong partner) whenever possible, so answering needs binding, not just detection.
    """
    if not scene.shapes:
        raise VspError("cannot ask about an empty scene", received=scene.to_dict())
    if qtype in ("color", "color_terse"):
        target = scene.shapes[int(rng.integers(len(scene.shapes)))]
        return color_question(scene, target, terse=qtype == "color_terse")
    if qtype == "shape":
        return shape_question(scene, scene.shapes[int(rng.integers(len(scene.shapes)))])
    if qtype == "presence":
        if rng.random() < 0.5:
            t = scene.shapes[int(rng.integers(len(scene.shapes)))]
            return presence_question(scene, t.color, t.shape)
        present = {(s.color, s.shape) for s in scene.shapes}
        absent = [(c, s) for c in COLORS for s in SHAPES if (c, s) not in present]
        colors_in = {s.color for s in scene.shapes}
        shapes_in = {s.shape for s in scene.shapes}
        hard = [(c, s) for c, s in absent if c in colors_in and s in shapes_in]
        soft = [(c, s) for c, s in absent if c in colors_in or s in shapes_in]
        pool = hard if hard and rng.random() < 0.6 else (soft or absent)
        c, s = pool[int(rng.integers(len(pool)))]
        return presence_question(scene, c, s)
    raise VspError(f"unknown question type {qtype!r}", field="qtype", received=qtype, allowed=", ".join(QTYPES))
