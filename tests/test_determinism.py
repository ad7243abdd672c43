"""Determinism and hygiene: same results whatever the order or the process layout; faults leave no trace.

The same YAML suite runs serially, again, in reversed order and under pytest-xdist with two workers; per-case
outcomes and the baseline file written with ``--vsp-update-baseline`` must be identical (byte for byte). A case
that raises in the middle of a trace (inside ``generate``, or in the SAE encode after it), or is interrupted
there, must leave no hook and no active attention recorder, and the next run must equal a run in a fresh session.
"""

from __future__ import annotations

import json
import re

import pytest
import torch

from vsp_assert import Intervention, Scratchpad
from vsp_assert.engine.attention import AttentionRecorder, active_recorder
from vsp_assert.engine.hooks import count_hooks
from vsp_assert.engine.sae import SAE

PROMPT = "what color is the square ?"
OUTCOME = re.compile(r"^(PASSED|FAILED|XFAIL|XPASS|SKIPPED|ERROR) (\S+\.yaml::\S+)", re.MULTILINE)


def _suite(saved) -> str:
    latent = saved["top_latent"]
    return f"""
cases:
  - id: answer-right
    image: img.png
    prompt: "{PROMPT}"
    expect:
      answer: "{saved['answer']}"
      captured: ["#{latent}"]
  - id: answer-wrong
    image: img.png
    prompt: "{PROMPT}"
    expect: {{answer: "certainly not this"}}
  - id: ablation
    image: img.png
    prompt: "is there a red circle ?"
    expect:
      causal: [{{ablate: ["#{latent}"], min_drop: -1.0}}]
  - id: known-bad
    image: img.png
    prompt: "what shape is it ?"
    expect: {{answer: "nope"}}
    marks: [xfail]
  - id: attended
    image: img.png
    prompt: "describe the image"
    expect:
      attended: [{{token: 0, concepts: ["#{latent}"], top_k: 64}}]
"""


REVERSE = """
def pytest_collection_modifyitems(items):
    items.reverse()
"""


@pytest.fixture
def suite(vsp: pytest.Pytester, saved) -> pytest.Pytester:
    vsp.makefile(".yaml", test_det=_suite(saved))
    return vsp


def _run(pytester: pytest.Pytester, *args: str, subprocess: bool = False) -> tuple[dict[str, str], bytes]:
    baseline = pytester.path / "test_det.baseline.json"
    baseline.unlink(missing_ok=True)
    run = pytester.runpytest_subprocess if subprocess else pytester.runpytest
    result = run("-rA", "-p", "no:cacheprovider", "--vsp-update-baseline", *args)
    outcomes = {node: outcome for outcome, node in OUTCOME.findall(result.stdout.str())}
    return outcomes, baseline.read_bytes()


def check_recorded_values(baseline: dict, saved) -> None:
    """The ``ablation`` and ``attended`` cases check nothing that can fail (``min_drop: -1.0``, top 64 of 64
    latents): what they must get right is what the baseline records, here against a direct in-process run."""
    from vsp_assert import load_model, load_sae

    pad = Scratchpad(load_model(saved["model"]), load_sae(saved["sae"]), max_new_tokens=3)
    latent = saved["top_latent"]
    cases = baseline["cases"]
    assert sorted(cases) == ["ablation", "answer-right", "answer-wrong", "attended", "known-bad"]
    trace = pad.run(saved["image"], "is there a red circle ?")
    effect = pad.intervene(trace, [Intervention.ablate(latent)])[0]
    (recorded,) = cases["ablation"]["interventions"]
    assert f"#{latent}" in recorded["intervention"]
    assert cases["ablation"]["answer"] == trace.answer
    assert recorded["answer_after"] == effect.answer_after
    assert recorded["p_after"] == pytest.approx(effect.p_after, abs=1e-4)
    assert recorded["drop"] == pytest.approx(effect.drop, abs=1e-4)
    trace = pad.run(saved["image"], "describe the image")
    assert cases["attended"]["answer"] == trace.answer
    top = [[i, s] for i, s in trace.top_concepts(0, 10)]
    assert [[i, pytest.approx(s, abs=1e-4)] for _, i, s in cases["attended"]["tokens"][0]["top"]] == top
    assert cases["answer-right"]["answer"] == saved["answer"]


