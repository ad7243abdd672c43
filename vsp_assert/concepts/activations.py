"""Activations at the hooked vision layer, streamed; and the bounded stream the SAE trainer draws from.

:func:`stream_activations` runs images through the family adapter's *own* preprocessing (``adapter.prepare`` with
a short prompt — tiles, views and dynamic resolution included, for any supported family), captures the hooked
layer's output with a forward hook and stops the forward right there (the hook raises a private exception that is
caught here), so the language model never runs. It yields one :class:`ActivationBatch` per ``batch_size`` images
and never holds more than one batch.

Per image ``i`` of a batch: ``acts[i]`` is ``[P_i, d_in]`` float32 on the CPU — the image's patches in the
adapter's patch order (views stacked first, each view's grid row-major; ``P_i`` is the image's own patch count,
the batch's zero padding removed) — and ``grids[i]`` is ``(rows, cols)`` when those patches form one grid of the
image (one view), else ``None``.

:class:`RecordStream` turns a list of records into an endless, resumable stream of activation rows (records cycled,
each epoch in a seeded order; its state is one cursor plus the rows of a model batch not yet handed out), and
:class:`ShuffleBuffer` keeps a fixed number of rows from it and hands out random rows, refilling each slot taken.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from vsp_assert.concepts.sources import ImageRecord
from vsp_assert.engine.hooks import forward_hook, get_module
from vsp_assert.engine.models import LoadedModel
from vsp_assert.errors import InputError, ModelError

#: The prompt the adapters' chat templates wrap around the image (the vision tower never reads it).
DEFAULT_PROMPT = "describe the image"


@dataclass
class ActivationBatch:
    """The hooked layer's patches for a batch of records: ``acts[i]`` ``[P_i, d_in]`` float32 CPU."""

    records: list[ImageRecord]
    acts: list[torch.Tensor]
    grids: list[tuple[int, int] | None]


class _Stop(Exception):
    """Raised by the capture hook to end the forward after the hooked layer (never escapes this module)."""


def resolve_layer(loaded: LoadedModel, layer: str | None) -> str:
    """``layer`` checked against the model's vision layers, or the adapter's default (the layer fed to the LM)."""
    path = layer or loaded.adapter.default_hook_layer()
    loaded.adapter.validate_hook_layer(path)
    return path


def stream_activations(
    loaded: LoadedModel,
    records: Iterable[ImageRecord],
    *,
    layer: str | None = None,
    batch_size: int = 16,
    prompt: str | None = None,
) -> Iterator[ActivationBatch]:
    """Yield the hooked layer's patch activations, ``batch_size`` records at a time (see the module doc)."""
    if batch_size < 1:
        raise InputError("batch_size must be at least 1", field="batch_size", received=batch_size)
    path = resolve_layer(loaded, layer)
    module = get_module(loaded.model, path)
    chunk: list[ImageRecord] = []
    for record in records:
        chunk.append(record)
        if len(chunk) == batch_size:
            yield _run(loaded, module, path, chunk, prompt or DEFAULT_PROMPT)
            chunk = []
    if chunk:
        yield _run(loaded, module, path, chunk, prompt or DEFAULT_PROMPT)


def _run(loaded: LoadedModel, module: Any, path: str, records: list[ImageRecord], prompt: str) -> ActivationBatch:
    adapter = loaded.adapter
    images = [r.load() for r in records]
    prepared = adapter.prepare(images, [prompt] * len(images))  # on the CPU: layouts are read from here
    device, dtype = loaded.device, loaded.dtype
    inputs = {k: (v.to(device).to(dtype) if v.is_floating_point() else v.to(device)) if isinstance(v, torch.Tensor)
              else v for k, v in prepared.items()}
    captured: dict[str, torch.Tensor] = {}

    def grab(hidden: torch.Tensor) -> None:
        captured["z"] = hidden.detach()
        raise _Stop

    with forward_hook(module, grab), torch.inference_mode():
        try:
            loaded.model(**inputs)
        except _Stop:
            pass
    if "z" not in captured:
        raise ModelError(f"the hooked layer '{path}' did not run on the images", field="layer", received=path)
    patches = adapter.patches_of(captured["z"], len(images), prepared)  # [B, P_max, d]
    acts: list[torch.Tensor] = []
    grids: list[tuple[int, int] | None] = []
    for b in range(len(images)):
        pmap = adapter.patch_map(prepared, b)
        n = pmap.n_patches
        acts.append(patches[b, :n].float().cpu().clone())  # [P_b, d]
        rows, cols = pmap.grid
        grids.append((rows, cols) if pmap.views == 1 and rows * cols == n else None)
    return ActivationBatch(list(records), acts, grids)


