"""Video frames as views, on tiny random-weight Qwen2-VL, Qwen2.5-VL, Qwen3-VL and Qwen3-VL-MoE (the real classes and
processors).

A video goes through the family's own video path (``pixel_values_videos``, ``video_grid_thw``, video placeholder
tokens); its patches are (time slice, row, col), each slice named by the frames it covers. The adapter contract must
hold for videos as for images; the layout must put each slice's activations where the frames are; mixed batches
must equal separate runs; a YAML ``video:`` case must run and show its frames when it fails.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from vsp_assert.engine.video import Video, frame_labels, load_video
from vsp_assert.testing.contract import CHECK_NAMES, AdapterContract, MapExpectations
from vsp_assert.testing.families import tiny_model

QWEN = ("qwen2_vl", "qwen2_5_vl", "qwen3_vl", "qwen3_vl_moe")
PROMPT = "what moves ?"


def frames(n: int, h: int, w: int, seed: int = 0) -> list[Image.Image]:
    rng = np.random.RandomState(seed)
    return [Image.fromarray((rng.rand(h, w, 3) * 255).astype("uint8")) for _ in range(n)]


def clip(n: int, h: int, w: int, seed: int = 0) -> Video:
    return Video(tuple(frames(n, h, w, seed)))


_CONTRACTS: dict[str, AdapterContract] = {}
_PADS: dict[str, object] = {}


def contract(family: str) -> AdapterContract:
    """The contract on three clips: odd and even frame counts (an odd one is padded by its last frame), three
    frame sizes (dynamic resolution per clip)."""
    if family not in _CONTRACTS:
        _CONTRACTS[family] = AdapterContract(tiny_model(family), images=[clip(3, 40, 40, 1), clip(4, 32, 48, 2),
                                                                          clip(2, 64, 30, 3)],
                                             prompts=[PROMPT, "describe the video", "is there a red circle ?"],
                                             expect=MapExpectations(patches_per_token=4))
    return _CONTRACTS[family]


def pad(family: str = "qwen2_vl"):
    from vsp_assert import Scratchpad
    from vsp_assert.testing import random_sae

    if family not in _PADS:
        model = tiny_model(family)
        sae = random_sae(model.adapter.vision_width(), 64, k=8, hook_layer=model.adapter.default_hook_layer(),
                         concepts={"red": [1, 2], "blue": [3]})
        _PADS[family] = Scratchpad(model, sae, max_new_tokens=3)
    return _PADS[family]


@pytest.mark.parametrize("check", CHECK_NAMES)
@pytest.mark.parametrize("family", QWEN)
def test_video_inputs_keep_the_adapter_contract(family: str, check: str) -> None:
    assert contract(family).adapter.supports_video
    result = contract(family).run(check)
    assert result.passed, str(result)


def test_time_slices_are_named_by_the_frames_they_hold() -> None:
    assert frame_labels(2, 2, 3) == ("frames 1–2", "frame 3")  # the padded last slice holds one real frame
    assert frame_labels(2, 2, 4) == ("frames 1–2", "frames 3–4")
    assert frame_labels(3, 1, 3) == ("frame 1", "frame 2", "frame 3")
    assert frame_labels(2, 0, 4) == ("frames 1–2", "frames 3–4")  # an adapter that does not say: the even split


def test_a_video_trace_lays_its_patches_out_by_slice_row_and_col() -> None:
    trace = pad().run(clip(3, 40, 40), PROMPT)
    rows, cols = trace.grid
    assert trace.frames == ("frames 1–2", "frame 3")
    assert trace.n_patches == 2 * rows * cols
    assert trace.patch_label(rows * cols + cols + 2) == "frame 3, row 1, col 2"
    assert trace.patch_label(cols - 1) == f"frames 1–2, row 0, col {cols - 1}"
    assert torch.allclose(trace.attention.sum(-1), torch.ones(trace.n_tokens), atol=1e-5)


def test_rotating_the_time_slices_rotates_their_activations() -> None:
    """Qwen2-VL's tower places patches by (row, col) only and attends over the whole clip, so rotating the three
    two-frame slices of a six-frame clip must rotate the slices of the codes, each to where the layout puts it
    (a rotation, unlike a swap, also catches a layout that reverses the slices)."""
    a = frames(6, 40, 40, seed=5)
    first = pad().run(Video(tuple(a)), PROMPT)
    second = pad().run(Video((a[4], a[5], a[0], a[1], a[2], a[3])), PROMPT)
    size = first.grid[0] * first.grid[1]
    x = first.acts.reshape(3, size, -1)  # [slice, patch, d_sae]
    y = second.acts.reshape(3, size, -1)
    for s, t in ((0, 2), (1, 0), (2, 1)):
        assert torch.allclose(y[s], x[t], atol=1e-5), (s, t)
    assert not torch.allclose(x[0], x[1], atol=1e-3)  # the slices differ, so the check has teeth


def test_a_mixed_batch_of_images_and_videos_equals_separate_runs() -> None:
    image, other = frames(1, 32, 32, seed=8)[0], frames(1, 48, 32, seed=10)[0]
    video = clip(2, 40, 40, seed=9)
    together = pad().run_batch([image, video, other], [PROMPT, PROMPT, "describe the image"])
    alone = [pad().run(image, PROMPT), pad().run(video, PROMPT), pad().run(other, "describe the image")]
    for joint, single in zip(together, alone):
        assert joint.answer == single.answer and joint.frames == single.frames and joint.grid == single.grid
        assert torch.allclose(joint.acts, single.acts, atol=1e-5)
    assert together[1].frames == ("frames 1–2",) and together[0].frames == ()


def test_a_one_frame_clip_gets_the_image_processors_pixels() -> None:
    """The torchvision-free video processor resizes, normalises and patchifies as the image processor does (an image
    is a one-frame clip repeated over the temporal patch), so a one-frame clip must match it: same layout, same
    values up to float32 rounding of the normalisation (measured 2.4e-7)."""
    processor = tiny_model("qwen2_vl").processor
    image = frames(1, 37, 53, seed=4)[0]
    still = processor.image_processor(images=[image], return_tensors="pt")
    moving = processor.video_processor(videos=[[image]])
    assert torch.equal(moving["video_grid_thw"], still["image_grid_thw"])
    pixels = torch.as_tensor(still["pixel_values"])
    assert moving["pixel_values_videos"].shape == pixels.shape
    assert float((moving["pixel_values_videos"] - pixels).abs().max()) < 1e-6


def test_an_animated_gif_is_read_frame_by_frame_with_its_rate(tmp_path) -> None:
    colours = [(255, 0, 0), (0, 255, 0), (0, 0, 255)]
    images = [Image.new("RGB", (24, 16), c) for c in colours]
    path = tmp_path / "clip.gif"
    images[0].save(path, save_all=True, append_images=images[1:], duration=250, loop=0)
    video = load_video(path)
    assert len(video) == 3 and video.size == (24, 16) and video.fps == pytest.approx(4.0)
    assert [f.getpixel((3, 3)) for f in video.frames] == colours


def test_a_family_without_video_refuses_it_naming_those_with() -> None:
    from vsp_assert import Scratchpad
    from vsp_assert.errors import ModelError
    from vsp_assert.testing import random_sae, tiny_llava

    model = tiny_llava(seed=0)
    llava = Scratchpad(model, random_sae(32, 64, hook_layer=model.adapter.default_hook_layer()))
    with pytest.raises(ModelError) as info:
        llava.run(clip(2, 40, 40), PROMPT)
    assert info.value.field == "video" and "qwen2_vl" in str(info.value.allowed)


# ---------------------------------------------------------------------- YAML cases
def _video_case(tmp_path, answer: str) -> object:
    from vsp_assert.checks.load import parse_case_file

    for i, frame in enumerate(frames(2, 64, 64, seed=11)):
        frame.save(tmp_path / f"f{i}.png")
    (tmp_path / "cases.yaml").write_text(f"""
