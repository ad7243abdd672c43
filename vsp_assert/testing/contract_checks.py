"""The invariants of the adapter contract, one function each (run through :mod:`vsp_assert.testing.contract`).

Each check takes the contract (model, adapter, Scratchpad, images, prompts, expectations) and an
:class:`Outcome`, measures one figure and records every broken promise as a problem; the public module turns
that into a named pass/fail :class:`~vsp_assert.testing.contract.CheckResult`. The checks compare the adapter
with ground truth it cannot influence: the processor's placement of the image tokens, the model's own wiring
(perturb encoder rows at the fed layer, see which LM input embeddings move), eager ``output_attentions``, and
the model's logits with and without an edit.

Shapes: hooked layer output ``z`` (``[R, S, d]`` or packed ``[N, d]``); patches ``[B, P_max, d]``; LM input
embeddings ``[B, L, d_text]``; logits ``[B, L, V]``; trace attention ``[T, P]``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

from vsp_assert.engine.hooks import count_hooks, forward_hook, last_positions_only
from vsp_assert.testing.contract_types import Outcome, Subject


def _max_diff(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a.double() - b.double()).abs().max()) if a.numel() else 0.0


def _image_token_id(config: Any, inputs: dict[str, Any] | None = None) -> int:
    """The placeholder id the processor put where the visual tokens go: the video one for video inputs."""
    kind = "video" if inputs is not None and "pixel_values_videos" in inputs else "image"
    value = getattr(config, f"{kind}_token_id", None)
    return int(value if value is not None else getattr(config, f"{kind}_token_index"))


def hooked_output(c: Subject, inputs: dict[str, torch.Tensor], module: Any = None) -> torch.Tensor:
    """The hooked layer's output of one plain forward (``module``: another layer than the Scratchpad's)."""
    seen: dict[str, torch.Tensor] = {}

    def grab(hidden: torch.Tensor) -> None:
        seen["z"] = hidden.detach().clone()

    with forward_hook(module if module is not None else c.pad.hook_module, grab), torch.no_grad():
        c.model(**inputs)
    return seen["z"]


class _Stop(Exception):
    pass


def lm_input_embeds(model: Any, inputs: dict[str, torch.Tensor], hook_module: Any = None,
                    edit: Callable[[torch.Tensor], torch.Tensor | None] | None = None) -> torch.Tensor:
    """``inputs_embeds [B, L, d_text]`` the LM of ``model`` receives (image features scattered in), the LM
    itself not run; with ``edit`` applied to ``hook_module``'s output (a vision layer)."""
    seen: dict[str, torch.Tensor] = {}

    def grab(_module: Any, _args: Any, kwargs: dict[str, Any]) -> None:
        seen["e"] = kwargs["inputs_embeds"].detach().clone()
        raise _Stop

    lm = next((getattr(owner, name) for owner in (getattr(model, "model", None), model) if owner is not None
               for name in ("language_model", "text_model") if hasattr(owner, name)), None)
    if lm is None:
        raise RuntimeError("the model has no language_model / text_model submodule to read the LM input from")
    handle = lm.register_forward_pre_hook(grab, with_kwargs=True)
    try:
        with torch.no_grad():
            if edit is None:
                model(**inputs)
            else:
                with forward_hook(hook_module, edit):
                    model(**inputs)
    except _Stop:
        pass
    finally:
        handle.remove()
    return seen["e"]


def _moved(c: Subject, inputs: dict[str, torch.Tensor],
           edit: Callable[[torch.Tensor], torch.Tensor | None]) -> torch.Tensor:
    """``[B, L]`` bool: the LM input embeddings that ``edit`` at the fed layer changes."""
    plain = lm_input_embeds(c.model, inputs)
    return (plain != lm_input_embeds(c.model, inputs, c.fed_module, edit)).any(-1)


def _replay_inputs(trace: Any) -> dict[str, Any]:
    """The model inputs a trace was produced from (the Scratchpad always records them)."""
    if trace.replay is None:
        raise RuntimeError("the trace holds no replay record")
    return dict(trace.replay.inputs)


