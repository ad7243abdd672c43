"""Dataset cases at collection: rows read, templates checked against them, and one clear error per bad input
(file, line, field; the row and the fields available for a template the source lacks)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from PIL import Image

from vsp_assert.checks.dataset_schema import DatasetCase
from vsp_assert.checks.load import parse_case_file
from vsp_assert.errors import CaseError


def _images(folder: Path, n: int) -> list[str]:
    folder.mkdir(parents=True, exist_ok=True)
    names = []
    for i in range(n):
        Image.new("RGB", (32, 32), (200, 30 * i % 255, 40)).save(folder / f"im{i}.png")
        names.append(f"im{i}.png")
    return names


def _manifest(tmp_path: Path, rows: list[dict[str, str]]) -> None:
    (tmp_path / "rows.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))


def _case(tmp_path: Path, body: str) -> Path:
    path = tmp_path / "c.yaml"
    path.write_text("cases:\n  - id: d\n" + body)
    return path


MANIFEST_CASE = """\
    each: {manifest: rows.jsonl}
    prompt: "What color is the {shape}?"
    expect:
      answer: {equals: "{color}", min_rate: 0.9}
"""


def test_a_manifest_case_reads_its_rows_and_fields(tmp_path: Path) -> None:
    names = _images(tmp_path, 3)
    _manifest(tmp_path, [{"image": n, "shape": "square", "color": "red"} for n in names])
    case = parse_case_file(_case(tmp_path, MANIFEST_CASE)).cases[0]
    assert isinstance(case, DatasetCase) and len(case.rows) == 3
    assert case.rows[1].fields["color"] == "red" and case.rows[1].image.endswith("im1.png")
    assert case.checks[0].min_rate == 0.9 and case.checks[0].spec.equals == "{color}"


def test_a_template_field_the_source_lacks_names_the_row_and_the_fields(tmp_path: Path) -> None:
    names = _images(tmp_path, 3)
    _manifest(tmp_path, [{"image": n, "shape": "square", **({"color": "red"} if i != 2 else {})}
                         for i, n in enumerate(names)])
    with pytest.raises(CaseError) as err:
        parse_case_file(_case(tmp_path, MANIFEST_CASE))
    text = str(err.value)
    assert "c.yaml:6" in text and "expect.answer.equals" in text and "rows.jsonl #2" in text
    assert "'color'" in text and "image, name, shape" in text


def test_an_empty_source_is_an_error(tmp_path: Path) -> None:
    (tmp_path / "rows.jsonl").write_text("")
    with pytest.raises(CaseError, match="empty") as err:
        parse_case_file(_case(tmp_path, MANIFEST_CASE))
    assert "c.yaml:3" in str(err.value) and "each.manifest" in str(err.value)


@pytest.mark.parametrize("rate", ["1.5", "-0.1"])
def test_a_rate_outside_the_unit_range_is_an_error(tmp_path: Path, rate: str) -> None:
    names = _images(tmp_path, 1)
    _manifest(tmp_path, [{"image": names[0], "shape": "square", "color": "red"}])
    with pytest.raises(CaseError, match="min_rate out of range") as err:
        parse_case_file(_case(tmp_path, MANIFEST_CASE.replace("0.9", rate)))
    assert "c.yaml:6" in str(err.value) and "0 .. 1" in str(err.value)


def test_control_on_a_steer_is_an_error(tmp_path: Path) -> None:
    body = """\
    each: {scenes: {mechanism: misleading_concept}, n: 3}
    prompt: "{question}"
    expect:
      causal:
        - {steer: {concepts: [stripes], scale: 2}, changes: true, control: random}
"""
    with pytest.raises(CaseError, match="control is for ablations, not steer") as err:
        parse_case_file(_case(tmp_path, body))
    assert "c.yaml:7" in str(err.value) and "causal[0].control" in str(err.value)


def test_missing_images_fail_only_above_the_allowed_fraction(tmp_path: Path) -> None:
    names = _images(tmp_path, 9)
    _manifest(tmp_path, [{"image": n, "shape": "square", "color": "red"} for n in [*names, "gone.png"]])
    with pytest.raises(CaseError, match="1 of 10 rows have a missing") as err:
        parse_case_file(_case(tmp_path, MANIFEST_CASE))
    assert "gone.png" in str(err.value) and "max_missing" in str(err.value)
    case = parse_case_file(_case(tmp_path, MANIFEST_CASE.replace("rows.jsonl}", "rows.jsonl, max_missing: 0.1}")))
    assert len(case.cases[0].rows) == 9 and case.cases[0].missing[0][0].endswith("gone.png")


def test_a_rate_without_rows_is_an_error(tmp_path: Path) -> None:
    body = """\
    image: {scene: {shapes: [{shape: square, color: red, x: 32, y: 32, size: 24}]}}
    prompt: What color is the square?
    expect:
      answer: {equals: red, min_rate: 0.9}
"""
    with pytest.raises(CaseError, match="min_rate needs rows"):
        parse_case_file(_case(tmp_path, body))


def test_scene_rows_carry_the_probe_fields_and_plain_cases_are_unchanged(tmp_path: Path) -> None:
    body = """\
    each: {scenes: {mechanism: limited_alignment, set: trigger}, n: 4, seed: 2}
    prompt: "{fix}"
    expect:
      causal: [{ablate: [yellow], changes: true, min_rate: 0.5, control: random, controls: 3, specific: true}]
"""
    case = parse_case_file(_case(tmp_path, body)).cases[0]
    assert isinstance(case, DatasetCase) and case.rows[0].fields["color"] == "yellow"
    assert case.checks[0].control is not None and case.checks[0].control.n == 3
    plain = parse_case_file(Path(__file__).parents[2] / "cases" / "ordinary.yaml")
    assert not any(isinstance(c, DatasetCase) for c in plain.cases)
