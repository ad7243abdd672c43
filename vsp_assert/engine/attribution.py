"""Attribution: what each SAE latent did for each output token (gradient × activation through the SAE).

Attention says where an answer token *looked*; attribution says what it *used*. For output token ``t`` and latent
``k`` the attribution is the first-order estimate of how much ablating ``k`` (on every patch) would lower the
token's log-probability::

    a[t, k] = Σ_p f[p, k] · (∂ objective_t / ∂ z[p]) · W_dec[k]        (· the SAE's normalisation scale, if any)

with the hooked activations written as ``z = decode(f) + error`` and the error term held fixed — exactly the
edit an ablation makes (:mod:`vsp_assert.engine.interventions`), so ``a[t, k] ≈ objective_t − objective_t(ablate k)``.
Positive: the latent supports the token; negative: it argues against it.

``objective_t`` is the log-probability of answer token ``t`` (teacher-forced on the answer's own prefix), taken
as log-odds (``log p − log(1 − p)``, see :func:`token_objective`): the same wherever the token is uncertain, and
still informative where the answer is certain, where a plain log-probability has a gradient of ~0. With a
*contrast* answer (a case's ``correct:``), the objective of the first token where the two answers differ is
``log p(answer token) − log p(contrast token)``: what made the model say this rather than that. Every other token
keeps its plain objective. :func:`ablation_effects` measures the same objective under true ablations (what the
attribution estimates; ``tests/test_attribution.py`` checks their rank correlation on the shapes world).

Cost: one teacher-forced forward of ``T`` identical rows (one per output token; families with ``vision_once`` run
the vision tower once and expand at the hook) and **one** backward pass, which reads the gradient at the hooked
layer only (``torch.autograd.grad``: no parameter gradient is accumulated, the model is left as found). The
gradient is ``[T, P, d_in]``; it meets the SAE one chunk of patches at a time and reads only what fired there
(the patches' active latents and their decoder rows): no ``[P, d_sae]`` tensor, dense or gradient, is ever
built, so a 64k-latent SAE costs what its ``k`` costs. ``Scratchpad.attribution_steps`` > 1 averages the
gradient along the path that scales all latents from 0 to their value (integrated gradients, ``T × steps``
rows in the same one batch); the default, 1, is the plain gradient × activation.

Shapes: hooked patches ``x [P, d_in]``; codes per chunk ``ids, values [C, w]``; gradient ``G [T, P, d_in]``; result
``[T, d_sae]`` float32 on the CPU.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import torch

from vsp_assert.engine.hooks import forward_hook
from vsp_assert.errors import InputError

if TYPE_CHECKING:
    from vsp_assert.engine.trace import Replay, Trace

#: the Scratchpad that made a trace (typed loosely: the Scratchpad imports this module, never the reverse)
Pad = Any

#: integration steps when the Scratchpad sets no ``attribution_steps``: 1 is the plain gradient × activation
DEFAULT_STEPS = 1
#: the largest block one chunk may hold, in elements (``T × chunk × w × d_in``): 32 M floats = 128 MB
CHUNK_ELEMENTS = 1 << 25


def _replay(trace: Trace) -> Replay:
    if trace.replay is None:
        raise InputError("this trace has no replay record, so it cannot be attributed", field="trace",
                         fix="use a trace returned by Scratchpad.run")
    return trace.replay


def contrast_ids(pad: Pad, trace: Trace, contrast: str) -> list[int]:
    """The token ids of a contrast answer (``correct:``) as the model would generate it after this prompt.

    A tokenizer that marks a word boundary in the token itself (SentencePiece ``▁``, byte-level BPE ``Ġ``) gives
    the answer's first token with that mark; the contrast is tokenised the same way (with a leading space when
    the answer's first token carries one), so ``red`` contrasts with the token the model would really emit.
    """
    tok = pad.adapter.tokenizer
    text = str(contrast).strip()
    if not text:
        raise InputError("the contrast answer is empty", field="correct", received=contrast)
    spaced = False
    if trace.n_tokens:
        first = tok.convert_ids_to_tokens(int(trace.output_ids[0]))
        spaced = isinstance(first, str) and first[:1] in ("▁", "Ġ", " ")
    ids = list(tok(((" " + text) if spaced else text), add_special_tokens=False)["input_ids"])
    if not ids:
        raise InputError("the contrast answer has no tokens", field="correct", received=contrast)
    return [int(i) for i in ids]


def _objective_targets(trace: Trace, contrast: Sequence[int] | None) -> tuple[torch.Tensor, torch.Tensor | None]:
    """``(answer ids [T], contrast ids [T] or None)``; the contrast id is -1 on tokens compared plainly."""
    answer = trace.output_ids.long()
    if contrast is None:
        return answer, None
    other = torch.full_like(answer, -1)
    for t in range(trace.n_tokens):
        if t >= len(contrast):
            break
        if int(contrast[t]) != int(answer[t]):
            other[t] = int(contrast[t])  # the first token where the two answers part
            break
    return answer, other


def token_objective(logits: torch.Tensor, answer: torch.Tensor, other: torch.Tensor | None = None) -> torch.Tensor:
    """The objective of each output token from its logits ``[N, V]``: ``[N]``.

    Plain: the token's log-odds, ``logit[a] − logsumexp(logit[≠ a])`` = ``log p − log(1 − p)``. It equals the
    log-probability's change wherever the token is not yet certain, and unlike the log-probability it does not
    flatten out when ``p`` reaches 1 (a confident shortcut answer has a log-probability gradient of ~0, so the
    plain log-probability would attribute nothing to anything). Contrastive (``other[n] >= 0``):
    ``logit[a] − logit[c]`` = ``log p(a) − log p(c)``.
    """
    answer = answer.to(logits.device)
    rows = torch.arange(logits.shape[0], device=logits.device)
    own = logits[rows, answer]  # [N]
    rest = logits.scatter(1, answer[:, None], float("-inf"))  # [N, V]
    objective = own - torch.logsumexp(rest, dim=-1)
    if other is not None:
        other = other.to(logits.device)
        against = own - logits[rows, other.clamp_min(0)]
        objective = torch.where(other >= 0, against, objective)
    return objective


def _codes(sae: Any, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """What fires on each row of ``x [C, d_in]``: ``(ids [C, w] long, values [C, w])`` (sparse encode when the
    SAE has it; padding slots hold value 0 and add nothing)."""
    if hasattr(sae, "encode_sparse"):
        codes = sae.encode_sparse(x)
        return codes.indices.long(), codes.values.to(sae.W_dec.dtype)
    f = sae.encode(x)  # [C, d_sae]
    width = max(1, int((f != 0).sum(-1).max())) if f.numel() else 1
    values, ids = torch.topk(f.abs(), k=min(width, f.shape[-1]), dim=-1)
    return ids, f.gather(-1, ids)


def _scale(sae: Any, x: torch.Tensor) -> torch.Tensor | None:
    """``[C, 1]``: the factor the SAE's run-time normalisation puts on a reconstruction (None without one)."""
    if not getattr(sae, "_normalises", False):
        return None
    _, undo = sae._norm_in(x.to(sae.W_dec.dtype))
    return undo[0]