def _bump(width: int) -> torch.Tensor:
    """A non-constant change of one row (a constant one is invisible through a LayerNorm): ``[d]``."""
    return 3.0 * torch.linspace(-1.0, 1.0, width)


# ---------------------------------------------------------------------- vision side
def hook_sees_every_patch(c: Subject, out: Outcome) -> None:
    """Every patch the map counts is one distinct row of the hooked output, read and written back exactly; rows
    the adapter does not read reach the LM only through image tokens that carry no patch."""
    adapter, n = c.adapter, len(c.images)
    inputs = adapter.prepare(c.images, c.prompts)
    z = hooked_output(c, inputs, c.fed_module)
    patches = adapter.patches_of(z, n, inputs)  # [B, P_max, d]
    maps = [adapter.patch_map(inputs, b) for b in range(n)]
    counts = [m.n_patches for m in maps]
    expected = (n, max(counts), adapter.vision_width())
    if tuple(patches.shape) != expected:
        out.figure = float(abs(patches.shape[1] - max(counts))) if patches.dim() == 3 else float("nan")
        out.problems.append(f"patches_of gave {tuple(patches.shape)}, the patch maps count {expected}")
        return
    for b, count in enumerate(counts):
        out.require(bool(patches[b, :count].abs().sum(-1).gt(0).all()), f"element {b}: a patch read as all zeros")
        out.require(not bool(patches[b, count:].any()), f"element {b}: padding past its {count} patches not zero")
    out.require(torch.equal(adapter.with_patches(z, patches, inputs), z), "with_patches(z, patches_of(z)) != z")
    # each patch gets a marker; each marker must land in exactly one row, and nothing else may move
    marks = torch.zeros_like(patches)
    for b, count in enumerate(counts):
        marks[b, :count] = (1000.0 + sum(counts[:b]) + torch.arange(count, dtype=z.dtype))[:, None]
    rows = adapter.with_patches(z, marks, inputs).reshape(-1, z.shape[-1])  # [rows, d]
    flat = z.reshape(-1, z.shape[-1])
    written = (rows != flat).any(-1)  # [rows]
    ids = rows[:, 0] - 1000.0  # [rows]: the marker of a written row
    marker = written & (rows == rows[:, :1]).all(-1) & (ids >= 0) & (ids < sum(counts)) & (ids == ids.round())
    found = torch.bincount(ids[marker].round().long(), minlength=sum(counts))  # [ΣP]: rows holding each patch
    out.figure = float((found != 1).sum())
    out.require(out.figure == 0, f"{int(out.figure)} of {sum(counts)} patches are not exactly one row of the "
                                 "hooked output")
    out.require(not bool((written & ~marker).any()), "with_patches changed rows of the hooked output that hold no "
                                                     "patch")
    unread = ~written
    if bool(unread.any()):  # CLS-like rows: perturbed, they may only move image tokens that carry no patch
        def bump(hidden: torch.Tensor) -> torch.Tensor:
            h = hidden.clone()
            h.reshape(-1, h.shape[-1])[unread] += _bump(h.shape[-1]).to(h.dtype)
            return h

        moved = _moved(c, inputs, bump)  # [B, L]
        for b, pmap in enumerate(maps):
            allowed = torch.zeros_like(moved[b])
            allowed[pmap.image_positions[pmap.dense().sum(1) == 0]] = True
            out.require(not bool((moved[b] & ~allowed).any()),
                        f"element {b}: rows the adapter does not read reach the LM through patch-carrying or text "
                        "tokens (a patch is missed)")


