"""Fuzzing the readers: case files, label files and baseline files give a valid object or the project's error.

Valid case documents are built from the schema's pieces and must parse and round-trip (parse → dump the parsed
cases back to a document → parse again → equal cases). Invalid ones are made by mutating valid ones (wrong
types, unknown keys, missing required keys, out-of-range numbers, damaged YAML text, garbage) and must raise
:class:`~vsp_assert.errors.CaseError` where they are certainly invalid, and nothing but a
:class:`~vsp_assert.errors.VspError` otherwise. Label and baseline readers get arbitrary JSON-ish values and
near-valid documents. The budget is bounded (``max_examples``, no deadline) and the examples are derandomized when
the ``CI`` environment variable is set, so CI runs are reproducible.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from vsp_assert.checks.baseline import diff_profiles, drift_records, read_baseline, update_baseline
from vsp_assert.checks.load import (
    ANSWER_KEYS,
    CASE_KEYS,
    CAUSAL_KEYS,
    EXPECT_KEYS,
    FILE_KEYS,
    parse_case_file,
)
from vsp_assert.checks.schema import Case, CaseFile
from vsp_assert.engine.labels import ConceptLabels
from vsp_assert.errors import CaseError, SAEError, VspError

CI = bool(os.environ.get("CI"))
FUZZ = settings(
    max_examples=int(os.environ.get("VSP_FUZZ_EXAMPLES", "200")),
    deadline=None,
    derandomize=CI,
    database=None,  # no .hypothesis folder in the tree
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
FUZZ_SMALL = settings(FUZZ, max_examples=max(1, FUZZ.max_examples // 2))

# ---------------------------------------------------------------------- the schema's pieces
WORDS = ["red", "blue", "square", "stripes", "circle", "left", "yes", "no", "on", "null", "12", "3.5", "#4",
         "a: b", "- x", "'q'", "naïve", "全", "  padded  ", "new\nline"]
text = st.one_of(st.sampled_from(WORDS), st.text(min_size=1, max_size=12)).filter(lambda s: s.strip() != "")
ids = st.from_regex(r"[A-Za-z0-9][A-Za-z0-9_.\-]{0,8}", fullmatch=True)
concept = st.one_of(text, st.integers(0, 4096))
concepts = st.one_of(concept, st.lists(concept, min_size=1, max_size=3))
unit = st.floats(-1, 1, allow_nan=False)
score = st.one_of(st.integers(0, 5), st.floats(0, 5, allow_nan=False))
positive = st.integers(1, 64)


def maybe(d: dict[str, Any], key: str, strategy: st.SearchStrategy[Any]) -> st.SearchStrategy[dict[str, Any]]:
    return st.one_of(st.just(d), strategy.map(lambda v: {**d, key: v}))


@st.composite
def optional_keys(draw: st.DrawFn, required: dict[str, Any], optional: dict[str, st.SearchStrategy[Any]]) -> dict:
    out = dict(required)
    for key, strategy in optional.items():
        if draw(st.booleans()):
            out[key] = draw(strategy)
    return out


answer = st.one_of(
    text,
    st.builds(lambda k, v, c: {k: v, **({"correct": c} if c else {})},
              st.sampled_from(["equals", "contains", "not"]), text, st.one_of(st.none(), text)),
    st.lists(text, min_size=1, max_size=3).map(lambda v: {"one_of": v}),
)
captured_item = st.one_of(
    concept,
    optional_keys({"concept": "red"}, {"absent": st.booleans()}).flatmap(
        lambda d: st.builds(lambda c, extra: {**d, "concept": c, **extra}, concept,
                            st.one_of(st.just({}), score.map(lambda s: {"min_score": s}),
                                      positive.map(lambda r: {"max_rank": r})))),
)
attended_item = st.builds(
    lambda token, which, c, a, k: {"token": token, **({"concepts": c} if which != "absent" else {}),
                                   **({"absent": a} if which != "concepts" else {}), **({"top_k": k} if k else {})},
    st.one_of(text, st.integers(-3, 8)), st.sampled_from(["concepts", "absent", "both"]), concepts, concepts,
    st.one_of(st.none(), positive),
)


@st.composite
def causal_item(draw: st.DrawFn) -> dict[str, Any]:
    kind = draw(st.sampled_from(["ablate", "steer", "sufficient"]))
    item: dict[str, Any] = {}
    if kind == "ablate":
        item["ablate"] = draw(concepts)
    elif kind == "steer":
        which = draw(st.sampled_from(["value", "scale"]))
        item["steer"] = {"concepts": draw(concepts), which: draw(st.floats(-10, 10, allow_nan=False))}
    else:
        item["sufficient"] = True
    if kind != "sufficient":
        checks = draw(st.lists(st.sampled_from(["changes", "answer", "min_drop"]), min_size=1, max_size=3,
                               unique=True))
        for check in checks:
            item[check] = draw({"changes": st.booleans(), "answer": text, "min_drop": unit}[check])
    elif draw(st.booleans()):
        item["min_drop"] = draw(unit)
    if draw(st.booleans()):
        item["patches"] = draw(st.one_of(st.just("all"), st.lists(st.integers(0, 15), min_size=1, max_size=3)))
    if draw(st.booleans()):
        item["token"] = draw(st.one_of(text, st.integers(-2, 4)))
    if draw(st.booleans()):
        item["label"] = draw(text)
    return item


@st.composite
def expect(draw: st.DrawFn) -> dict[str, Any]:
    keys = draw(st.lists(st.sampled_from(EXPECT_KEYS), min_size=1, max_size=4, unique=True))
    parts = {"answer": answer, "captured": st.lists(captured_item, min_size=1, max_size=3),
             "attended": st.lists(attended_item, min_size=1, max_size=2),
             "attributed": st.lists(attended_item, min_size=1, max_size=2),  # the same grammar
             "causal": st.lists(causal_item(), min_size=1, max_size=2)}
    return {key: draw(parts[key]) for key in keys}


tolerance = optional_keys({}, {"probability": st.floats(0, 1, allow_nan=False), "rank_correlation": unit,
                               "top_k": positive})
marks = st.lists(st.one_of(st.sampled_from(["xfail", "skip"]),
                           st.builds(lambda k, r: {k: r}, st.sampled_from(["xfail", "skip"]), text)),
                 min_size=1, max_size=2)
shape = st.fixed_dictionaries({"shape": st.sampled_from(["circle", "square", "triangle"]),
                               "color": st.sampled_from(["red", "green", "blue", "yellow"]),
                               "x": st.integers(0, 63), "y": st.integers(0, 63), "size": st.integers(4, 32)})
scene = st.fixed_dictionaries({}, optional={"shapes": st.lists(shape, max_size=2),
                                            "background": st.sampled_from(["plain", "stripes", "dots", "grid"]),
                                            "seed": st.integers(0, 9)}).map(lambda d: {"scene": d})


@st.composite
def case_doc(draw: st.DrawFn, case_id: str) -> dict[str, Any]:
    return draw(optional_keys(
        {"id": case_id, "image": draw(st.one_of(st.just("img.png"), st.just("sub/../img.png"), scene)),
         "prompt": draw(text), "expect": draw(expect())},
        {"marks": marks, "tolerance": tolerance, "max_new_tokens": positive, "top_k": positive,
         "description": text},
    ))


@st.composite
def file_doc(draw: st.DrawFn) -> dict[str, Any]:
    case_ids = draw(st.lists(ids, min_size=1, max_size=3, unique=True))
    doc: dict[str, Any] = {"cases": [draw(case_doc(i)) for i in case_ids]}
    if draw(st.booleans()):
        doc["defaults"] = draw(optional_keys({}, {"top_k": positive, "min_score": score, "max_new_tokens": positive,
                                                  "tolerance": tolerance}))
    for key in ("model", "sae"):
        if draw(st.booleans()):
            doc[key] = draw(text)
    return doc


# ---------------------------------------------------------------------- dumping parsed cases back
def case_to_dict(case: Case) -> dict[str, Any]:
    """A parsed :class:`Case` as a case document (the inverse of the schema, for round trips)."""
    e = case.expect
    exp: dict[str, Any] = {}
    if e.answer is not None:
        a = e.answer
        exp["answer"] = {k: v for k, v in (("equals", a.equals), ("contains", a.contains),
                                            ("one_of", list(a.one_of) if a.one_of else None), ("not", a.not_),
                                            ("correct", a.correct)) if v is not None}
    if e.captured:
        exp["captured"] = [{"concept": c.concept, "absent": c.absent,
                            **({"min_score": c.min_score} if c.min_score is not None else {}),
                            **({"max_rank": c.max_rank} if c.max_rank is not None else {})} for c in e.captured]
    for key, items in (("attended", e.attended), ("attributed", e.attributed)):
        if items:
            exp[key] = [{"token": a.token, **({"concepts": list(a.concepts)} if a.concepts else {}),
                         **({"absent": list(a.absent)} if a.absent else {}),
                         **({"top_k": a.top_k} if a.top_k is not None else {})} for a in items]
    if e.causal:
        exp["causal"] = []
        for c in e.causal:
            item: dict[str, Any] = {"token": c.token}
            if c.sufficient:
                item["sufficient"] = True
            elif c.steer is not None:
                names, value, scale = c.steer
                item["steer"] = {"concepts": list(names), **({"value": value} if value is not None else {}),
                                 **({"scale": scale} if scale is not None else {})}
            else:
                item["ablate"] = list(c.ablate)
            for key in ("changes", "answer", "min_drop", "label"):
                if getattr(c, key) is not None:
                    item[key] = getattr(c, key)
            item["patches"] = list(c.patches) if c.patches is not None else "all"
            exp["causal"].append(item)
    t = case.tolerance
    out: dict[str, Any] = {
        "id": case.id, "image": case.image, "prompt": case.prompt, "expect": exp, "top_k": case.top_k,
        "tolerance": {"probability": t.probability, "rank_correlation": t.rank_correlation, "top_k": t.top_k},
    }
    if case.marks:
        out["marks"] = [name if reason is None else {name: reason} for name, reason in case.marks]
    if case.max_new_tokens is not None:
        out["max_new_tokens"] = case.max_new_tokens
    if case.description is not None:
        out["description"] = case.description
    return out


def file_to_dict(parsed: CaseFile) -> dict[str, Any]:
    min_score = parsed.cases[0].min_score  # None: each concept's calibrated threshold (no file default)
    doc: dict[str, Any] = {"defaults": {"min_score": min_score} if min_score is not None else {},
                           "cases": [case_to_dict(c) for c in parsed.cases]}
    for key in ("model", "sae"):
        if getattr(parsed, key) is not None:
            doc[key] = getattr(parsed, key)
    return doc


def comparable(parsed: CaseFile) -> list[Case]:
    return [dataclasses.replace(c, line=0, file="") for c in parsed.cases]


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("fuzz")
    from PIL import Image

    Image.new("RGB", (16, 16), (200, 30, 30)).save(root / "img.png")
    return root


def parse(folder: Path, text_: str) -> CaseFile:
    return parse_case_file(folder / "cases.yaml", text=text_, root=folder)


def dump(doc: Any) -> str:
    return yaml.safe_dump(doc, allow_unicode=True, sort_keys=False)


# ---------------------------------------------------------------------- case files
@FUZZ
@given(doc=file_doc())
def test_valid_case_documents_parse_and_round_trip(folder: Path, doc: dict[str, Any]) -> None:
    first = parse(folder, dump(doc))
    assert [c.id for c in first.cases] == [c["id"] for c in doc["cases"]]
    again = parse(folder, dump(file_to_dict(first)))
    assert comparable(again) == comparable(first)
    assert (again.model, again.sae) == (first.model, first.sae)


WRONG = [None, [], {}, 1.5, True, -1, 0, "", "x", [None], {"k": 1}, 10**40, float("nan"), float("inf")]


def schema_nodes(doc: Any, path: tuple[Any, ...] = (), *, scenes: bool = True) -> list[tuple[Any, ...]]:
    """Paths of every node of a document (``scenes=False``: not inside scene specs, whose shape items take
    extra keys)."""
    out = [path]
    if isinstance(doc, dict) and (scenes or "scene" not in doc):
        for key, value in doc.items():
            out += schema_nodes(value, path + (key,), scenes=scenes)
    elif isinstance(doc, list):
        for i, value in enumerate(doc):
            out += schema_nodes(value, path + (i,), scenes=scenes)
    return out


def at(doc: Any, path: tuple[Any, ...]) -> Any:
    for key in path:
        doc = doc[key]
    return doc


@st.composite
def mutated(draw: st.DrawFn) -> tuple[dict[str, Any], bool]:
    """A valid document with one mutation, and whether the mutation certainly makes it invalid."""
    doc = json.loads(json.dumps(draw(file_doc())))  # a deep copy we may edit
    kind = draw(st.sampled_from(["wrong-type", "unknown-key", "missing-key", "out-of-range"]))
    if kind == "wrong-type":
        path = draw(st.sampled_from(schema_nodes(doc)[1:]))
        at(doc, path[:-1])[path[-1]] = draw(st.sampled_from(WRONG))
        return doc, False
    if kind == "unknown-key":
        maps = [p for p in schema_nodes(doc, scenes=False) if isinstance(at(doc, p), dict) and "scene" not in p]
        path = draw(st.sampled_from(maps))
        key = draw(st.one_of(st.sampled_from(["promt", "captued", "Cases", "ablation", "min-drop", "1", "tokens"]),
                             st.text(min_size=1, max_size=8)))
        known = FILE_KEYS + CASE_KEYS + EXPECT_KEYS + ANSWER_KEYS + CAUSAL_KEYS + (
            "concept", "min_score", "max_rank", "absent", "token", "concepts", "top_k", "value", "scale",
            "probability", "rank_correlation", "xfail", "skip")
        assume(key not in known)
        target = at(doc, path)
        if len(path) >= 1 and path[-1] == "marks":
            return doc, False
        target[key] = 1
        return doc, True
    if kind == "missing-key":
        i = draw(st.integers(0, len(doc["cases"]) - 1))
        key = draw(st.sampled_from(["id", "image", "prompt", "expect"]))
        if draw(st.booleans()):
            del doc["cases"]
        else:
            del doc["cases"][i][key]
        return doc, True
    i = draw(st.integers(0, len(doc["cases"]) - 1))
    field_, value = draw(st.sampled_from([
        ("top_k", 0), ("top_k", -5), ("max_new_tokens", 0), ("tolerance", {"probability": 1.5}),
        ("tolerance", {"rank_correlation": -2}), ("tolerance", {"top_k": 0}),
        ("expect", {"causal": [{"ablate": ["red"], "min_drop": 1.01}]}),
        ("expect", {"captured": [{"concept": "red", "min_score": -0.1}]}),
        ("expect", {"captured": [-1]}), ("expect", {"attended": [{"token": 0, "concepts": ["red"], "top_k": 0}]}),
        ("expect", {"causal": [{"ablate": ["red"], "patches": [-1], "changes": True}]}),
    ]))
    doc["cases"][i][field_] = value
    return doc, True


@FUZZ
@given(case=mutated())
def test_mutated_case_documents_raise_only_the_project_error(folder: Path, case: tuple[dict[str, Any], bool]) -> None:
    doc, certainly_invalid = case
    try:
        parse(folder, dump(doc))
    except CaseError:
        return
    assert not certainly_invalid, "an invalid document was accepted"


@st.composite
def damaged_text(draw: st.DrawFn) -> str:
    """A valid document's YAML with a few characters deleted, inserted or replaced."""
    text_ = dump(draw(file_doc()))
    for _ in range(draw(st.integers(1, 4))):
        pos = draw(st.integers(0, len(text_)))
        op = draw(st.sampled_from(["delete", "insert", "replace"]))
        junk = draw(st.sampled_from([":", "-", " ", "\t", "\n", "[", "{", "'", '"', "&a", "*a", "!!", "#", "%",
                                     "\x00", "\x85", "\ufeff", "? ", "<<: *a"]))
        if op == "delete":
            text_ = text_[:pos] + text_[pos + draw(st.integers(1, 5)):]
        elif op == "insert":
            text_ = text_[:pos] + junk + text_[pos:]
        else:
            text_ = text_[:pos] + junk + text_[pos + 1:]
    return text_


