"""Sharded runs: baselines updated by separate shards merge without loss, reports of shards merge into the report
of one run, and ``cuda-per-worker`` pins xdist workers to GPUs."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from vsp_assert.checks.baseline import read_baseline, update_baseline
from vsp_assert.checks.baseline_merge import merge_baseline_docs, merge_baseline_files
from vsp_assert.errors import CaseError, InputError
from vsp_assert.pytest_plugin.devices import worker_device

ids = st.text("abcdefgh-", min_size=1, max_size=6)
entries = st.dictionaries(ids, st.integers(0, 3), max_size=12)


@given(entries, entries, st.randoms())
def test_two_shards_each_updating_half_equal_one_full_update(base: dict, update: dict, rnd) -> None:
    keys = sorted(update)
    rnd.shuffle(keys)
    half = set(keys[: len(keys) // 2])
    shard_a = {**base, **{k: v for k, v in update.items() if k in half}}
    shard_b = {**base, **{k: v for k, v in update.items() if k not in half}}
    assert merge_baseline_docs(base, [shard_a, shard_b]) == {**base, **update}


def test_two_shards_changing_one_case_differently_is_a_conflict() -> None:
    with pytest.raises(CaseError, match="updated the baseline of case 'x' differently"):
        merge_baseline_docs({"x": 1}, [{"x": 2}, {"x": 3}], ["a", "b"])


def _entry(answer: str) -> dict:
    return {"answer": answer, "answer_prob": 0.5, "tokens": [], "captured": [], "interventions": []}


@settings(max_examples=10, deadline=None)
@given(st.lists(st.sampled_from("abcdef"), unique=True, min_size=1), st.lists(st.sampled_from("abcdef"), unique=True))
def test_merging_baseline_files_keeps_every_entry(tmp_path_factory, base_ids: list, updated: list) -> None:
    folder = tmp_path_factory.mktemp("b")
    target, full = folder / "c.baseline.json", folder / "full.baseline.json"
    for path in (target, full):
        update_baseline(path, {k: _entry("old") for k in base_ids}, model="m", sae="s")
    shards = []
    for i, part in enumerate((updated[::2], updated[1::2])):
        shard = folder / f"shard{i}.baseline.json"
        shard.write_text(target.read_text())
        update_baseline(shard, {k: _entry("new") for k in part}, model="m", sae="s")
        shards.append(shard)
    update_baseline(full, {k: _entry("new") for k in updated}, model="m", sae="s")
    merge_baseline_files(target, shards)
    assert read_baseline(target) == read_baseline(full)
    assert target.read_text() == full.read_text()


def _digest(nodeid: str, passed: bool, rate: float) -> dict:
    entry = {"nodeid": nodeid, "passed": passed, "prompt": "p", "answer": "a", "answer_prob": rate,
             "output_tokens": [], "records": [{"kind": "answer", "description": "d", "expected": "e",
                                               "measured": f"rate {rate}", "passed": passed, "latents": [],
                                               "tokens": [], "concept": None}]}
    return {"nodeid": nodeid, "passed": passed, "checked": True, "show": None, "sae_fit": 0.9,
            "html": f'<section class="case" id="case-0">{nodeid}</section>', "json": entry, "answer_prob": rate}


def test_a_merged_report_of_two_shards_shows_the_cases_and_figures_of_one_run(tmp_path: Path) -> None:
    from vsp_assert.cli import main
    from vsp_assert.pytest_plugin.digest import write_report

    digests = [_digest(f"cases/f.yaml::c{i}", i % 3 != 0, i / 10) for i in range(7)]
    write_report(tmp_path / "one", digests)
    write_report(tmp_path / "s1", digests[:4])
    write_report(tmp_path / "s2", digests[4:])
    assert main(["report", "merge", str(tmp_path / "merged"), str(tmp_path / "s1"), str(tmp_path / "s2")]) == 0
    one = json.loads((tmp_path / "one" / "report.json").read_text())
    merged = json.loads((tmp_path / "merged" / "report.json").read_text())
    assert merged == one
    assert (tmp_path / "merged" / "index.html").read_text() == (tmp_path / "one" / "index.html").read_text()


def test_merging_a_report_without_digests_says_so(tmp_path: Path) -> None:
    from vsp_assert.cli.report import merge_reports

    (tmp_path / "old").mkdir()
    (tmp_path / "old" / "report.json").write_text('{"results": []}')
    with pytest.raises(InputError, match="no digests"):
        merge_reports(tmp_path / "out", [tmp_path / "old"])


def test_cuda_per_worker_gives_worker_i_gpu_i_mod_n() -> None:
    assert [worker_device("cuda-per-worker", f"gw{i}", 3) for i in range(5)] == \
        ["cuda:0", "cuda:1", "cuda:2", "cuda:0", "cuda:1"]
    assert worker_device("cuda-per-worker", "", 2) == "cuda:0"
    assert worker_device("cpu", "gw3", 2) == "cpu"
    with pytest.raises(InputError, match="needs a CUDA GPU"):
        worker_device("cuda-per-worker", "gw1", 0)
