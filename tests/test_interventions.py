"""Interventions: exact no-op identity, local effects, batching, and hooks that never leak."""

from __future__ import annotations

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from vsp_assert import Intervention, Scratchpad
from vsp_assert.engine.hooks import count_hooks, forward_hook
from vsp_assert.engine.interventions import make_edit, resolve
from vsp_assert.engine.sae import SAE
from vsp_assert.errors import InputError


def forward_logits(loaded, inputs, edit=None, module=None):
    with torch.no_grad():
        if edit is None:
            return loaded.model(**inputs).logits
        with forward_hook(module, edit):
            return loaded.model(**inputs).logits


def test_noop_patched_forward_is_bit_identical(pad, images):
    loaded = pad.loaded
    inputs = loaded.adapter.prepare(images[:2], ["what color is the square ?", "is there a red circle ?"])
    rows = [resolve(Intervention.ablate(), pad.labels, 16), resolve(Intervention.steer("red", scale=1.0),
                                                                    pad.labels, 16)]
    plain = forward_logits(loaded, inputs)
    patched = forward_logits(loaded, inputs, make_edit(pad.sae, pad.adapter, rows), pad.hook_module)
    assert torch.equal(plain, patched)


def test_noop_interventions_report_zero_drop_and_same_answer(pad, images):
    # rows of one batch may differ in the last float bits (BLAS blocking), hence approx here; the bitwise
    # guarantee for an identical batch is test_noop_patched_forward_is_bit_identical
    trace = pad.run(images[0], "what color is the square ?")
    for result in pad.intervene(trace, [Intervention.ablate(), Intervention.steer("blue", scale=1.0)]):
        assert result.p_after == pytest.approx(result.p_before, rel=1e-5)
        assert not result.changed and result.answer_after == trace.answer


def test_ablation_changes_logits_only_after_the_image(pad, images):
    loaded = pad.loaded
    inputs = loaded.adapter.prepare([images[1]], ["what color is the square ?"])
    top = int(pad.run(images[1], "what color is the square ?").image_scores.argmax())
    edit = make_edit(pad.sae, pad.adapter, [resolve(Intervention.ablate(top), pad.labels, 16)])
    plain = forward_logits(loaded, inputs)
    patched = forward_logits(loaded, inputs, edit, pad.hook_module)
    first_image = int(torch.nonzero(inputs["input_ids"][0] == loaded.model.config.image_token_id)[0])
    assert torch.equal(plain[:, :first_image], patched[:, :first_image])
    assert not torch.allclose(plain[:, first_image:], patched[:, first_image:])


def test_patch_restricted_ablation_edits_only_those_patches(pad, images):
    trace = pad.run(images[0], "what color is the square ?")
    latent = int(trace.acts.sum(0).argmax())
    active = [p for p in range(trace.n_patches) if trace.acts[p, latent] > 0]
    assert active, "the chosen latent fires somewhere"
    chosen = active[:1]
    seen = {}
    edit = make_edit(pad.sae, pad.adapter, [resolve(Intervention.ablate(latent, patches=chosen),
                                                            pad.labels, trace.n_patches)])

    def spy(hidden):
        seen["before"] = hidden.clone()
        out = edit(hidden)
        seen["after"] = out if out is not None else hidden
        return out

    inputs = pad.loaded.adapter.prepare([images[0]], ["what color is the square ?"])
    forward_logits(pad.loaded, inputs, spy, pad.hook_module)
    changed = (seen["after"] != seen["before"]).any(-1)[0]  # [S]
    assert changed.nonzero().flatten().tolist() == [chosen[0] + 1]  # +1: CLS is token 0


def test_interventions_run_as_one_batched_forward(tiny, tiny_sae, images):
    pad = Scratchpad(tiny, tiny_sae, max_new_tokens=3)
    trace = pad.run(images[2], "is there a red circle ?")
    before = dict(pad.stats)
    specs = [Intervention.ablate(i) for i in range(16)]
    calls = []
    handle = tiny.model.register_forward_pre_hook(lambda m, a, k: calls.append(k["input_ids"].shape[0]),
                                                  with_kwargs=True)
    try:
        results = pad.intervene(trace, specs)
    finally:
        handle.remove()
    assert len(results) == 16
    assert pad.stats["intervention_forward"] - before.get("intervention_forward", 0) == 1
    assert calls[0] == 17  # one reference row + 16 interventions in a single forward


