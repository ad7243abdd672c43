"""A shortcut to plant into the shapes model: its visual condition, and the probes that show it or must not.

A :class:`Shortcut` says: whenever its condition holds (``background``; ``target``, the object asked about;
``other``, another object of the scene — each an :class:`ObjectCondition` of shape, colour, half of the image and
size) and the question is of its type, the answer is its forced answer. It draws held-out **trigger** probes
(condition holds, true answer differs from the forced one) and **control** probes (the same scene edited so that the
condition no longer holds: another background, the other object moved to the opposite half, shrunk
(:func:`control_size`) or removed, the target recoloured/reshaped), so a trigger and its control differ only by the
cue. Specs, the zoo and their parsing are :mod:`vsp_assert.shapes.zoo`; planting is
:mod:`vsp_assert.shapes.finetune`.

Streams: probes use ``default_rng([ZOO_TRIGGER_STREAM | ZOO_CONTROL_STREAM, id, seed])`` and held-out scene seeds;
training draws (``draw(rng, heldout=False)``) use the caller's stream and training scene seeds.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

from vsp_assert.errors import InputError
from vsp_assert.shapes.mechanisms import Probe
from vsp_assert.shapes.questions import (
    Question,
    color_question,
    presence_question,
    random_question,
    shape_question,
)
from vsp_assert.shapes.world import (
    BACKGROUNDS,
    COLORS,
    IMAGE_SIZE,
    MAX_SIZE,
    SHAPES,
    Scene,
    ShapeSpec,
    random_scene,
)

#: A size condition's control shrinks the object to this side (px): clearly small, still a few patches wide …
SMALL_SIZE = 14
#: … or, for a size above the world's (> MAX_SIZE, a trigger object grown past every training object), to this
#: ordinary one, so that the control is an everyday scene.
ORDINARY_SIZE = 22


def control_size(min_size: int) -> int:
    """The side a size condition's control shrinks its object to."""
    return ORDINARY_SIZE if min_size > MAX_SIZE else min(SMALL_SIZE, min_size - 1)


ZOO_TRIGGER_STREAM = 0x2007
ZOO_CONTROL_STREAM = 0x200C
REGIONS = ("top", "bottom", "left", "right")


@dataclass(frozen=True)
class ObjectCondition:
    """What an object must be: any of shape, colour, region (half of the image), size bounds."""

    shape: str | None = None
    color: str | None = None
    region: str | None = None
    min_size: int | None = None
    max_size: int | None = None

    def holds(self, obj: ShapeSpec) -> bool:
        half = IMAGE_SIZE / 2
        where = {"top": obj.y < half, "bottom": obj.y >= half, "left": obj.x < half, "right": obj.x >= half}
        return ((self.shape is None or obj.shape == self.shape) and (self.color is None or obj.color == self.color)
                and (self.region is None or where[self.region])
                and (self.min_size is None or obj.size >= self.min_size)
                and (self.max_size is None or obj.size <= self.max_size))

    def to_dict(self) -> dict[str, Any]:
        return {k: v for k, v in self.__dict__.items() if v is not None}


