"""Text-to-image attention capture without ``output_attentions``.

Asking a transformers model for ``output_attentions=True`` forces eager attention and materialises
``[layers, batch, heads, seq, seq]``; for a VLM with thousands of image tokens that is most of the memory of the
forward. We need far less: for each output token, the attention of the *one query row* whose logits produced
it, restricted to the image-token keys. So we register an attention function, ``vsp_capture``, with
transformers' ``AttentionInterface``: it computes the layer's output with the efficient kernel (sdpa) and, only
while a :class:`AttentionRecorder` is active, recomputes the softmax for the selected query row(s) exactly as
eager attention does (``softmax(q·kᵀ·scaling + mask)`` in float32, cast to the query dtype) and keeps the image
columns. Memory is ``O(rows × image tokens)`` per layer instead of ``O(seq²)``.

The recorder is held in a context variable, so nothing leaks between cases or threads, and it records only
layers of the language model (each attention module carries ``layer_idx``). Layers with a sliding-window cache
(Gemma 3's local layers) see only the last keys during decoding; the recorder counts the tokens each layer has
processed, so it knows which sequence position a key index stands for, and image keys that left the window get
probability 0 (as the eager mask gives them). A layer that soft-caps its attention logits cannot be captured
(sdpa cannot soft-cap): the capture raises a ``ModelError`` instead of running a different model.

Shapes: ``query [B, H, Q, D]``, ``key [B, H_kv, K, D]``; one record is ``[B, H, R, N_img]`` for R recorded rows.
"""

from __future__ import annotations

import contextvars
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import torch

CAPTURE_IMPLEMENTATION = "vsp_capture"

_ACTIVE: contextvars.ContextVar[AttentionRecorder | None] = contextvars.ContextVar("vsp_attention", default=None)
_REGISTERED = False


@dataclass
class AttentionRecorder:
    """Collects, per LM layer and per forward call, the attention of the last query row(s) to image keys.

    ``image_positions [B, N_img]``: key positions (in the LM sequence, before any padding shift is applied by the
    caller) of the image tokens of each batch element. ``rows``: how many trailing query rows to keep per
    forward call (1 during generation: the row whose logits give the next token).
    """

    image_positions: torch.Tensor  # [B, N_img] long
    rows: int = 1
    layers: set[int] | None = None  # None = all layers
    records: dict[int, list[torch.Tensor]] = field(default_factory=dict)  # layer -> list of [B, H, R, N_img]
    processed: dict[int, int] = field(default_factory=dict)  # layer -> tokens it has run on while recording

    def record(
        self,
        module: torch.nn.Module,
        query: torch.Tensor,
        key: torch.Tensor,
        attention_mask: torch.Tensor | None,
        scaling: float | None,
    ) -> None:
        layer = int(getattr(module, "layer_idx", -1))
        seen = self.processed.get(layer, 0) + int(query.shape[2])
        self.processed[layer] = seen
        if self.layers is not None and layer not in self.layers:
            return
        # a sliding-window cache returns only the last keys: key index i is sequence position offset + i
        offset = max(seen - int(key.shape[2]), 0)
        self.records.setdefault(layer, []).append(
            image_attention_rows(query, key, attention_mask, scaling, self.image_positions, self.rows, offset)
        )

    def steps(self) -> int:
        return min((len(v) for v in self.records.values()), default=0)

    def stacked(self) -> torch.Tensor:
        """All records as ``[layers, steps, B, H, R, N_img]`` (layers in ascending order)."""
        layers = sorted(self.records)
        n = self.steps()
        # with device_map="auto" the LM's layers sit on several devices: gather on the first layer's
        device = self.records[layers[0]][0].device
        return torch.stack([torch.stack([r.to(device) for r in self.records[layer][:n]]) for layer in layers])


