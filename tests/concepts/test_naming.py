"""Which latents name a concept, and which are noise: the rules of :func:`~vsp_assert.concepts.stats.name_concepts`
and :func:`~vsp_assert.concepts.stats.noise_flags` on hand-made activations whose answer is known."""

from __future__ import annotations

import torch

from vsp_assert.concepts.labelling import make_labels
from vsp_assert.concepts.stats import StatsAccumulator

N_IMAGES, PATCHES = 10, 4  # "obj" sits on patch 0 of images 0-4


def _stats(latents: dict[int, list[tuple[int, int, float]]], d_sae: int = 4):
    """Stats of ``d_sae`` latents firing where ``latents[k]`` says: ``(image, patch, value)``."""
    acc = StatsAccumulator(d_sae, ["obj"], ["obj"], top_images=2)
    for i in range(N_IMAGES):
        f = torch.zeros(PATCHES, d_sae)
        for k, fires in latents.items():
            for img, p, v in fires:
                if img == i:
                    f[p, k] = v
        lab = torch.zeros(PATCHES, 1, dtype=torch.bool)
        lab[0, 0] = i < 5
        acc.add(f, lab, ["obj"] if i < 5 else [])
    return acc.finish(dense_rate=0.25)


def test_a_latent_carrying_its_object_into_the_image_names_it_and_is_not_noise():
    carrier = [(i, p, 1.0 if p == 0 else 0.5) for i in range(5) for p in range(3)]  # object + context, obj images
    background = [(i, p, 1.0) for i in range(N_IMAGES) for p in (1, 2, 3)]  # everywhere but the object
    leaky = [(i, 0, 1.0) for i in range(5)] + [(i, 1, 1.0) for i in range(5, N_IMAGES)]  # also in images without
    s = _stats({0: carrier, 1: background, 2: leaky})
    assert s.precision[0, 0] == 0.5 and s.image_precision[0, 0] == 1.0 and s.recall[0, 0] == 1.0
    labels = make_labels(s)
    assert labels.concepts == {"obj": [0]}  # not the leaky one: half its mass is in images without the object
    assert s.broad[0] and s.broad[1]  # both fire on more than a quarter of the patches ...
    assert labels.dense == [1]  # ... but the one that names a concept is a concept, not noise
    assert labels.latents[0].get("dense") is None and labels.latents[1]["dense"] is True


def test_a_latent_spilling_outside_the_images_of_its_object_does_not_name_it():
    spill = [(i, 0, 1.0) for i in range(5)] + [(i, 2, 0.6) for i in range(5, N_IMAGES)]
    s = _stats({0: spill})
    assert s.precision[0, 0] < 0.8 and s.image_precision[0, 0] < 0.8
    assert make_labels(s).concepts == {}


def test_edge_patches_do_not_count_against_a_latent():
    """A latent firing on its object and on the patch the object only touches: precision 1 with the edge marked,
    0.5 without."""
    acc = {True: StatsAccumulator(1, ["obj"], ["obj"]), False: StatsAccumulator(1, ["obj"], ["obj"])}
    f = torch.tensor([[1.0], [1.0], [0.0], [0.0]])  # [P, d_sae]
    lab = torch.tensor([[True], [False], [False], [False]])
    edge = torch.tensor([[False], [True], [False], [False]])
    for marked, a in acc.items():
        a.add_batch([f], [lab], [["obj"]], edges=[edge] if marked else None)
    assert acc[True].finish().precision[0, 0] == 1.0 and acc[False].finish().precision[0, 0] == 0.5
