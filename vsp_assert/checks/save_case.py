"""Save what a run observed as a YAML case: triage once, then keep it as a regression test.

This module owns turning a :class:`~vsp_assert.engine.trace.Trace` and the interventions tried on it into one case
of the grammar :mod:`vsp_assert.checks.load` reads (docs/cases.md), and putting that case on disk. Both
``vsp-assert run … --save-case FILE`` and ``vsp-assert explore`` call :func:`save_case`.

What is pinned, and with which margins (docs/cases.md's margin rule: a threshold stays ≥ 10 % relative or 0.05
absolute away from the value measured, so float noise across machines never flips a case):

- **answer**: the greedy answer, as text (compared case- and whitespace-insensitively);
- **captured**: the image's strongest concepts (noise latents left out): a named concept whose score clears its
  calibrated threshold by 25 % is written bare (``stripes``); any other gets ``min_score`` at half its score;
- **attended**: per output token, the concepts of its two strongest latents, checked within the top
  :data:`ATTENDED_TOP_K` (three ranks of slack);
- **causal**: every intervention tried, with its outcome: the new answer (``answer:``) or ``changes: false``, and
  ``min_drop`` at half the measured drop when the drop was large. A sufficient set found by search is pinned as
  the concrete ablation it found.

Writing is atomic (:mod:`vsp_assert.files`): the new text is validated with the case loader first and then
replaces the file in one step, keeping its permission bits; an existing file gets the case appended as text at
the end of its ``cases:`` list, so its comments and layout are kept. An image that is not a shapes scene is
stored next to the case file under a content-addressed name (``img-<sha256 prefix>.<ext>``) before the case
file is written, so a case never names a missing image.
"""

from __future__ import annotations

import hashlib
import io
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

from vsp_assert.errors import CaseError, InputError
from vsp_assert.files import atomic_write_bytes, atomic_write_text

if TYPE_CHECKING:
    from vsp_assert.engine.interventions import InterventionResult
    from vsp_assert.engine.trace import Trace

ATTENDED_TOP_K = 5  # the top-k the attended checks use …
ATTENDED_PINNED = 2  # … for the concepts of each token's strongest latents: three ranks of slack
CAPTURED_PINNED = 3  # concepts pinned as captured
MAX_TOKENS_PINNED = 8  # output tokens given an attended check
BARE_MARGIN = 1.25  # a named concept is written bare when its score is ≥ this × its calibrated threshold
IMAGE_SUFFIXES = {"PNG": "png", "JPEG": "jpg", "BMP": "bmp", "GIF": "gif", "WEBP": "webp", "TIFF": "tif"}
HEADER = ("# Cases saved by vsp-assert (run --save-case / explore): what one run observed, with margins.\n"
          "# Run them: pytest {name}{options}\n")


@dataclass(frozen=True)
class SavedCase:
    """Where a case went: the case file, the case id, the image file written (None for a scene or a reused
    file) and the case as the mapping written."""

    path: Path
    case_id: str
    image_path: Path | None
    case: dict[str, Any]


# ---------------------------------------------------------------------- numbers with margins
def _floor_nice(x: float) -> float:
    """``x`` rounded down to two significant digits (0.4371 → 0.43, 27.2 → 27.0)."""
    if x <= 0 or not math.isfinite(x):
        return 0.0
    step = 10 ** (math.floor(math.log10(x)) - 1)
    return round(math.floor(x / step) * step, 10)


def lower_bound(measured: float) -> float | None:
    """A threshold below ``measured`` that keeps the margin rule (half of it, and ≥ 0.05 away); None when the
    value is too small to pin."""
    bound = _floor_nice(min(measured * 0.5, measured - 0.05))
    return bound if bound > 0 else None


# ---------------------------------------------------------------------- the case mapping
def _concept_of(trace: Trace, latent: int) -> str:
    name = trace.labels.name_of(latent) if trace.labels is not None else None
    return name or f"#{latent}"


