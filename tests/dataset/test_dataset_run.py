"""Dataset cases run on the shipped shapes model: rates with intervals in the failure view, random controls
with a specificity figure, the HTML section, and the Python helpers."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest

from vsp_assert.checks.dataset import run_dataset_case
from vsp_assert.checks.load import parse_case_file
from vsp_assert.render.style import Style

CASE = """\
cases:
  - id: stripes
    each: {scenes: {mechanism: misleading_concept, set: trigger}, n: 8, seed: 5}
    prompt: "{question}"
    show_rows: 1
    expect:
      answer: {equals: "{answer}", min_rate: 0.5}           # fails: the shortcut answers triangle
      causal:
        - {ablate: [stripes], answer: "{shape}", min_rate: 0.8, control: random, controls: 4, specific: true}
        - {ablate: [red], answer: "{shape}", min_rate: 0.0, control: random, controls: 4, specific: true}
"""


@pytest.fixture(scope="module")
def shapes_pad():
    import vsp_assert

    return vsp_assert.Scratchpad(vsp_assert.load_model("shapes"), vsp_assert.load_sae("shapes"), max_new_tokens=3)


@pytest.fixture(scope="module")
def result(shapes_pad, tmp_path_factory):
    path = tmp_path_factory.mktemp("ds") / "c.yaml"
    path.write_text(CASE)
    return run_dataset_case(shapes_pad, parse_case_file(path).cases[0])


def test_a_failing_rate_shows_its_interval_count_and_worst_row(result) -> None:
    from vsp_assert.render.dataset import render_dataset

    answer = result.records[0]
    assert not answer.passed and answer.measured == "rate 0.000 [0.000, 0.324] (0/8)"
    text = render_dataset("c.yaml::stripes", result, style=Style(False), width=120)
    assert "rate 0.000 [0.000, 0.324] (0/8)" in text and "8 row(s) count against the bound" in text
    assert text.count("worst row") == 2 and "token-latent heatmap" in text  # show_rows 1 per failing check
    assert "… and 7 more row(s)" in text


def test_random_controls_show_the_stripes_ablation_is_specific(result) -> None:
    stripes = result.summaries[1]
    assert stripes.passed and stripes.rate.value == 1.0
    assert stripes.control_rate is not None and 1 - stripes.control_rate.value >= 0.9
    assert stripes.p_value is not None and stripes.p_value < 1e-3 and stripes.specific_passed
    assert result.records[2].kind == "specificity" and "specificity 1.000" in result.records[2].measured


def test_specific_fails_when_the_claim_does_no_better_than_its_controls(result) -> None:
    red = result.summaries[2]
    assert red.passed  # min_rate 0 holds …
    assert not red.specific_passed  # … but ablating red restores the shape no more often than random sets
    assert not result.records[-1].passed and result.records[-1].kind == "specificity"


def test_the_report_section_lists_sortable_filterable_rows(result) -> None:
    from vsp_assert.render.dataset import dataset_html

    page = dataset_html(3, "c.yaml::stripes", result, top_k=5, max_overlays=1)
    assert page.startswith('<section class="case dataset failed" id="case-3"')
    assert 'class="grid rows sortable"' in page and 'class="rowfilter"' in page and 'class="failonly"' in page
    assert page.count('<tr class="row') == 8 and "[0.000, 0.324]" in page
    assert 'id="case-3-row-' in page  # the worst rows' full views, folded


def test_rows_share_generate_calls(shapes_pad, tmp_path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text(CASE.replace("n: 8", "n: 5"))
    case = replace(parse_case_file(path).cases[0], checks=())
    before = shapes_pad.stats["generate"]
    run_dataset_case(shapes_pad, replace(case, batch=4))
    assert shapes_pad.stats["generate"] - before == 2  # 5 rows, 4 per batched generate


def test_run_many_and_assert_rate_in_python(shapes_pad) -> None:
    from vsp_assert import RateAssertionError, assert_rate
    from vsp_assert.shapes.mechanisms import MECHANISMS

    probes = MECHANISMS["misleading_concept"].control_scenes(0, 6)
    rows = [{"image": p.scene.render(), "prompt": "{q}", "q": p.question.text, "truth": p.question.answer}
            for p in probes]
    traces = shapes_pad.run_many(rows, batch=4)
    rate = assert_rate(zip(traces, rows, strict=True), lambda tr: tr[0].answer == tr[1]["truth"], min_rate=0.8)
    assert rate.n == 6
    with pytest.raises(RateAssertionError, match=r"rate 0.000 \[0.000, 0.390\] \(0/6\)"):
        assert_rate(traces, lambda t: t.assert_answer("triangle"), min_rate=0.5, what="triangle")


def test_the_bundled_dataset_cases_meet_the_size_rule() -> None:
    root = Path(__file__).parents[2] / "cases"
    from vsp_assert.checks.dataset_schema import DatasetCase

    cases = [c for f in sorted(root.glob("*_rates.yaml")) for c in parse_case_file(f).cases]
    assert len({Path(c.file).name for c in cases}) == 3
    assert all(isinstance(c, DatasetCase) and len(c.rows) >= 100 for c in cases)
    assert all(any(ch.control is not None and ch.control.specific for ch in c.checks)
               for c in cases if "trigger" in c.id and "terse" not in c.id)



ATTRIBUTED = """\
cases:
  - id: dots
    each: {scenes: {mechanism: unused_hidden_cue, set: trigger}, n: 6, seed: 3}
    prompt: "{question}"
    expect:
      answer: {equals: circle}
      attributed:
        - {token: 0, absent: [dots], confirm: false, min_rate: 0.0}
        - {token: 0, absent: [dots], confirm: 0.5, min_rate: 0.9}
  - id: stripes
    each: {scenes: {mechanism: misleading_concept, set: trigger}, n: 4, seed: 3}
    prompt: "{question}"
    expect:
      answer: {equals: triangle, correct: "{answer}"}
      attributed: [{token: 0, concepts: [stripes]}]
"""


def test_dataset_rows_run_attributed_checks_confirmed_and_contrastive(shapes_pad, tmp_path) -> None:
    """``attributed:`` in a dataset case is checked on every row (not dropped); ``confirm`` ablates where the
    ranking names the concept (the captured-but-unused dots: ranked by first order on some rows, refuted by
    ablation on all); each row is attributed against its own ``correct:`` answer."""
    path = tmp_path / "c.yaml"
    path.write_text(ATTRIBUTED)
    dots, stripes = parse_case_file(path).cases
    assert [c.kind for c in dots.checks] == ["answer", "attributed", "attributed"]
    result = run_dataset_case(shapes_pad, dots)
    plain, confirmed = result.summaries[1], result.summaries[2]
    assert confirmed.passed and confirmed.rate.value == 1.0
    assert plain.rate.value < 1.0  # without the ablation the dots count as used on some rows
    assert "(confirmed by ablation)" in result.records[2].description
    seen: list = []
    result = run_dataset_case(shapes_pad, stripes, on_trace=seen.append)
    assert result.passed and len(seen) == 4
    truths = [row.fields["answer"] for row in stripes.rows]
    assert len(set(truths)) > 1  # rows with different true shapes, each the contrast of its own row
    assert [[k for k in t.attributions if k is not None] for t in seen] == [[a] for a in truths]
