"""``attributed:`` in YAML cases and the views built on attribution: the section's grammar and errors, its checks on
the shapes world, the heatmap switch (terminal and HTML), the per-layer attention shown when an ``attended`` check
fails, the sufficient-set search's new candidates and the explanation of a flipped answer in a drift report."""

from __future__ import annotations

import textwrap

import pytest

from vsp_assert.checks.load import parse_case_file
from vsp_assert.checks.schema import AttendedSpec, AttributedSpec
from vsp_assert.errors import CaseError

STRIPES = "{background: stripes, shapes: [{shape: square, color: red, x: 32, y: 32, size: 26}]}"


def _file(tmp_path, body: str):
    path = tmp_path / "cases.yaml"
    path.write_text(textwrap.dedent(body))
    return path


def test_attributed_mirrors_attended(tmp_path):
    parsed = parse_case_file(_file(tmp_path, f"""
        cases:
          - id: stripes
            image: {{scene: {STRIPES}}}
            prompt: What shape is the red object?
            expect:
              answer: {{equals: triangle, correct: square}}
              attended: [{{token: triangle, concepts: [stripes], top_k: 5}}]
              attributed:
                - token: triangle
                  concepts: [stripes]
                  absent: [red]
                  top_k: 3
        """))
    expect = parsed.cases[0].expect
    assert type(expect.attended[0]) is AttendedSpec
    (spec,) = expect.attributed
    assert isinstance(spec, AttributedSpec)
    assert (spec.token, spec.concepts, spec.absent, spec.top_k) == ("triangle", ("stripes",), ("red",), 3)
    assert spec.where is not None and spec.where.line == 10


@pytest.mark.parametrize(("section", "item", "message"), [
    ("attributed", "{concepts: [stripes]}", "an attributed item needs 'token'"),
    ("attributed", "{token: 0}", "an attributed item needs 'concepts' and/or 'absent'"),
    ("attributed", "{token: 0, concepts: [stripes], top: 3}", "unknown key"),
    ("attributed", "{token: 0, concepts: [stripes], confirm: 'yes'}", "confirm must be true, false or a drop in nats"),
    ("attributed", "{token: 0, concepts: [stripes], confirm: -0.5}", "confirm out of range"),
    ("attributed", "{token: 0, concepts: [stripes], confirm: .nan}", "confirm must be finite"),
    ("attended", "{token: 0, concepts: [stripes], confirm: true}", "unknown key"),  # attention is not ablated
])
def test_attributed_errors_name_the_section_and_line(tmp_path, section, item, message):
    with pytest.raises(CaseError) as err:
        _one_case(tmp_path, "stripes", STRIPES, f"{section}: [{item}]")
    text = str(err.value)
    assert message in text and "cases.yaml:7:" in text and f"expect.{section}[0]" in text


@pytest.fixture(scope="module")
def shapes_pad():
    from vsp_assert import Scratchpad, load_model, load_sae

    return Scratchpad(load_model("shapes"), load_sae("shapes"), max_new_tokens=2)


def _case(tmp_path, attributed: str, attended: str = ""):
    return parse_case_file(_file(tmp_path, f"""
        cases:
          - id: stripes
            image: {{scene: {STRIPES}}}
            prompt: What shape is the red object?
            expect:
              answer: {{equals: triangle, correct: square}}
              attributed: {attributed}
              {attended}
        """)).cases[0]


def test_attributed_checks_run_contrastive_against_correct(shapes_pad, tmp_path):
    from vsp_assert.checks.assertions import run_case

    case = _case(tmp_path, "[{token: 0, concepts: [stripes], absent: [red], top_k: 3}]")
    result = run_case(shapes_pad, case)
    kinds = [r.kind for r in result.records]
    assert kinds.count("attributed") == 2 and result.passed, [(r.description, r.measured) for r in result.records]
    assert "square" in result.trace.attributions  # the contrast was the case's correct answer
    record = next(r for r in result.records if r.kind == "attributed")
    assert "uses stripes" in record.description and "attribution" in record.measured


def test_a_failing_case_shows_both_heatmaps_and_the_per_layer_attention(shapes_pad, tmp_path):
    from vsp_assert.checks.assertions import run_case
    from vsp_assert.render.case import render_case
    from vsp_assert.render.style import Style

    case = _case(tmp_path, "[{token: 0, concepts: [red], top_k: 2}]",
                 "attended: [{token: 0, concepts: [red], top_k: 2}]")
    result = run_case(shapes_pad, case)
    assert not result.passed
    text = render_case("x::stripes", result.trace, result.records, style=Style(False), width=160)
    assert "top-5 attended concepts" in text and "top-5 attributed concepts" in text
    assert "token-latent heatmap  (attributed: gradient × activation against 'square'" in text  # its title
    assert "attention of 'triangle' per LM layer" in text
    for layer in range(3):
        assert f"layer {layer}" in text
    from vsp_assert.render.html_case import case_html

    html = case_html(0, "x::stripes", result.trace, result.records, top_k=5, max_overlays=2)
    assert "attention per LM layer (failing attended checks)" in html and html.count("<td>0.998</td>") == 1