def test_batched_results_equal_single_results(pad, images):
    trace = pad.run(images[0], "what color is the square ?")
    specs = [Intervention.ablate(i) for i in (0, 5, 9)]
    together = pad.intervene(trace, specs)
    for spec, joint in zip(specs, together):
        alone = pad.intervene(trace, [spec])[0]
        assert alone.answer_after == joint.answer_after
        assert alone.p_after == pytest.approx(joint.p_after, rel=1e-5, abs=1e-9)


def test_hooks_are_removed_when_a_case_raises(pad, images):
    model = pad.model
    before = count_hooks(model)

    def boom(hidden):
        raise RuntimeError("boom inside the hooked layer")

    inputs = pad.loaded.adapter.prepare([images[0]], ["what color is the square ?"])
    with pytest.raises(RuntimeError, match="boom"):
        forward_logits(pad.loaded, inputs, boom, pad.hook_module)
    assert count_hooks(model) == before


def test_interrupt_mid_intervention_leaves_the_next_case_unaffected(pad, images, monkeypatch):
    reference = pad.intervene(pad.run(images[1], "shape ?"), [Intervention.ablate("red")])[0]
    before = count_hooks(pad.model)
    trace = pad.run(images[1], "shape ?")
    import vsp_assert.engine.interventions as iv

    original = iv.EditPlan.delta

    def interrupted(self, f):
        raise KeyboardInterrupt

    monkeypatch.setattr(iv.EditPlan, "delta", interrupted)
    with pytest.raises(KeyboardInterrupt):
        pad.intervene(trace, [Intervention.ablate("red")])
    monkeypatch.setattr(iv.EditPlan, "delta", original)
    assert count_hooks(pad.model) == before
    again = pad.intervene(pad.run(images[1], "shape ?"), [Intervention.ablate("red")])[0]
    assert again.answer_after == reference.answer_after and again.p_after == reference.p_after


def test_unknown_concept_and_bad_patch_are_clear_errors(pad, images):
    trace = pad.run(images[0], "shape ?")
    with pytest.raises(InputError, match="unknown concept 'rde'") as err:
        pad.intervene(trace, [Intervention.ablate("rde")])
    assert "did you mean 'red'" in str(err.value)
    with pytest.raises(InputError, match="patch index out of range"):
        pad.intervene(trace, [Intervention.ablate("red", patches=[99])])
    with pytest.raises(InputError, match="latent id 640 is out of range"):
        pad.intervene(trace, [Intervention.ablate("#640")])


def test_vision_tower_runs_once_per_intervention_batch_with_same_results(tiny, tiny_sae, images, monkeypatch):
    """LLaVA shares the vision prefix: one tower pass for K interventions, and the same figures as K copies."""
    pad = Scratchpad(tiny, tiny_sae, max_new_tokens=3)
    trace = pad.run(images[2], "is there a red circle ?")
    specs = [Intervention.ablate(i) for i in (0, 3, 7, 11)] + [Intervention.ablate()]
    tower_batches = []
    tower = tiny.model.model.vision_tower

    def count(module, args, kwargs):
        tower_batches.append((args or [kwargs.get("pixel_values")])[0].shape[0])

    handle = tower.register_forward_pre_hook(count, with_kwargs=True)
    try:
        shared = pad.intervene(trace, specs)
    finally:
        handle.remove()
    assert tower_batches[0] == 1  # the teacher-forced forward ran the tower on one image for 6 rows
    monkeypatch.setattr(type(tiny.adapter), "vision_once", False)
    copied = pad.intervene(trace, specs)
    for a, b in zip(shared, copied):
        assert a.answer_after == b.answer_after
        assert a.p_after == pytest.approx(b.p_after, rel=1e-5, abs=1e-9)


