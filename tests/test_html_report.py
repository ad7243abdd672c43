"""The static HTML report: structure, self-containment, escaping, report.json, and a headless Chromium render.

Traces come from the tiny in-process LLaVA and a random SAE with labelled concepts; records come from the real
checks in ``vsp_assert.checks.assertions`` (captured, attended, answer, and causal through ``Scratchpad.intervene``).
"""

from __future__ import annotations

import base64
import io
import json
import os
import re
import shutil
import subprocess
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from vsp_assert import Intervention, Scratchpad
from vsp_assert.checks.assertions import check_answer, check_attended, check_captured, check_causal
from vsp_assert.checks.schema import AnswerSpec, AttendedSpec, CapturedSpec, CausalSpec
from vsp_assert.engine.analysis import heatmap
from vsp_assert.render.colormap import ANCHORS, hex_colour, ramp
from vsp_assert.render.html import IMAGE_BOX, OVERLAY_BOX, fit_image, overlay, write_report

QUADRANTS = [(255, 0, 0), (0, 200, 0), (0, 0, 255), (255, 255, 0)]  # top-left, top-right, bottom-left, bottom-right
EVIL_PROMPT = "what color is the <script>alert(1)</script> square ?"


def quadrant_image(height: int = 32, width: int = 32) -> Image.Image:
    pixels = np.zeros((height, width, 3), np.uint8)  # [H, W, 3]
    h, w = height // 2, width // 2
    pixels[:h, :w], pixels[:h, w:], pixels[h:, :w], pixels[h:, w:] = QUADRANTS
    return Image.fromarray(pixels)


@pytest.fixture(scope="module")
def results(tiny: Any, tiny_sae: Any) -> list[tuple[str, Any, list[Any]]]:
    """Two recorded cases: a passing one (listed first) and a failing one with markup in its prompt and id."""
    pad = Scratchpad(tiny, tiny_sae, max_new_tokens=4)
    ok_trace = pad.run(quadrant_image(24, 40), "what color is the square ?")
    bad_trace = pad.run(quadrant_image(), EVIL_PROMPT)
    top = ok_trace.top_concepts(0, 1)[0][0]
    ok_effect, = pad.intervene(ok_trace, [Intervention.ablate("red")])
    bad_effect, = pad.intervene(bad_trace, [Intervention.ablate("stripes")])
    passing = [
        check_answer(ok_trace, AnswerSpec(equals=ok_trace.answer)),
        check_captured(ok_trace, CapturedSpec("red", min_score=-1.0)),
        *check_attended(ok_trace, AttendedSpec(0, (top,), top_k=3)),
        check_causal(ok_trace, CausalSpec(ablate=("red",), min_drop=-1.0), ok_effect),
    ]
    failing = [
        check_captured(bad_trace, CapturedSpec("blue", min_score=1e9)),
        check_causal(bad_trace, CausalSpec(ablate=("stripes",), min_drop=2.0), bad_effect),
    ]
    assert all(r.passed for r in passing) and not any(r.passed for r in failing)
    # min_score=-1.0 and min_drop=-1.0 cannot fail: the figures they measured must equal direct computations
    red = [1, 2]  # the latents of "red" in tiny_sae (tests/conftest.py)
    assert passing[1].latents == red
    assert passing[1].measured.startswith(f"score {float(ok_trace.acts[:, red].mean(0).sum()):.3f}, ")
    direct, = pad.intervene(ok_trace, [Intervention.ablate(*red)])
    assert ok_effect.latents == red
    assert (ok_effect.p_before, ok_effect.p_after, ok_effect.drop) == (direct.p_before, direct.p_after, direct.drop)
    assert ok_effect.p_before == pytest.approx(ok_trace.answer_prob, rel=1e-4)
    return [("tests/test_colors.py::test_square", ok_trace, passing),
            ("tests/test_colors.py::test_<b>evil</b>", bad_trace, failing)]


