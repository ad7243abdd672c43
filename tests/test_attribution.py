"""Attribution: what it computes (checked against autograd and finite differences), what it costs (one batched
backward, nothing dense at 64k latents, the model left as found), and how well it predicts true ablation effects
on the shapes world (a rank-correlation gate that fails if it drops)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from vsp_assert import Intervention, Scratchpad
from vsp_assert.engine.attribution import (
    ablation_effects,
    attribute,
    attribution_from_gradient,
    hooked_gradient,
    token_objective,
)
from vsp_assert.engine.hooks import count_hooks, forward_hook
from vsp_assert.engine.interventions import make_edit, resolve
from vsp_assert.testing import random_sae

PROMPT = "what color is the square ?"


def _objective_under(pad, trace, spec):
    """Each output token's objective with one intervention applied (teacher-forced)."""
    single = pad.adapter.teacher_forced_inputs(dict(trace.replay.inputs), trace.output_ids)
    rows = [resolve(spec, pad.sae.labels, trace.n_patches)]
    layout = pad.adapter.intervention_inputs(single, 1)
    inputs = pad._to_device(layout)
    T = trace.n_tokens
    with forward_hook(pad.hook_module, make_edit(pad.sae, pad.adapter, rows, layout)), torch.no_grad():
        logits = pad.model(**inputs, attention_mask=torch.ones_like(inputs["input_ids"])).logits[0, -T - 1:-1]
    return token_objective(logits.double().float(), trace.output_ids)


def test_objective_is_log_odds_and_contrast_is_a_log_ratio():
    logits = torch.tensor([[2.0, 0.5, -1.0], [0.0, 3.0, 1.0]])
    answer = torch.tensor([0, 2])
    p = torch.softmax(logits, -1)
    got = token_objective(logits, answer)
    want = torch.log(p[[0, 1], answer]) - torch.log1p(-p[[0, 1], answer])
    torch.testing.assert_close(got, want)
    contrast = token_objective(logits, answer, torch.tensor([1, -1]))
    assert float(contrast[0]) == pytest.approx(float(torch.log(p[0, 0] / p[0, 1])), rel=1e-6)
    assert float(contrast[1]) == pytest.approx(float(got[1]))  # -1: compared plainly


def test_attribution_is_the_directional_derivative_of_scaling_each_latent(pad, images):
    # a[t, k] = d objective_t / d s at s = 1 when latent k is scaled by s on every patch (error term kept)
    trace = pad.run(images[0], PROMPT)
    a = trace.attribution
    assert a.shape == (trace.n_tokens, pad.sae.d_sae)
    eps = 1e-2
    for k in [int(i) for i in torch.argsort(trace.image_scores, descending=True)[:4]]:
        up = _objective_under(pad, trace, Intervention.steer(k, scale=1 + eps))
        down = _objective_under(pad, trace, Intervention.steer(k, scale=1 - eps))
        numeric = (up - down) / (2 * eps)
        torch.testing.assert_close(a[:, k], numeric, atol=2e-3, rtol=2e-2)
    inactive = trace.image_scores == 0
    assert bool((a[:, inactive] == 0).all())  # a latent that does not fire has no first-order effect


