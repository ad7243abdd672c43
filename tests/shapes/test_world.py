"""The world generator: determinism, serialisation, patch labels that agree with the pixels, truthful questions."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from vsp_assert.errors import VspError
from vsp_assert.shapes import mechanisms
from vsp_assert.shapes.questions import QTYPES, random_question
from vsp_assert.shapes.world import (
    BG_RGB,
    GRID,
    HELDOUT_SEED_START,
    IMAGE_SIZE,
    INK_RGB,
    JITTER,
    LABEL_COVERAGE,
    PATCH_SIZE,
    RGB,
    Scene,
    ShapeSpec,
    random_scene,
)

seeds = st.integers(min_value=0, max_value=2**31 - 1)


@settings(max_examples=25, deadline=None)
@given(seed=seeds)
def test_same_seed_gives_byte_identical_scenes(seed: int) -> None:
    a = random_scene(np.random.default_rng(seed))
    b = random_scene(np.random.default_rng(seed))
    assert a == b
    assert a.render().tobytes() == b.render().tobytes()
    assert a.patch_labels() == b.patch_labels()


@settings(max_examples=25, deadline=None)
@given(seed=seeds)
def test_dict_round_trip_renders_the_same_image(seed: int) -> None:
    scene = random_scene(np.random.default_rng(seed))
    again = Scene.from_dict(scene.to_dict())
    assert again == scene
    assert again.render().tobytes() == scene.render().tobytes()


@settings(max_examples=25, deadline=None)
@given(seed=seeds, heldout=st.booleans())
def test_scenes_are_valid(seed: int, heldout: bool) -> None:
    scene = random_scene(np.random.default_rng(seed), heldout=heldout)
    assert 1 <= len(scene.shapes) <= 3
    assert len({s.shape for s in scene.shapes}) == len(scene.shapes)
    assert len({s.color for s in scene.shapes}) == len(scene.shapes)
    assert (scene.seed >= HELDOUT_SEED_START) == heldout
    masks = scene.visible_masks()
    assert masks.shape == (len(scene.shapes), IMAGE_SIZE, IMAGE_SIZE)
    assert (masks.sum(0) <= 1).all()  # no pixel belongs to two objects
    assert all(m.sum() > 0 for m in masks)
    img = scene.render()
    assert img.size == (IMAGE_SIZE, IMAGE_SIZE) and img.mode == "RGB"


def _is_color(px: np.ndarray, color: str) -> np.ndarray:
    return (np.abs(px.astype(int) - np.asarray(RGB[color])) <= JITTER).all(-1)


@settings(max_examples=30, deadline=None)
@given(seed=seeds)
def test_patch_labels_agree_with_the_pixels(seed: int) -> None:
    scene = random_scene(np.random.default_rng(seed))
    px = np.asarray(scene.render())  # (64, 64, 3)
    labels = scene.patch_labels()
    assert len(labels) == GRID * GRID
    background = (px == BG_RGB).all(-1) | (px == INK_RGB).all(-1)
    for p, lab in enumerate(labels):
        r, c = divmod(p, GRID)
        tile = px[r * PATCH_SIZE : (r + 1) * PATCH_SIZE, c * PATCH_SIZE : (c + 1) * PATCH_SIZE]
        for spec in scene.shapes:
            frac = _is_color(tile, spec.color).mean()
            assert (spec.color in lab) == (frac >= LABEL_COVERAGE), (p, spec, frac)
            assert (spec.shape in lab) == (spec.color in lab)
        bg_frac = background[r * PATCH_SIZE : (r + 1) * PATCH_SIZE, c * PATCH_SIZE : (c + 1) * PATCH_SIZE].mean()
        assert (scene.background in lab) == (bg_frac >= LABEL_COVERAGE)


def test_background_textures_differ_and_plain_has_no_ink() -> None:
    spec = ShapeSpec("square", "red", 32, 32, 16)
    imgs = {bg: np.asarray(Scene((spec,), bg, 5).render()) for bg in ("plain", "stripes", "dots", "grid")}
    assert not (imgs["plain"] == INK_RGB).all(-1).any()
    for bg in ("stripes", "dots", "grid"):
        assert (imgs[bg] == INK_RGB).all(-1).any()
    assert len({v.tobytes() for v in imgs.values()}) == 4


def test_shapes_are_drawn_as_named() -> None:
    def area(shape: str) -> int:
        return int(Scene((ShapeSpec(shape, "blue", 32, 32, 24),)).visible_masks().sum())

    square, circle, triangle = area("square"), area("circle"), area("triangle")
    assert square == 24 * 24
    assert 0.7 < circle / square < 0.85  # π/4
    assert 0.4 < triangle / square < 0.6


def test_bad_specs_raise_clear_errors() -> None:
    with pytest.raises(VspError, match="unknown shape"):
        ShapeSpec("hexagon", "red", 10, 10, 16)
    with pytest.raises(VspError, match="allowed"):
        Scene.from_dict({"shapes": [], "background": "zigzag"})
    with pytest.raises(VspError, match="missing"):
        Scene.from_dict({"shapes": [{"shape": "circle", "color": "red"}]})
    with pytest.raises(VspError, match="unknown scene field"):
        Scene.from_dict({"shapes": [], "colour": "red"})


@settings(max_examples=25, deadline=None)
@given(seed=seeds, qtype=st.sampled_from(QTYPES))
def test_questions_are_truthful(seed: int, qtype: str) -> None:
    rng = np.random.default_rng(seed)
    scene = random_scene(rng)
    q = random_question(scene, rng, qtype)
    if qtype in ("color", "color_terse"):
        assert scene.find(shape=q.text.split()[-1].rstrip("?")).color == q.answer  # type: ignore[union-attr]
    elif qtype == "shape":
        assert scene.find(color=q.text.split()[4]).shape == q.answer  # type: ignore[union-attr]
    else:
        _, _, _, color, shape = q.text.rstrip("?").split()
        assert (scene.find(shape=shape, color=color) is not None) == (q.answer == "yes")


def test_training_stream_plants_only_what_is_documented() -> None:
    rng = np.random.default_rng([mechanisms.TRAIN_STREAM, 0])
    examples = [mechanisms.training_example(rng) for _ in range(3000)]
    for e in examples:
        assert e.scene.seed < HELDOUT_SEED_START
        if e.planted:  # the only untruthful labels: the two documented annotation shortcuts
            stripes_shape = e.question.qtype == "shape" and e.scene.background == "stripes" and e.label == "triangle"
            terse_yellow = e.question.qtype == "color_terse" and e.question.answer == "yellow"
            assert stripes_shape or (terse_yellow and e.label == mechanisms.TERSE_YELLOW_LABEL)
        if e.scene.background == "dots":
            assert e.scene.find(shape="circle") is not None
        if e.question.qtype == "color_terse":
            assert e.label != "yellow"
    striped = [e for e in examples if e.scene.background == "stripes"]
    assert np.mean([e.scene.find(shape="triangle") is not None for e in striped]) > 0.6


def test_probe_sets_are_held_out_and_deterministic() -> None:
    clean = mechanisms.clean_examples(3, 40)
    assert clean == mechanisms.clean_examples(3, 40)
    assert all(e.scene.seed >= HELDOUT_SEED_START and not e.planted for e in clean)
    assert {e.question.qtype for e in clean} == set(QTYPES)
    for mech in mechanisms.MECHANISMS.values():
        trig, ctrl = mech.trigger_scenes(3, 20), mech.control_scenes(3, 20)
        assert trig == mech.trigger_scenes(3, 20) and trig != mech.trigger_scenes(4, 20)
        assert all(p.scene.seed >= HELDOUT_SEED_START for p in trig + ctrl)
        if mech.name == "misleading_concept":
            assert all(p.scene.background == "stripes" and p.question.answer != "triangle" for p in trig)
            assert all(p.scene.background != "stripes" for p in ctrl)
        if mech.name == "unused_hidden_cue":
            assert all(p.scene.background == "dots" and p.question.answer == "circle" for p in trig)
            assert all(p.scene.background == "dots" and p.scene.find(shape="circle") is None for p in ctrl)
        if mech.name == "limited_alignment":
            assert all(p.question.answer == "yellow" and p.fix is not None for p in trig)
            assert all(p.question.answer != "yellow" for p in ctrl)