def test_new_answers_are_generated_once_and_only_when_read(tiny, tiny_sae, images):
    pad = Scratchpad(tiny, tiny_sae, max_new_tokens=4)
    trace = pad.run(images[1], "what color is the square ?")
    everything = Intervention.ablate(*range(64), label="all")
    half = Intervention.ablate(*range(0, 64, 2), label="half")
    before = pad.stats["intervention_generate"]
    results = pad.intervene(trace, [Intervention.ablate(), everything, half])
    assert not results[0].changed and results[0].answer_after == trace.answer
    changed = [r for r in results if r.changed]
    assert changed, "ablating every latent changes the random model's answer"
    assert pad.stats["intervention_generate"] == before  # nothing generated until a new answer is read
    first_read = [r.answer_after for r in changed]
    assert all(a != r.answer_before for a, r in zip(first_read, changed))  # changed ⇔ a different greedy answer
    assert pad.stats["intervention_generate"] == before + 1  # one batched generate for all changed rows
    assert [r.answer_after for r in changed] == first_read  # a second read returns the same answers …
    assert pad.stats["intervention_generate"] == before + 1  # … without generating again
    for spec, result in zip([everything, half], results[1:]):
        alone = pad.intervene(trace, [spec])[0]  # the same row in another batch: same greedy answer
        assert alone.changed == result.changed and alone.answer_after == result.answer_after


def dense_edit(sae, x, specs):
    """The definition, written out over all d_sae latents: ``x + (f' − f) @ W_dec`` per row."""
    f = sae.encode(x)  # [B, P, d_sae]
    new = f.clone()
    for b, spec in enumerate(specs):
        if spec is None:
            continue
        for p in torch.nonzero(spec.patch_mask).flatten().tolist():
            for j in spec.latents.tolist():
                new[b, p, j] = f[b, p, j] * spec.spec.scale if spec.spec.scale is not None else spec.spec.value
    return x + sae.decoder_delta(new - f, x)


row_specs = st.one_of(
    st.none(),
    st.builds(
        lambda latents, how, amount, patches: (latents, how, amount, patches),
        st.lists(st.integers(0, 63), min_size=0, max_size=5),
        st.sampled_from(["ablate", "scale", "value"]),
        st.floats(-3, 3, allow_nan=False, width=32),
        st.none() | st.lists(st.integers(0, 15), min_size=1, max_size=16, unique=True),
    ),
)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(rows=st.lists(row_specs, min_size=1, max_size=6))
def test_batched_edit_equals_the_dense_definition(pad, rows):
    specs = []
    for row in rows:
        if row is None:
            specs.append(None)
            continue
        latents, how, amount, patches = row
        spec = {"ablate": Intervention.ablate(*latents, patches=patches),
                "scale": Intervention.steer(*latents, scale=amount, patches=patches),
                "value": Intervention.steer(*latents, value=amount, patches=patches)}[how]
        specs.append(resolve(spec, pad.labels, 16))
    hidden = torch.randn(len(specs), 17, pad.sae.d_in)  # CLS + 16 patches
    edited = make_edit(pad.sae, pad.adapter, specs)(hidden.clone())
    edited = hidden if edited is None else edited
    expected = dense_edit(pad.sae, hidden[:, 1:], specs)
    assert torch.equal(edited[:, 0], hidden[:, 0])  # CLS is never edited
    torch.testing.assert_close(edited[:, 1:], expected, rtol=1e-5, atol=1e-5)
    for b, spec in enumerate(specs):  # rows without a change come back bit for bit
        if spec is None or spec.is_noop:
            assert torch.equal(edited[b], hidden[b])


def test_the_edit_reads_only_the_latents_it_changes(pad, images, monkeypatch):
    # a real SAE has 16k-64k latents: the edit must not build or multiply a [rows, patches, d_sae] delta
    widths = []
    original = SAE.decoder_delta

    def spy(self, delta_f, x, latents=None):
        widths.append(delta_f.shape[-1])
        return original(self, delta_f, x, latents)

    monkeypatch.setattr(SAE, "decoder_delta", spy)
    trace = pad.run(images[0], "what color is the square ?")
    top = trace.image_scores.topk(3).indices.tolist()
    pad.intervene(trace, [Intervention.ablate(top[0]), Intervention.ablate(top[0], top[1]),
                          Intervention.steer(top[2], scale=2.0)])
    assert widths == [3]