def map_matches_processor(c: Subject, out: Outcome) -> None:
    """The map's image positions are the processor's image tokens; its rows are distributions over patches in
    the family's declared shape (:class:`~vsp_assert.testing.contract.MapExpectations`)."""
    adapter, expect = c.adapter, c.expect
    inputs = adapter.prepare(c.images, c.prompts)
    image_id = _image_token_id(c.model.config, inputs)
    bad = 0
    for b in range(len(c.images)):
        pmap = adapter.patch_map(inputs, b)
        placed = torch.nonzero(inputs["input_ids"][b] == image_id).flatten()
        if not torch.equal(pmap.image_positions, placed):
            bad += max(int(placed.numel()), 1)
            out.problems.append(f"element {b}: image_positions {pmap.image_positions.tolist()[:6]}… are not the "
                                f"processor's image tokens {placed.tolist()[:6]}…")
            continue
        m = pmap.dense()  # [N_img, P]
        rows, cols = pmap.grid
        out.require(m.shape[1] == pmap.views * rows * cols,
                    f"element {b}: {m.shape[1]} patches, not views × grid = {pmap.views}×{rows}×{cols}")
        carrying = m.sum(1) > 0
        sums_ok = torch.isclose(m[carrying].sum(1), torch.ones(int(carrying.sum()), dtype=m.dtype))
        bad += int((~sums_ok).sum()) + int((m < 0).any(1).sum())
        out.require(bool(sums_ok.all()) and not bool((m < 0).any()),
                    f"element {b}: a token's weights over its patches are not a distribution (≥ 0, summing to 1)")
        per_token = (m[carrying] > 0).sum(1)
        if expect.patches_per_token is not None:
            out.require(bool((per_token == expect.patches_per_token).all()),
                        f"element {b}: tokens carry {sorted(set(per_token.tolist()))} patches, the family "
                        f"declares {expect.patches_per_token}")
        if expect.max_patches_per_token is not None:
            out.require(bool((per_token <= expect.max_patches_per_token).all()),
                        f"element {b}: a token carries more than {expect.max_patches_per_token} patches")
        if not expect.shared_patches:
            out.require(bool((m.gt(0).sum(0) <= 1).all()), f"element {b}: a patch is carried by two tokens")
        if expect.empty_tokens:
            out.require(not bool(carrying.all()), f"element {b}: no image token without a patch (CLS, newline)")
        else:
            out.require(bool(carrying.all()), f"element {b}: an image token carries no patch")
        if expect.every_patch_reaches:
            out.require(bool((m.sum(0) > 0).all()), f"element {b}: a patch reaches the LM through no token")
    out.figure = float(bad)


def map_follows_wiring(c: Subject, out: Outcome) -> None:
    """Perturb one patch at the fed layer: exactly the image tokens the map names get new LM embeddings."""
    adapter = c.adapter
    single = adapter.element_inputs(adapter.prepare([c.images[1]], [c.prompts[0]]), 0)
    pmap = adapter.patch_map(single, 0)
    chosen = torch.randperm(pmap.n_patches, generator=torch.Generator().manual_seed(0))[:6].tolist()
    batch = adapter.repeat_inputs(single, len(chosen))

    def bump(hidden: torch.Tensor) -> torch.Tensor:
        x = adapter.patches_of(hidden, len(chosen), batch).clone()  # [R, P, d]
        x[torch.arange(len(chosen)), torch.tensor(chosen)] += _bump(x.shape[-1]).to(x.dtype)
        return adapter.with_patches(hidden, x, batch)

    changed = _moved(c, batch, bump)  # [R, L]
    m = pmap.dense()
    wrong = []
    for r, p in enumerate(chosen):
        expected = torch.zeros_like(changed[r])
        expected[pmap.image_positions[m[:, p] > 0]] = True
        if not torch.equal(changed[r], expected):
            wrong.append(p)
    out.figure = float(len(wrong))
    out.require(not wrong, f"patches {wrong}: the LM embeddings that change are not the tokens the map names")


# ---------------------------------------------------------------------- attention
def _eager_patch_attention(c: Subject, trace: Any) -> torch.Tensor:
    """Eager ``output_attentions`` rows that produced each output token, mapped to patches like the Trace:
    ``[T, P]``, mean over the Scratchpad's layers and the heads, normalised per token."""
    adapter, model = c.adapter, c.model
    inputs = adapter.teacher_forced_inputs(trace.replay.inputs, trace.output_ids)
    model.set_attn_implementation({"text_config": "eager"})
    try:
        with torch.no_grad():
            result = model(**inputs, attention_mask=torch.ones_like(inputs["input_ids"]), output_attentions=True)
    finally:
        adapter.install_attention_capture()
    att = torch.stack([result.attentions[i] for i in c.pad.layers])[:, 0]  # [L, H, S, S]
    pmap = adapter.patch_map(inputs, 0)
    rows = torch.arange(trace.replay.prompt_len - 1, trace.replay.prompt_len - 1 + trace.n_tokens)
    per_token = att[:, :, rows][..., pmap.image_positions].mean(dim=(0, 1))  # [T, N_img]
    mapped = pmap.to_patches(per_token)  # [T, P]
    return mapped / mapped.sum(-1, keepdim=True)