class RecordStream:
    """Activation rows of ``records`` without end: epoch ``e`` visits every record once, in the order of a
    permutation seeded by ``(seed, e)``; model batches are ``image_batch`` consecutive records of that sequence.

    State: ``cursor`` (records extracted so far, over all epochs) and ``pending`` (``[R, d]`` rows of the last
    model batch not yet handed out). Restoring both gives the same rows as an uninterrupted stream.
    """

    def __init__(self, loaded: LoadedModel, records: Sequence[ImageRecord], *, layer: str, image_batch: int,
                 seed: int, cursor: int = 0, pending: torch.Tensor | None = None, prompt: str | None = None) -> None:
        if not records:
            raise InputError("no images to train on", field="images", fix="give a source with more images")
        self.loaded, self.records, self.layer = loaded, list(records), layer
        self.image_batch, self.seed, self.prompt = image_batch, seed, prompt
        self.cursor = cursor
        self.pending = pending
        self.activations = 0  # rows extracted by this object
        self.seconds = 0.0  # time spent extracting them
        self._orders: dict[int, np.ndarray] = {}

    def _record(self, i: int) -> ImageRecord:
        epoch, index = divmod(i, len(self.records))
        if epoch not in self._orders:
            self._orders = {epoch: np.random.default_rng([self.seed, epoch]).permutation(len(self.records))}
        return self.records[int(self._orders[epoch][index])]

    def _extract(self) -> torch.Tensor:
        batch = [self._record(self.cursor + i) for i in range(self.image_batch)]
        t0 = time.perf_counter()
        (out,) = list(stream_activations(self.loaded, batch, layer=self.layer, batch_size=len(batch),
                                         prompt=self.prompt))
        rows = torch.cat(out.acts)  # [Σ P_i, d]
        self.seconds += time.perf_counter() - t0
        self.activations += rows.shape[0]
        self.cursor += len(batch)
        return rows

    def take(self, n: int) -> torch.Tensor:
        """The next ``n`` rows ``[n, d]``."""
        parts: list[torch.Tensor] = []
        have = 0
        while have < n:
            if self.pending is None or self.pending.shape[0] == 0:
                self.pending = self._extract()
                continue
            part = self.pending[: n - have]
            self.pending = self.pending[n - have :]
            parts.append(part)
            have += part.shape[0]
        return torch.cat(parts)

    def state(self) -> dict[str, Any]:
        return {"cursor": self.cursor, "pending": None if self.pending is None else self.pending.clone()}


class ShuffleBuffer:
    """``size`` activation rows ``[size, d]``; :meth:`draw` hands out ``n`` random ones (without replacement)
    and refills their slots from the stream, so memory stays at ``size`` rows however long training runs."""

    def __init__(self, stream: RecordStream, size: int, data: torch.Tensor | None = None) -> None:
        self.stream = stream
        self.data = stream.take(size) if data is None else data  # [size, d]

    def draw(self, n: int, generator: torch.Generator) -> torch.Tensor:
        idx = torch.randperm(self.data.shape[0], generator=generator)[:n]  # [n]
        out = self.data[idx].clone()  # [n, d]
        self.data[idx] = self.stream.take(n)
        return out