def test_sparse_chunked_product_equals_the_dense_reference(pad, images):
    trace = pad.run(images[1], PROMPT)
    x, grad = hooked_gradient(pad, trace)
    dense = torch.einsum("pk,tpk->tk", pad.sae.encode(x), grad @ pad.sae.W_dec.T)
    for chunk in (None, 1, 5):
        torch.testing.assert_close(attribution_from_gradient(pad.sae, x, grad, chunk=chunk), dense,
                                   atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("norm", ["layer_norm", "constant_norm_rescale"])
def test_normalising_saes_get_the_gradient_through_their_rescaling(tiny, images, norm):
    sae = random_sae(tiny.adapter.vision_width(), 48, k=6, seed=3, hook_layer=tiny.adapter.default_hook_layer(),
                     normalize_activations=norm)
    pad = Scratchpad(tiny, sae, max_new_tokens=2)
    trace = pad.run(images[0], PROMPT)
    x, grad = hooked_gradient(pad, trace)
    f = sae.encode(x).detach().requires_grad_(True)
    rows = []
    for t in range(trace.n_tokens):  # autograd through decode(f, x): the reconstruction's own rescaling
        (g,) = torch.autograd.grad((sae.decode(f, x) * grad[t]).sum(), [f])
        rows.append((g * f).sum(0))
    torch.testing.assert_close(trace.attribution, torch.stack(rows).detach(), atol=1e-5, rtol=1e-4)


def test_one_batched_backward_cached_per_contrast_and_the_model_left_as_found(tiny, tiny_sae, images):
    pad = Scratchpad(tiny, tiny_sae, max_new_tokens=3)
    trace = pad.run(images[2], PROMPT)
    hooks = count_hooks(pad.model)
    first = trace.attribution
    assert pad.stats["attribution_backward"] == 1
    assert trace.attribution is first and pad.stats["attribution_backward"] == 1  # cached
    other = trace.attribution_for("blue")
    assert pad.stats["attribution_backward"] == 2 and other.shape == first.shape
    assert count_hooks(pad.model) == hooks
    assert all(p.grad is None for p in pad.model.parameters())
    top = trace.top_attributed(0, 3)
    assert [i for i, _ in top] == [i for i, _ in top if float(first[0, i]) > 0]


def test_integrated_gradients_sum_to_the_effect_of_removing_every_latent(tiny, tiny_sae, images):
    # completeness: Σ_k a[t, k] over the path 0 → f equals objective(f) − objective(no latent), up to the
    # midpoint rule's error
    pad = Scratchpad(tiny, tiny_sae, max_new_tokens=2)
    trace = pad.run(images[0], PROMPT)
    ig = attribute(pad, trace, steps=64)
    everything = [int(i) for i in (trace.image_scores > 0).nonzero().flatten()]
    total = ablation_effects(pad, trace, [everything])[0]
    torch.testing.assert_close(ig.sum(1), total, atol=2e-3, rtol=2e-2)


def test_64k_latents_without_a_dense_patch_by_latent_tensor(tiny, images, monkeypatch):
    sae = random_sae(tiny.adapter.vision_width(), 65536, k=16, seed=5, hook_layer=tiny.adapter.default_hook_layer())
    pad = Scratchpad(tiny, sae, max_new_tokens=2)
    trace = pad.run(images[0], PROMPT)
    x, grad = hooked_gradient(pad, trace)
    f = sae.encode(x)  # the reference, dense, computed here once
    want = torch.einsum("pk,tpk->tk", f, grad @ sae.W_dec.T)

    def refuse(*_args, **_kwargs):
        raise AssertionError("attribution asked the SAE for dense [P, d_sae] codes")

    monkeypatch.setattr(sae, "encode", refuse)
    seen: list[tuple[int, ...]] = []
    real_einsum = torch.einsum

    def watch(eq, *ops):
        seen.extend(tuple(o.shape) for o in ops)
        return real_einsum(eq, *ops)

    monkeypatch.setattr(torch, "einsum", watch)
    got = attribution_from_gradient(sae, x, grad)
    torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-4)
    assert seen and all(65536 not in shape for shape in seen)  # nothing SAE-wide is multiplied


# ---------------------------------------------------------------------- the shapes world: against true ablations
@pytest.fixture(scope="module")
def shapes_pad():
    from vsp_assert import load_model, load_sae

    return Scratchpad(load_model("shapes"), load_sae("shapes"), max_new_tokens=2)


def _spearman(a: np.ndarray, b: np.ndarray) -> float:
    from scipy.stats import spearmanr

    return float(spearmanr(a, b).statistic)


#: Measured when this gate was written (held-out probes of seed 11: 3 triggers and 2 controls of each shipped
#: mechanism and 6 clean questions): plain mean 0.82 over all active latents, 0.54 over the top latents;
#: contrastive (the 6 probes whose answer is wrong, against the truth) 0.82 and 0.59. The gates sit below.
GATE_ALL, GATE_TOP = 0.70, 0.40


def test_attribution_ranks_latents_as_their_true_ablations_do(shapes_pad):
    from vsp_assert.shapes.mechanisms import MECHANISMS, clean_examples

    probes = []
    for mech in MECHANISMS.values():
        probes += [(p.scene, p.question) for p in mech.trigger_scenes(11, 3) + mech.control_scenes(11, 2)]
    probes += [(e.scene, e.question) for e in clean_examples(11, 6)]
    plain_all, plain_top, contrast_all = [], [], []
    for scene, question in probes:
        trace = shapes_pad.run(scene.render(), question.text)
        ids = [int(i) for i in (trace.image_scores > 0).nonzero().flatten()]
        wrong = question.answer != trace.answer
        for contrast in ([None, question.answer] if wrong else [None]):
            true = ablation_effects(shapes_pad, trace, [[i] for i in ids], contrast)[:, 0].numpy()
            est = trace.attribution_for(contrast)[0, ids].numpy()
            top = sorted(set(np.argsort(-np.abs(est))[:8]) | set(np.argsort(-np.abs(true))[:8]))
            (contrast_all if contrast else plain_all).append(_spearman(est, true))
            if contrast is None:
                plain_top.append(_spearman(est[top], true[top]))
    assert np.mean(plain_all) >= GATE_ALL, plain_all
    assert np.mean(plain_top) >= GATE_TOP, plain_top
    assert contrast_all and np.mean(contrast_all) >= GATE_ALL, contrast_all


def test_contrast_with_the_correct_answer_names_the_planted_cue(shapes_pad):
    from vsp_assert.shapes import Scene

    image = Scene.from_dict({"background": "stripes",
                             "shapes": [{"shape": "square", "color": "red", "x": 32, "y": 32, "size": 26}]}).render()
    trace = shapes_pad.run(image, "What shape is the red object?")
    assert trace.answer == "triangle"
    stripes = set(shapes_pad.labels.resolve("stripes"))
    top = [i for i, _ in trace.top_attributed(0, 3, contrast="square")]
    assert stripes & set(top[:2])
    trace.assert_attributed(0, "stripes", correct="square", top_k=3)