def image_attention_rows(
    query: torch.Tensor,  # [B, H, Q, D]
    key: torch.Tensor,  # [B, H_kv, K, D]
    attention_mask: torch.Tensor | None,  # [B, 1|H, Q, K] bool (True = attend) or additive float; None = causal
    scaling: float | None,
    image_positions: torch.Tensor,  # [B, N_img]
    rows: int = 1,
    key_offset: int = 0,
) -> torch.Tensor:
    """Attention probabilities of the last ``rows`` query rows to the image keys, ``[B, H, rows, N_img]``.

    Computed as eager attention computes them (float32 softmax over *all* keys, then cast to the query dtype),
    so they equal the matching entries of ``output_attentions`` under eager attention. ``key_offset``: the
    sequence position of key 0 (a sliding-window cache dropped the keys before it); image tokens before it get 0.
    """
    b, h, q_len, d = query.shape
    rows = min(rows, q_len)
    q = query[:, :, q_len - rows :, :]  # [B, H, R, D]
    n_rep = h // key.shape[1]
    k = key if n_rep == 1 else key.repeat_interleave(n_rep, dim=1)  # [B, H, K, D]
    scale = scaling if scaling is not None else d**-0.5
    scores = torch.matmul(q, k.transpose(2, 3)) * scale  # [B, H, R, K]
    k_len = k.shape[2]
    if attention_mask is not None:
        m = attention_mask[:, :, q_len - rows :, :k_len]
        if m.dtype == torch.bool:
            scores = scores.masked_fill(~m, torch.finfo(scores.dtype).min)
        else:
            scores = scores + m.to(scores.dtype)
    elif rows > 1:
        # no mask given means plain causal attention: row i (of the last R) sees keys <= K - R + i
        qpos = torch.arange(k_len - rows, k_len, device=scores.device)[:, None]
        kpos = torch.arange(k_len, device=scores.device)[None, :]
        scores = scores.masked_fill(kpos > qpos, torch.finfo(scores.dtype).min)
    probs = torch.softmax(scores, dim=-1, dtype=torch.float32).to(query.dtype)  # [B, H, R, K]
    keys = image_positions.to(probs.device) - key_offset  # [B, N_img] key index of each image token
    idx = keys.clamp_min(0)[:, None, None, :].expand(b, h, rows, image_positions.shape[1])
    picked = torch.gather(probs, 3, idx)  # [B, H, R, N_img]
    if key_offset:
        picked = picked.masked_fill((keys < 0)[:, None, None, :], 0.0)  # outside the window: never attended
    return picked.detach()


def _capture_attention_forward(
    module: torch.nn.Module,
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    attention_mask: torch.Tensor | None,
    scaling: float | None = None,
    **kwargs: Any,
) -> tuple[torch.Tensor, None]:
    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    if kwargs.get("softcap") is not None:
        from vsp_assert.errors import ModelError

        raise ModelError(
            f"{type(module).__name__} soft-caps its attention logits (softcap={kwargs['softcap']}); the capturing "
            "attention runs sdpa, which cannot, so it would not run the model's attention",
            field="attn_logit_softcapping",
            received=kwargs["softcap"],
            fix="set text_config.attn_logit_softcapping=None, or use eager attention with output_attentions=True",
        )
    out, _ = sdpa_attention_forward(module, query, key, value, attention_mask, scaling=scaling, **kwargs)
    recorder = _ACTIVE.get()
    if recorder is not None:
        recorder.record(module, query, key, attention_mask, scaling)
    return out, None


def register() -> str:
    """Register ``vsp_capture`` with transformers (idempotent) and return its name."""
    global _REGISTERED
    if not _REGISTERED:
        from transformers import AttentionInterface
        from transformers.masking_utils import AttentionMaskInterface, sdpa_mask

        AttentionInterface.register(CAPTURE_IMPLEMENTATION, _capture_attention_forward)
        AttentionMaskInterface.register(CAPTURE_IMPLEMENTATION, sdpa_mask)
        _REGISTERED = True
    return CAPTURE_IMPLEMENTATION


@contextmanager
def recording(recorder: AttentionRecorder) -> Iterator[AttentionRecorder]:
    """Activate ``recorder`` for the forward passes run inside the block; always deactivated on exit."""
    token = _ACTIVE.set(recorder)
    try:
        yield recorder
    finally:
        _ACTIVE.reset(token)


def active_recorder() -> AttentionRecorder | None:
    return _ACTIVE.get()


# ---------------------------------------------------------------------- aggregation into Trace.attention
#: How per-layer attention becomes ``Trace.attention``: ``mass`` averages each layer's raw attention to the image
#: and then renormalises over patches, so the layers that put most of their attention on the image dominate;
#: ``layer`` renormalises each layer over the patches first and then averages, so every chosen layer counts the
#: same whatever share of its attention went to the image (see docs/truth.md for what each finds).
AGGREGATIONS = ("mass", "layer")


