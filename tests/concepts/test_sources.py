"""The image-source reader: the four kinds, masks, and every bad input as one clear error."""

from __future__ import annotations

import csv
import json
import tempfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from vsp_assert.concepts.sources import ImageRecord, open_source
from vsp_assert.errors import InputError


# ---------------------------------------------------------------------- folders
def test_folder_is_read_recursively_in_sorted_order(tmp_path, write_image):
    for rel in ("b.png", "a/x.jpg", "a/deeper/y.png", "c.PNG"):
        write_image(tmp_path / rel)
    (tmp_path / "notes.txt").write_text("not an image")
    write_image(tmp_path / ".hidden" / "z.png")
    src = open_source(tmp_path)
    assert src.kind == "folder" and src.root == tmp_path
    assert [r.path.relative_to(tmp_path).as_posix() for r in src] == ["a/deeper/y.png", "a/x.jpg", "b.png", "c.PNG"]
    assert len(src) == 4 and src.label_names == [] and all(r.labels == () for r in src)
    img = src[0].load()
    assert img.mode == "RGB" and img.size == (16, 12)


def test_imagefolder_gives_class_labels(tmp_path, write_image):
    for rel in ("cat/1.png", "cat/2.png", "dog/1.png"):
        write_image(tmp_path / rel)
    src = open_source(str(tmp_path))
    assert src.kind == "imagefolder"
    assert [r.labels for r in src] == [("cat",), ("cat",), ("dog",)]
    assert src.label_names == ["cat", "dog"]


@pytest.mark.parametrize("extra", ["top.png", "cat/sub/deep.png"])
def test_mixed_depths_are_a_plain_folder(tmp_path, write_image, extra):
    for rel in ("cat/1.png", "dog/1.png", extra):
        write_image(tmp_path / rel)
    src = open_source(tmp_path)
    assert src.kind == "folder" and src.label_names == []


def test_one_class_folder_is_not_an_imagefolder(tmp_path, write_image):
    write_image(tmp_path / "images" / "1.png")
    assert open_source(tmp_path).kind == "folder"


# ---------------------------------------------------------------------- manifests
def test_jsonl_manifest_with_labels_masks_and_fields(tmp_path, write_image, write_mask):
    write_image(tmp_path / "img" / "a.png")
    write_image(tmp_path / "img" / "b.png", size=(8, 8))
    write_mask(tmp_path / "m" / "a_red.png")
    lines = [
        {"image": "img/a.png", "labels": ["red", "cat"], "masks": {"red": "m/a_red.png"}, "split": "val", "n": 3},
        {"image": "img/b.png"},
    ]
    manifest = tmp_path / "data.jsonl"
    manifest.write_text("\n".join(json.dumps(x) for x in lines) + "\n\n")
    src = open_source(manifest)
    assert src.kind == "jsonl" and src.root == tmp_path and len(src) == 2
    a, b = list(src)
    assert a.path == tmp_path / "img" / "a.png" and a.labels == ("red", "cat")
    assert dict(a.fields) == {"split": "val", "n": 3} and b.labels == () and dict(b.masks) == {}
    mask = a.load_mask("red")
    assert mask.dtype == bool and mask.shape == (12, 16)
    assert mask[:, :8].all() and not mask[:, 8:].any()
    assert src.label_names == ["cat", "red"]
    with pytest.raises(InputError, match="no mask for the label"):
        a.load_mask("cat")


def test_a_mask_implies_its_label(tmp_path, write_image, write_mask):
    write_image(tmp_path / "a.png")
    write_mask(tmp_path / "a_sky.png")
    manifest = tmp_path / "m.jsonl"
    manifest.write_text(json.dumps({"image": "a.png", "masks": {"sky": "a_sky.png"}}) + "\n")
    assert open_source(manifest)[0].labels == ("sky",)


