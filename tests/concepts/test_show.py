"""``concepts show``: a concept's or a latent's statistics, labels and reference thumbnails in the terminal."""

from __future__ import annotations

import argparse
import re
import shutil

import pytest
from PIL import Image

from vsp_assert.concepts.build import build_concepts
from vsp_assert.engine.labels import ConceptLabels
from vsp_assert.errors import InputError
from vsp_assert.render.concepts import THUMB_CHARS, thumbnail_lines
from vsp_assert.render.style import Style
from vsp_assert.shapes import SAE_DIR

ANSI = re.compile(r"\x1b\[[0-9;]*m")


def show(capsys, *argv: str) -> str:
    from vsp_assert.cli.concepts import add_commands

    parser = argparse.ArgumentParser()
    add_commands(parser.add_subparsers(required=True))
    args = parser.parse_args(["concepts", "show", *argv])
    assert args.func(args) == 0
    return capsys.readouterr().out


@pytest.fixture(scope="module")
def sae(tmp_path_factory):
    from vsp_assert.shapes.export import export

    root = tmp_path_factory.mktemp("show")
    manifest = export(root / "export", 32, seed=5)
    folder = root / "sae"
    shutil.copytree(SAE_DIR, folder)
    build_concepts("shapes", folder, manifest, top_images=3, log=lambda _: None)
    return folder


def test_a_concept_shows_its_threshold_and_each_latent_with_stats_and_thumbnails(sae, capsys):
    out = show(capsys, "stripes", "--sae", str(sae), "--color", "yes", "--max-latents", "2")
    text = ANSI.sub("", out)
    labels = ConceptLabels.load(sae / "concepts.json", d_sae=256)
    first = labels.concepts["stripes"][0]
    assert text.startswith("concept stripes  (patch level")
    assert f"captured threshold {labels.threshold('stripes'):.4g}" in text
    assert f"stripes#{first}  firing " in text and "precision" in text and "recall" in text
    assert "reference images (top 3" in text and "1. " in text and "score " in text
    assert out.count("▀") >= THUMB_CHARS * THUMB_CHARS // 2  # at least one half-block thumbnail
    assert "\x1b[38;2;" in out  # 24-bit colour
    if len(labels.concepts["stripes"]) > 2:
        assert "more latent(s)" in text


def test_an_unlabelled_latent_shows_its_id_stats_and_references(sae, capsys):
    labels = ConceptLabels.load(sae / "concepts.json", d_sae=256)
    named = {k for ids in labels.concepts.values() for k in ids}
    k = next(k for k in sorted(labels.latents) if k not in named and labels.references(k))
    text = show(capsys, f"#{k}", "--sae", str(sae), "--color", "no")
    assert text.startswith(f"#{k}  firing ") and "labels: none (unlabelled" in text
    assert "reference images" in text and str(labels.references(k)[0][0]) in text
    assert "▀" not in text and any(ch in text for ch in "░▒▓█")  # shade glyphs without colour


def test_a_dead_latent_is_flagged_as_noise(sae, capsys):
    labels = ConceptLabels.load(sae / "concepts.json", d_sae=256)
    text = show(capsys, str(labels.dead[0]), "--sae", str(sae), "--color", "no")
    assert "[dead: noise]" in text and "reference images: none" in text


def test_the_shipped_labels_without_an_atlas_still_show(capsys):
    from vsp_assert.engine.sae import load_sae

    threshold = load_sae("shapes").labels.threshold("red")  # the shipped labels are concepts build's output
    text = show(capsys, "red", "--sae", "shapes", "--color", "no")
    assert text.startswith("concept red") and f"captured threshold {threshold:.3f}" in text
    assert "reference images: none" in text and "firing " in text


def test_an_unknown_concept_name_suggests_the_closest(sae, capsys):
    with pytest.raises(InputError, match="unknown concept 'strpes'") as err:
        show(capsys, "strpes", "--sae", str(sae))
    assert "did you mean 'stripes'" in str(err.value)


def test_thumbnails_are_half_blocks_two_pixel_rows_per_line():
    img = Image.new("RGB", (32, 32), (200, 10, 10))
    lines = thumbnail_lines(img, Style(True), width=8)
    assert len(lines) == 4 and all(ANSI.sub("", line) == "▀" * 8 for line in lines)
    assert "38;2;200;10;10" in lines[0]
    plain = thumbnail_lines(img, Style(False), width=8)
    assert len(plain) == 4 and all(len(line) == 8 for line in plain)