def _ref(ref: Any) -> str:
    return f"#{ref}" if isinstance(ref, int) and not isinstance(ref, bool) else str(ref)


def _captured(trace: Trace) -> list[Any]:
    out: list[Any] = []
    for latent, _ in trace.top_captured(20):
        concept = _concept_of(trace, latent)
        if any(concept == (c if isinstance(c, str) else c["concept"]) for c in out):
            continue
        score = float(trace.image_scores[trace.resolve(concept)].sum())
        threshold = trace.labels.threshold(concept) if trace.labels is not None and not concept.startswith("#") \
            else None
        if threshold is not None and threshold > 0 and score >= BARE_MARGIN * threshold:
            out.append(concept)
        elif (bound := lower_bound(score)) is not None:
            out.append({"concept": concept, "min_score": bound})
        if len(out) == CAPTURED_PINNED:
            break
    return out


def _token_ref(trace: Trace, t: int) -> str | int:
    text = trace.output_tokens[t].strip()
    first = next((i for i, s in enumerate(trace.output_tokens) if s.strip().lower() == text.lower()), None)
    return text if text and first == t and not re.fullmatch(r"[-+]?\d+", text) else t


def _attended(trace: Trace) -> list[dict[str, Any]]:
    out = []
    for t in range(min(trace.n_tokens, MAX_TOKENS_PINNED)):
        concepts = list(dict.fromkeys(_concept_of(trace, i) for i, _ in trace.top_concepts(t, ATTENDED_PINNED)))
        if concepts:
            out.append({"token": _token_ref(trace, t), "concepts": concepts, "top_k": ATTENDED_TOP_K})
    return out


def causal_item(result: InterventionResult) -> dict[str, Any]:
    """One ``causal:`` entry pinning what an intervention did."""
    spec = result.intervention
    concepts = [_ref(c) for c in spec.concepts]
    item: dict[str, Any]
    if spec.scale is not None:
        item = {"steer": {"concepts": concepts, "scale": float(spec.scale)}}
    elif spec.value != 0:
        item = {"steer": {"concepts": concepts, "value": float(spec.value)}}
    else:
        item = {"ablate": concepts}
    if spec.patches is not None:
        item["patches"] = list(spec.patches)
    if result.changed:
        after = result.answer_after
        if after.strip():
            item["answer"] = after
        else:
            item["changes"] = True
    else:
        item["changes"] = False
    if result.drop >= 0.2 and (bound := lower_bound(result.drop)) is not None:
        item["min_drop"] = bound
    if spec.label:
        item["label"] = spec.label
    return item


def case_mapping(trace: Trace, results: Sequence[InterventionResult] = (), *, case_id: str, image: Any,
                 max_new_tokens: int | None = None, description: str | None = None) -> dict[str, Any]:
    """The case (as the YAML mapping) that pins what ``trace`` and the interventions ``results`` observed.

    ``image``: the case's ``image`` value (a path relative to the case file, or ``{"scene": {...}}``)."""
    expect: dict[str, Any] = {}
    if trace.answer.strip():
        expect["answer"] = trace.answer
    if captured := _captured(trace):
        expect["captured"] = captured
    if attended := _attended(trace):
        expect["attended"] = attended
    seen: list[dict[str, Any]] = []
    for r in results:
        item = causal_item(r)
        if item not in seen:
            seen.append(item)
    if seen:
        expect["causal"] = seen
    if not expect:
        raise InputError("nothing to pin: the answer is empty and no concept fired", field="save_case",
                         fix="run the case on an image the SAE sees something in")
    case: dict[str, Any] = {"id": case_id}
    if description:
        case["description"] = description
    case["image"] = image
    case["prompt"] = trace.prompt
    if max_new_tokens is not None:
        case["max_new_tokens"] = int(max_new_tokens)
    case["expect"] = expect
    return case


