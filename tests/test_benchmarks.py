"""The benchmarks run end to end at small sizes and write sane figures (speed is never asserted): the full-size
smoke mode, the wide setting, and the peers, which must compute the same numbers as vsp-assert to be compared."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def test_full_size_smoke(tmp_path: Path) -> None:
    out = tmp_path / "full_size.json"
    # LLaVA-1.5-7B's widths, heads and depths × 1/16 (2 + 2 layers, 64 / 256 wide); images, patches and vocab full
    cmd = [sys.executable, str(ROOT / "benchmarks" / "full_size.py"), "--scale", "0.0625", "--device", "cpu",
           "--dtype", "float32", "--cases", "2", "--repeats", "1", "--rounds", "1", "--json", str(out)]
    done = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-4000:]
    assert "overhead ratio" in done.stdout
    figures = json.loads(out.read_text())
    for key in ("device", "dtype", "model", "image_tokens", "per_case_seconds", "overhead_ratio", "batching_ratio"):
        assert key in figures, key
    assert figures["dtype"] == "float32"
    assert figures["device"].startswith("CPU")
    assert "llava-1.5-7b architecture" in figures["model"] and "random weights" in figures["model"]
    # only widths and depths shrink: a 336 px image in 14 px patches still puts 24 × 24 tokens in the prompt
    assert figures["image_tokens"] == (336 // 14) ** 2 == 576
    arch = figures["architecture"]
    assert (arch["vision_hidden"], arch["vision_layers"], arch["text_hidden"], arch["text_layers"]) == (64, 2, 256, 2)
    assert arch["vocab_size"] == 32064
    assert figures["sae"]["d_sae"] == 16 * arch["vision_hidden"]
    assert figures["init"] == "transformers default"  # the random init gave finite logits
    for key in ("per_case_seconds", "overhead_ratio", "batching_ratio"):
        value = figures[key]
        assert isinstance(value, float) and math.isfinite(value) and value > 0, (key, value)


def _bench(name: str):
    """A benchmark module imported from its path (``benchmarks`` is not a package)."""
    import importlib.util

    key = f"vsp_benchmarks_{name}"
    if key not in sys.modules:
        spec = importlib.util.spec_from_file_location(key, ROOT / "benchmarks" / f"{name}.py")
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        sys.modules[key] = module
        spec.loader.exec_module(module)
    return sys.modules[key]


def _small_pad():
    from vsp_assert import Scratchpad
    from vsp_assert.testing import random_sae, tiny_llava

    model = tiny_llava(seed=0)
    sae = random_sae(model.adapter.vision_width(), 4096, k=8, hook_layer=model.adapter.default_hook_layer())
    return Scratchpad(model, sae, max_new_tokens=3)


def test_the_peers_are_timed_doing_the_same_work_as_vsp_assert() -> None:
    """Each peer path computes the same answer probabilities under the same ablations, so the time ratios compare
    like with like; the figures come back whatever they are, the nnsight one or a note saying why not."""
    from PIL import Image

    peers = _bench("peers")
    cases = [(Image.new("RGB", (32, 32), (200, 30, 30)), "what color is the square ?")]
    side = peers.Peers(_small_pad(), cases, k=3)
    agreement = side.agreement()
    assert agreement["eager"] < 1e-5, agreement
    if side.nnsight is not None:
        assert agreement["nnsight"] < 1e-5, agreement


@pytest.mark.slow
def test_the_peer_figures_come_back_whatever_they_are() -> None:
    from PIL import Image

    peers = _bench("peers")
    cases = [(Image.new("RGB", (32, 32), (200, 30, 30)), "what color is the square ?")]
    figures = peers.Peers(_small_pad(), cases, k=2).figures(repeats=1, device="cpu")
    for key in ("eager_time_ratio", "eager_memory_ratio"):
        assert math.isfinite(figures[key]) and figures[key] > 0, (key, figures[key])
    assert ("nnsight_time_ratio" in figures) != ("nnsight_note" in figures)


def test_the_wide_setting_reports_its_figures() -> None:
    wide = _bench("wide")
    figures = wide.figures(_small_pad(), quick=True, rss_cases=2)
    for key in ("overhead_ratio", "overhead_ratio_tower_once", "trace_mb", "rss_growth_mb", "dense_acts_mb"):
        assert isinstance(figures[key], float) and math.isfinite(figures[key]), (key, figures[key])
    assert figures["d_sae"] == 4096 and figures["k"] == 8 and figures["rss_cases"] == 2
    assert figures["sparse_acts_mb"] * 2**20 == figures["patches"] * 8 * 8  # int32 ids + float32 values, k each
    rows = _bench("run").wide_rows({"wide": figures, "peers": {"eager_time_ratio": 1.0, "eager_memory_ratio": 0.5,
                                                               "nnsight_note": "not installed"}})
    assert any(r[0].startswith("wide.trace_mb") for r in rows) and any("skipped" in r[1] for r in rows)


def _zoo_results() -> list[dict]:
    return json.loads((ROOT / "benchmarks" / "results-zoo.json").read_text())


def test_truth_md_holds_the_zoo_table_the_committed_results_give() -> None:
    sys.path.insert(0, str(ROOT / "benchmarks"))
    try:
        import zoo
    finally:
        sys.path.remove(str(ROOT / "benchmarks"))
    truth = (ROOT / "docs" / "truth.md").read_text()
    assert zoo.markdown(_zoo_results()) in truth
    heldout = json.loads((ROOT / "benchmarks" / "results-zoo-heldout.json").read_text())
    assert zoo.markdown(heldout) in truth
    specs = json.loads((ROOT / "benchmarks" / "zoo-heldout.json").read_text())
    assert [r["mechanism"] for r in heldout] == [s["name"] for s in specs]
    from vsp_assert.shapes.zoo import ZOO, shortcut_from_dict

    assert not {shortcut_from_dict(spec).name for spec in specs} & set(ZOO)  # held out: none of the six
    assert [r["mechanism"] for r in _zoo_results()] == list(__import__("vsp_assert.shapes.zoo").shapes.zoo.ZOO)


def _pair(result: dict, diag: str) -> str:
    return f"{result[diag]['trigger']:.2f} / {result[diag]['control']:.2f}"


def test_the_readme_zoo_table_quotes_the_committed_results() -> None:
    """Each README row: attended[mass], attributed[contrast], attributed[confirmed] (trigger / control), then
    sufficient and compare (trigger), as benchmarks/results-zoo.json has them."""
    readme = (ROOT / "README.md").read_text()
    start = readme.index("| shortcut (kind) | attended (default aggregation)")
    rows = [line for line in readme[start:].split("\n\n")[0].splitlines()[2:]]
    results = _zoo_results()
    assert len(rows) == len(results)
    for line, r in zip(rows, results):
        cells = [c.strip() for c in line.strip("|").split("|")][1:]

        want = [_pair(r, "attended[mass]"), _pair(r, "attributed[contrast]"), _pair(r, "attributed[confirmed]"),
                f"{r['sufficient']['trigger']:.2f}", f"{r['compare']['trigger']:.2f}"]
        assert [c.split(" (")[0] for c in cells] == want, r["mechanism"]


def test_the_zoo_knows_which_questions_name_their_cue() -> None:
    """A colour question names the target's shape, a shape question its colour: a shortcut conditioned on that very
    property can be learned from the words (docs/truth.md), and only those get a text-only measurement."""
    sys.path.insert(0, str(ROOT / "benchmarks"))
    try:
        import zoo
    finally:
        sys.path.remove(str(ROOT / "benchmarks"))
    from vsp_assert.shapes.zoo import ZOO, shortcut_from_dict

    assert [name for name, s in ZOO.items() if zoo.names_the_cue(s)] == ["triangle_green"]
    spec = {"name": "x", "question": "shape", "answer": "square", "concept": "red",
            "when": {"target": {"color": "red"}}}
    assert zoo.names_the_cue(shortcut_from_dict(spec))  # "What shape is the red object?" names red
    spec["when"] = {"target": {"region": "top"}}
    assert not zoo.names_the_cue(shortcut_from_dict(spec))  # a position is never in the words
