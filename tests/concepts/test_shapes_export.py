"""``shapes export``: the images are the scenes' renders and the masks are the scenes' own truth."""

from __future__ import annotations

import argparse

import numpy as np
import pytest

from vsp_assert.concepts.sources import open_source
from vsp_assert.shapes.export import concept_masks, export, export_scenes
from vsp_assert.shapes.world import GRID, LABEL_COVERAGE, PATCH_SIZE, Scene


def test_export_reads_back_as_a_jsonl_source(shapes_source):
    src = open_source(shapes_source)
    assert src.kind == "jsonl" and len(src) == 8 and src.skipped == []
    scenes = export_scenes(3, 8)
    for record, scene in zip(src, scenes, strict=True):
        assert Scene.from_dict(record.fields["scene"]) == scene
        assert np.array_equal(np.asarray(record.load()), np.asarray(scene.render()))


def test_labels_are_every_concept_present(shapes_source):
    for record in open_source(shapes_source):
        scene = Scene.from_dict(record.fields["scene"])
        truth = {scene.background} | {c for s in scene.shapes for c in (s.color, s.shape)}
        assert set(record.labels) == truth == set(record.masks)


def test_masks_are_the_scene_pixel_truth(shapes_source):
    for record in open_source(shapes_source):
        scene = Scene.from_dict(record.fields["scene"])
        visible = scene.visible_masks()  # [n, H, W]
        for spec, m in zip(scene.shapes, visible, strict=True):
            assert np.array_equal(record.load_mask(spec.color), m)
            assert np.array_equal(record.load_mask(spec.shape), m)
        assert np.array_equal(record.load_mask(scene.background), ~visible.any(0))


def test_masks_give_the_scene_patch_labels(shapes_source):
    """Pooling each mask over the 8×8 patches with the world's coverage rule gives ``Scene.patch_labels``."""
    for record in open_source(shapes_source):
        scene = Scene.from_dict(record.fields["scene"])
        per_patch: list[set[str]] = [set() for _ in range(GRID * GRID)]
        for label in record.labels:
            cov = record.load_mask(label).reshape(GRID, PATCH_SIZE, GRID, PATCH_SIZE).mean(axis=(1, 3)).flatten()
            for p in np.flatnonzero(cov >= LABEL_COVERAGE):
                per_patch[p].add(label)
        assert per_patch == scene.patch_labels()


def test_empty_background_concept_is_not_labelled():
    scene = Scene((), "dots", 5)
    masks = concept_masks(scene)
    assert set(masks) == {"dots"} and masks["dots"].all()


def test_export_is_deterministic_and_leaves_no_temp_files(tmp_path):
    a = export(tmp_path / "a", 3, seed=1)
    b = export(tmp_path / "b", 3, seed=1)
    assert a.read_bytes() == b.read_bytes()
    files_a = sorted(p.relative_to(tmp_path / "a") for p in (tmp_path / "a").rglob("*") if p.is_file())
    for rel in files_a:
        assert (tmp_path / "a" / rel).read_bytes() == (tmp_path / "b" / rel).read_bytes()
    assert not [p for p in files_a if p.name.endswith(".tmp")]
    assert export(tmp_path / "c", 3, seed=2).read_bytes() != a.read_bytes()


def test_cli_export(tmp_path, capsys):
    from vsp_assert.shapes.cli import add_commands

    parser = argparse.ArgumentParser(prog="vsp-assert")
    add_commands(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(["shapes", "export", "--n", "2", "--out", str(tmp_path), "--seed", "4"])
    assert args.func(args) == 0
    assert "wrote 2 scenes" in capsys.readouterr().out
    assert len(open_source(tmp_path / "manifest.jsonl")) == 2
    from vsp_assert.errors import InputError

    with pytest.raises(InputError, match="at least one scene"):
        export(tmp_path / "none", 0)