def test_same_outcomes_and_baseline_serially_reversed_and_under_xdist(suite: pytest.Pytester, saved) -> None:
    first, first_bytes = _run(suite)
    assert first == {
        "test_det.yaml::answer-right": "PASSED", "test_det.yaml::answer-wrong": "FAILED",
        "test_det.yaml::ablation": "PASSED", "test_det.yaml::known-bad": "XFAIL",
        "test_det.yaml::attended": "PASSED",
    }
    check_recorded_values(json.loads(first_bytes), saved)
    again, again_bytes = _run(suite, "-p", "no:randomly")
    assert (again, again_bytes) == (first, first_bytes)

    suite.makeconftest(REVERSE)
    reversed_, reversed_bytes = _run(suite)
    assert (reversed_, reversed_bytes) == (first, first_bytes)
    (suite.path / "conftest.py").unlink()

    parallel, parallel_bytes = _run(suite, "-p", "xdist", "-n", "2", subprocess=True)
    assert parallel == first
    assert parallel_bytes == first_bytes


# ---------------------------------------------------------------------- faults mid-trace
def _fingerprint(trace) -> tuple:
    return (trace.answer, trace.output_ids.tolist(), trace.acts.clone(), trace.scores.clone(),
            trace.attention.clone(), float(trace.answer_prob))


def _same(a: tuple, b: tuple) -> bool:
    return a[:2] == b[:2] and all(torch.equal(x, y) for x, y in zip(a[2:5], b[2:5])) and a[5] == b[5]


@pytest.fixture(scope="module")
def fresh():
    """The reference: a run in a fresh session (new model, new SAE, new Scratchpad)."""
    from vsp_assert.testing import random_sae, tiny_llava

    def make() -> Scratchpad:
        model = tiny_llava(seed=0)
        sae = random_sae(model.adapter.vision_width(), 64, k=8, hook_layer=model.adapter.default_hook_layer(),
                         concepts={"red": [1, 2], "blue": [3], "stripes": [4, 5, 6]})
        return Scratchpad(model, sae, max_new_tokens=4)

    return make


def _raise_in_recorder(exc: BaseException):
    def record(self, *args, **kwargs):
        raise exc

    return AttentionRecorder, "record", record


def _raise_in_encode(exc: BaseException):
    def encode(self, x, **kwargs):
        raise exc

    return SAE, "encode_sparse", encode  # the trace's encode (sparse, in tiles)


@pytest.mark.parametrize("where", [_raise_in_recorder, _raise_in_encode], ids=["inside-generate", "in-sae-encode"])
@pytest.mark.parametrize("exc", [RuntimeError("boom"), KeyboardInterrupt()], ids=["error", "interrupt"])
def test_a_case_raising_mid_trace_leaves_the_model_clean(fresh, images, monkeypatch, where, exc) -> None:
    pad = fresh()
    reference = _fingerprint(fresh().run(images[0], PROMPT))
    hooks = count_hooks(pad.model)
    owner, name, replacement = where(exc)
    monkeypatch.setattr(owner, name, replacement)
    with pytest.raises(type(exc)):
        pad.run(images[0], PROMPT)
    monkeypatch.undo()
    assert count_hooks(pad.model) == hooks
    assert active_recorder() is None
    assert _same(_fingerprint(pad.run(images[0], PROMPT)), reference)


def test_a_case_raising_mid_intervention_leaves_the_next_one_as_in_a_fresh_session(fresh, images,
                                                                                     monkeypatch) -> None:
    import vsp_assert.engine.interventions as iv

    reference_pad = fresh()
    ref = reference_pad.intervene(reference_pad.run(images[1], PROMPT), [Intervention.ablate("red")])[0]
    pad = fresh()
    hooks = count_hooks(pad.model)
    trace = pad.run(images[1], PROMPT)

    def interrupted(self, f):
        raise KeyboardInterrupt

    monkeypatch.setattr(iv.EditPlan, "delta", interrupted)
    with pytest.raises(KeyboardInterrupt):
        pad.intervene(trace, [Intervention.ablate("red")])
    monkeypatch.undo()
    assert count_hooks(pad.model) == hooks and active_recorder() is None
    again = pad.intervene(pad.run(images[1], PROMPT), [Intervention.ablate("red")])[0]
    assert (again.answer_after, again.p_after, again.token_p_after) == (ref.answer_after, ref.p_after,
                                                                        ref.token_p_after)