@dataclass(frozen=True)
class AggregatedAttention:
    """One batch element's attention after aggregation.

    ``attention [T, P]`` (rows sum to 1); ``by_layer [L, T, P]`` (each layer's rows renormalised, sinks removed);
    ``mass [L, T]``: the share of each layer's attention (over the selected heads) that went to image tokens;
    ``sinks``: patches dropped as attention sinks."""

    attention: torch.Tensor
    by_layer: torch.Tensor
    mass: torch.Tensor
    sinks: tuple[int, ...] = ()


def aggregate_attention(
    rows: torch.Tensor,  # [L, T, H, N_img]: per layer, output token and head, the attention to each image token
    to_patches: Any,  # callable [..., N_img] -> [..., P] (PatchMap.to_patches)
    *,
    mode: str = "mass",
    layers: list[int] | None = None,
    heads: dict[int, list[int]] | None = None,
    sink_share: float | None = None,
    min_mass: float = 0.0,
) -> AggregatedAttention:
    """Per-layer rows → ``Trace.attention``.

    ``layers``: the LM layer index of each of the ``L`` rows (for ``heads``). ``heads``: per layer, the heads to
    average (a layer not named keeps all; an empty list drops the layer). ``sink_share``: a patch that receives at
    least this share of a layer's image attention from *every* output token and every selected head is an
    attention sink (it draws attention whatever the content) and is removed from that layer before renormalising.
    ``min_mass`` (``layer`` mode): a layer that puts less than this share of a token's attention on the image is
    left out of that token's average (it hardly looked at the image; renormalised, its few crumbs would count as
    much as a layer that looked); when every layer is below it, all count.
    """
    if mode not in AGGREGATIONS:
        from vsp_assert.errors import InputError

        raise InputError("unknown attention aggregation", field="attention_aggregation", received=mode,
                         allowed=", ".join(AGGREGATIONS))
    rows = rows.float()
    n_layers = rows.shape[0]
    ids = layers if layers is not None else list(range(n_layers))
    kept: list[torch.Tensor] = []
    for i in range(n_layers):
        chosen = (heads or {}).get(ids[i])
        if chosen is not None and not chosen:
            kept.append(torch.zeros_like(rows[i, :, 0]))  # [T, N]: the layer is left out
            continue
        sel = rows[i] if chosen is None else rows[i][:, list(chosen)]  # [T, H', N]
        kept.append(sel.mean(1))
    dropped = [bool(chosen is not None and not chosen) for chosen in ((heads or {}).get(j) for j in ids)]
    mapped = to_patches(torch.stack(kept))  # [L, T, P]
    mass = mapped.sum(-1)  # [L, T]
    sinks: set[int] = set()
    if sink_share is not None:
        for i in range(n_layers):
            if dropped[i]:
                continue
            chosen = (heads or {}).get(ids[i])
            per_head = to_patches(rows[i] if chosen is None else rows[i][:, list(chosen)])  # [T, H', P]
            head_share = per_head / per_head.sum(-1, keepdim=True).clamp_min(1e-30)
            sink = (head_share >= sink_share).all(0).all(0)  # [P]: every token, every head
            sinks.update(int(p) for p in sink.nonzero().flatten())
        if sinks:
            mapped = mapped.clone()
            mapped[..., sorted(sinks)] = 0.0
    by_layer = mapped / mapped.sum(-1, keepdim=True).clamp_min(1e-30)  # [L, T, P]
    live = [i for i in range(n_layers) if not dropped[i]] or list(range(n_layers))
    if mode == "mass":
        mean = mapped[live].mean(0)  # [T, P]
    else:
        weight = (mass[live] >= min_mass).float()  # [L', T]: the layers that looked at the image, per token
        weight = torch.where(weight.sum(0, keepdim=True) > 0, weight, torch.ones_like(weight))
        mean = (by_layer[live] * weight[..., None]).sum(0) / weight.sum(0)[:, None]  # [T, P]
    attention = mean / mean.sum(-1, keepdim=True).clamp_min(1e-30)
    return AggregatedAttention(attention, by_layer, mass, tuple(sorted(sinks)))
