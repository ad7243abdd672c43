"""``concepts build``: the statistics against hand computations, the threshold calibration, the atlas bound, the
shapes world end to end (the 11 concepts named, thresholds that separate), the one labelling path reproducing
the shipped labels, and bad inputs."""

from __future__ import annotations

import argparse
import json
import math
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from vsp_assert.concepts.atlas import ATLAS_MB, index_bound, sheet_bound, thumb_side
from vsp_assert.concepts.build import build_concepts, mask_patches
from vsp_assert.concepts.stats import StatsAccumulator, calibrate, label_entropy
from vsp_assert.engine.labels import ConceptLabels
from vsp_assert.errors import InputError, SAEError
from vsp_assert.shapes import SAE_DIR
from vsp_assert.shapes.world import CONCEPTS

N_SCENES = 200


# ------------------------------------------------------------------ statistics by hand
@st.composite
def tiny_sets(draw):
    n_img = draw(st.integers(1, 5))
    patches = draw(st.integers(1, 4))
    d = draw(st.integers(1, 5))
    c = draw(st.integers(1, 3))
    vals = st.sampled_from([0.0, 0.0, 0.5, 1.0, 2.0, 3.5])
    f = np.array(draw(st.lists(vals, min_size=n_img * patches * d, max_size=n_img * patches * d)))
    lab = np.array(draw(st.lists(st.booleans(), min_size=n_img * patches * c, max_size=n_img * patches * c)))
    edge = np.array(draw(st.lists(st.booleans(), min_size=n_img * patches * c, max_size=n_img * patches * c)))
    img = [draw(st.sets(st.integers(0, c - 1))) for _ in range(n_img)]
    lab = lab.reshape(n_img, patches, c)
    return f.reshape(n_img, patches, d), lab, edge.reshape(n_img, patches, c) & ~lab, img


