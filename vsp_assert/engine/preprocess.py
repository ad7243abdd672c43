"""Cached image preprocessing: an image shared by several cases is resized and normalised once.

A family's processor turns (images, text) into model inputs. Its image half (resize, crop, normalise, tiling)
depends only on the pixels and the processor's options and is the costly half; a suite often asks several
questions about one image. :class:`ImageCache` stands in for the processor's ``image_processor`` (and its
``video_processor``, a clip keyed by its frames) while an adapter prepares inputs (:meth:`ImageCache.serving`): a
call with images already seen — same pixels, mode and size, same options — gets a copy of the earlier output, and
the processor builds the text half around it as usual.

- Keys are content digests (BLAKE2b of the pixels), never object identities, so an image edited in place or a
  new file at an old path is a miss.
- The cache is a bounded LRU (``max_entries``), so a suite of thousands of images stays flat in memory.
- Outputs are copied on the way in and out: nobody downstream can alter a cached tensor.
- Anything the key cannot describe faithfully (non-PIL inputs, options without a stable ``repr``) bypasses the
  cache, as do processors that never call their ``image_processor`` attribute.

The stand-in forwards every other attribute (``size``, ``patch_size``, ``merge_size`` …) to the real image
processor, and it is only in place inside ``serving``: the processor object users hold is left as it was.
"""

from __future__ import annotations

import copy
import hashlib
import re
from collections import OrderedDict
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import torch

_ADDRESS = re.compile(r" at 0x[0-9a-f]+")


class ImageCache:
    """A bounded LRU of image-processor outputs keyed by image content and options."""

    def __init__(self, max_entries: int = 64) -> None:
        if max_entries < 1:
            raise ValueError("max_entries must be at least 1")
        self.max_entries = max_entries
        self._entries: OrderedDict[tuple[Any, ...], Any] = OrderedDict()
        self.hits = 0
        self.misses = 0

    def __len__(self) -> int:
        return len(self._entries)

    def clear(self) -> None:
        self._entries.clear()

    @contextmanager
    def serving(self, processor: Any) -> Iterator[None]:
        """Within the block, ``processor.image_processor`` (and ``video_processor``, when it has one) answers from
        this cache."""
        swapped = []
        for slot in ("image_processor", "video_processor"):
            real = getattr(processor, slot, None)
            if real is not None and not isinstance(real, _CachingImageProcessor):
                setattr(processor, slot, _CachingImageProcessor(real, self))
                swapped.append((slot, real))
        try:
            yield
        finally:
            for slot, real in swapped:
                setattr(processor, slot, real)

    # -------------------------------------------------------------- internals
    def _call(self, real: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        key = _key(args, kwargs)
        if key is None:
            return real(*args, **kwargs)
        if key in self._entries:
            self._entries.move_to_end(key)
            self.hits += 1
            return _copy(self._entries[key])
        out = real(*args, **kwargs)
        self.misses += 1
        self._entries[key] = _copy(out)
        while len(self._entries) > self.max_entries:
            self._entries.popitem(last=False)
        return out


class _CachingImageProcessor:
    """The stand-in: calls go through the cache, everything else to the real image processor."""

    def __init__(self, real: Any, cache: ImageCache) -> None:
        self._real = real
        self._cache = cache

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self._cache._call(self._real, args, kwargs)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._real, name)


def _key(args: tuple[Any, ...], kwargs: dict[str, Any]) -> tuple[Any, ...] | None:
    """A hashable description of the call, or None when part of it cannot be described by value."""
    from PIL import Image

    kwargs = dict(kwargs)
    images = args[0] if args else kwargs.pop("images", None) or kwargs.pop("videos", None)
    rest = args[1:]
    if isinstance(images, Image.Image):
        images = [images]
    if not isinstance(images, (list, tuple)) or not images:
        return None

    def describe(item: Any) -> Any:  # an image, or a (nested) list of them as some processors take per prompt
        if isinstance(item, Image.Image):
            return (item.mode, item.size, hashlib.blake2b(item.tobytes(), digest_size=16).hexdigest())
        if isinstance(item, (list, tuple)):
            return tuple(describe(x) for x in item)
        raise TypeError(type(item).__name__)

    try:
        digests = describe(images)
    except TypeError:  # arrays, tensors, URLs: left to the processor uncached
        return None
    try:
        options = repr((rest, sorted(kwargs.items())))
    except Exception:  # an option whose repr fails cannot be part of a key
        return None
    if _ADDRESS.search(options):  # an object without a value repr: two different ones could look alike
        return None
    return (digests, options)


def _copy(output: Any) -> Any:
    """A copy whose tensors are fresh: the cache and its callers never share storage."""
    out = copy.copy(output)
    items = out.items() if hasattr(out, "items") else []
    for name, value in list(items):
        if isinstance(value, torch.Tensor):
            out[name] = value.clone()
        elif isinstance(value, (list, dict)):
            out[name] = copy.deepcopy(value)
    return out