def attention_equals_eager(c: Subject, out: Outcome) -> None:
    """The attention the capture records (LM under sdpa) equals eager ``output_attentions`` mapped to patches."""
    from vsp_assert.engine.attention import CAPTURE_IMPLEMENTATION

    implementation = c.model.config.text_config._attn_implementation
    if implementation != CAPTURE_IMPLEMENTATION:
        out.figure = float("nan")
        out.problems.append(f"the LM runs {implementation!r}, not the capture (install_attention_capture)")
        return
    for image, prompt in zip(c.images[:2], c.prompts[:2]):
        trace = c.pad.run(image, prompt)
        out.require(trace.n_tokens > 0, "no answer token generated")
        expected = _eager_patch_attention(c, trace)
        out.figure = max(out.figure, _max_diff(trace.attention, expected))
        out.require(torch.allclose(trace.attention, expected.to(trace.attention.dtype), rtol=1e-4, atol=1e-6),
                    f"captured attention differs from eager by up to {out.figure:.3g}")


# ---------------------------------------------------------------------- interventions
def noop_intervention_is_exact(c: Subject, out: Outcome) -> None:
    """An intervention that changes nothing (ablating nothing, steering by zero) leaves the logits bit-identical."""
    from vsp_assert import Intervention
    from vsp_assert.engine.interventions import make_edit, resolve

    adapter, pad = c.adapter, c.pad
    inputs = adapter.prepare(c.images[:2], c.prompts[:2])
    n = max(adapter.patch_map(inputs, b).n_patches for b in range(2))
    rows = [resolve(Intervention.ablate(), pad.labels, n), resolve(Intervention.steer(3, scale=1.0), pad.labels, n)]
    with torch.no_grad():
        plain = c.model(**inputs).logits  # [2, L, V]
        with forward_hook(pad.hook_module, make_edit(pad.sae, adapter, rows, inputs)):
            patched = c.model(**inputs).logits
    out.figure = _max_diff(plain, patched)
    out.require(torch.equal(plain, patched), f"a no-op intervention moved the logits by up to {out.figure:.3g}")


def ablation_from_first_image_token(c: Subject, out: Outcome) -> None:
    """Ablating the top latent changes the logits from the first image token on, and not before it."""
    from vsp_assert import Intervention
    from vsp_assert.engine.interventions import make_edit, resolve

    pad = c.pad
    trace = pad.run(c.images[0], c.prompts[0])
    inputs = _replay_inputs(trace)
    top = int(trace.image_scores.argmax())
    edit = make_edit(pad.sae, c.adapter, [resolve(Intervention.ablate(top), pad.labels, trace.n_patches)], inputs)
    with torch.no_grad():
        plain = c.model(**inputs).logits  # [1, L, V]
        with forward_hook(pad.hook_module, edit):
            patched = c.model(**inputs).logits
    first = int(c.adapter.patch_map(inputs, 0).image_positions[0])
    out.figure = _max_diff(plain[:, :first], patched[:, :first])
    out.require(torch.equal(plain[:, :first], patched[:, :first]),
                f"logits before the first image token (position {first}) moved by up to {out.figure:.3g}")
    out.require(not torch.allclose(plain[:, first:], patched[:, first:]), "the ablation changed no logit")
    result = pad.ablate(trace, top)
    out.require(result.p_after != result.p_before, "Scratchpad.ablate left the answer's probability unchanged")