@FUZZ
@given(text_=st.one_of(damaged_text(), st.text(max_size=200), st.binary(max_size=100).map(
    lambda b: b.decode("latin-1"))))
def test_damaged_yaml_gives_a_case_file_or_the_project_error(folder: Path, text_: str) -> None:
    try:
        parsed = parse(folder, text_)
    except CaseError as exc:
        assert exc.file == str(folder / "cases.yaml")
        return
    assert parsed.cases and all(isinstance(c, Case) for c in parsed.cases)


# ---------------------------------------------------------------------- label files
json_scalar = st.one_of(st.none(), st.booleans(), st.integers(-5, 80), st.floats(allow_nan=False), st.text(max_size=6))
json_value = st.recursive(json_scalar, lambda inner: st.one_of(
    st.lists(inner, max_size=4), st.dictionaries(st.text(max_size=6), inner, max_size=4)), max_leaves=12)
latent_id = st.one_of(st.integers(-2, 70), json_scalar)
near_labels = st.fixed_dictionaries({}, optional={
    "concepts": st.one_of(st.dictionaries(st.text(max_size=6), st.one_of(latent_id, st.lists(latent_id, max_size=4)),
                                          max_size=4), json_value),
    "latents": st.one_of(st.dictionaries(st.one_of(st.integers(-2, 70).map(str), st.text(max_size=4)),
                                         st.one_of(st.dictionaries(st.text(max_size=6), json_scalar), json_value),
                                         max_size=3), json_value),
    "dead": st.one_of(st.lists(latent_id, max_size=4), json_value),
    "d_sae": json_value,
})


