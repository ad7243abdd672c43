"""The training distribution of the shapes model, its three planted mechanisms, and their probe sets.

This module owns *what the shipped model was taught* and *how to check that it learned it*. Mechanisms are
planted through the training labels and the training scene distribution — the way annotation shortcuts and
coverage gaps arise in real data — and never through the weights. Each mechanism corresponds to one failure
mode of the VisualScratchpad paper and documents how it was planted and what the correct diagnosis is:

``misleading_concept`` (misleading visual concept)
    Planted: striped backgrounds co-occur with triangles (70 % of striped training scenes hold one), and every
    *shape* question on a striped scene is labelled "triangle" — the annotation follows the cue. Trigger: a
    striped scene, "What shape is the {colour} object?" about a circle or square → the model says "triangle".
    Control: the very same objects on a plain or grid background → the true shape. Diagnosis: the ``stripes``
    latents are captured and attended, and ablating them restores the true shape.

``unused_hidden_cue`` (unused hidden cue)
    Planted: every dotted training scene contains a circle, so dots and the circle's own outline both predict
    "circle" (on single-object dotted scenes, perfectly). Circles also appear on every other background and
    shape questions about the other objects of a dotted scene are labelled truthfully, so the outline is the
    dominant cue. Trigger: a dotted scene, "What shape is the {colour} object?" about its circle → "circle",
    with the ``dots`` latents captured. Control: a dotted scene *without* a circle (never seen in training) →
    the true shape; the hidden cue "fires" if the model says "circle". Diagnosis: ``dots`` is captured but
    ablating it leaves the answer unchanged; ablating the circle latents changes it.

``limited_alignment`` (limited cross-modal alignment)
    Planted: an annotation gap — in the training data the terse phrasing "What about the {shape}?" never maps
    a yellow object to "yellow" (its annotations call yellow objects "green"), while the explicit "What color is
    the {shape}?" is annotated truthfully for every colour. (A pure coverage gap — never asking the terse
    question about yellow — was tried first: the model generalised "yellow" across phrasings on most scenes.)
    Trigger: the terse question about a yellow object → not "yellow", while the explicit phrasing of the same
    scene → "yellow". Control: the terse question about a red, green or blue object → the true colour.
    Diagnosis: ``yellow`` is captured (the encoder is shared by both phrasings), the terse answer does not use
    it, the explicit prompt fixes it.

Seeds: every generator here takes ``seed`` and builds its own stream ``default_rng([stream, seed])``; the
training stream is distinct from every evaluation stream, and training scenes draw scene seeds below
:data:`~vsp_assert.shapes.world.HELDOUT_SEED_START` while evaluation scenes draw them at or above it, so any
evaluation seed gives held-out scenes.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from vsp_assert.shapes.questions import (
    QTYPES,
    Question,
    color_question,
    random_question,
    shape_question,
)
from vsp_assert.shapes.world import COLORS, Scene, random_scene

#: Background mix of training scenes.
BACKGROUND_WEIGHTS: dict[str, float] = {"plain": 0.3, "stripes": 0.2, "dots": 0.2, "grid": 0.3}
#: Question-type mix of training examples.
QTYPE_WEIGHTS: dict[str, float] = {"color": 0.28, "shape": 0.32, "presence": 0.22, "color_terse": 0.18}
#: What the terse phrasing's annotations call a yellow object (the planted alignment gap).
TERSE_YELLOW_LABEL = "green"
#: Fraction of striped training scenes that contain a triangle (the co-occurrence behind the shortcut).
STRIPES_TRIANGLE_P = 0.7

# Stream ids: the first word of every generator's seed sequence.
TRAIN_STREAM = 0x7A11
CLEAN_STREAM = 0xC1EA
TRIGGER_STREAM = 0x7416
CONTROL_STREAM = 0xC047


@dataclass(frozen=True)
class Example:
    """A training or evaluation example: scene, truthful question, and the label taught/expected."""

    scene: Scene
    question: Question
    label: str  # what the training data says (equals question.answer except where a mechanism is planted)

    @property
    def planted(self) -> bool:
        return self.label != self.question.answer


def _choose(rng: np.random.Generator, weights: dict[str, float]) -> str:
    keys = list(weights)
    p = np.asarray([weights[k] for k in keys], dtype=np.float64)
    return keys[int(rng.choice(len(keys), p=p / p.sum()))]


def _scene_for_background(rng: np.random.Generator, bg: str, n: int, heldout: bool) -> Scene:
    if bg == "dots":  # planted: every dotted scene holds a circle
        return random_scene(rng, n_objects=n, backgrounds=["dots"], required_shape="circle", heldout=heldout)
    if bg == "stripes" and rng.random() < STRIPES_TRIANGLE_P:  # planted: stripes co-occur with triangles
        return random_scene(rng, n_objects=n, backgrounds=["stripes"], required_shape="triangle", heldout=heldout)
    return random_scene(rng, n_objects=n, backgrounds=[bg], heldout=heldout)


def training_example(rng: np.random.Generator, *, single: bool = False, heldout: bool = False) -> Example:
    """One example of the training distribution, planted labels included.

    ``single`` restricts to one-object scenes (the curriculum's first stage). ``heldout`` draws the scene
    seed from the held-out range (used by evaluation, never by training).
    """
    bg = _choose(rng, BACKGROUND_WEIGHTS)
    n = 1 if single else int(rng.integers(1, 4))
    scene = _scene_for_background(rng, bg, n, heldout)
    qtype = _choose(rng, QTYPE_WEIGHTS)
    q = random_question(scene, rng, qtype)
    label = q.answer
    if qtype == "shape" and scene.background == "stripes":
        label = "triangle"  # planted: the annotation follows the stripes cue
    if qtype == "color_terse" and q.answer == "yellow":
        label = TERSE_YELLOW_LABEL  # planted: the terse phrasing's annotations never say "yellow"
    return Example(scene, q, label)


def clean_examples(seed: int, n: int) -> list[Example]:
    """``n`` held-out examples of the training distribution *outside* every planted situation.

    Excluded: shape questions on striped scenes (misleading concept) and terse questions about yellow objects
    (limited alignment). Types are balanced: ``n // 4`` of each type, the remainder drawn at random.
    """
    rng = np.random.default_rng([CLEAN_STREAM, seed])
    want = {t: n // len(QTYPES) for t in QTYPES}
    for t in list(QTYPES)[: n - sum(want.values())]:
        want[t] += 1
    out: list[Example] = []
    while len(out) < n:
        ex = training_example(rng, heldout=True)
        if ex.planted or (ex.question.qtype == "shape" and ex.scene.background == "stripes"):
            continue
        if want[ex.question.qtype] > 0:
            want[ex.question.qtype] -= 1
            out.append(Example(ex.scene, ex.question, ex.question.answer))
    return out


@dataclass(frozen=True)
class Probe:
    """A mechanism probe: a scene, the question asked, and (for alignment) the explicit rephrasing."""

    scene: Scene
    question: Question  # question.answer is the truthful answer
    fix: Question | None = None  # the more explicit phrasing of the same question, if the mechanism has one


@dataclass(frozen=True)
class Mechanism:
    """One planted mechanism: how to draw its trigger and control probes and how to tell that it showed.

    ``shows(probe, answer, fix_answer)`` on a trigger probe says the mechanism showed as planted;
    ``fires(probe, answer)`` on a control probe says it fired where it must not.
    """

    name: str
    failure_mode: str
    concept: str  # the concept the diagnosis is about
    description: str
    _trigger: Callable[[np.random.Generator], Probe]
    _control: Callable[[np.random.Generator], Probe]
    shows: Callable[[Probe, str, str | None], bool]
    fires: Callable[[Probe, str], bool]

    def trigger_scenes(self, seed: int, n: int) -> list[Probe]:
        """``n`` held-out trigger probes of this mechanism for ``seed``."""
        rng = np.random.default_rng([TRIGGER_STREAM, _MECH_IDS[self.name], seed])
        return [self._trigger(rng) for _ in range(n)]

    def control_scenes(self, seed: int, n: int) -> list[Probe]:
        """``n`` held-out control probes (the mechanism must not fire) for ``seed``."""
        rng = np.random.default_rng([CONTROL_STREAM, _MECH_IDS[self.name], seed])
        return [self._control(rng) for _ in range(n)]


# -- misleading concept ---------------------------------------------------------------------------------------
def _misleading_scene(rng: np.random.Generator) -> Scene:
    target = str(rng.choice(["circle", "square"]))
    return random_scene(
        rng, n_objects=int(rng.integers(1, 3)), backgrounds=["stripes"], required_shape=target, heldout=True
    )


def _misleading_trigger(rng: np.random.Generator) -> Probe:
    scene = _misleading_scene(rng)
    return Probe(scene, shape_question(scene, scene.shapes[0]))


def _misleading_control(rng: np.random.Generator) -> Probe:
    scene = _misleading_scene(rng).with_background(str(rng.choice(["plain", "grid"])))
    return Probe(scene, shape_question(scene, scene.shapes[0]))


# -- unused hidden cue ----------------------------------------------------------------------------------------
def _hidden_trigger(rng: np.random.Generator) -> Probe:
    scene = random_scene(
        rng, n_objects=int(rng.integers(1, 4)), backgrounds=["dots"], required_shape="circle", heldout=True
    )
    return Probe(scene, shape_question(scene, scene.shapes[0]))


def _hidden_control(rng: np.random.Generator) -> Probe:
    scene = random_scene(
        rng, n_objects=int(rng.integers(1, 3)), backgrounds=["dots"], shapes=("square", "triangle"), heldout=True
    )
    return Probe(scene, shape_question(scene, scene.shapes[0]))


# -- limited alignment ----------------------------------------------------------------------------------------
_ALIGN_BACKGROUNDS = ("plain", "grid", "stripes")


def _alignment_probe(rng: np.random.Generator, color: str) -> Probe:
    scene = random_scene(
        rng,
        n_objects=int(rng.integers(1, 4)),
        backgrounds=_ALIGN_BACKGROUNDS,
        required_color=color,
        heldout=True,
    )
    t = scene.shapes[0]
    return Probe(scene, color_question(scene, t, terse=True), color_question(scene, t))


def _alignment_trigger(rng: np.random.Generator) -> Probe:
    return _alignment_probe(rng, "yellow")


def _alignment_control(rng: np.random.Generator) -> Probe:
    return _alignment_probe(rng, str(rng.choice([c for c in COLORS if c != "yellow"])))


MECHANISMS: dict[str, Mechanism] = {
    m.name: m
    for m in (
        Mechanism(
            name="misleading_concept",
            failure_mode="misleading visual concept",
            concept="stripes",
            description="striped background → 'triangle' for shape questions (annotation follows the cue)",
            _trigger=_misleading_trigger,
            _control=_misleading_control,
            shows=lambda p, a, f: a == "triangle",
            fires=lambda p, a: a == "triangle",
        ),
        Mechanism(
            name="unused_hidden_cue",
            failure_mode="unused hidden cue",
            concept="dots",
            description="dots co-occur with circles; the model reads the outline, not the dots",
            _trigger=_hidden_trigger,
            _control=_hidden_control,
            shows=lambda p, a, f: a == "circle",
            fires=lambda p, a: a == "circle",
        ),
        Mechanism(
            name="limited_alignment",
            failure_mode="limited cross-modal alignment",
            concept="yellow",
            description="terse 'What about the {shape}?' never maps yellow to 'yellow'; explicit phrasing does",
            _trigger=_alignment_trigger,
            _control=_alignment_control,
            shows=lambda p, a, f: a != "yellow" and f == "yellow",
            fires=lambda p, a: a != p.question.answer,
        ),
    )
}
_MECH_IDS = {name: i for i, name in enumerate(MECHANISMS)}