@settings(max_examples=60, deadline=None)
@given(tiny_sets(), st.integers(1, 3), st.booleans())
def test_statistics_match_a_hand_computation(data, top_n, batched):
    """Every statistic against numpy by hand, edge patches (touched, not carried) left out of precision."""
    f, lab, edge, img = data
    n_img, patches, d = f.shape
    c = lab.shape[2]
    names = [f"c{j}" for j in range(c)]
    patch_level = names[: (c + 1) // 2]  # the rest are image level
    acc = StatsAccumulator(d, names, patch_level, top_images=top_n)
    img_names = [[names[j] for j in sorted(s)] for s in img]
    fs, ls, es = [torch.tensor(x) for x in f], [torch.tensor(x) for x in lab], [torch.tensor(x) for x in edge]
    if batched:
        acc.add_batch(fs, ls, img_names, edges=es)
    else:
        for i in range(n_img):
            acc.add_batch([fs[i]], [ls[i]], [img_names[i]], edges=[es[i]])
    s = acc.finish(dense_rate=0.5)
    flat, flab, fedge = f.reshape(-1, d), lab.reshape(-1, c), edge.reshape(-1, c)
    score = f.mean(1)  # [n_img, d] image scores
    for k in range(d):
        fires = flat[:, k] > 0
        assert s.firing_rate[k] == pytest.approx(fires.mean())
        assert s.mean_activation[k] == pytest.approx(flat[fires, k].mean() if fires.any() else 0.0)
        assert s.broad[k] == (fires.mean() > 0.5) and s.dead[k] == (not fires.any())
        for j, name in enumerate(names):
            has = np.array([j in x for x in img])
            mass = score[:, k].sum()
            assert s.image_precision[k, j] == pytest.approx(score[has, k].sum() / mass if mass > 0 else 0.0)
            if name in patch_level:
                mass = flat[:, k].sum() - (flat[:, k] * fedge[:, j]).sum()
                want_p = (flat[:, k] * flab[:, j]).sum() / mass if mass > 0 else 0.0
                want_r = (fires & flab[:, j]).sum() / flab[:, j].sum() if flab[:, j].any() else 0.0
            else:
                want_p = score[has, k].sum() / mass if mass > 0 else 0.0
                want_r = (score[has, k] > 0).mean() if has.any() else 0.0
            assert s.precision[k, j] == pytest.approx(want_p), (k, name)
            assert s.recall[k, j] == pytest.approx(want_r), (k, name)
        # top images: highest scores first, earlier image on ties, only images where the latent fired
        order = sorted((i for i in range(n_img) if score[i, k] > 0), key=lambda i: (-score[i, k], i))[:top_n]
        assert [int(i) for i in s.top_index[k] if i >= 0] == order
        want_h = label_entropy([frozenset(img_names[i]) for i in order], c)
        assert s.label_entropy[k] == (pytest.approx(want_h) if want_h is not None else None)


def test_label_entropy_is_normalised_and_splits_multi_label_images():
    one = frozenset({"a"})
    assert label_entropy([one, one], 4) == 0.0
    assert label_entropy([frozenset({"a"}), frozenset({"b"})], 4) == pytest.approx(math.log(2) / math.log(4))
    assert label_entropy([frozenset({"a", "b", "c", "d"})], 4) == pytest.approx(1.0)
    assert label_entropy([frozenset()], 4) is None


@settings(max_examples=80, deadline=None)
@given(st.lists(st.floats(0, 10, allow_nan=False), min_size=2, max_size=30), st.data())
def test_calibration_maximises_balanced_accuracy(scores, data):
    present = np.array(data.draw(st.lists(st.booleans(), min_size=len(scores), max_size=len(scores))))
    scores = np.array(scores)
    got = calibrate(scores, present)
    if present.all() or not present.any():
        assert got is None
        return
    def bacc(t: float) -> float:
        pred = scores > t
        return ((pred & present).sum() / present.sum() + (~pred & ~present).sum() / (~present).sum()) / 2

    best = max(bacc(t) for t in np.concatenate([scores, [scores.min() - 1]]))
    assert got is not None and got["balanced_accuracy"] == pytest.approx(bacc(got["threshold"]))
    assert got["balanced_accuracy"] == pytest.approx(best)


def test_calibration_puts_the_threshold_in_the_gap():
    got = calibrate(np.array([0.0, 0.1, 0.2, 1.0, 1.4]), np.array([False, False, False, True, True]))
    assert got == {"threshold": pytest.approx(0.6), "balanced_accuracy": 1.0, "tpr": 1.0, "fpr": 0.0}


def test_masks_label_the_patches_they_cover_by_the_coverage():
    mask = np.zeros((8, 8), dtype=bool)
    mask[:4, :4] = True  # patch (0, 0) of a 2×2 grid, fully
    mask[4:6, 4:8] = True  # half of patch (1, 1)
    assert mask_patches(mask, (2, 2), 0.5).tolist() == [True, False, False, True]
    assert mask_patches(mask, (2, 2), 0.6).tolist() == [True, False, False, False]


# ------------------------------------------------------------------ atlas bound
def test_atlas_bound_for_a_65k_sae_stays_under_200_mb():
    side = thumb_side(65536, 8)
    total = sheet_bound(65536, 8, side) + index_bound(65536, 8, 65536 * 8 * 40)
    assert side == 16 and total <= ATLAS_MB * 1e6
    assert thumb_side(256, 8) == 64


@given(st.integers(1, 200_000), st.integers(1, 32))
def test_the_chosen_thumbnail_fits_the_budget_whenever_any_does(n, top):
    side = thumb_side(n, top)
    fits = sheet_bound(n, top, 8) + index_bound(n, top) <= ATLAS_MB * 1e6
    assert not fits or sheet_bound(n, top, side) + index_bound(n, top) <= ATLAS_MB * 1e6


# ------------------------------------------------------------------ the shapes world end to end
def run_cli(*argv: str) -> int:
    from vsp_assert.cli.concepts import add_commands

    parser = argparse.ArgumentParser()
    add_commands(parser.add_subparsers(required=True))
    args = parser.parse_args(list(argv))
    return int(args.func(args))


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    from vsp_assert.shapes.export import export

    root = tmp_path_factory.mktemp("build")
    manifest = export(root / "export", N_SCENES, seed=0)
    sae = root / "sae"
    shutil.copytree(SAE_DIR, sae)
    assert run_cli("concepts", "build", "--model", "shapes", "--sae", str(sae), "--images", str(manifest)) == 0
    return sae, manifest


def test_the_build_names_the_eleven_shapes_concepts_precisely(built):
    sae, _ = built
    labels = ConceptLabels.load(sae / "concepts.json", d_sae=256)
    assert set(labels.concepts) == set(CONCEPTS)
    for name in CONCEPTS:
        info = labels.concept_stats(name)
        assert info["level"] == "patch"
        assert max(info["precision"].values()) >= 0.9, name
        assert all(p >= labels.build["min_precision"] for p in info["precision"].values())
        assert labels.threshold(name) is not None and info["balanced_accuracy"] >= 0.95, name


def test_calibrated_thresholds_separate_held_out_images(built):
    """On scenes the build never saw, ``captured``'s score (Σ over the concept's latents of the mean over
    patches) above the threshold says whether the concept is present."""
    from vsp_assert.concepts.activations import stream_activations
    from vsp_assert.concepts.sources import open_source
    from vsp_assert.engine.models import load_model
    from vsp_assert.engine.sae import load_sae
    from vsp_assert.shapes.export import export

    sae_dir, manifest = built
    held = export(manifest.parent.parent / "held_out", 48, seed=9)
    sae = load_sae(sae_dir)
    records = list(open_source(held))
    scores = []
    for batch in stream_activations(load_model("shapes"), records, layer=sae.hook_layer):
        scores.extend(sae.encode(a).mean(0) for a in batch.acts)
    for name in CONCEPTS:
        ids, t = sae.labels.resolve(name), sae.labels.threshold(name)
        present = np.array([name in r.labels for r in records])
        said = np.array([float(s[ids].sum()) > t for s in scores])
        bacc = ((said & present).sum() / present.sum() + (~said & ~present).sum() / (~present).sum()) / 2
        assert bacc >= 0.9, (name, bacc)


def test_every_latent_that_fired_has_stats_and_references_within_the_atlas_bound(built):
    sae, _ = built
    labels = ConceptLabels.load(sae / "concepts.json", d_sae=256)
    index = json.loads((sae / "atlas" / "index.json").read_text())
    named = {k for ids in labels.concepts.values() for k in ids}
    unlabelled = [k for k in labels.latents if k not in named and k not in labels.dense]
    assert unlabelled, "some live latents stay unlabelled"
    for k in [*unlabelled[:5], *sorted(named)[:5]]:
        stats = labels.stats(k)
        assert {"firing_rate", "mean_activation", "label_entropy"} <= set(stats) and not stats["dead"]
        refs = labels.references(k)
        assert 1 <= len(refs) <= 8 and all(Path(p).exists() for p, _ in refs)
        assert [s for _, s in refs] == sorted((s for _, s in refs), reverse=True)
    assert set(labels.dead) == {k for k in range(256) if str(k) not in index["latents"]}
    size = sum(p.stat().st_size for p in (sae / "atlas").iterdir())
    fired = len(index["latents"])
    assert index["thumb"] == 64
    assert size <= sheet_bound(fired, 8, 64) + (sae / "atlas" / "index.json").stat().st_size
    assert labels.is_noise(labels.dead[0]) and all(labels.is_noise(k) for k in labels.dense)
    assert not any(labels.is_noise(k) for k in named)


def test_the_sidecar_names_the_label_file_and_the_sae_still_loads(built):
    from vsp_assert.engine.sae import load_sae

    sae, _ = built
    assert json.loads((sae / "vsp_assert.json").read_text())["labels"] == "concepts.json"
    loaded = load_sae(sae)
    assert loaded.labels.atlas == "atlas/index.json" and loaded.resolve("red")


def test_no_atlas_keeps_the_index_and_drops_the_thumbnails(tmp_path, shapes_source):
    sae = tmp_path / "sae"
    shutil.copytree(SAE_DIR, sae)
    (sae / "atlas").mkdir()
    (sae / "atlas" / "sheet_0099.png").write_bytes(b"stale")
    result = build_concepts("shapes", sae, shapes_source, atlas=False, top_images=2, log=lambda _: None)
    assert result.atlas["thumb"] is None and result.atlas["sheets"] == 0
    assert [p.name for p in (sae / "atlas").iterdir()] == ["index.json"]
    labels = ConceptLabels.load(result.label_file, d_sae=256)
    assert any(labels.references(k) for k in labels.latents)


# ------------------------------------------------------------------ one labelling path
def test_the_shapes_recipe_labels_through_the_generic_path_and_reproduces_the_shipped_file():
    """The shipped labelling run (2000 scenes of the label stream, the shipped SAE) through
    :mod:`vsp_assert.shapes.labelling` — now the generic statistics — gives the shipped concept lists."""
    from transformers import LlavaForConditionalGeneration

    from vsp_assert.engine.sae import load_sae
    from vsp_assert.shapes import MODEL_DIR
    from vsp_assert.shapes.inference import layer_activations
    from vsp_assert.shapes.labelling import build_labels, concept_precision
    from vsp_assert.shapes.train_sae import LABEL_STREAM, SAETrainConfig, uniform_scenes

    model = LlavaForConditionalGeneration.from_pretrained(MODEL_DIR, attn_implementation="eager").eval()
    sae = load_sae("shapes")
    scenes = uniform_scenes(LABEL_STREAM, 0, SAETrainConfig().n_label_scenes)
    with torch.no_grad():
        f = sae.encode(layer_activations(model, str(sae.hook_layer), scenes).reshape(-1, sae.d_in))
    labels, stats = build_labels(f.numpy(), [lab for s in scenes for lab in s.patch_labels()],
                                 edges=[e for s in scenes for e in s.patch_edges()])
    shipped = json.loads((SAE_DIR / "concepts.json").read_text())
    assert labels.concepts == shipped["concepts"] and labels.dead == shipped["dead"]
    assert labels.dense == shipped["dense"]
    assert min(concept_precision(stats).values()) >= 0.9


# ------------------------------------------------------------------ bad input
def test_an_sae_of_another_width_is_refused_naming_d_in(tmp_path, shapes_source):
    from vsp_assert.engine.sae import save_sae
    from vsp_assert.testing import random_sae

    other = random_sae(32, 16, k=4)
    save_sae(tmp_path / "sae", W_enc=other.W_enc, W_dec=other.W_dec, b_enc=other.b_enc, b_dec=other.b_dec, k=4,
             hook_layer="model.vision_tower.encoder.layers.2")
    with pytest.raises(SAEError, match="width 64 but the SAE expects d_in=32") as err:
        build_concepts("shapes", tmp_path / "sae", shapes_source, log=lambda _: None)
    assert "cfg.json" in str(err.value) and "field 'd_in'" in str(err.value)
    assert not (tmp_path / "sae" / "concepts.json").exists()


def test_an_empty_source_is_refused(tmp_path):
    (tmp_path / "empty").mkdir()
    sae = tmp_path / "sae"
    shutil.copytree(SAE_DIR, sae)
    with pytest.raises(InputError, match="no readable image"):
        build_concepts("shapes", sae, tmp_path / "empty", log=lambda _: None)


def test_the_shipped_sae_alias_and_bad_options_are_refused(tmp_path, shapes_source):
    with pytest.raises(SAEError, match="overwrite") as err:
        build_concepts("shapes", "shapes", shapes_source)
    assert "cp -r" in str(err.value)
    with pytest.raises(SAEError, match="must be a folder"):
        build_concepts("shapes", tmp_path / "nope", shapes_source)
    sae = tmp_path / "sae"
    shutil.copytree(SAE_DIR, sae)
    with pytest.raises(InputError, match="--min-precision"):
        build_concepts("shapes", sae, shapes_source, min_precision=1.5)
    with pytest.raises(InputError, match="--top-images"):
        build_concepts("shapes", sae, shapes_source, top_images=0)


def test_an_imagefolder_gives_image_level_concepts_on_another_model(tmp_path, saved, write_image):
    """Class folders are image labels: precision and recall over images, thresholds over the same images."""
    for cls, seeds in (("cats", range(0, 4)), ("dogs", range(10, 14))):
        for s in seeds:
            write_image(tmp_path / "data" / cls / f"{s}.png", size=(40, 40), seed=s)
    sae = tmp_path / "sae"
    shutil.copytree(saved["sae"], sae)
    result = build_concepts(saved["model"], sae, tmp_path / "data", min_precision=0.55, top_images=3,
                            log=lambda _: None)
    labels = ConceptLabels.load(result.label_file, d_sae=64)
    assert result.n_images == 8 and labels.concepts, "a random SAE still leans to one class somewhere"
    for name in labels.concepts:
        info = labels.concept_stats(name)
        assert info["level"] == "image" and all(p >= 0.55 for p in info["precision"].values())
        assert labels.threshold(name) is not None
    live = [k for k in labels.latents if labels.references(k)]
    assert live and all(len(labels.references(k)) <= 3 for k in live)
    assert all(labels.stats(k)["label_entropy"] is not None for k in live)