def test_csv_manifest(tmp_path, write_image, write_mask):
    write_image(tmp_path / "a.png")
    write_image(tmp_path / "b.png")
    write_mask(tmp_path / "a_red.png")
    manifest = tmp_path / "data.csv"
    with manifest.open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["image", "labels", "mask:red", "mask:blue", "source"])
        w.writerow(["a.png", "red; square", "a_red.png", "", "web"])
        w.writerow(["b.png", "", "", "", "cam"])
    src = open_source(manifest)
    assert src.kind == "csv" and len(src) == 2
    a, b = list(src)
    assert a.labels == ("red", "square") and set(a.masks) == {"red"} and dict(a.fields) == {"source": "web"}
    assert b.labels == () and dict(b.fields) == {"source": "cam"}
    assert a.load_mask("red").shape == (12, 16)


_names = st.text(alphabet="abcdefghij_-", min_size=1, max_size=6)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(rows=st.lists(st.tuples(st.lists(_names, max_size=4, unique=True), _names), min_size=1, max_size=5),
       kind=st.sampled_from(["jsonl", "csv"]))
def test_manifests_round_trip_labels_and_fields(write_image, rows, kind):
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        write_image(root / "x.png", size=(4, 4))
        manifest = root / f"m.{kind}"
        if kind == "jsonl":
            manifest.write_text("".join(json.dumps({"image": "x.png", "labels": labels, "tag": tag}) + "\n"
                                        for labels, tag in rows))
        else:
            with manifest.open("w", newline="") as f:
                w = csv.writer(f)
                w.writerow(["image", "labels", "tag"])
                for labels, tag in rows:
                    w.writerow(["x.png", ";".join(labels), tag])
        src = open_source(manifest)
        assert [(list(r.labels), r.fields["tag"]) for r in src] == [(labels, tag) for labels, tag in rows]
        assert src.label_names == sorted({lab for labels, _ in rows for lab in labels})


# ---------------------------------------------------------------------- bad input
def _error(spec, **kw) -> InputError:
    with pytest.raises(InputError) as info:
        open_source(spec, **kw)
    return info.value


def test_unreadable_images_are_skipped_with_a_warning(tmp_path, write_image):
    write_image(tmp_path / "good.png")
    for i in range(7):
        (tmp_path / f"bad{i}.png").write_bytes(b"not a png at all")
    with pytest.warns(UserWarning, match=r"skipped 7 unreadable image\(s\): .*bad0.png.* and 2 more"):
        src = open_source(tmp_path)
    assert len(src) == 1 and len(src.skipped) == 7
    assert src.skipped[0][0].endswith("bad0.png") and src.skipped[0][1]


def test_strict_makes_an_unreadable_image_an_error(tmp_path, write_image):
    write_image(tmp_path / "good.png")
    (tmp_path / "bad.png").write_bytes(b"\x89PNG broken")
    err = _error(tmp_path, strict=True)
    assert err.field == "image" and "bad.png" in str(err)


def test_a_manifest_row_pointing_at_a_missing_file_is_skipped(tmp_path, write_image):
    write_image(tmp_path / "a.png")
    manifest = tmp_path / "m.jsonl"
    manifest.write_text('{"image": "a.png"}\n{"image": "gone.png"}\n')
    with pytest.warns(UserWarning, match="gone.png"):
        src = open_source(manifest)
    assert len(src) == 1 and src.skipped == [(str(tmp_path / "gone.png"), "no such file")]
    err = _error(manifest, strict=True)
    assert err.file == f"{manifest}:2"


def test_csv_without_image_column(tmp_path):
    manifest = tmp_path / "m.csv"
    manifest.write_text("path,labels\na.png,red\n")
    err = _error(manifest)
    assert err.field == "image" and err.file == str(manifest) and "no 'image' column" in str(err)


def test_jsonl_row_without_image(tmp_path, write_image):
    write_image(tmp_path / "a.png")
    manifest = tmp_path / "m.jsonl"
    manifest.write_text('{"image": "a.png"}\n{"labels": ["red"]}\n')
    err = _error(manifest)
    assert err.field == "image" and err.line == 2 and str(manifest) in str(err)