def test_html_section_has_the_view_switch(shapes_pad, tmp_path):
    from vsp_assert.checks.assertions import run_case
    from vsp_assert.render.html_case import case_html

    result = run_case(shapes_pad, _case(tmp_path, "[{token: 0, concepts: [stripes]}]"))
    html = case_html(0, "x::stripes", result.trace, result.records, top_k=5, max_overlays=2)
    assert 'class="view attended"' in html and 'class="view attributed"' in html
    assert "attribution a[t, k]" in html and "attention-weighted score s[t, k]" in html
    assert "against &#x27;square&#x27;" in html  # the attributed view is contrastive, as the check was


def test_a_hand_built_trace_renders_without_an_attributed_view(pad, images):
    from dataclasses import replace

    from vsp_assert.render.html_case import case_html

    trace = replace(pad.run(images[0], "what color is the square ?"), attributor=None, attributions={})
    html = case_html(0, "x", trace, [], top_k=3, max_overlays=1)
    assert 'class="view attributed"' not in html and "heatmap" in html


def test_sufficient_set_tries_concepts_and_attribution_prefixes(shapes_pad):
    from vsp_assert.engine.analysis import find_sufficient_set
    from vsp_assert.shapes import Scene

    image = Scene.from_dict({"background": "stripes", "shapes": [
        {"shape": "circle", "color": "blue", "x": 32, "y": 32, "size": 26}]}).render()
    trace = shapes_pad.run(image, "What shape is the blue object?")
    assert trace.answer == "triangle"
    found = find_sufficient_set(shapes_pad, trace, 0)
    sources = {c.source.split(" ")[0] for c in found.candidates}
    assert {"cluster", "concept", "attribution"} <= sources
    assert found.found and found.result is not None and found.result.answer_after == "circle"
    assert set(found.latents) & set(shapes_pad.labels.resolve("stripes"))
    # nothing can work when the answer does not depend on the image: the search says so
    none = find_sufficient_set(shapes_pad, trace, 0, candidates=[[0], [1]])
    assert not none.found and "none of 2 candidates" in none.note


def test_drift_explains_a_flipped_answer(shapes_pad, tmp_path):
    from vsp_assert.checks.assertions import CaseResult, run_case
    from vsp_assert.checks.baseline import BaselineStore, baseline_path, check_result, profile
    from vsp_assert.render.drift import render_drift
    from vsp_assert.render.style import Style

    case = _case(tmp_path, "[{token: 0, concepts: [stripes]}]")
    result = run_case(shapes_pad, case)
    old = profile(result.trace, result.records)
    old["answer"] = "square"  # the baseline said 'square' (the true shape); the model now says 'triangle'
    store = BaselineStore(model="shapes", sae="shapes")
    store._read[baseline_path(case.file)] = {case.id: old}
    holder = CaseResult(case, result.trace, result.records)
    records = check_result(store, holder, update=False)
    flip = next(r for r in records if r.description == "answer unchanged since baseline")
    assert not flip.passed and "ablating stripes on the new model restores 'square'" in flip.measured
    assert holder.drift is not None and holder.drift.explanation.responsible == "stripes"
    text = render_drift(holder.drift, result.trace, Style(False), 120)
    assert "carried by stripes" in text and "restores 'square'" in text


def _one_case(tmp_path, case_id: str, scene: str, expect: str):
    """A one-case file asking the red object's shape in ``scene``, with one ``expect`` line (line 7)."""
    return parse_case_file(_file(tmp_path, f"""
        cases:
          - id: {case_id}
            image: {{scene: {scene}}}
            prompt: What shape is the red object?
            expect:
              {expect}
        """)).cases[0]


def _answer_case(tmp_path, answer: str):
    return _one_case(tmp_path, "stripes", STRIPES, f"answer: {answer}")


