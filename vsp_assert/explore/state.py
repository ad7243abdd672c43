"""The explorer's one piece of state: the loaded Scratchpad, the current image, trace and interventions tried.

:class:`ExploreState` is what the web server (:mod:`vsp_assert.explore.server`) calls, and nothing here knows
HTTP: every method takes plain values, validates them (raising :class:`~vsp_assert.errors.InputError` with the
field, what was received and what is allowed, which the server answers with HTTP 400) and returns plain data
for the page (:mod:`vsp_assert.explore.view` formats it).

Requests are serialised by one lock (:attr:`ExploreState.lock`, taken by the server around every call): the
model is not re-entrant and the current trace is shared by every browser tab, so a second tab's request waits
for the first and never sees a half-updated state. The state is replaced only after a call succeeded: a bad
upload or a failed run leaves the previous image and trace in place.
"""

from __future__ import annotations

import io
import math
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from vsp_assert.errors import InputError

if TYPE_CHECKING:
    from vsp_assert.checks.save_case import SavedCase
    from vsp_assert.engine.interventions import Intervention, InterventionResult
    from vsp_assert.engine.scratchpad import Scratchpad
    from vsp_assert.engine.trace import Trace

#: the largest upload accepted (bytes); the engine's own limit on pixels (64 megapixels) applies as well
MAX_UPLOAD_BYTES = 16 * 1024 * 1024
MAX_INTERVENTIONS = 64  # rows of one re-run (one batched forward)
MAX_STEER = 1e6  # |value| and |scale| of a steer

#: shapes-world scenes offered in the page: the README's diagnosis and the bundled cases' mechanisms
SCENES: dict[str, tuple[dict[str, Any], str]] = {
    "stripes-square": ({"background": "stripes",
                        "shapes": [{"shape": "square", "color": "red", "x": 32, "y": 32, "size": 26}]},
                       "What shape is the red object?"),
    "stripes-circle": ({"background": "stripes",
                        "shapes": [{"shape": "circle", "color": "blue", "x": 30, "y": 34, "size": 24}]},
                       "What shape is the blue object?"),
    "plain-circle": ({"background": "plain",
                      "shapes": [{"shape": "circle", "color": "blue", "x": 30, "y": 34, "size": 24}]},
                     "What shape is the blue object?"),
    "dots-circle": ({"background": "dots",
                     "shapes": [{"shape": "circle", "color": "green", "x": 32, "y": 32, "size": 26}]},
                    "What shape is the green object?"),
    "yellow-square": ({"background": "plain",
                       "shapes": [{"shape": "square", "color": "yellow", "x": 32, "y": 32, "size": 26}]},
                      "What about the square?"),
}


@dataclass
class Current:
    """The image being explored: a scene (by name and spec) or an upload (its bytes), and its PIL image."""

    image: Any
    name: str
    scene: dict[str, Any] | None = None
    data: bytes | None = None


