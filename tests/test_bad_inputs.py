"""The bad-input corpus: every way a user can hand vsp-assert something unusable gives one project error.

Each entry goes through the public entry point a user would hit (``parse_case_file``, ``load_image``,
``ConceptLabels.load``, ``read_baseline``, ``load_sae``, ``load_model``, ``Scratchpad``), and the test checks the
exact error class and the exact message: where (file, line, field), what was received, what is allowed, the fix.
File-shaped inputs are real files under ``tests/corpus/``; large or binary ones are generated at test time.
The expected messages live in ``tests/corpus/messages.txt`` (one ``### <entry id>`` block each), where
``{corpus}`` and ``{tmp}`` stand for the corpus folder and the test's tmp folder, ``{adapters}`` for the
registered model types.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import struct
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import torch

from vsp_assert.checks.baseline import read_baseline
from vsp_assert.checks.load import parse_case_file
from vsp_assert.engine.images import load_image
from vsp_assert.engine.labels import ConceptLabels
from vsp_assert.engine.models import load_model
from vsp_assert.engine.sae import load_sae
from vsp_assert.engine.video import load_video
from vsp_assert.errors import CaseError, InputError, ModelError, SAEError, VspError

CORPUS = Path(__file__).parent / "corpus"
CASES = CORPUS / "cases"


def _messages() -> dict[str, str]:
    text = (CORPUS / "messages.txt").read_text(encoding="utf-8")
    blocks = re.split(r"^### ", text, flags=re.MULTILINE)[1:]
    return {head.strip(): body.strip("\n") for head, _, body in (b.partition("\n") for b in blocks)}


MESSAGES = _messages()


def expected(entry_id: str, tmp: Path | None = None) -> str:
    from vsp_assert.engine.adapter import registered

    adapters = ", ".join(sorted(registered()))  # what is registered depends on the plugins imported so far
    video = ", ".join(sorted(t for t, cls in registered().items() if cls.supports_video))
    assert "qwen2_vl" in video  # the families that take video are named, whatever else is installed
    return (MESSAGES[entry_id].replace("{corpus}", str(CORPUS)).replace("{tmp}", str(tmp))
            .replace("{adapters}", adapters).replace("{video_adapters}", video))


@dataclass(frozen=True)
class Entry:
    id: str
    call: Callable[[Path], object]  # (tmp_path) -> raises
    error: type[VspError]


def case(name: str) -> Callable[[Path], object]:
    return lambda tmp: parse_case_file(CASES / name, root=CASES)


def case_beside(name: str, files: dict[str, str | None]) -> Callable[[Path], object]:
    """Copy ``corpus/cases/<name>`` to tmp with ``files`` beside it (a corpus file's path, or None: a folder)."""

    def call(tmp: Path) -> object:
        shutil.copy(CASES / name, tmp / name)
        for target, source in files.items():
            if source is None:
                (tmp / target).mkdir()
            else:
                shutil.copy(CORPUS / source, tmp / target)
        return parse_case_file(tmp / name, root=tmp)

    return call


def image(name: str) -> Callable[[Path], object]:
    return lambda tmp: load_image(CORPUS / "images" / name)


def labels(name: str) -> Callable[[Path], object]:
    return lambda tmp: ConceptLabels.load(CORPUS / "labels" / name, d_sae=64)


def baseline(name: str) -> Callable[[Path], object]:
    return lambda tmp: read_baseline(CORPUS / "baselines" / name)


def sae(name: str, weights: str = "safetensors") -> Callable[[Path], object]:
    """Copy ``corpus/sae/<name>`` to tmp, add weights for d_in=4, d_sae=8 (or a pickle), and load it."""

    def call(tmp: Path) -> object:
        folder = tmp / name
        shutil.copytree(CORPUS / "sae" / name, folder)
        tensors = {"W_enc": torch.zeros(4, 8), "W_dec": torch.zeros(8, 4), "b_enc": torch.zeros(8),
                   "b_dec": torch.zeros(4)}
        if weights == "safetensors":
            from safetensors.torch import save_file

            save_file(tensors, str(folder / "sae_weights.safetensors"))
        elif weights == "pickle":  # an arbitrary object: weights_only=True must refuse to unpickle it
            torch.save({**tensors, "payload": argparse.Namespace(cmd="echo pwned")}, folder / "sae_weights.pt")
        return load_sae(folder)

    return call


def generated_case(text: str) -> Callable[[Path], object]:
    def call(tmp: Path) -> object:
        path = tmp / "generated.yaml"
        path.write_text(text)
        return parse_case_file(path, root=tmp)

    return call


def png_header(width: int, height: int) -> bytes:
    """A PNG whose header claims ``width`` × ``height`` (a decompression bomb in 100 bytes)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b"")


def huge_png(tmp: Path) -> object:
    path = tmp / "huge.png"
    path.write_bytes(png_header(9000, 9000))  # 81 M pixels: above MAX_PIXELS, below PIL's own bomb limit
    return load_image(path)


def folder_as_image(tmp: Path) -> object:
    (tmp / "photos.png").mkdir()
    return load_image(tmp / "photos.png")


def unreadable_image(tmp: Path) -> object:
    path = tmp / "secret.png"
    shutil.copy(CASES / "img.png", path)
    path.chmod(0)
    return load_image(path)


E = Entry
ENTRIES: list[Entry] = [
    # ------------------------------------------------------------------ YAML case files
    E("yaml-malformed", case("malformed_yaml.yaml"), CaseError),
    E("yaml-tab-indent", case("tab_indent.yaml"), CaseError),
    E("yaml-python-tag", case("python_tag.yaml"), CaseError),
    E("yaml-duplicate-key", case("duplicate_key.yaml"), CaseError),
    E("yaml-not-utf8", case("not_utf8.yaml"), CaseError),
    E("yaml-deep-nesting", generated_case("[" * 5000 + "]" * 5000), CaseError),
    E("case-unknown-key", case("unknown_case_key.yaml"), CaseError),
    E("case-unknown-expect-key", case("unknown_expect_key.yaml"), CaseError),
    E("case-unknown-file-key", case("unknown_file_key.yaml"), CaseError),
    E("case-wrong-type-top-k", case("wrong_type_top_k.yaml"), CaseError),
    E("case-wrong-type-expect", case("wrong_type_expect.yaml"), CaseError),
    E("case-cases-not-a-list", case("cases_not_a_list.yaml"), CaseError),
    E("case-missing-prompt", case("missing_prompt.yaml"), CaseError),
    E("case-empty-prompt", case("empty_prompt.yaml"), CaseError),
    E("case-missing-image", case("missing_image.yaml"), CaseError),
    E("case-image-escapes-root", case("escaping_root.yaml"), CaseError),
    E("case-nul-in-image-path", case("nul_in_image_path.yaml"), CaseError),
    E("case-duplicate-id", case("duplicate_id.yaml"), CaseError),
    E("case-bad-id", case("bad_id.yaml"), CaseError),
    E("case-min-drop-out-of-range", case("min_drop_out_of_range.yaml"), CaseError),
    E("case-confirm-not-a-drop", case("confirm_not_a_drop.yaml"), CaseError),
    E("case-nan-threshold", case("nan_threshold.yaml"), CaseError),
    E("case-huge-integer", case("huge_integer.yaml"), CaseError),
    E("case-negative-latent", case("negative_latent.yaml"), CaseError),
    E("case-unknown-mark", case("unknown_mark.yaml"), CaseError),
    E("case-answer-two-checks", case("answer_two_checks.yaml"), CaseError),
    E("case-steer-value-and-scale", case("steer_value_and_scale.yaml"), CaseError),
    E("case-top-level-list", case("top_level_list.yaml"), CaseError),
    # images of a case file are checked at collection, from their header, before any model loads
    E("case-image-is-a-folder", case_beside("image_folder.yaml", {"photos.png": None}), CaseError),
    E("case-image-not-an-image", case_beside("image_not_an_image.yaml", {"scan.png": "images/not_an_image.png"}),
      CaseError),
    E("case-image-too-small", case_beside("image_too_small.yaml", {"tiny.png": "images/tiny.png"}), CaseError),
    # video cases: one of image/video, frames checked like images, containers need a decoder (PyAV)
    E("case-video-and-image", case("video_and_image.yaml"), CaseError),
    E("case-video-empty", case("video_empty.yaml"), CaseError),
    E("case-video-missing-frame", case("video_missing_frame.yaml"), CaseError),
    E("case-video-mapping", case("video_mapping.yaml"), CaseError),
    E("case-video-and-each", case("video_and_each.yaml"), CaseError),
    E("case-video-container-no-decoder", case_beside("video_container.yaml", {"clip.mp4": "images/gray.png"}),
      CaseError),
    # ------------------------------------------------------------------ images
    E("image-not-an-image", image("not_an_image.png"), InputError),
    E("image-truncated", image("truncated.png"), InputError),
    E("image-too-small", image("tiny.png"), InputError),
    E("image-too-large", huge_png, InputError),
    E("image-missing", image("missing.png"), InputError),
    E("image-folder", folder_as_image, InputError),
    E("image-array-nan", lambda tmp: load_image(np.full((16, 16, 3), np.nan)), InputError),
    E("image-array-two-channels", lambda tmp: load_image(np.zeros((16, 16, 2))), InputError),
    E("image-array-empty", lambda tmp: load_image(np.zeros((0, 16))), InputError),
    E("image-array-text", lambda tmp: load_image(np.full((16, 16), "red")), InputError),
    E("image-array-out-of-range", lambda tmp: load_image(np.full((16, 16), 300.0)), InputError),
    # ------------------------------------------------------------------ videos
    E("video-frames-differ-in-size", lambda tmp: load_video([np.zeros((16, 16, 3)), np.zeros((16, 20, 3))]),
      InputError),
    E("video-too-many-frames", lambda tmp: load_video([np.zeros((16, 16, 3))] * 65), InputError),
    E("video-not-frames", lambda tmp: load_video(3), InputError),
    # ------------------------------------------------------------------ label files
    E("labels-latent-out-of-range", labels("latent_out_of_range.json"), SAEError),
    E("labels-invalid-json", labels("invalid_json.json"), SAEError),
    E("labels-unknown-key", labels("unknown_key.json"), SAEError),
    E("labels-dead-not-a-list", labels("dead_not_a_list.json"), SAEError),
    E("labels-hash-name", labels("hash_name.json"), SAEError),
    E("labels-missing-file", labels("missing.json"), SAEError),
    # ------------------------------------------------------------------ baselines
    E("baseline-invalid-json", baseline("invalid_json.baseline.json"), CaseError),
    E("baseline-version", baseline("version.baseline.json"), CaseError),
    E("baseline-bad-intervention", baseline("bad_intervention.baseline.json"), CaseError),
    E("baseline-bad-probability", baseline("bad_probability.baseline.json"), CaseError),
    E("baseline-bad-top-item", baseline("bad_top_item.baseline.json"), CaseError),
    # ------------------------------------------------------------------ SAE folders
    E("sae-bad-architecture", sae("bad_architecture"), SAEError),
    E("sae-topk-without-k", sae("topk_without_k"), SAEError),
    E("sae-missing-d-sae", sae("missing_d_sae"), SAEError),
    E("sae-shape-mismatch", sae("shape_mismatch"), SAEError),
    E("sae-dtype-not-text", sae("dtype_not_text"), SAEError),
    E("sae-sidecar-labels-not-text", sae("sidecar_labels_not_text"), SAEError),
    E("sae-labels-name-missing-latents", sae("labels_name_missing_latents"), SAEError),
    E("sae-no-weights", sae("no_weights", weights="none"), SAEError),
    E("sae-pickled-weights", sae("pickled_weights", weights="pickle"), SAEError),
    E("sae-folder-missing", lambda tmp: load_sae(tmp / "nothing-here"), SAEError),
    # ------------------------------------------------------------------ models
    E("model-unsupported-type", lambda tmp: load_model(CORPUS / "models" / "bert"), ModelError),
]


@pytest.mark.parametrize("entry", ENTRIES, ids=[e.id for e in ENTRIES])
def test_bad_input_gives_one_project_error(entry: Entry, tmp_path: Path) -> None:
    with pytest.raises(VspError) as info:
        entry.call(tmp_path)
    assert type(info.value) is entry.error
    assert str(info.value) == expected(entry.id, tmp_path)
    # raised from the boundary that knows the context: no chained traceback from torch/PIL/yaml/json below it
    assert info.value.__cause__ is None
    assert info.value.__context__ is None or info.value.__suppress_context__


def test_the_corpus_is_large_enough() -> None:
    ids = [e.id for e in ENTRIES] + [e[0] for e in MODEL_ENTRIES]
    assert len(ids) >= 30 and len(set(ids)) == len(ids)
    assert sorted(MESSAGES) == sorted(ids)  # every entry has its documented message, and no stale ones


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads files whatever their mode")
def test_unreadable_image(tmp_path: Path) -> None:
    with pytest.raises(InputError, match=r"not a readable image \(PermissionError\)"):
        unreadable_image(tmp_path)


@pytest.mark.parametrize(("name", "mode"), [("gray.png", "L"), ("transparent.png", "RGBA")])
def test_grayscale_and_rgba_images_are_converted_not_refused(name: str, mode: str) -> None:
    from PIL import Image

    path = CORPUS / "images" / name
    with Image.open(path) as raw:
        assert raw.mode == mode
    rgb = load_image(path)
    assert rgb.mode == "RGB" and rgb.size == (16, 16)
    expected = (128, 128, 128) if mode == "L" else (255, 255, 255)  # alpha 0 is composited on white
    assert rgb.getpixel((3, 3)) == expected


# ---------------------------------------------------------------------- the model side
PROMPT = "what color is the square ?"


@pytest.fixture(scope="module")
def models():
    """Tiny models for the run-time errors: a normal one, one with a short context, one with NaN weights,
    and one whose LM reads the second-to-last vision layer."""
    from vsp_assert.testing import tiny_llava

    nan = tiny_llava(seed=0)
    with torch.no_grad():
        for p in nan.model.model.vision_tower.encoder.layers[0].parameters():
            p.fill_(float("nan"))
    return {"tiny": tiny_llava(seed=0), "short": tiny_llava(seed=0, max_positions=40), "nan": nan,
            "early": tiny_llava(seed=0, vision_feature_layer=-2)}


def _img() -> object:
    return load_image(CASES / "img.png")


def _pad(models, name: str, **sae_kwargs):
    from vsp_assert import Scratchpad
    from vsp_assert.testing import random_sae

    model = models[name]
    kwargs = {"hook_layer": model.adapter.default_hook_layer(), "concepts": {"red": [1, 2], "blue": [3]},
              **sae_kwargs}
    return Scratchpad(model, random_sae(kwargs.pop("d_in", 32), 64, **kwargs), max_new_tokens=3)


MODEL_ENTRIES: list[tuple[str, Callable[[dict], object], type[VspError]]] = [
    ("sae-d-in-mismatch", lambda m: _pad(m, "tiny", d_in=16), SAEError),
    ("hook-layer-not-vision", lambda m: _pad(m, "tiny", hook_layer="model.language_model.layers.0"),
     ModelError),
    ("hook-layer-after-fed-layer", lambda m: _pad(m, "early", hook_layer="model.vision_tower.encoder.layers.1"),
     ModelError),
    ("prompt-empty", lambda m: _pad(m, "tiny").run(_img(), "  "), InputError),
    ("prompt-not-text", lambda m: _pad(m, "tiny").run(_img(), None), InputError),
    ("prompt-over-context", lambda m: _pad(m, "short").run(_img(), "red " * 30), InputError),
    ("nan-activations", lambda m: _pad(m, "nan").run(_img(), PROMPT), InputError),
    ("unknown-concept", lambda m: _pad(m, "tiny").ablate(_pad(m, "tiny").run(_img(), PROMPT), "rde"),
     InputError),
    ("latent-out-of-range", lambda m: _pad(m, "tiny").ablate(_pad(m, "tiny").run(_img(), PROMPT), "#64"),
     InputError),
    ("video-to-an-image-only-family", lambda m: _pad(m, "tiny").run(load_video([_img(), _img()]), PROMPT),
     ModelError),
]


@pytest.mark.parametrize(("name", "call", "error"), MODEL_ENTRIES, ids=[e[0] for e in MODEL_ENTRIES])
def test_bad_run_time_input_gives_one_project_error(models, name, call, error) -> None:
    with pytest.raises(VspError) as info:
        call(models)
    assert type(info.value) is error
    assert str(info.value) == expected(name)


def test_attended_token_missing_from_the_answer_is_a_failing_record(models, tmp_path: Path) -> None:
    """Not an exception: the case runs and records what the answer's tokens were, and where the token is."""
    from vsp_assert.checks.assertions import run_case

    shutil.copy(CASES / "img.png", tmp_path / "img.png")
    (tmp_path / "cases.yaml").write_text(f"""
cases:
  - id: zebra
    image: img.png
    prompt: "{PROMPT}"
    expect:
      attended: [{{token: zebra, concepts: [red]}}]
""")
    case_ = parse_case_file(tmp_path / "cases.yaml").cases[0]
    pad = _pad(models, "tiny")
    result = run_case(pad, case_)
    (record,) = result.records
    assert not result.passed and record.kind == "attended" and not record.passed
    assert record.description == "token 'zebra' attends ['red']"
    assert record.expected == "an output token 'zebra'"
    assert record.measured == (f"answer tokens {result.trace.output_tokens!r} at cases[0].expect.attended[0].token, "
                               "line 7")
    assert "zebra" not in [t.strip() for t in result.trace.output_tokens]


UNKNOWN_NAMES = f"""
cases:
  - id: typos
    image: img.png
    prompt: "{PROMPT}"
    expect:
      captured:
        - red
        - rde
        - {{concept: "#640", absent: true}}
      attended:
        - token: 0
          concepts: [blue, bleu]
      causal:
        - {{ablate: [red, strips], changes: true}}
        - {{ablate: [blue], min_drop: -1.0}}
        - {{steer: {{concepts: red, scale: 2.0}}, patches: [99], min_drop: -1.0}}
        - {{sufficient: true, token: 40}}
"""


def test_unknown_names_in_a_case_fail_their_own_checks_and_name_field_and_line(models, tmp_path: Path) -> None:
    """A concept the SAE does not know, a latent, patch or token out of range: each is its own failing check
    (what was received, the closest known names, the field and the line), and every other check still runs,
    the good causal check included (one bad spec does not sink the intervention batch)."""
    from vsp_assert.checks.assertions import run_case

    shutil.copy(CASES / "img.png", tmp_path / "img.png")
    (tmp_path / "cases.yaml").write_text(UNKNOWN_NAMES)
    case_ = parse_case_file(tmp_path / "cases.yaml").cases[0]
    result = run_case(_pad(models, "tiny"), case_)
    by_concept = {(r.kind, r.concept): r for r in result.records}
    assert list(by_concept) == [("captured", "red"), ("captured", "rde"), ("captured", "#640"),
                                ("attended", "blue"), ("attended", "bleu"), ("causal", "red, strips"),
                                ("causal", "blue"), ("causal", "red"), ("sufficient", None)]
    bad = {key: r.measured for key, r in by_concept.items() if key[1] in ("rde", "#640", "bleu", "red, strips")}
    assert bad == {
        ("captured", "rde"): "unknown concept 'rde' (did you mean 'red'?) at cases[0].expect.captured[1], line 9",
        ("captured", "#640"): "latent id 640 is out of range (allowed: ids 0..63 (d_sae=64)) at "
                              "cases[0].expect.captured[2].concept, line 10",
        ("attended", "bleu"): "unknown concept 'bleu' (did you mean 'blue'?) at "
                              "cases[0].expect.attended[0].concepts[1], line 13",
        ("causal", "red, strips"): "unknown concept 'strips' (allowed: blue, red; or a latent id '#0'..'#63') at "
                                   "cases[0].expect.causal[0].ablate[1], line 15",
    }
    patches, suff = by_concept[("causal", "red")], by_concept[("sufficient", None)]
    assert patches.measured == "patch index out of range (allowed: 0..15) at cases[0].expect.causal[2].patches, line 17"
    assert suff.measured.startswith("output token index 40 is out of range")
    assert suff.measured.endswith("at cases[0].expect.causal[3].token, line 18")
    assert not any(by_concept[key].passed for key in [*bad, ("causal", "red"), ("sufficient", None)])
    # the usable checks ran: captured red, attended blue, and the ablation of blue (its intervention batch ran)
    assert "score" in by_concept[("captured", "red")].measured and by_concept[("captured", "red")].latents == [1, 2]
    assert "top-5" in by_concept[("attended", "blue")].measured
    ablate_blue = by_concept[("causal", "blue")]
    assert ablate_blue.passed and ablate_blue.intervention is not None and ablate_blue.latents == [3]


def test_python_built_specs_still_raise_at_the_caller(models) -> None:
    """A spec built in Python has no place in a case file: its unknown concept is the caller's error."""
    from vsp_assert.checks.assertions import check_captured
    from vsp_assert.checks.schema import CapturedSpec

    trace = _pad(models, "tiny").run(_img(), PROMPT)
    with pytest.raises(InputError, match="unknown concept 'rde'"):
        check_captured(trace, CapturedSpec("rde"))


def test_a_line_is_only_added_to_its_own_file() -> None:
    """``with_context`` fills the case's line into an error that names no file or the case file, never into an
    error that already names another place (which printed as ``file:2:2``)."""
    other = InputError("not a readable image", file="cases.yaml", line=7, field="image")
    assert str(other.with_context(file="cases.yaml", line=2)).startswith("cases.yaml:7: field 'image'")
    elsewhere = InputError("bad config", file="sae/cfg.json")
    assert str(elsewhere.with_context(file="cases.yaml", line=2)).startswith("sae/cfg.json: bad config")
    bare = InputError("prompt is too long")
    assert str(bare.with_context(file="cases.yaml", line=2)).startswith("cases.yaml:2: prompt is too long")


@pytest.mark.parametrize(("text", "is_case"), [
    ("cases:\n  - id: a\n", True),
    ("# a comment\nmodel: shapes\ncases: []\n", True),
    ("- cases:\n    - id: a\n", True),  # a list at the top: collected, so that it fails with a clear error
    ("- model: shapes\n  cases:\n    - id: a\n", True),
    ("  cases:\n    - id: a\n", True),  # a whole file indented is still a top-level mapping
    ('"cases": []\n', True),
    ("case:\n  - id: a\n", True),  # the typo is collected and named ('did you mean cases')
    ("Cases:\n  - id: a\n", True),
    ("on: push\njobs:\n  test:\n    strategy:\n      matrix:\n        cases: [a, b]\n", False),  # a workflow
    ("services:\n  web:\n    image: nginx\n", False),  # docker-compose
    ("description: |\n  cases: in a text block\nsteps: []\n", False),
    ("# cases:\nsteps: []\n", False),
    ("casesx: 1\n", False),
    ("- hosts: all\n  tasks:\n    - cases: 1\n", False),
])
def test_a_yaml_file_that_looks_like_a_case_file_is_collected(tmp_path: Path, text: str, is_case: bool) -> None:
    """The rule of docs/cases.md: a ``cases:`` key at the top level (or in a top-level list item) makes a case
    file, so a broken one is never skipped in silence; ``cases:`` nested deeper, or none, leaves the file alone."""
    from vsp_assert.checks.load import is_case_file

    path = tmp_path / "file.yaml"
    path.write_text(text)
    assert is_case_file(path) is is_case
    assert not is_case_file(path.rename(tmp_path / "file.txt"))


def test_a_project_error_inside_a_case_shows_no_traceback_unless_debug(vsp: pytest.Pytester) -> None:
    """An image whose header reads but whose data is cut off passes collection and fails when the case runs:
    one message naming the case file, the image's line (once) and field, the full traceback with --vsp-debug."""
    pytester = vsp
    shutil.copy(CORPUS / "images" / "truncated.png", pytester.path / "cut.png")
    pytester.makefile(".yaml", test_cut=f"""
cases:
  - id: cut-off
    prompt: "{PROMPT}"
    image: cut.png
    expect:
      answer: red
""")
    plain = pytester.runpytest()
    plain.assert_outcomes(failed=1)
    out = plain.stdout.str()
    path = pytester.path / "test_cut.yaml"
    # the image's own line (makefile drops the leading newline), once: never the case's line, never 'file:4:2'
    assert f"vsp-assert: {path}:4: field 'cases[0].image': not a readable image (OSError)" in out
    assert f"{path}:4:2" not in out and f"{path}:2" not in out
    for frame in ("Traceback", "images.py", "PIL/", "raise InputError"):
        assert frame not in out
    debug = pytester.runpytest("--vsp-debug")
    debug.assert_outcomes(failed=1)
    text = debug.stdout.str()
    assert "vsp_assert/engine/images.py" in text and "InputError" in text  # the full traceback, down to the raise