@pytest.fixture(scope="module")
def report(results: list[tuple[str, Any, list[Any]]], tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_report(tmp_path_factory.mktemp("report") / "out", results, title="vsp-assert report")


class PageParser(HTMLParser):
    """Collects what the tests check: case sections, heatmap rows and columns, images, links."""

    def __init__(self) -> None:
        super().__init__()
        self.sections: list[dict[str, Any]] = []
        self.links: list[str] = []
        self.images: list[tuple[str, str]] = []  # (figure class, src)
        self.figure: str = ""
        self.in_heatmap = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = {k: v or "" for k, v in attrs}
        classes = a.get("class", "").split()
        if tag == "section" and "case" in classes:
            self.sections.append({"id": a["id"], "status": a["data-status"], "latents": [], "rows": [],
                                  "highlighted": [], "colours": [], "figures": [], "heatmaps": 0,
                                  "attributed_latents": []})
        elif tag == "a" and "href" in a:
            self.links.append(a["href"])
        elif tag == "figure":
            self.figure = a.get("class", "")
        elif tag == "img":
            self.images.append((self.figure, a["src"]))
            if self.sections:
                self.sections[-1]["figures"].append(self.figure)
        elif tag == "table" and "heatmap" in classes:
            self.sections[-1]["heatmaps"] += 1
            self.in_heatmap = self.sections[-1]["heatmaps"] == 1  # the first: the attended view
        elif tag == "th" and "lat" in classes and self.sections and self.sections[-1]["heatmaps"] == 2:
            self.sections[-1]["attributed_latents"].append(int(a["data-latent"]))  # the attributed view
        elif self.in_heatmap and tag == "th" and "lat" in classes:
            self.sections[-1]["latents"].append(int(a["data-latent"]))
            if "hl" in classes:
                self.sections[-1]["highlighted"].append(int(a["data-latent"]))
        elif self.in_heatmap and tag == "tr" and "tok" in classes:
            self.sections[-1]["rows"].append(0)
        elif self.in_heatmap and tag == "td" and "cell" in classes:
            self.sections[-1]["rows"][-1] += 1
            self.sections[-1]["colours"].append(re.search(r"background:(#[0-9a-f]{6})", a["style"]).group(1))

    def handle_endtag(self, tag: str) -> None:
        if tag == "table":
            self.in_heatmap = False


def parse(page: str) -> PageParser:
    parser = PageParser()
    parser.feed(page)
    return parser


def decode_png(uri: str) -> Image.Image:
    prefix = "data:image/png;base64,"
    assert uri.startswith(prefix)
    data = base64.b64decode(uri[len(prefix):], validate=True)
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    Image.open(io.BytesIO(data)).verify()
    return Image.open(io.BytesIO(data))


# ---------------------------------------------------------------------- structure
def test_report_is_one_self_contained_page(report: Path) -> None:
    assert report.name == "index.html" and sorted(p.name for p in report.parent.iterdir()) == ["index.html",
                                                                                               "report.json"]
    page = report.read_text(encoding="utf-8")
    assert "http" not in page and "<link" not in page and "@import" not in page and "url(" not in page
    sources = re.findall(r'src="([^"]*)"', page)
    assert sources and all(s.startswith("data:image/png;base64,") for s in sources)
    assert 'src="/' not in page and "<script" not in page


def test_failing_cases_come_first_and_the_summary_links_them(report: Path, results: list[Any]) -> None:
    page = parse(report.read_text(encoding="utf-8"))
    assert [s["status"] for s in page.sections] == ["failed", "passed"]
    assert [s["id"] for s in page.sections] == ["case-0", "case-1"]
    assert page.links == ["#case-0", "#case-1"]
    text = report.read_text(encoding="utf-8")
    # the failing case (recorded second) is shown first, in the summary and in the sections
    evil, square = "tests/test_colors.py::test_&lt;b&gt;evil&lt;/b&gt;", "tests/test_colors.py::test_square"
    assert text.index(evil) < text.index(square)
    assert text.index('id="case-0"') < text.index('id="case-1"')
    assert "1 passed" in text and "1 failed" in text


def test_heatmap_table_has_a_row_per_token_and_a_column_per_latent(report: Path, results: list[Any]) -> None:
    page = parse(report.read_text(encoding="utf-8"))
    for section, (_, trace, records) in zip(page.sections, [results[1], results[0]]):
        asserted = list(dict.fromkeys(i for r in records for i in r.latents))
        expected = heatmap(trace, top_k=5, extra=asserted)
        assert section["latents"] == expected.latents  # clustered order, as the analysis gives it
        assert section["rows"] == [len(expected.latents)] * trace.n_tokens
        assert set(section["highlighted"]) == set(asserted) & set(expected.latents)
        levels = expected.values.ravel() / np.abs(expected.values).max()
        assert section["colours"] == [hex_colour(v) for v in levels]
        # the switch's other view: the attributed heatmap, over the latents attribution ranks
        assert section["heatmaps"] == 2
        assert section["attributed_latents"] == heatmap(trace, top_k=5, extra=asserted, view="attributed").latents


def test_images_are_valid_pngs_of_the_expected_sizes(report: Path, results: list[Any]) -> None:
    page = parse(report.read_text(encoding="utf-8"))
    by_class: dict[str, list[Image.Image]] = {}
    for figure, uri in page.images:
        by_class.setdefault(figure, []).append(decode_png(uri))
    main = by_class["image"]
    assert [im.size for im in main] == [(IMAGE_BOX, IMAGE_BOX), (IMAGE_BOX, round(24 * IMAGE_BOX / 40))]
    # NEAREST upscaling keeps the test image's colours exact
    pixels = np.asarray(main[0].convert("RGB"))  # [192, 192, 3]
    assert tuple(pixels[10, 10]) == QUADRANTS[0] and tuple(pixels[-10, -10]) == QUADRANTS[3]
    n_tokens = [results[1][1].n_tokens, results[0][1].n_tokens]
    assert [s["figures"].count("attention") for s in page.sections] == [min(t, 8) for t in n_tokens]
    assert all(im.size == (OVERLAY_BOX, OVERLAY_BOX) for im in by_class["attention"][: n_tokens[0]])
    # one spatial map per asserted concept: blue + stripes (failing); red + the attended latent (passing)
    assert [s["figures"].count("concept") for s in page.sections] == [2, 2]


def test_text_is_escaped(report: Path) -> None:
    page = report.read_text(encoding="utf-8")
    assert "<script>" not in page and "<b>evil" not in page
    assert "what color is the &lt;script&gt;alert(1)&lt;/script&gt; square ?" in page
    assert "test_&lt;b&gt;evil&lt;/b&gt;" in page


def test_report_json_round_trips(report: Path, results: list[Any]) -> None:
    data = json.loads((report.parent / "report.json").read_text(encoding="utf-8"))
    assert (data["cases"], data["passed"], data["failed"]) == (2, 1, 1)
    for case, (nodeid, trace, records) in zip(data["results"], [results[1], results[0]]):
        assert case["nodeid"] == nodeid and case["passed"] == all(r.passed for r in records)
        assert case["prompt"] == trace.prompt and case["answer"] == trace.answer
        assert case["answer_prob"] == pytest.approx(trace.answer_prob)
        assert case["records"] == json.loads(json.dumps([{**r.to_dict(), "concept": r.concept} for r in records]))
    causal = data["results"][0]["records"][1]
    assert causal["kind"] == "causal" and causal["intervention"]["answer_before"] == results[1][1].answer
    assert json.loads(json.dumps(data)) == data


def test_overlays_are_capped_and_an_empty_session_writes_a_page(results: list[Any], tmp_path: Path) -> None:
    _, trace, records = results[1]
    page = parse(write_report(tmp_path / "capped", [("case", trace, records)], max_overlays=2)
                 .read_text(encoding="utf-8"))
    assert page.sections[0]["figures"].count("attention") == 2
    empty = write_report(tmp_path / "empty", []).read_text(encoding="utf-8")
    assert "<b>0</b> case(s)" in empty and "no concept cases were recorded" in empty
    assert json.loads((tmp_path / "empty" / "report.json").read_text())["results"] == []


def test_a_hundred_cases_give_a_hundred_sections_and_a_page_that_grows_linearly(results: list[Any],
                                                                             tmp_path: Path) -> None:
    """Speed lives in benchmarks/; here the structure: one section per case, and nothing shared across cases that
    grows with their number (each case's section costs what it costs alone)."""
    many = [(f"case{i}", *results[i % 2][1:]) for i in range(100)]
    two = write_report(tmp_path / "two", many[:2]).read_text(encoding="utf-8")
    page = write_report(tmp_path / "many", many).read_text(encoding="utf-8")
    assert len(parse(page).sections) == 100
    empty = len(write_report(tmp_path / "empty", []).read_text(encoding="utf-8"))
    per_case_two, per_case_many = (len(two) - empty) / 2, (len(page) - empty) / 100
    assert per_case_many <= 1.1 * per_case_two, (per_case_many, per_case_two)


# ---------------------------------------------------------------------- drawing
def test_ramp_is_monotone_in_lightness_and_clips() -> None:
    levels = np.linspace(0.0, 1.0, 33)
    colours = ramp(levels)  # [33, 3]
    assert colours.shape == (33, 3) and colours.dtype == np.uint8
    lightness = colours.astype(float) @ np.array([0.2126, 0.7152, 0.0722])
    assert np.all(np.diff(lightness) > 0)
    assert np.array_equal(ramp(np.array([-1.0, np.nan, 2.0])), ANCHORS[[0, 0, -1]].astype(np.uint8))
    assert ramp(np.zeros((2, 5))).shape == (2, 5, 3)
    assert hex_colour(1.0) == "#fde725"


def test_overlay_puts_the_bright_colour_on_the_hot_patch() -> None:
    base = fit_image(Image.new("RGB", (8, 8), (128, 128, 128)), 64)
    assert base.size == (64, 64)
    levels = np.zeros((4, 4))
    levels[1, 2] = 1.0  # one hot patch: rows 16..31, columns 32..47 of the 64-px image
    out = np.asarray(overlay(base, levels)).astype(int)  # [64, 64, 3]
    hot, cold = out[20, 40], out[50, 5]
    assert hot[0] > cold[0] and hot[1] > cold[1] and hot[2] < cold[2]  # yellow-ish vs violet-ish
    assert np.array_equal(out[16:32, 32:48], np.broadcast_to(hot, (16, 16, 3)))  # one block per patch


# ---------------------------------------------------------------------- a pytest session with --vsp-report
SESSION_CASES = """
cases:
  - id: right-answer
    image: img.png
    prompt: "what color is the square ?"
    expect:
      answer: "{answer}"
      captured: ["#{latent}"]
      causal:
        - ablate: ["#{latent}"]
          min_drop: -1.0
  - id: wrong-answer
    image: img.png
    prompt: "what color is the square ?"
    expect:
      answer: "zzz"
      captured: [red]
"""


@pytest.fixture
def session_report(vsp: pytest.Pytester, saved: dict[str, Any]) -> Path:
    """``pytest --vsp-report out`` over a YAML file with a passing and a failing case (the saved tiny model)."""
    pytester = vsp
    pytester.makefile(".yaml", test_cases=SESSION_CASES.format(answer=saved["answer"], latent=saved["top_latent"]))
    result = pytester.runpytest("--vsp-report", "out")
    result.assert_outcomes(passed=1, failed=1)
    result.stdout.fnmatch_lines(["*HTML report: out/index.html*"])
    return pytester.path / "out" / "index.html"


def test_pytest_session_writes_the_report(session_report: Path, saved: dict[str, Any]) -> None:
    page = parse(session_report.read_text(encoding="utf-8"))
    assert [s["status"] for s in page.sections] == ["failed", "passed"]
    assert all(s["rows"] and len(set(s["rows"])) == 1 and s["rows"][0] == len(s["latents"]) for s in page.sections)
    data = json.loads((session_report.parent / "report.json").read_text(encoding="utf-8"))
    assert [c["nodeid"] for c in data["results"]] == ["test_cases.yaml::wrong-answer", "test_cases.yaml::right-answer"]
    assert [r["kind"] for r in data["results"][1]["records"]] == ["answer", "captured", "causal"]
    assert "intervention" in data["results"][1]["records"][2]
    # the failing case names its right answer ('zzz'): why not, with the ablations that checked it, in both files
    why = data["results"][0]["why_not_correct"]
    assert why["old_answer"] == "zzz" and why["new_answer"] == data["results"][0]["answer"]
    assert len(why["confirmations"]) == min(3, len(why["concepts"])) and "why_not_correct" not in data["results"][1]
    assert session_report.read_text(encoding="utf-8").count("why not &#x27;zzz&#x27;") == 1
    # min_drop: -1.0 cannot fail: the reported figures must equal a direct ablation on the same model
    from vsp_assert import load_model, load_sae

    pad = Scratchpad(load_model(saved["model"]), load_sae(saved["sae"]), max_new_tokens=3)
    trace = pad.run(saved["image"], "what color is the square ?")
    direct, = pad.intervene(trace, [Intervention.ablate(f"#{saved['top_latent']}")])
    assert data["results"][1]["answer_prob"] == trace.answer_prob
    shown = data["results"][1]["records"][2]["intervention"]
    assert (shown["drop"], shown["p_after"]) == (direct.drop, direct.p_after)
    assert shown["answer_after"] == direct.answer_after


# ---------------------------------------------------------------------- headless Chromium
def find_chromium() -> str | None:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        path = shutil.which(name)
        if path:
            return path
    return None


def screenshot(page: Path, tmp_path: Path) -> dict[tuple[int, int, int], int]:
    """Render ``page`` in headless Chromium (1280×2000) and count the pixels of each colour on screen."""
    browser = find_chromium()
    if browser is None:  # .ci/run installs it, so under CI (CI set) its absence fails instead of skipping
        reason = "chromium not installed: apt-get install chromium"
        if os.environ.get("CI"):
            pytest.fail(f"{reason} (CI is set, and .ci/run installs it)", pytrace=False)
        pytest.skip(reason)
    shot = tmp_path / "shot.png"
    command = [browser, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
               "--window-size=1280,2000", f"--user-data-dir={tmp_path / 'profile'}", f"--screenshot={shot}",
               page.resolve().as_uri()]
    done = subprocess.run(command, capture_output=True, text=True, timeout=120)
    assert shot.exists(), f"no screenshot (exit {done.returncode}): {done.stderr[-2000:]}"
    screen = np.asarray(Image.open(shot).convert("RGB"))  # [2000, 1280, 3]
    assert screen.shape == (2000, 1280, 3)
    colours, counts = np.unique(screen.reshape(-1, 3), axis=0, return_counts=True)
    seen = {(int(c[0]), int(c[1]), int(c[2])): int(n) for c, n in zip(colours, counts)}
    assert 1.0 - seen.get((255, 255, 255), 0) / screen[..., 0].size > 0.05, "blank page"
    return seen


def assert_heatmap_on_screen(page: Path, seen: dict[tuple[int, int, int], int]) -> None:
    """Every distinct cell colour of the first case's heatmap fills (most of) at least one cell on screen."""
    first = parse(page.read_text(encoding="utf-8")).sections[0]
    cells = {(int(h[1:3], 16), int(h[3:5], 16), int(h[5:7], 16)) for h in first["colours"]}
    assert len(cells) >= 3
    for colour in cells:
        assert seen.get(colour, 0) >= 300, f"heatmap colour {colour} not rendered"


def test_report_renders_in_headless_chromium(report: Path, tmp_path: Path) -> None:
    seen = screenshot(report, tmp_path)
    # the failing case's image (first section) is on screen, upscaled: each quadrant ≈ 96×96 pixels
    for colour in QUADRANTS:
        assert seen.get(colour, 0) >= 0.8 * (IMAGE_BOX // 2) ** 2, f"image colour {colour} missing"
    assert_heatmap_on_screen(report, seen)


def test_session_report_renders_in_headless_chromium(session_report: Path, saved: dict[str, Any],
                                                     tmp_path: Path) -> None:
    seen = screenshot(session_report, tmp_path)
    assert_heatmap_on_screen(session_report, seen)
    # the case image (40×40 random pixels, upscaled ×4.8 with NEAREST) shows its own colours on screen
    pixels = np.asarray(Image.open(saved["image"]).convert("RGB")).reshape(-1, 3)  # [1600, 3]
    shown = sum(1 for p in pixels if seen.get((int(p[0]), int(p[1]), int(p[2])), 0) >= 16)
    assert shown >= 0.9 * len(pixels)


# ---------------------------------------------------------------------- latent cards (concepts build's atlas)
@pytest.fixture(scope="module")
def atlas_sae(tmp_path_factory) -> Path:
    """A copy of the shapes SAE whose concepts were built, with an atlas, on a small shapes export."""
    from vsp_assert.cli import main
    from vsp_assert.shapes import SAE_DIR
    from vsp_assert.shapes.export import export

    root = tmp_path_factory.mktemp("atlas")
    manifest = export(root / "export", 24, seed=5)
    sae = root / "sae"
    shutil.copytree(SAE_DIR, sae)
    assert main(["concepts", "build", "--model", "shapes", "--sae", str(sae), "--images", str(manifest)]) == 0
    return sae


def test_each_heatmap_latent_has_a_card_with_its_stats_and_reference_images(atlas_sae, tmp_path):
    from vsp_assert import load_model, load_sae
    from vsp_assert.render.concepts import latent_header
    from vsp_assert.shapes import Scene

    pad = Scratchpad(load_model("shapes"), load_sae(atlas_sae))
    image = Scene.from_dict({"background": "stripes",
                             "shapes": [{"shape": "square", "color": "red", "x": 32, "y": 32, "size": 26}]}).render()
    trace = pad.run(image, "What shape is the red object?")
    page = write_report(tmp_path / "out", [("case", trace, [check_answer(trace, AnswerSpec(equals="triangle"))])])
    html = page.read_text(encoding="utf-8")
    # a card per column of both views of the heatmap (attended first, then what only the attributed view shows)
    columns = list(dict.fromkeys([*heatmap(trace).latents, *heatmap(trace, view="attributed").latents]))
    cards = re.findall(r'<details class="latent" data-latent="(\d+)">(.*?)</details>', html, re.S)
    assert [int(i) for i, _ in cards] == columns
    labels = trace.labels
    assert labels is not None
    for latent, body in cards:
        k = int(latent)
        assert latent_header(labels, k).split("  ")[0] in body  # its name and statistics
        assert body.count('<img src="data:image/png;base64,') == len(labels.references(k)) > 0
    # open every card and look: the first card's first thumbnail is on screen
    opened = tmp_path / "opened.html"
    opened.write_text(html.replace('<details class="latent"', '<details open class="latent"'), encoding="utf-8")
    first = re.search(r'<img src="data:image/png;base64,([^"]+)"', cards[0][1])
    assert first is not None
    thumb = np.asarray(Image.open(io.BytesIO(base64.b64decode(first.group(1)))).convert("RGB")).reshape(-1, 3)
    colours, counts = np.unique(thumb, axis=0, return_counts=True)
    main_colour = tuple(int(c) for c in colours[int(np.argmax(counts))])
    seen = screenshot(opened, tmp_path)
    assert seen.get(main_colour, 0) >= 0.5 * int(counts.max()), f"thumbnail colour {main_colour} not on screen"