cases:
  - id: clip
    video:
      - f0.png
      - f1.png
      - {{scene: {{shapes: [{{shape: circle, color: red, x: 32, y: 32, size: 24}}]}}}}
    prompt: "{PROMPT}"
    expect:
      answer: "{answer}"
      captured: [red]
""")
    (case,) = parse_case_file(tmp_path / "cases.yaml").cases
    return case


def test_a_yaml_video_case_runs_its_frames_and_passes(tmp_path) -> None:
    from vsp_assert.checks.assertions import run_case

    truth = pad().run(load_video(frames(2, 64, 64, seed=11) + [_scene()]), PROMPT).answer
    case = _video_case(tmp_path, truth)
    video = case.load_image()
    assert isinstance(video, Video) and len(video) == 3
    result = run_case(pad(), case)
    assert result.trace.frames == ("frames 1–2", "frame 3")
    assert result.records[0].passed and result.trace.answer == truth


def test_a_failing_video_case_shows_each_time_slice(tmp_path) -> None:
    from vsp_assert.checks.assertions import run_case
    from vsp_assert.render.case import render_case
    from vsp_assert.render.html_case import case_html
    from vsp_assert.render.style import Style

    result = run_case(pad(), _video_case(tmp_path, "zzz"))
    assert not result.passed
    text = render_case("cases.yaml::clip", result.trace, result.records, style=Style(False), width=120)
    assert "frames 1–2" in text and "frame 3" in text and "red fires" in text
    # the heatmap's latents in time: each latent's share per slice and its peak patch, as computed from the codes
    trace = result.trace
    red = trace.labels.concepts["red"][0]
    size = trace.grid[0] * trace.grid[1]
    column = trace.acts[:, red]  # [P]
    shares = [float(column[:size].sum() / column.sum()), float(column[size:].sum() / column.sum())]
    row = next(line for line in text.splitlines() if line.startswith(trace.display(red) + " ") and "%" in line)
    assert row.split()[-2:] == [f"{shares[0]:.0%}", f"{shares[1]:.0%}"]
    assert trace.patch_label(int(column.argmax())) in row
    html = case_html(0, "cases.yaml::clip", result.trace, result.records, top_k=5, max_overlays=2)
    assert "video 3 frames 64×64 px · 2 time slices" in html
    assert html.count("· frames 1–2</figcaption>") >= 1 and html.count("· frame 3</figcaption>") >= 1


def test_saving_a_video_trace_as_a_case_is_refused_with_the_way_out(tmp_path) -> None:
    from vsp_assert.checks.save_case import save_case
    from vsp_assert.errors import CaseError

    trace = pad().run(clip(2, 40, 40), PROMPT)
    with pytest.raises(CaseError) as info:
        save_case(tmp_path / "saved.yaml", trace)
    assert info.value.field == "video" and not (tmp_path / "saved.yaml").exists()


def _scene() -> Image.Image:
    from vsp_assert.shapes import Scene

    return Scene.from_dict({"shapes": [{"shape": "circle", "color": "red", "x": 32, "y": 32, "size": 24}]}).render()


# ---------------------------------------------------------------------- through the pytest plugin
@pytest.fixture(scope="module")
def saved_qwen(tmp_path_factory):
    """A tiny Qwen2-VL saved as a checkpoint folder (loaded back without torchvision: the processor is rebuilt
    around its image processor and tokenizer), a random SAE on its vision tower, and two frames."""
    from vsp_assert.engine.sae import save_sae
    from vsp_assert.testing import random_sae, save_model

    root = tmp_path_factory.mktemp("qwen-video")
    model = tiny_model("qwen2_vl")
    save_model(model, root / "model")
    sae = random_sae(model.adapter.vision_width(), 64, k=8, seed=0)
    save_sae(root / "sae", W_enc=sae.W_enc, W_dec=sae.W_dec, b_enc=sae.b_enc, b_dec=sae.b_dec, k=8,
             hook_layer=model.adapter.default_hook_layer())
    for i, frame in enumerate(frames(3, 40, 40, seed=12)):
        frame.save(root / f"f{i}.png")
    return root


def test_a_video_case_file_runs_under_pytest_on_a_saved_checkpoint(pytester, saved_qwen) -> None:
    from vsp_assert import Scratchpad, load_model, load_sae

    loaded = load_model(saved_qwen / "model")
    assert type(loaded.processor.video_processor).__name__ == "FrameVideoProcessor"
    truth = Scratchpad(loaded, load_sae(saved_qwen / "sae"), max_new_tokens=3).run(
        load_video([saved_qwen / f"f{i}.png" for i in range(3)]), PROMPT).answer
    pytester.makeini(f"""
        [pytest]
        vsp_model = {saved_qwen / 'model'}
        vsp_sae = {saved_qwen / 'sae'}
        vsp_max_new_tokens = 3
        vsp_min_sae_fit = -1e6
        """)
    for i in range(3):
        (pytester.path / f"f{i}.png").write_bytes((saved_qwen / f"f{i}.png").read_bytes())
    pytester.makefile(".yaml", clip=f"""