@pytest.mark.parametrize(("answer", "contrast"), [
    ("{equals: square}", "square"),                       # a failing expectation: against what was expected
    ("{not: triangle, correct: circle}", "circle"),       # a failing known-failure case: against its right answer
    ("{equals: triangle, correct: square}", None),        # passing: nothing computed
    ("{not: triangle}", None),                            # failing, but no right answer is named
])
def test_a_failing_case_with_a_known_right_answer_shows_what_made_the_model_say_otherwise(shapes_pad, tmp_path,
                                                                                          answer, contrast):
    """The zoo (docs/truth.md) found contrastive attribution the view that names the cause: a failing case whose
    right answer is known gets it beside attention, contrasted with that answer; other cases keep one view."""
    from vsp_assert.checks.assertions import explain_failure, run_case
    from vsp_assert.render.case import render_case
    from vsp_assert.render.style import Style

    case = _answer_case(tmp_path, answer)
    result = run_case(shapes_pad, case)
    assert result.trace.answer == "triangle" and not result.trace.attributions  # run_case computes none itself
    assert explain_failure(result.trace, case.expect.answer, result.records) == contrast  # the pytest item calls it
    assert [k for k in result.trace.attributions if k is not None] == ([contrast] if contrast else [])
    text = render_case("x::stripes", result.trace, result.records, style=Style(False), width=160)
    if contrast is None:
        assert "attributed" not in text
        return
    assert f"top-5 attributed concepts (attribution against {contrast!r})" in text
    if contrast == "square":  # the stripes latents carry "triangle" rather than the square that is there
        tops = [shapes_pad.sae.labels.name_of(i) for i, _ in result.trace.top_attributed(0, 2, contrast=contrast)]
        assert tops == ["stripes", "stripes"]


# ---------------------------------------------------------------------- confirm: the ranking checked by ablation
# On the shipped model this scene's answer ("triangle", from the stripes) ranks the triangle concept (the green
# triangle beside the red square) among the top-5 attributed latents, yet ablating it *raises* the answer's log-odds:
# the first-order ranking names a concept that works against the answer, and only the ablation says so.
DECOY = ("{background: stripes, shapes: [{shape: square, color: red, x: 16, y: 48, size: 20}, "
         "{shape: triangle, color: green, x: 48, y: 32, size: 14}]}")


def _decoy_case(tmp_path, item: str):
    return _one_case(tmp_path, "decoy", DECOY, f"attributed: [{item}]")


@pytest.mark.parametrize(("confirm", "value"), [("true", 0.0), ("0.25", 0.25), ("false", None), ("0", 0.0),
                                                 (None, 0.0)])
def test_confirm_parses_to_the_drop_the_ablation_must_exceed(tmp_path, confirm, value):
    extra = f", confirm: {confirm}" if confirm is not None else ""  # without the key: confirmed, the default
    case = _decoy_case(tmp_path, f"{{token: 0, concepts: [stripes]{extra}}}")
    assert case.expect.attributed[0].confirm == value


def test_confirm_clears_a_concept_the_ranking_names_but_the_ablation_refutes(shapes_pad, tmp_path):
    from vsp_assert.checks.assertions import run_case

    shapes_pad.stats.clear()
    plain = run_case(shapes_pad, _decoy_case(tmp_path, "{token: 0, absent: [triangle], confirm: false}"))
    assert plain.trace.answer == "triangle" and not plain.passed  # first order: triangle is among the top 5
    assert shapes_pad.stats["intervention_forward"] == 0  # ranked only: nothing ablated
    for item in ("{token: 0, absent: [triangle], confirm: true}", "{token: 0, absent: [triangle]}"):  # the default
        shapes_pad.stats.clear()
        (record,) = run_case(shapes_pad, _decoy_case(tmp_path, item)).records
        assert record.passed, record.measured
        assert "ablating triangle raises the objective by" in record.measured and "not confirmed" in record.measured
        assert "confirmed by ablation" in record.description
        assert shapes_pad.stats["intervention_forward"] == 1  # one batched forward for the item


def test_confirm_keeps_a_concept_whose_ablation_lowers_the_answer(shapes_pad, tmp_path):
    from vsp_assert.checks.assertions import run_case

    result = run_case(shapes_pad, _case(tmp_path, "[{token: 0, concepts: [stripes], confirm: true}]"))
    (stripes,) = [r for r in result.records if r.kind == "attributed"]  # contrastive against 'square' (correct:)
    assert stripes.passed and "ablating stripes lowers the objective by" in stripes.measured, stripes.measured
    decoy = run_case(shapes_pad, _decoy_case(tmp_path, "{token: 0, concepts: [triangle], confirm: true}"))
    assert not decoy.passed and "(not confirmed)" in decoy.records[0].measured
    strict = run_case(shapes_pad, _case(tmp_path, "[{token: 0, concepts: [stripes], confirm: 1000}]"))
    assert not strict.passed and "by > 1000" in strict.records[-1].expected