@dataclass
class ExploreState:
    """The model, the SAE and what the user is looking at. Call methods with :attr:`lock` held."""

    pad: Scratchpad
    cases_dir: Path
    model_name: str = "shapes"
    sae_name: str = "shapes"
    current: Current | None = None
    trace: Trace | None = None
    tried: list[InterventionResult] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    # ------------------------------------------------------------------ input
    def pick_scene(self, name: str) -> Current:
        if name not in SCENES:
            raise InputError("unknown scene", field="scene", received=name, allowed=", ".join(SCENES))
        from vsp_assert.shapes import Scene

        spec = SCENES[name][0]
        self.current = Current(Scene.from_dict(spec).render(), name, scene=spec)
        self.trace, self.tried = None, []
        return self.current

    def upload(self, data: bytes, filename: str = "upload") -> Current:
        """An uploaded image file: refused (and the current image kept) unless it is a readable image within
        :data:`MAX_UPLOAD_BYTES` and the engine's pixel limit."""
        from PIL import Image, UnidentifiedImageError

        from vsp_assert.engine.images import load_image

        if not data:
            raise InputError("the upload is empty", field="image", received=filename, fix="choose an image file")
        if len(data) > MAX_UPLOAD_BYTES:
            raise InputError("the image file is too large", field="image", received=f"{filename}: {len(data):,} bytes",
                             allowed=f"at most {MAX_UPLOAD_BYTES:,} bytes", fix="downscale or recompress it")
        try:
            with Image.open(io.BytesIO(data)) as opened:
                opened.load()
                image = opened.copy()
        except Image.DecompressionBombError:
            raise InputError("the image has too many pixels", field="image", received=filename) from None
        except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
            raise InputError(f"not a readable image ({type(exc).__name__})", field="image", received=filename,
                             allowed="PNG, JPEG, BMP, GIF, WebP, TIFF") from None
        image = load_image(image, source=filename)  # the engine's size checks and RGB conversion
        self.current = Current(image, filename, data=data)
        self.trace, self.tried = None, []
        return self.current

    # ------------------------------------------------------------------ model calls
    def run(self, prompt: Any) -> Trace:
        if self.current is None:
            raise InputError("no image yet", field="image", fix="pick a scene or upload an image first")
        if not isinstance(prompt, str) or not prompt.strip():
            raise InputError("the prompt is empty", field="prompt", received=prompt,
                             fix="write the question the model should answer")
        self.trace = self.pad.run(self.current.image, prompt.strip())
        self.tried = []
        return self.trace

    def _need_trace(self) -> Trace:
        if self.trace is None:
            raise InputError("nothing has run yet", field="prompt", fix="ask a question first (Run)")
        return self.trace

    def intervene(self, items: Any) -> list[InterventionResult]:
        """Run the interventions ``items`` (see :func:`parse_intervention`) in one batched forward; each is
        remembered (for Save) with its outcome."""
        trace = self._need_trace()
        if not isinstance(items, list) or not items:
            raise InputError("no intervention given", field="interventions", received=items,
                             fix="add an ablation or a steer first")
        if len(items) > MAX_INTERVENTIONS:
            raise InputError("too many interventions in one re-run", field="interventions", received=len(items),
                             allowed=f"at most {MAX_INTERVENTIONS}")
        specs = [parse_intervention(item, i) for i, item in enumerate(items)]
        results = self.pad.intervene(trace, specs)
        for r in results:
            r.answer_after  # noqa: B018 - generate the new answers now, under the lock, not while rendering
        self._remember(results)
        return results

    def sufficient(self, token: int = 0) -> Any:
        from vsp_assert.engine.analysis import find_sufficient_set

        trace = self._need_trace()
        if trace.n_tokens == 0:
            raise InputError("the answer is empty: there is nothing to change", field="token")
        found = find_sufficient_set(self.pad, trace, token)
        if found.result is not None:
            found.result.answer_after  # noqa: B018 - read under the lock
            self._remember([found.result])
        return found

    def _remember(self, results: Sequence[InterventionResult]) -> None:
        for r in results:
            key = (r.intervention.concepts, r.intervention.value, r.intervention.scale, r.intervention.patches)
            self.tried = [t for t in self.tried if (t.intervention.concepts, t.intervention.value,
                                                    t.intervention.scale, t.intervention.patches) != key]
            self.tried.append(r)

    # ------------------------------------------------------------------ saving
    def save(self, file: Any, case_id: Any = None) -> SavedCase:
        """Append the case pinning the current run (and every intervention tried on it) to ``file``, a path
        under :attr:`cases_dir`."""
        from vsp_assert.checks.save_case import save_case

        trace = self._need_trace()
        assert self.current is not None
        target = self.case_path(file)
        if case_id is not None and (not isinstance(case_id, str) or not case_id.strip()):
            case_id = None
        hint = " ".join(f"--vsp-{k}={v}" for k, v in (("model", self.model_name), ("sae", self.sae_name))
                        if v != "shapes")
        return save_case(target, trace, self.tried, case_id=case_id.strip() if case_id else None,
                         scene=self.current.scene, data=self.current.data,
                         max_new_tokens=self.pad.max_new_tokens, run_hint=hint)

    def case_path(self, file: Any) -> Path:
        """``file`` resolved under :attr:`cases_dir`; a path that leaves it is refused (the page is reachable
        from the local machine only, but no request may write outside the folder the user started it for)."""
        if not isinstance(file, str) or not file.strip():
            raise InputError("no case file given", field="file", fix="e.g. explore_cases.yaml")
        root = self.cases_dir.resolve()
        target = (root / file.strip()).resolve()
        if target != root and root not in target.parents:
            raise InputError("the case file must be inside the cases folder", field="file", received=file,
                             allowed=f"a path under {root}", fix="start explore with --cases-dir to change it")
        if target.suffix.lower() not in (".yaml", ".yml"):
            raise InputError("a case file ends in .yaml or .yml", field="file", received=file)
        return target


def _number(value: Any, field_name: str) -> float:
    """A finite number from JSON or text (``"0.5"``); anything else is refused with its field."""
    if isinstance(value, bool):
        value = None
    try:
        number = float(value.strip()) if isinstance(value, str) else float(value)
    except (TypeError, ValueError, AttributeError):
        raise InputError("not a number", field=field_name, received=value, allowed="a number, e.g. 0, 2.5 or -1")\
            from None
    if not math.isfinite(number) or abs(number) > MAX_STEER:
        raise InputError("number out of range", field=field_name, received=value,
                         allowed=f"a finite number within ±{MAX_STEER:g}")
    return number


def parse_intervention(item: Any, index: int = 0) -> Intervention:
    """One intervention from the page: ``{"concepts": ["stripes", "#12", 40], "mode": "ablate" | "value" |
    "scale", "amount": number}``."""
    from vsp_assert.engine.interventions import Intervention

    where = f"interventions[{index}]"
    if not isinstance(item, Mapping):
        raise InputError("an intervention is an object", field=where, received=type(item).__name__)
    concepts = item.get("concepts")
    if isinstance(concepts, (str, int)) and not isinstance(concepts, bool):
        concepts = [concepts]
    if not isinstance(concepts, list) or not concepts or not all(
            (isinstance(c, str) and c.strip()) or (isinstance(c, int) and not isinstance(c, bool)) for c in concepts):
        raise InputError("name the latents or concepts to change", field=f"{where}.concepts", received=concepts,
                         allowed="concept names, '#id' or latent ids")
    refs = [c.strip() if isinstance(c, str) else c for c in concepts]
    mode = item.get("mode", "ablate")
    label = item.get("label") if isinstance(item.get("label"), str) else None
    if mode == "ablate":
        return Intervention.ablate(*refs, label=label)
    if mode == "value":
        return Intervention.steer(*refs, value=_number(item.get("amount"), f"{where}.amount"), label=label)
    if mode == "scale":
        return Intervention.steer(*refs, scale=_number(item.get("amount"), f"{where}.amount"), label=label)
    raise InputError("unknown intervention mode", field=f"{where}.mode", received=mode,
                     allowed="ablate, value, scale")