def last_layer_trimming_exact(c: Subject, out: Outcome) -> None:
    """Running the LM's last layer only at the read positions gives the full forward's logits and results."""
    from vsp_assert import Intervention

    pad, model = c.pad, c.model
    layer = c.adapter.lm_last_layer()
    if layer is None:
        out.figure = float("nan")
        out.problems.append("lm_last_layer() found no last decoder layer")
        return
    trace = pad.run(c.images[1], c.prompts[1])
    inputs = _replay_inputs(trace)
    hooks = count_hooks(model)
    with torch.no_grad():
        full = model(**inputs).logits  # [1, L, V]
        for n in (1, 3):
            with last_positions_only(layer, n):
                trimmed = model(**inputs, logits_to_keep=n).logits  # [1, n, V]
            out.figure = max(out.figure, _max_diff(trimmed, full[:, -n:]))
            out.require(torch.allclose(trimmed, full[:, -n:], rtol=1e-5, atol=1e-5),
                        f"the last {n} positions' logits differ by up to {out.figure:.3g} when trimmed")
    out.require(count_hooks(model) == hooks, "trimming left hooks behind")
    specs = [Intervention.ablate(int(i)) for i in trace.image_scores.topk(3).indices]
    pad.trim_last_layer = False
    try:
        reference = pad.intervene(trace, specs)
    finally:
        pad.trim_last_layer = True
    for ref, got in zip(reference, pad.intervene(trace, specs)):
        out.require(got.changed == ref.changed, "an intervention's verdict differs with trimming")
        out.require(abs(got.p_after - ref.p_after) <= 1e-7 + 1e-4 * abs(ref.p_after),
                    f"p_after {got.p_after:.6g} with trimming, {ref.p_after:.6g} without")


# ---------------------------------------------------------------------- batching and preprocessing
def batched_equals_single(c: Subject, out: Outcome) -> None:
    """A batch of cases gives what each case gives alone (answer, grid, activations, attention)."""
    together = c.pad.run_batch(c.images, c.prompts)
    for b, (image, prompt, joint) in enumerate(zip(c.images, c.prompts, together)):
        alone = c.pad.run(image, prompt)
        if not torch.equal(alone.output_ids, joint.output_ids):
            out.problems.append(f"element {b}: the batched answer differs")
            continue
        same_shape = alone.grid == joint.grid and alone.n_patches == joint.n_patches
        out.require(same_shape, f"element {b}: grid or patch count differs in the batch")
        if not same_shape:
            continue
        for name in ("acts", "attention"):
            a, j = getattr(alone, name), getattr(joint, name)
            out.figure = max(out.figure, _max_diff(a, j))
            out.require(torch.allclose(j, a, rtol=1e-4, atol=1e-5), f"element {b}: {name} differ in the batch")


def shared_image_preprocessed_once(c: Subject, out: Outcome) -> None:
    """Two prompts about one image reuse its preprocessing, and the reused inputs equal fresh ones."""
    adapter, cache = c.adapter, c.pad.image_cache
    cache.clear()
    uncached = [adapter.prepare([c.images[1]], [p]) for p in c.prompts[:2]]
    hits = cache.hits
    cached = []
    for prompt in c.prompts[:2]:
        with cache.serving(adapter.processor):
            cached.append(adapter.prepare([c.images[1]], [prompt]))
    out.figure = float(cache.hits - hits)
    out.require(out.figure == 1, f"{int(out.figure)} cache hits for the second prompt about one image, not 1")
    for plain, served in zip(uncached, cached):
        out.require(plain.keys() == served.keys(), "cached preprocessing gives other input keys")
        for key in plain.keys() & served.keys():
            out.require(torch.equal(torch.as_tensor(plain[key]), torch.as_tensor(served[key])),
                        f"cached preprocessing changes {key!r}")


CHECKS: dict[str, Callable[[Subject, Outcome], None]] = {
    "hook_sees_every_patch": hook_sees_every_patch,
    "map_matches_processor": map_matches_processor,
    "map_follows_wiring": map_follows_wiring,
    "attention_equals_eager": attention_equals_eager,
    "noop_intervention_is_exact": noop_intervention_is_exact,
    "ablation_from_first_image_token": ablation_from_first_image_token,
    "last_layer_trimming_exact": last_layer_trimming_exact,
    "batched_equals_single": batched_equals_single,
    "shared_image_preprocessed_once": shared_image_preprocessed_once,
}