def default_id(trace: Trace) -> str:
    """``<first words of the prompt>-<answer>``: letters, digits and '-' only."""
    word = re.compile(r"[A-Za-z0-9]+")
    words = word.findall(trace.prompt.lower())[:6] + word.findall(trace.answer.lower())[:2]
    return "-".join(words)[:60].strip("-") or "case"


# ---------------------------------------------------------------------- the image
def store_image(folder: Path, image: Any, data: bytes | None = None) -> Path:
    """Write ``data`` (the uploaded file's bytes) or ``image`` (a PIL image, as PNG) into ``folder`` as
    ``img-<sha256[:16]>.<ext>``; an existing file of that name already holds these bytes and is kept."""
    from PIL import Image

    suffix = "png"
    if data is not None:
        with Image.open(io.BytesIO(data)) as opened:
            suffix = IMAGE_SUFFIXES.get(opened.format or "", "")
        if not suffix:
            data = None
    if data is None:
        buffer = io.BytesIO()
        image.convert("RGB").save(buffer, format="PNG")
        data, suffix = buffer.getvalue(), "png"
    path = folder / f"img-{hashlib.sha256(data).hexdigest()[:16]}.{suffix}"
    if not path.exists():
        atomic_write_bytes(path, data)
    return path


def image_value(case_path: Path, *, scene: Mapping[str, Any] | None = None, source: str | Path | None = None,
                image: Any = None, data: bytes | None = None) -> tuple[Any, Path | None]:
    """The case's ``image`` value and the image file written (if any): a scene as itself; a file already under
    the case file's folder by its relative path; anything else stored next to the case file."""
    if scene is not None:
        return {"scene": dict(scene)}, None
    folder = case_path.resolve().parent
    if source is not None:
        src = Path(source).resolve()
        try:
            return src.relative_to(folder).as_posix(), None
        except ValueError:
            data = data if data is not None else src.read_bytes()
    if image is None and data is None:
        raise InputError("no image to save with the case", field="image")
    stored = store_image(folder, image, data)
    return stored.name, stored


# ---------------------------------------------------------------------- the file
_TOP_KEY = re.compile(r"^([A-Za-z_][\w-]*|'[^']*'|\"[^\"]*\")\s*:(.*)$")


class _Dumper(yaml.SafeDumper):
    """Block style with indented lists (as in cases/*.yaml); lists of plain values and scenes in flow style."""

    def increase_indent(self, flow: bool = False, indentless: bool = False) -> Any:
        return super().increase_indent(flow, False)


def _represent_list(dumper: yaml.SafeDumper, data: list[Any]) -> Any:
    flow = all(not isinstance(v, (list, dict)) for v in data)
    return dumper.represent_sequence("tag:yaml.org,2002:seq", data, flow_style=flow)


def _represent_dict(dumper: yaml.SafeDumper, data: dict[str, Any]) -> Any:
    flow = set(data) == {"scene"} or "shape" in data  # an image scene, or one shape: one line each
    return dumper.represent_mapping("tag:yaml.org,2002:map", data.items(), flow_style=True if flow else None)


_Dumper.add_representer(list, _represent_list)
_Dumper.add_representer(dict, _represent_dict)


def _dump_item(case: Mapping[str, Any], indent: str) -> str:
    text = yaml.dump([dict(case)], Dumper=_Dumper, sort_keys=False, allow_unicode=True, width=110)
    return "".join(indent + line if line.strip() else line for line in text.splitlines(keepends=True))


def case_yaml(case: Mapping[str, Any]) -> str:
    """One case as the list item a case file holds (what :func:`save_case` appends)."""
    return _dump_item(case, "")


