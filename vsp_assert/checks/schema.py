"""The case schema: what a case expects, as frozen data (:class:`Case` and its ``*Spec`` parts).

These records are what :mod:`vsp_assert.checks.load` builds from YAML and what Python code may build by hand;
they know nothing of the engine except how to draw a case's image (:meth:`Case.load_image`). A spec read from a
case file keeps its :class:`Where` (field path and line), so that what only a run can find wrong with it is
reported at its place. The YAML grammar is documented in :mod:`vsp_assert.checks.load` and docs/cases.md.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from vsp_assert.errors import CaseError


# ---------------------------------------------------------------------- where a part came from
@dataclass(frozen=True)
class Where:
    """Where a spec came from in its case file: its field path within the case (``expect.captured[1]``), its
    line, and the lines of its parts (``("concepts[2]", 14)``), so a problem found at run time names them too.

    Specs built in Python have no ``where`` (None); it never takes part in comparing specs.
    """

    field: str
    line: int | None = None
    parts: tuple[tuple[str, int | None], ...] = ()

    def of(self, part: str | None = None, index: int | None = None) -> Where:
        """The place of one part: ``of("concepts", 2)`` is ``…concepts[2]`` (or ``…concepts`` when the YAML gave a
        single concept rather than a list); this place itself for ``of()`` or a part it does not list (a
        default the file did not write, the concept of a ``captured: [red]`` item)."""
        lines = dict(self.parts)
        for key in ([f"{part}[{index}]"] if index is not None else []) + ([part] if part is not None else []):
            if key in lines:
                return Where(f"{self.field}.{key}", lines[key])
        return self

    def __str__(self) -> str:
        return self.field + (f" (line {self.line})" if self.line is not None else "")


# ---------------------------------------------------------------------- the schema
@dataclass(frozen=True)
class AnswerSpec:
    equals: str | None = None
    contains: str | None = None
    one_of: tuple[str, ...] | None = None
    not_: str | None = None
    correct: str | None = None  # documentation: the right answer, for known-failure cases
    where: Where | None = field(default=None, compare=False)


@dataclass(frozen=True)
class CapturedSpec:
    concept: str | int
    min_score: float | None = None
    max_rank: int | None = None
    absent: bool = False
    where: Where | None = field(default=None, compare=False)


@dataclass(frozen=True)
class AttendedSpec:
    token: str | int
    concepts: tuple[str | int, ...] = ()
    absent: tuple[str | int, ...] = ()
    top_k: int | None = None
    where: Where | None = field(default=None, compare=False)


@dataclass(frozen=True)
class AttributedSpec(AttendedSpec):
    """``attributed:`` — the same grammar as ``attended:``, ranked by attribution (gradient × activation through
    the SAE) instead of attention; contrastive against the case's ``answer.correct`` when it gives one.
    ``confirm``: the drop of the token's objective (nats) that ablating a named concept must exceed for it to count
    as used — 0 by default (``confirm: true``: the ablation agrees in sign with the ranking), None to rank only
    (``confirm: false``); :mod:`vsp_assert.checks.ranked`. The default comes from the zoo (docs/truth.md)."""

    confirm: float | None = 0.0


@dataclass(frozen=True)
class CausalSpec:
    ablate: tuple[str | int, ...] = ()
    steer: tuple[tuple[str | int, ...], float | None, float | None] | None = None  # (concepts, value, scale)
    patches: tuple[int, ...] | None = None
    changes: bool | None = None
    answer: str | None = None
    min_drop: float | None = None
    sufficient: bool = False
    token: str | int = 0
    label: str | None = None
    where: Where | None = field(default=None, compare=False)


@dataclass(frozen=True)
class Expectations:
    answer: AnswerSpec | None = None
    captured: tuple[CapturedSpec, ...] = ()
    attended: tuple[AttendedSpec, ...] = ()
    causal: tuple[CausalSpec, ...] = ()
    attributed: tuple[AttributedSpec, ...] = ()


@dataclass(frozen=True)
class Tolerance:
    """Drift tolerances against a recorded baseline (see baseline.py)."""

    probability: float = 0.15
    rank_correlation: float = 0.5
    top_k: int = 3


@dataclass(frozen=True)
class Case:
    id: str
    prompt: str
    image: str | dict[str, Any]  # resolved path, {"scene": {...}}, or {"video": [frames] | file} (load_media.py)
    expect: Expectations
    file: str
    line: int
    marks: tuple[tuple[str, str | None], ...] = ()
    top_k: int = 5
    min_score: float | None = None  # the file's default for captured; None: calibrated threshold, else 0
    max_new_tokens: int | None = None
    tolerance: Tolerance = field(default_factory=Tolerance)
    description: str | None = None
    image_where: Where | None = field(default=None, compare=False)  # the ``image`` field's place, for run-time errors

    def load_image(self) -> Any:
        """The case's image as an RGB PIL image (file or shapes-world scene), or its video as a
        :class:`~vsp_assert.engine.video.Video`; a problem names this case's file and the field's line."""
        place = self.image_where or Where("image", self.line)
        if isinstance(self.image, dict) and "video" in self.image:
            from vsp_assert.engine.video import load_video

            frames = self.image["video"]
            if isinstance(frames, list):
                frames = [self._picture(f, Where(f"{place.field}[{i}]", place.line)) for i, f in enumerate(frames)]
            return load_video(frames, source=self.file, line=place.line, field=place.field)
        return self._picture(self.image, place)

    def _picture(self, image: str | dict[str, Any], place: Where) -> Any:
        from vsp_assert.engine.images import load_image

        if isinstance(image, dict):
            from vsp_assert.shapes import Scene

            try:
                return Scene.from_dict(image["scene"]).render()
            except CaseError:
                raise
            except Exception as exc:  # the world's own validation errors
                raise CaseError(f"invalid scene: {exc}", file=self.file, line=place.line,
                                field=f"{place.field}.scene", received=image["scene"]) from None
        return load_image(image, source=self.file, line=place.line, field=place.field)


@dataclass(frozen=True)
class CaseFile:
    path: str
    cases: tuple[Case, ...]
    model: str | None = None
    sae: str | None = None
