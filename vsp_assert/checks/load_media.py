"""A case's picture: the ``image:`` or ``video:`` field of a YAML case, validated at collection.

``image:`` is a path (relative to the case file) or ``{scene: {...}}`` (a shapes-world scene). ``video:`` is a list
of frames, each a path or ``{scene: {...}}``, or one video file (an animated GIF/WebP/PNG or TIFF, read with
Pillow; MP4/WebM/MKV/AVI/MOV with PyAV when it is installed; see :mod:`vsp_assert.engine.video`). A case has
exactly one of the two. Files are checked from their headers here, so a missing frame, a non-image or a container
no installed library decodes fails at collection with the file, line and field (``video[2]`` for the third frame).

The parsed value is what :class:`~vsp_assert.checks.schema.Case` keeps in ``image``: a resolved path, ``{"scene":
{...}}``, or ``{"video": [frame, …]}`` / ``{"video": "resolved file"}`` (frames as paths or scene dicts).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from vsp_assert.checks.yaml_lines import Ctx, as_mapping, as_str, kind_of
from vsp_assert.errors import CaseError, VspError


def case_media(m: Mapping[str, Any], c: Ctx, base: Path, root: Path | None,
               allow_outside: bool) -> tuple[str | dict[str, Any], Ctx]:
    """The case's ``image`` or ``video`` (exactly one), parsed, and the context of the field it came from."""
    if "image" in m and "video" in m:
        raise c.at("video", m).error("a case has an image or a video, not both", received="image and video",
                                     fix="remove one of them")
    if "video" in m:
        vctx = c.at("video", m)
        return {"video": _video(m["video"], vctx, base, root, allow_outside)}, vctx
    if "image" not in m:
        raise c.error("a case needs 'image' (or 'video')", allowed="image: PATH | {scene: {...}}, or video: [...]")
    ictx = c.at("image", m)
    return _image(m["image"], ictx, base, root, allow_outside), ictx


def _video(value: Any, ctx: Ctx, base: Path, root: Path | None, allow_outside: bool) -> list[Any] | str:
    from vsp_assert.engine.video import MAX_FRAMES, probe_video_file

    if isinstance(value, list):
        if not value:
            raise ctx.error("the video has no frames", received="[]", allowed=f"1 to {MAX_FRAMES} frames")
        if len(value) > MAX_FRAMES:
            raise ctx.error("the video has too many frames", received=len(value), allowed=f"at most {MAX_FRAMES}")
        return [_image(item, ctx.at(i, value), base, root, allow_outside) for i, item in enumerate(value)]
    if isinstance(value, Mapping):
        raise ctx.error("video is a list of frames or a video file", received=kind_of(value),
                        allowed="[frame.png, …] (paths or {scene: {...}}), or clip.gif")
    resolved = _resolve(as_str(value, ctx, "video path"), ctx, base, root, allow_outside, "video")
    try:
        probe_video_file(Path(resolved))
    except VspError as exc:  # not a video, too many frames, a container no installed library reads
        raise ctx.error(exc.message, received=str(value), allowed=exc.allowed, fix=exc.fix) from None
    return resolved


def _resolve(text: str, ctx: Ctx, base: Path, root: Path | None, allow_outside: bool, what: str) -> str:
    """``text`` resolved against the case file's folder; an error if it escapes the root or does not exist."""
    path = Path(text)
    try:
        resolved = (path if path.is_absolute() else base / path).resolve()
        exists = resolved.exists()
    except (OSError, ValueError) as exc:  # embedded NUL byte, name too long, …
        raise ctx.error(f"unusable {what} path ({type(exc).__name__}: {exc})", received=text,
                        allowed="a file path relative to the case file") from None
    if root is not None and not allow_outside:
        try:
            resolved.relative_to(root.resolve())
        except ValueError:
            raise ctx.error(f"{what} path escapes the cases root", received=text, allowed=f"files under {root}",
                            fix=f"move the {what} under the cases folder or pass --vsp-allow-outside-root") from None
    if not exists:
        raise ctx.error(f"{what} file not found", received=text, allowed=f"a path relative to {base}",
                        fix="check the file name; paths are relative to the case file")
    return str(resolved)


def _image(value: Any, ctx: Ctx, base: Path, root: Path | None, allow_outside: bool) -> str | dict[str, Any]:
    if isinstance(value, Mapping):
        m = as_mapping(value, ctx, ("scene",), "image")
        if "scene" not in m or not isinstance(m["scene"], Mapping):
            raise ctx.error("image needs a path or {scene: {...}}", received=kind_of(value))
        scene = plain(m["scene"])
        from vsp_assert.shapes.world import Scene  # numpy + PIL only: cheap enough for collection

        sctx = ctx.at("scene", m)
        try:
            Scene.from_dict(scene)
        except VspError as exc:
            field_path = f"{sctx.path}.{exc.field}" if exc.field else sctx.path
            raise CaseError(f"invalid scene: {exc.message}", file=sctx.file, line=sctx.line, field=field_path,
                            received=exc.received, allowed=exc.allowed, fix=exc.fix) from None
        except (TypeError, ValueError, OverflowError) as exc:  # int(inf) in a coordinate overflows
            raise sctx.error(f"invalid scene: {exc}", received=scene) from None
        return {"scene": scene}
    text = as_str(value, ctx, "image path")
    resolved = _resolve(text, ctx, base, root, allow_outside, "image")
    from vsp_assert.engine.images import probe_image_file  # PIL only, and the header only: cheap at collection

    try:
        probe_image_file(resolved)
    except VspError as exc:  # a folder, a non-image, an unreadable file, a size out of bounds
        received = exc.received.replace(resolved, text) if isinstance(exc.received, str) else exc.received
        raise ctx.error(exc.message, received=received, allowed=exc.allowed, fix=exc.fix) from None
    return resolved


def plain(value: Any) -> Any:
    """LineDict/LineList → plain dict/list (for scene specs handed to other code)."""
    if isinstance(value, Mapping):
        return {k: plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [plain(v) for v in value]
    return value