def _appended(text: str, case: Mapping[str, Any], source: str) -> str:
    """``text`` (an existing case file) with ``case`` added at the end of its ``cases:`` list."""
    lines = text.splitlines()
    tops = [(i, m) for i, line in enumerate(lines) if (m := _TOP_KEY.match(line))]
    if not tops or tops[-1][1].group(1).strip("'\"").lower() != "cases" \
            or tops[-1][1].group(2).split("#")[0].strip():
        raise CaseError("cannot append: 'cases:' must be the file's last top-level key, with its list in block "
                        "style below it", file=source, field="cases",
                        fix="move 'cases:' to the end of the file, or save into another file")
    start = tops[-1][0]
    indent = next((re.match(r"\s*", line).group(0) for line in lines[start + 1:]  # type: ignore[union-attr]
                   if line.lstrip().startswith("- ")), "  ")
    body = text if text.endswith("\n") else text + "\n"
    return body + _dump_item(case, indent)


def unique_id(path: Path, wanted: str) -> str:
    """``wanted``, or ``wanted-2``, ``wanted-3`` … when the file already has a case of that id."""
    taken: set[str] = set()
    if path.exists():
        from vsp_assert.checks.load import parse_case_file

        taken = {c.id for c in parse_case_file(path).cases}
    n, candidate = 1, wanted
    while candidate in taken:
        n += 1
        candidate = f"{wanted}-{n}"
    return candidate


def save_case(path: str | Path, trace: Trace, results: Sequence[InterventionResult] = (), *,
              case_id: str | None = None, scene: Mapping[str, Any] | None = None,
              source: str | Path | None = None, data: bytes | None = None, max_new_tokens: int | None = None,
              description: str | None = None, run_hint: str = "") -> SavedCase:
    """Append the case pinning ``trace`` (and the interventions ``results``) to the case file ``path``.

    The image is ``scene`` (a shapes-world scene), else the file ``source``, else ``data`` (uploaded bytes),
    else ``trace.image``. ``case_id`` must be new in the file (without one, an id is made from the prompt and the
    answer, numbered when taken). ``run_hint``: pytest options a new file's header suggests (``--vsp-model=…``).
    Raises :class:`CaseError` when the file is not a case file or cannot take the case."""
    from vsp_assert.checks.load import ID_PATTERN, parse_case_file

    target = Path(path)
    source_name = str(target)
    if trace.frames:
        raise CaseError("saving a video case is not supported: only still-image cases are written", file=source_name,
                        field="video", fix="write the case by hand with video: [frame paths] (docs/cases.md)")
    if target.exists() and not target.is_file():
        raise CaseError("the case file path is not a file", file=source_name, fix="name a .yaml file")
    if target.suffix.lower() not in (".yaml", ".yml"):
        raise CaseError("a case file ends in .yaml or .yml", file=source_name, received=target.name)
    existing = target.read_text(encoding="utf-8") if target.exists() else ""
    if existing.strip():
        parse_case_file(target, existing)  # an existing file must be a valid case file before we add to it
    if case_id is not None:
        if not ID_PATTERN.fullmatch(case_id):
            raise CaseError("ids are letters, digits, '-', '_' and '.'", file=source_name, field="id",
                            received=case_id, fix="e.g. stripes-triangle")
        if existing.strip() and case_id in {c.id for c in parse_case_file(target, existing).cases}:
            raise CaseError(f"the file already has a case '{case_id}'", file=source_name, field="id",
                            received=case_id, fix="choose another --id, or leave it out for a numbered one")
    else:
        case_id = unique_id(target, default_id(trace)) if existing.strip() else default_id(trace)
    value, written = image_value(target, scene=scene, source=source, image=trace.image if data is None else None,
                                 data=data)
    case = case_mapping(trace, results, case_id=case_id, image=value, max_new_tokens=max_new_tokens,
                        description=description)
    if existing.strip():
        text = _appended(existing, case, source_name)
    else:
        text = HEADER.format(name=target.name, options=f" {run_hint}" if run_hint else "") + "cases:\n" \
            + _dump_item(case, "  ")
    parse_case_file(target, text)  # what is written must load: never leave a file pytest cannot collect
    atomic_write_text(target, text)
    return SavedCase(target, case_id, written, case)