@pytest.mark.parametrize("line, field", [
    ("{not json", None),
    ('["a.png"]', None),
    ('{"image": "a.png", "labels": "red"}', "labels"),
    ('{"image": "a.png", "masks": ["a.png"]}', "masks"),
    ('{"image": 3}', "image"),
])
def test_malformed_jsonl_lines(tmp_path, write_image, line, field):
    write_image(tmp_path / "a.png")
    manifest = tmp_path / "m.jsonl"
    manifest.write_text('{"image": "a.png"}\n' + line + "\n")
    err = _error(manifest)
    assert err.line == 2 and err.field == field and str(manifest) in str(err)


def test_mask_of_another_size_is_an_error(tmp_path, write_image, write_mask):
    write_image(tmp_path / "a.png", size=(16, 12))
    write_mask(tmp_path / "a_red.png", size=(8, 8))
    manifest = tmp_path / "m.jsonl"
    manifest.write_text(json.dumps({"image": "a.png", "masks": {"red": "a_red.png"}}) + "\n")
    err = _error(manifest)
    assert err.field == "masks.red" and err.received == "8x8 (a_red.png)" and "16x12" in str(err.allowed)
    assert err.file == f"{manifest}:1"
    # the record's own check, for records built by hand
    rec = ImageRecord(tmp_path / "a.png", ("red",), {"red": tmp_path / "a_red.png"})
    with pytest.raises(InputError, match="size differs"):
        rec.load_mask("red")


def test_missing_mask_file_is_an_error(tmp_path, write_image):
    write_image(tmp_path / "a.png")
    manifest = tmp_path / "m.csv"
    manifest.write_text("image,mask:red\na.png,nope.png\n")
    err = _error(manifest)
    assert err.field == "masks.red" and "does not exist" in str(err)


def test_csv_row_with_extra_cells(tmp_path, write_image):
    write_image(tmp_path / "a.png")
    manifest = tmp_path / "m.csv"
    manifest.write_text("image,labels\na.png,red,extra\n")
    assert _error(manifest).line == 2


@pytest.mark.parametrize("make", ["empty_folder", "only_text", "empty_manifest", "all_unreadable"])
def test_empty_sources(tmp_path, make):
    spec = tmp_path
    if make == "only_text":
        (tmp_path / "a.txt").write_text("x")
    elif make == "empty_manifest":
        spec = tmp_path / "m.jsonl"
        spec.write_text("\n")
    elif make == "all_unreadable":
        (tmp_path / "a.png").write_bytes(b"nope")
    err = _error(spec)
    assert "no readable image" in str(err) and err.file == str(spec)


def test_missing_path_and_unsupported_file(tmp_path, write_image):
    assert "does not exist" in str(_error(tmp_path / "nowhere"))
    img = write_image(tmp_path / "a.png")
    err = _error(img)
    assert err.field == "images" and ".jsonl" in str(err.allowed)


def test_record_load_of_a_broken_file_names_it(tmp_path):
    bad = tmp_path / "a.png"
    bad.write_bytes(b"nope")
    with pytest.raises(InputError) as info:
        ImageRecord(bad).load()
    assert info.value.file == str(bad)


@pytest.mark.parametrize("name", ["manifest.jsonl", "manifest.csv"])
def test_a_folder_with_a_manifest_reads_the_manifest_so_masks_are_not_images(tmp_path, write_image, write_mask,
                                                                             name):
    """``shapes export --out D`` then ``--images D``: the manifest's masks stay masks, not extra images."""
    write_image(tmp_path / "images" / "a.png")
    write_mask(tmp_path / "masks" / "a_red.png")
    if name.endswith(".jsonl"):
        (tmp_path / name).write_text(json.dumps({"image": "images/a.png", "masks": {"red": "masks/a_red.png"}}) + "\n")
    else:
        (tmp_path / name).write_text("image,mask:red\nimages/a.png,masks/a_red.png\n")
    src = open_source(tmp_path)
    assert src.kind == name.split(".")[1] and len(src) == 1
    assert src[0].labels == ("red",) and src[0].load_mask("red").any()
    (tmp_path / name).unlink()
    without = open_source(tmp_path)  # without it: every image, masks included (here two class folders)
    assert without.kind != src.kind and len(without) == 2