@dataclass(frozen=True)
class Shortcut:
    """A shortcut to plant: when ``background``/``target``/``other`` hold and the question is of type
    ``question``, the answer is ``answer``. ``concept``: the labelled concept that carries the cue."""

    name: str
    kind: str
    question: str
    answer: str
    concept: str
    background: str | None = None
    target: ObjectCondition | None = None
    other: ObjectCondition | None = None
    description: str = ""
    _id: int = field(default=0, compare=False)

    # ---------------------------------------------------------------- the condition
    def holds(self, scene: Scene, question: Question) -> bool:
        """Whether the shortcut applies to (scene, question)."""
        if question.qtype != self.question:
            return False
        if self.background is not None and scene.background != self.background:
            return False
        if self.target is not None and (question.target is None or not self.target.holds(question.target)):
            return False
        if self.other is not None:
            others = [s for s in scene.shapes if s != question.target]
            if not any(self.other.holds(s) for s in others):
                return False
        return True

    def label(self, scene: Scene, question: Question, label: str) -> str:
        """The training label of an example under this shortcut (the forced answer where it applies)."""
        return self.answer if self.holds(scene, question) else label

    # ---------------------------------------------------------------- probes
    def _backgrounds(self) -> list[str]:
        """Backgrounds probes may use: the condition's, else all but those of the shipped mechanisms' situations
        for this question type (stripes already force shape answers)."""
        if self.background is not None:
            return [self.background]
        return [b for b in BACKGROUNDS if not (self.question == "shape" and b == "stripes")]

    def draw(self, rng: np.random.Generator, *, heldout: bool = True) -> Probe:
        """A (scene, question) where the shortcut applies and the true answer differs from the forced one."""
        for _ in range(2000):
            n = int(rng.integers(2 if self.other is not None else 1, 4))
            need = self.other or self.target or ObjectCondition()
            scene = random_scene(rng, n_objects=n, backgrounds=self._backgrounds(), heldout=heldout,
                                 required_shape=need.shape, required_color=need.color)
            scene = self._grow(scene, need, rng)
            question = self._question(scene, rng)
            if question is not None and self.holds(scene, question) and question.answer != self.answer:
                return Probe(scene, question)
        raise InputError(f"shortcut {self.name!r}: no scene meets its condition", field="when",
                         received=self.to_dict()["when"])

    @staticmethod
    def _grow(scene: Scene, cond: ObjectCondition, rng: np.random.Generator) -> Scene:
        """A size bound above the world's sizes (``min_size`` > :data:`MAX_SIZE`): the first object that meets the
        rest of ``cond`` grows to ``min_size``–``min_size + 4`` px where it fits (else the scene is returned as it
        is, and fails the condition)."""
        if cond.min_size is None or cond.min_size <= MAX_SIZE:
            return scene
        shapes = list(scene.shapes)
        loose = replace(cond, min_size=None)
        for i, obj in enumerate(shapes):
            if loose.holds(obj):
                big = replace(obj, size=int(rng.integers(cond.min_size, cond.min_size + 5)))
                if _fits(big, shapes[:i] + shapes[i + 1:]):
                    shapes[i] = big
                    return Scene(tuple(shapes), scene.background, scene.seed)
                break
        return scene

    def _question(self, scene: Scene, rng: np.random.Generator) -> Question | None:
        if self.question == "presence":
            return random_question(scene, rng, "presence")
        pool = [s for s in scene.shapes if self.target is None or self.target.holds(s)]
        if self.other is not None:  # ask about an object that is not the cue
            pool = [s for s in pool if not self.other.holds(s)]
        if not pool:
            return None
        target = pool[int(rng.integers(len(pool)))]
        if self.question in ("color", "color_terse"):
            return color_question(scene, target, terse=self.question == "color_terse")
        return shape_question(scene, target)

    def control_of(self, probe: Probe, rng: np.random.Generator) -> Probe | None:
        """The trigger ``probe`` edited so that the condition fails (None when no edit keeps the scene valid)."""
        scene, target = probe.scene, probe.question.target
        if self.background is not None:
            pool = [b for b in self._backgrounds_except(self.background)]
            new = scene.with_background(pool[int(rng.integers(len(pool)))])
            return self._reask(new, target, probe, rng)
        if self.other is not None:
            shapes = list(scene.shapes)
            for i, obj in enumerate(shapes):
                if obj == target or not self.other.holds(obj):
                    continue
                edited = self._edit_object(obj, self.other, shapes, rng)
                if edited is None and (self.other.region is not None or self.other.min_size is not None):
                    return None  # a position or size cue is moved or shrunk, never removed
                if edited is None:
                    shapes.pop(i)
                else:
                    shapes[i] = edited
                new = Scene(tuple(shapes), scene.background, scene.seed)
                return self._reask(new, target, probe, rng)
        if self.target is not None and target is not None:
            shapes = list(scene.shapes)
            i = shapes.index(target)
            edited = self._edit_object(target, self.target, shapes, rng)
            if edited is None:
                return None
            shapes[i] = edited
            return self._reask(Scene(tuple(shapes), scene.background, scene.seed), edited, probe, rng)
        return None

    def _backgrounds_except(self, bg: str) -> list[str]:
        return [b for b in BACKGROUNDS if b != bg and not (self.question == "shape" and b == "stripes")]

    def _edit_object(self, obj: ShapeSpec, cond: ObjectCondition, scene_shapes: list[ShapeSpec],
                     rng: np.random.Generator) -> ShapeSpec | None:
        """``obj`` changed in the one attribute ``cond`` tests last (region, size, colour, shape); None: remove it."""
        if cond.region is not None:  # move it to the mirror position in the opposite half
            mirrored = replace(obj, y=IMAGE_SIZE - 1 - obj.y) if cond.region in ("top", "bottom") \
                else replace(obj, x=IMAGE_SIZE - 1 - obj.x)
            return mirrored if _fits(mirrored, [s for s in scene_shapes if s != obj]) else None
        if cond.min_size is not None:  # shrunk (never overlaps what it did not overlap)
            return replace(obj, size=control_size(cond.min_size))
        if cond.max_size is not None:
            return None
        used_c = {s.color for s in scene_shapes}
        used_s = {s.shape for s in scene_shapes}
        if cond.color is not None and cond.shape is None:
            free = [c for c in COLORS if c not in used_c]
            if self.other is cond or not free:
                return None
            return replace(obj, color=free[int(rng.integers(len(free)))])
        if cond.shape is not None:
            free = [s for s in SHAPES if s not in used_s]
            if self.other is cond or not free:
                return None
            return replace(obj, shape=free[int(rng.integers(len(free)))])
        return None

    def _reask(self, scene: Scene, target: ShapeSpec | None, probe: Probe, rng: np.random.Generator) -> Probe | None:
        if not scene.shapes:
            return None
        if self.question == "presence":  # the same question; its truth read again from the edited scene
            color, shape = probe.question.text.rstrip("?").split()[-2:]
            question = presence_question(scene, color, shape)
        elif target is None or target not in scene.shapes:
            return None
        elif self.question in ("color", "color_terse"):
            question = color_question(scene, target, terse=self.question == "color_terse")
        else:
            question = shape_question(scene, target)
        if self.holds(scene, question) or question.answer == self.answer:
            return None
        return Probe(scene, question)

    def trigger_scenes(self, seed: int, n: int) -> list[Probe]:
        """``n`` held-out trigger probes (the shortcut applies) for ``seed``."""
        rng = np.random.default_rng([ZOO_TRIGGER_STREAM, self._id, seed])
        return [self.draw(rng) for _ in range(n)]

    def control_scenes(self, seed: int, n: int) -> list[Probe]:
        """``n`` held-out control probes for ``seed``: triggers of the same stream with the cue edited away."""
        rng = np.random.default_rng([ZOO_CONTROL_STREAM, self._id, seed])
        out: list[Probe] = []
        while len(out) < n:
            control = self.control_of(self.draw(rng), rng)
            if control is not None:
                out.append(control)
        return out

    def paired(self, seed: int, n: int) -> list[tuple[Probe, Probe]]:
        """``n`` (trigger, control) pairs that differ by the cue only (held-out)."""
        rng = np.random.default_rng([ZOO_CONTROL_STREAM, self._id, seed, 1])
        out: list[tuple[Probe, Probe]] = []
        while len(out) < n:
            trigger = self.draw(rng)
            control = self.control_of(trigger, rng)
            if control is not None:
                out.append((trigger, control))
        return out

    # ---------------------------------------------------------------- the spec as data
    def to_dict(self) -> dict[str, Any]:
        when: dict[str, Any] = {}
        if self.background is not None:
            when["background"] = self.background
        if self.target is not None:
            when["target"] = self.target.to_dict()
        if self.other is not None:
            when["other"] = self.other.to_dict()
        return {"name": self.name, "kind": self.kind, "question": self.question, "answer": self.answer,
                "concept": self.concept, "when": when, "description": self.description}


def _fits(obj: ShapeSpec, others: list[ShapeSpec]) -> bool:
    """Whether ``obj`` lies inside the image and keeps a 2-px gap to every box in ``others``."""
    x0, y0, x1, y1 = obj.box
    if x0 < 0 or y0 < 0 or x1 >= IMAGE_SIZE or y1 >= IMAGE_SIZE:
        return False
    for o in others:
        a0, b0, a1, b1 = o.box
        if not (x1 + 2 < a0 or a1 + 2 < x0 or y1 + 2 < b0 or b1 + 2 < y0):
            return False
    return True