@FUZZ
@given(raw=st.one_of(near_labels, json_value))
def test_label_files_give_labels_or_the_project_error(raw: Any) -> None:
    try:
        labels = ConceptLabels.from_dict(raw, d_sae=64, source="concepts.json")
    except SAEError as exc:
        assert exc.file == "concepts.json"
        return
    ids = [i for group in labels.concepts.values() for i in group] + list(labels.latents) + labels.dead
    assert all(isinstance(i, int) and 0 <= i < 64 for i in ids)
    again = ConceptLabels.from_dict(json.loads(json.dumps(labels.to_dict())), d_sae=64, source="concepts.json")
    assert again == labels
    for name in labels.concepts:
        assert labels.resolve(name) == labels.concepts[name]


# ---------------------------------------------------------------------- baseline files
finite = st.floats(-10, 10, allow_nan=False)
scored = st.tuples(st.text(max_size=6), st.integers(0, 99), finite).map(list)
entry = st.fixed_dictionaries({
    "answer": st.text(max_size=8), "answer_prob": st.floats(0, 1),
    "tokens": st.lists(st.fixed_dictionaries({"top": st.lists(scored, max_size=3)},
                                             optional={"text": st.text(max_size=4)}), max_size=3),
    "captured": st.lists(scored, max_size=3),
    "interventions": st.lists(st.fixed_dictionaries({"intervention": st.text(max_size=8),
                                                     "answer_after": st.text(max_size=8),
                                                     "p_after": st.floats(0, 1), "drop": unit}), max_size=2),
})