cases:
  - id: right
    video: [f0.png, f1.png, f2.png]
    prompt: "{PROMPT}"
    expect: {{answer: "{truth}"}}
  - id: wrong
    video: [f0.png, f1.png, f2.png]
    prompt: "{PROMPT}"
    expect: {{answer: "zzz", captured: ["#1"]}}
""")
    result = pytester.runpytest("-p", "no:cacheprovider", "--color=no")
    result.assert_outcomes(passed=1, failed=1)
    result.stdout.fnmatch_lines(["*frames 1–2*", "*frame 3*"])


def test_a_checkpoints_video_settings_bound_its_frames(saved_qwen, tmp_path) -> None:
    """Without torchvision the loader still reads the checkpoint's video_preprocessor_config.json: Qwen2-VL bounds a
    frame at fewer pixels than an image, so the clip's grid follows the video bounds, not the image ones."""
    import json
    import shutil

    from vsp_assert import load_model

    folder = tmp_path / "model"
    shutil.copytree(saved_qwen / "model", folder)
    image_pixels = load_model(folder).processor.video_processor.max_pixels
    (folder / "video_preprocessor_config.json").write_text(json.dumps(
        {"video_processor_type": "Qwen2VLVideoProcessor", "size": {"shortest_edge": 256, "longest_edge": 256}}))
    processor = load_model(folder).processor
    assert (processor.video_processor.min_pixels, processor.video_processor.max_pixels) == (256, 256) != \
        (256, image_pixels)
    frame = frames(1, 64, 64, seed=3)[0]
    video_grid = processor.video_processor(videos=[[frame, frame]])["video_grid_thw"][0].tolist()
    image_grid = processor.image_processor(images=[frame], return_tensors="pt")["image_grid_thw"][0].tolist()
    assert video_grid == [1, 4, 4] and image_grid[1] * image_grid[2] > 16


def test_a_flip_no_concept_explains_asks_about_a_blank_clip_of_as_many_frames() -> None:
    from vsp_assert.engine.flip import explain_flip
    from vsp_assert.engine.images import blank_like

    p = pad()
    video = clip(4, 28, 28)
    trace = p.run(video, PROMPT)
    why = explain_flip(p, trace, "zebra", model="this model")
    blank = blank_like(video)
    assert isinstance(blank, Video) and len(blank) == 4 and blank.size == video.size
    assert all(len(f.getcolors(1 << 24)) == 1 for f in blank.frames)
    assert why.blank_answer is not None and why.blank_answer == p.run(blank, PROMPT).answer
