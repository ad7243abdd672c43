"""Cached image preprocessing: same inputs as the processor alone, keyed by content, bounded, never shared."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from vsp_assert.engine.preprocess import ImageCache


def _image(seed: int, h: int = 24, w: int = 30):
    from PIL import Image

    return Image.fromarray((np.random.RandomState(seed).rand(h, w, 3) * 255).astype("uint8"))


@settings(max_examples=20, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(seeds=st.lists(st.integers(0, 5), min_size=1, max_size=8), sizes=st.sampled_from([(24, 30), (40, 16)]))
def test_served_inputs_equal_the_processors_own(tiny, seeds, sizes):
    cache = ImageCache(max_entries=4)
    processor = tiny.adapter.processor
    for seed in seeds:
        image = _image(seed, *sizes)
        plain = tiny.adapter.prepare([image], ["what color is it ?"])
        with cache.serving(processor):
            served = tiny.adapter.prepare([image], ["is it red ?"])
        assert torch.equal(plain["pixel_values"], served["pixel_values"])
    assert cache.hits + cache.misses == len(seeds)
    assert cache.misses >= len(set(seeds)) and len(cache) <= 4


def test_the_scratchpad_preprocesses_an_image_once_across_its_cases(pad, images):
    pad.image_cache.clear()
    first = pad.run(images[0], "what color is the square ?")
    misses = pad.image_cache.misses
    second = pad.run(images[0], "is there a red circle ?")
    assert pad.image_cache.misses == misses and pad.image_cache.hits >= 1
    again = pad.run(images[0], "what color is the square ?")
    assert again.answer == first.answer and torch.equal(again.acts, first.acts)
    assert second.prompt == "is there a red circle ?"


def test_an_image_changed_in_place_is_a_miss(tiny):
    cache = ImageCache()
    image = _image(0)
    with cache.serving(tiny.adapter.processor):
        before = tiny.adapter.prepare([image], ["q ?"])["pixel_values"]
        image.paste((255, 0, 0), (0, 0, image.width, image.height // 2))  # edited in place: same object
        after = tiny.adapter.prepare([image], ["q ?"])["pixel_values"]
    assert cache.misses == 2 and cache.hits == 0
    assert not torch.equal(before, after)


def test_cached_tensors_are_never_shared_with_callers(tiny):
    cache = ImageCache()
    image = _image(1)
    with cache.serving(tiny.adapter.processor):
        first = tiny.adapter.prepare([image], ["q ?"])["pixel_values"]
        reference = first.clone()
        first.fill_(7.0)  # a caller scribbling on its inputs
        second = tiny.adapter.prepare([image], ["q ?"])["pixel_values"]
    assert cache.hits == 1 and torch.equal(second, reference)


def test_the_cache_is_bounded_lru(tiny):
    cache = ImageCache(max_entries=3)
    with cache.serving(tiny.adapter.processor):
        for seed in range(5):
            tiny.adapter.prepare([_image(seed)], ["q ?"])
        assert len(cache) == 3
        tiny.adapter.prepare([_image(4)], ["q ?"])  # most recent: kept
        tiny.adapter.prepare([_image(0)], ["q ?"])  # oldest: evicted
    assert (cache.hits, cache.misses) == (1, 6)


def test_the_processor_is_restored_even_when_preparing_fails(tiny):
    processor = tiny.adapter.processor
    real = processor.image_processor
    with pytest.raises(RuntimeError), ImageCache().serving(processor):
        assert processor.image_processor is not real
        raise RuntimeError("preprocessing failed")
    assert processor.image_processor is real


def test_inputs_the_key_cannot_describe_bypass_the_cache(tiny):
    cache = ImageCache()
    array = (np.random.RandomState(0).rand(24, 30, 3) * 255).astype("uint8")
    with cache.serving(tiny.adapter.processor):
        tiny.adapter.processor.image_processor(array, return_tensors="pt")
        tiny.adapter.processor.image_processor([array, array], return_tensors="pt")
    assert (cache.hits, cache.misses, len(cache)) == (0, 0, 0)