def test_the_confirming_drop_is_the_ablated_answers_change_in_log_odds(shapes_pad, tmp_path):
    """Re-derived from the intervention's own per-token probabilities: the drop in log p − log(1 − p)."""
    import math
    import re

    from vsp_assert import Intervention
    from vsp_assert.checks.assertions import run_case

    for concept in ("green", "triangle"):  # one lowers the answer's log-odds, the other raises them
        result = run_case(shapes_pad, _decoy_case(tmp_path, f"{{token: 0, concepts: [{concept}], confirm: true}}"))
        side, size = re.search(r"(lowers|raises) the objective by ([0-9.]+)", result.records[0].measured).groups()
        drop = float(size) if side == "lowers" else -float(size)
        trace = result.trace
        (ablated,) = shapes_pad.intervene(trace, [Intervention.ablate(concept)])
        p0, p1 = float(trace.token_probs[0]), ablated.token_p_after[0]
        want = (math.log(p0) - math.log1p(-p0)) - (math.log(p1) - math.log1p(-p1))
        assert drop == pytest.approx(want, abs=2e-3), concept
        assert (drop > 0) == (concept == "green")


def test_python_confirm_matches_yaml_and_refuses_a_negative_drop(shapes_pad):
    from vsp_assert.checks.assertions import ConceptAssertionError
    from vsp_assert.errors import InputError
    from vsp_assert.shapes import Scene

    image = Scene.from_dict({"background": "stripes", "shapes": [
        {"shape": "square", "color": "red", "x": 16, "y": 48, "size": 20},
        {"shape": "triangle", "color": "green", "x": 48, "y": 32, "size": 14}]}).render()
    trace = shapes_pad.run(image, "What shape is the red object?")
    trace.assert_attributed(0, "green", absent=["triangle", "square"])  # confirmed by default
    with pytest.raises(ConceptAssertionError, match="triangle"):
        trace.assert_attributed(0, absent=["triangle"], confirm=False)
    with pytest.raises(InputError, match="confirm"):
        trace.assert_attributed(0, "square", confirm=-1.0)


@pytest.mark.parametrize(("answer", "named"), [
    ("{equals: square}", True),                           # failing with the right answer named: explained
    ("{equals: triangle, correct: square}", False),       # passing (a known failure encoded): nothing run
    ("{not: triangle}", False),                           # failing, but no right answer to explain against
])
def test_a_failure_says_which_ablation_brings_the_right_answer_back(shapes_pad, tmp_path, answer, named):
    from vsp_assert.checks.assertions import run_case, why_not_correct
    from vsp_assert.render.case import render_case
    from vsp_assert.render.style import Style

    result = run_case(shapes_pad, _answer_case(tmp_path, answer))
    before = shapes_pad.stats["intervention_forward"]
    why = why_not_correct(shapes_pad, result)
    if not named:
        assert why is None and result.explanation is None
        assert shapes_pad.stats["intervention_forward"] == before
        return
    assert why is result.explanation and why.responsible == "stripes"
    assert shapes_pad.stats["intervention_forward"] == before + 1  # the top concepts in one batched ablation
    text = render_case("x::stripes", result.trace, result.records, style=Style(False), width=160,
                       explanation=why)
    assert "why 'square' → 'triangle' (attributed on this model): carried by stripes" in text
    assert "ablating stripes on this model restores 'square'" in text
    assert why.all_ablated == "square"  # the shapes model's answer with nothing left to read: where ablations drift
    assert "every firing latent ablated gives 'square'" in text
    assert text.index("restores 'square'") < text.index("token-latent heatmap")  # under the records, first
    from vsp_assert.render.html_case import case_html

    html = case_html(0, "x::stripes", result.trace, result.records, top_k=5, max_overlays=1, explanation=why)
    assert "why not &#x27;square&#x27;" in html and "ablating stripes on this model restores &#x27;square&#x27;" in html


def test_a_causal_change_to_where_ablations_drift_is_said_so_in_one_forward(shapes_pad, tmp_path):
    """With every firing latent ablated the shapes model says 'square' to a shape question; a causal record whose
    changed answer is that one says so, from one more row of the case's one batched forward."""
    from vsp_assert.checks.assertions import run_case

    case = _one_case(tmp_path, "drift", STRIPES,
                     "causal: [{ablate: [stripes], changes: true}, {ablate: [red], changes: false}]")
    shapes_pad.stats.clear()
    stripes, red = run_case(shapes_pad, case).records
    assert shapes_pad.stats["intervention_forward"] == 1
    assert stripes.passed and stripes.measured.endswith("; also the answer with every firing latent ablated")
    assert red.passed and "every firing latent" not in red.measured  # unchanged: nothing to compare