def _step(sae: Any, width: int, T: int = 1) -> int:
    """Patches per chunk so that ``T × chunk × width × d_in`` stays under :data:`CHUNK_ELEMENTS`."""
    return max(1, CHUNK_ELEMENTS // max(1, T * width * int(sae.d_in)))


def decoded_part(sae: Any, x: torch.Tensor, *, chunk: int | None = None) -> torch.Tensor:
    """``[P, d_in]``: the part of the hooked activations the latents write, ``f @ W_dec`` (times the
    normalisation scale), i.e. what ablating every latent would take away; one chunk of patches at a time."""
    w_dec = sae.W_dec
    step = chunk or _step(sae, int(getattr(sae.cfg, "k", None) or 64))
    parts = []
    with torch.no_grad():
        for start in range(0, x.shape[0], step):
            xc = x[start: start + step].to(w_dec.device)
            ids, values = _codes(sae, xc)  # [C, w]
            written = torch.einsum("cw,cwd->cd", values, w_dec[ids])  # [C, d_in]
            scale = _scale(sae, xc)
            parts.append((written if scale is None else written * scale).to(x.device, x.dtype))
    return torch.cat(parts) if parts else torch.zeros_like(x)


def hooked_gradient(pad: Pad, trace: Trace, contrast: Sequence[int] | None = None, *, steps: int = 1
                    ) -> tuple[torch.Tensor, torch.Tensor]:
    """``(x [P, d_in], G [T, P, d_in])``: the hooked patches of this case and the gradient of each output token's
    objective with respect to them, from one batched forward and one backward.

    ``steps`` > 1: the gradient is averaged along the path that scales every latent by ``α`` (midpoints
    ``α = (i + ½) / steps``) with the error term kept — integrated gradients, ``T × steps`` rows in the one
    batch. ``steps = 1`` is the plain gradient at the case itself."""
    replay = _replay(trace)
    adapter = pad.adapter
    T = trace.n_tokens
    n = T * steps  # row r = (step r // T, token r % T)
    single = adapter.teacher_forced_inputs(dict(replay.inputs), trace.output_ids)  # CPU, [1, L + T]
    layout = adapter.intervention_inputs(single, n)
    batch = pad._to_device(layout)
    held: dict[str, torch.Tensor] = {}

    def edit(hidden: torch.Tensor) -> torch.Tensor:
        base = hidden.detach()
        if getattr(adapter, "vision_once", False) and base.shape[0] == 1 and n > 1:
            base = base.expand(n, *base.shape[1:]).contiguous()
        x = adapter.patches_of(base, n, layout)  # [n, P, d_in]
        held["x"] = x[0].detach()
        if steps > 1:
            written = decoded_part(pad.sae, x[0])  # [P, d_in]
            alpha = (torch.arange(steps, device=x.device, dtype=x.dtype) + 0.5) / steps  # [steps]
            alpha = alpha.repeat_interleave(T)  # [n]
            x = x - (1.0 - alpha)[:, None, None] * written[None].to(x.dtype)
        leaf = x.detach().clone().requires_grad_(True)
        held["leaf"] = leaf
        return adapter.with_patches(base, leaf, layout)

    answer, other = _objective_targets(trace, contrast)
    rep_answer = answer.repeat(steps)
    rep_other = None if other is None else other.repeat(steps)
    ids = batch["input_ids"]
    with torch.inference_mode(False), torch.enable_grad(), forward_hook(pad.hook_module, edit), \
            pad._read_only_last(T + 1):
        out = pad.model(**batch, attention_mask=torch.ones_like(ids), logits_to_keep=T + 1)
        rows = torch.arange(n, device=out.logits.device)
        objective = token_objective(out.logits[rows, rows % T].float(), rep_answer, rep_other)  # [n]
        if "leaf" not in held:
            raise InputError("the hooked layer did not run in the attribution forward", field="hook_layer",
                             received=pad.hook_layer)
        (grad,) = torch.autograd.grad(objective.sum(), [held["leaf"]])
    pad.stats["attribution_backward"] += 1
    grad = grad.detach().reshape(steps, T, *grad.shape[1:]).mean(0)  # [T, P, d_in]
    return held["x"], grad


def attribution_from_gradient(sae: Any, x: torch.Tensor, grad: torch.Tensor, *, n_patches: int | None = None,
                              chunk: int | None = None) -> torch.Tensor:
    """``[T, d_sae]``: ``Σ_p f[p, k] · (G[t, p] · W_dec[k]) · scale[p]``, one chunk of patches at a time.

    ``x [P, d_in]`` the hooked patches, ``grad [T, P, d_in]``. Per chunk only what fired is read: the decoder rows
    of each patch's active latents (``[C, w, d_in]``) meet that patch's gradient, and the products are added into
    their latents' columns; no ``[P, d_sae]`` tensor is built. ``chunk``: patches per chunk (default: as many as
    keep ``T × chunk × w × d_in`` under :data:`CHUNK_ELEMENTS`).
    """
    P = int(n_patches if n_patches is not None else x.shape[0])
    T = int(grad.shape[0])
    w_dec = sae.W_dec  # [d_sae, d_in]
    device, dtype = w_dec.device, w_dec.dtype
    out = torch.zeros(T, int(sae.d_sae), dtype=torch.float32, device=device)
    if T == 0 or P == 0:
        return out.cpu()
    step = chunk or _step(sae, int(getattr(sae.cfg, "k", None) or 64), T)
    with torch.no_grad():
        for start in range(0, P, step):
            xc = x[start: start + step].to(device)  # [C, d_in]
            gc = grad[:, start: start + step].to(device, dtype)  # [T, C, d_in]
            scale = _scale(sae, xc)
            if scale is not None:
                gc = gc * scale[None]  # the reconstruction is scaled back by the input's norm statistics
            ids, values = _codes(sae, xc)  # [C, w]
            per_slot = torch.einsum("tcd,cwd->tcw", gc, w_dec[ids]) * values[None]  # [T, C, w]
            out.scatter_add_(1, ids.reshape(1, -1).expand(T, -1), per_slot.reshape(T, -1).float())
    return out.cpu()


def attribute(pad: Pad, trace: Trace, contrast: str | None = None, *, steps: int | None = None,
              chunk: int | None = None) -> torch.Tensor:
    """``Trace.attribution`` (with ``contrast``, the contrastive one) of a trace made by ``pad``: ``[T, d_sae]``."""
    if trace.n_tokens == 0:
        return torch.zeros(0, pad.sae.d_sae)
    ids = contrast_ids(pad, trace, contrast) if contrast is not None else None
    chosen: int = steps if steps is not None else int(getattr(pad, "attribution_steps", DEFAULT_STEPS))
    x, grad = hooked_gradient(pad, trace, ids, steps=max(1, chosen))
    return attribution_from_gradient(pad.sae, x, grad, n_patches=trace.n_patches, chunk=chunk)


def ablation_effects(pad: Pad, trace: Trace, latent_sets: Sequence[Sequence[int]],
                     contrast: str | None = None, *, batch: int = 64) -> torch.Tensor:
    """``[K, T]``: the true drop of each output token's objective (the one :func:`attribute` estimates) when the
    latents of ``latent_sets[k]`` are ablated on every patch — teacher-forced, in batches of ``batch`` rows, with
    the interventions' own edit (error term kept)."""
    from vsp_assert.engine.interventions import Intervention, make_edit, resolve

    replay = _replay(trace)
    T = trace.n_tokens
    answer, other = _objective_targets(trace, contrast_ids(pad, trace, contrast) if contrast is not None else None)
    single = pad.adapter.teacher_forced_inputs(dict(replay.inputs), trace.output_ids)
    specs = [resolve(Intervention.ablate(*[int(i) for i in ids]), pad.sae.labels, trace.n_patches)
             for ids in latent_sets]
    rows_out: list[torch.Tensor] = []
    base: torch.Tensor | None = None
    for start in range(0, max(len(specs), 1), batch):
        part = specs[start: start + batch]
        rows = [None, *part]
        layout = pad.adapter.intervention_inputs(single, len(rows))
        inputs = pad._to_device(layout)
        edit = make_edit(pad.sae, pad.adapter, rows, layout, same_case=True)
        with forward_hook(pad.hook_module, edit), pad._read_only_last(T + 1), torch.inference_mode():
            logits = pad.model(**inputs, attention_mask=torch.ones_like(inputs["input_ids"]),
                               logits_to_keep=T + 1).logits.float()  # [R, T + 1, V]
        pad.stats["intervention_forward"] += 1
        value = torch.stack([token_objective(logits[:, t], answer[t].expand(len(rows)),
                                             None if other is None else other[t].expand(len(rows)))
                             for t in range(T)], dim=1).cpu()  # [R, T]
        base = value[0] if base is None else base
        rows_out.append(base[None] - value[1:])
    return torch.cat(rows_out)[: len(specs)] if rows_out else torch.zeros(0, T)