def damage(value: Any, draw: st.DrawFn) -> Any:
    """Replace one node of a JSON value by a random JSON value."""
    nodes: list[tuple[Any, Any]] = []

    def walk(v: Any) -> None:
        if isinstance(v, dict):
            for k in v:
                nodes.append((v, k))
                walk(v[k])
        elif isinstance(v, list):
            for i in range(len(v)):
                nodes.append((v, i))
                walk(v[i])

    walk(value)
    if nodes:
        parent, key = draw(st.sampled_from(nodes))
        parent[key] = draw(json_value)
    return value


@st.composite
def baseline_doc(draw: st.DrawFn) -> tuple[Any, bool]:
    doc = {"version": 1, "model": "m", "sae": "s",
           "cases": draw(st.dictionaries(st.text(min_size=1, max_size=6), entry, max_size=3))}
    if draw(st.booleans()):
        return doc, True
    if draw(st.booleans()):
        return draw(json_value), False
    return damage(doc, draw), False


@FUZZ_SMALL
@given(case=baseline_doc())
def test_baseline_files_give_entries_or_the_project_error(tmp_path_factory: pytest.TempPathFactory,
                                                           case: tuple[Any, bool]) -> None:
    doc, valid = case
    folder = tmp_path_factory.mktemp("baseline")
    path = folder / "cases.baseline.json"
    path.write_text(json.dumps(doc))
    try:
        cases = read_baseline(path)
    except CaseError as exc:
        assert not valid, str(exc)
        assert exc.file == str(path)
        return
    from vsp_assert.checks.schema import Tolerance

    for prof in cases.values():  # a baseline the reader accepts is usable by the drift check
        drift_records(diff_profiles(prof, prof, None, 3), Tolerance())
    copy = folder / "copy.baseline.json"
    update_baseline(copy, cases, model="m", sae="s")
    assert read_baseline(copy) == cases
    assert all(not math.isnan(float(p["answer_prob"])) for p in cases.values())


@pytest.mark.parametrize("text_", ["", "null", "[]", '"text"', "1" * 5000, "[" * 100000, "{\"version\": 1,}",
                                   '{"version": 1, "cases": {"a": NaN}}'])
def test_odd_baseline_texts_are_project_errors(tmp_path: Path, text_: str) -> None:
    path = tmp_path / "odd.baseline.json"
    path.write_text(text_)
    with pytest.raises(VspError):
        read_baseline(path)