def test_the_edit_never_reads_a_value_back_from_the_device(pad, images, monkeypatch):
    # on a GPU any such read is a synchronisation in the middle of the forward
    from torch.overrides import TorchFunctionMode

    import vsp_assert.engine.scratchpad as scratchpad

    host_reads = {"__bool__", "item", "tolist", "__int__", "__float__", "__index__", "cpu", "numpy"}
    seen: list[str] = []

    class Spy(TorchFunctionMode):
        def __torch_function__(self, func, types, args=(), kwargs=None):
            seen.append(getattr(func, "__name__", str(func)))
            return func(*args, **(kwargs or {}))

    real_make_edit = scratchpad.make_edit

    def spied_make_edit(*args, **kwargs):
        edit = real_make_edit(*args, **kwargs)

        def spied(hidden):
            with Spy():
                return edit(hidden)

        return spied

    monkeypatch.setattr(scratchpad, "make_edit", spied_make_edit)
    trace = pad.run(images[0], "what color is the square ?")
    top = trace.image_scores.topk(4).indices.tolist()
    pad.intervene(trace, [Intervention.ablate(top[0]), Intervention.steer(top[1], scale=3.0),
                          Intervention.ablate(top[2], patches=[0, 5]), Intervention.ablate()])
    assert seen, "the spy saw the edit run"
    assert not host_reads & set(seen), sorted(host_reads & set(seen))


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(n=st.integers(1, 6), image=st.integers(0, 2))
def test_last_positions_only_keeps_the_read_logits(pad, images, n, image):
    from vsp_assert.engine.hooks import last_positions_only

    inputs = pad.loaded.adapter.prepare([images[image]], ["is there a red circle ?"])
    layer = pad.adapter.lm_last_layer()
    with torch.no_grad():
        full = pad.model(**inputs).logits
        with last_positions_only(layer, n):
            kept = pad.model(**inputs, logits_to_keep=n).logits
    torch.testing.assert_close(kept, full[:, -n:], rtol=1e-5, atol=1e-6)


def test_last_positions_only_leaves_no_hook_even_when_the_forward_raises(pad, images):
    from vsp_assert.engine.hooks import last_positions_only

    layer = pad.adapter.lm_last_layer()
    before = count_hooks(pad.model)
    with pytest.raises(RuntimeError, match="mid-forward"), last_positions_only(layer, 2):
        assert count_hooks(pad.model) == before + 4
        raise RuntimeError("mid-forward")
    assert count_hooks(pad.model) == before


def test_the_intervention_forward_computes_the_last_layer_only_where_logits_are_read(pad, images):
    trace = pad.run(images[0], "what color is the square ?")
    mlp = pad.adapter.lm_last_layer().mlp
    seen = []
    handle = mlp.register_forward_pre_hook(lambda m, args: seen.append(tuple(args[0].shape)))
    try:
        pad.intervene(trace, [Intervention.ablate(1), Intervention.ablate(2)])
    finally:
        handle.remove()
    assert seen == [(3, trace.n_tokens + 1, pad.model.config.text_config.hidden_size)]


def test_last_positions_only_restores_tuple_outputs_of_a_mixture_of_experts_mlp():
    from torch import nn

    from vsp_assert.engine.hooks import last_positions_only

    class MoE(nn.Module):  # returns (hidden, router logits) like mixture-of-experts blocks
        def __init__(self):
            super().__init__()
            self.up, self.router = nn.Linear(8, 8), nn.Linear(8, 2)

        def forward(self, x):
            return torch.relu(self.up(x)), self.router(x)

    layer = nn.Module()
    layer.self_attn = nn.Module()
    layer.self_attn.o_proj = nn.Linear(8, 8)
    layer.mlp = MoE()
    x = torch.randn(2, 5, 8)
    full_attn, (full_mlp, _) = layer.self_attn.o_proj(x), layer.mlp(x)
    with last_positions_only(layer, 2):
        attn, (mlp, router) = layer.self_attn.o_proj(x), layer.mlp(x)
    assert attn.shape == mlp.shape == (2, 5, 8) and router.shape == (2, 2, 2)
    torch.testing.assert_close(attn[:, -2:], full_attn[:, -2:])
    torch.testing.assert_close(mlp[:, -2:], full_mlp[:, -2:])
    assert not attn[:, :3].any() and not mlp[:, :3].any()
