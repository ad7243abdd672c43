"""Concept labels: names for SAE latents.

A label file maps a concept name to one or more latent ids (correlated latents often share a concept) and keeps
per-latent statistics from the labelling run. Everywhere a user names a concept, a raw latent id also works
(``"#123"`` in YAML or strings, ``123`` in Python), so an unlabelled latent can still be asserted on. An unknown
name fails with the closest known names. The file (``concepts.json`` beside the SAE)::

    {"concepts": {"red": [12, 40], "stripes": [3]},
     "latents": {"12": {"label": "red", "precision": 0.97, "firing_rate": 0.08,
                        "mean_activation": 1.3, "label_entropy": 0.2}},
     "dead": [5, 77]}
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from vsp_assert.errors import InputError, SAEError, did_you_mean

_ID = re.compile(r"^#(\d+)$")
ConceptRef = str | int


@dataclass
class ConceptLabels:
    """Concept name → latent ids, plus per-latent statistics. ``d_sae`` bounds every id."""

    d_sae: int
    concepts: dict[str, list[int]] = field(default_factory=dict)
    latents: dict[int, dict[str, Any]] = field(default_factory=dict)
    dead: list[int] = field(default_factory=list)
    source: str | None = None

    def __post_init__(self) -> None:
        for name, ids in self.concepts.items():
            for i in ids:
                if not isinstance(i, int) or isinstance(i, bool) or not 0 <= i < self.d_sae:
                    raise SAEError(
                        f"concept '{name}' names latent {i!r}, outside the SAE's latents",
                        file=self.source,
                        field=f"concepts.{name}",
                        received=i,
                        allowed=f"integers in [0, {self.d_sae - 1}]",
                        fix="regenerate the label file for this SAE",
                    )
        self._by_latent: dict[int, str] = {}
        for name, ids in self.concepts.items():
            for i in ids:
                self._by_latent.setdefault(i, name)

    @classmethod
    def empty(cls, d_sae: int) -> ConceptLabels:
        return cls(d_sae=d_sae)

    # ------------------------------------------------------------------ io
    @classmethod
    def from_dict(cls, raw: Mapping[str, Any], *, d_sae: int, source: str | None = None) -> ConceptLabels:
        if not isinstance(raw, Mapping):
            raise SAEError("a label file must be a JSON object", file=source, received=type(raw).__name__)
        unknown = sorted(str(k) for k in set(raw) - {"concepts", "latents", "dead", "d_sae"})
        if unknown:
            raise SAEError("unknown key in the label file", file=source, field=unknown[0], received=unknown[0],
                           allowed="concepts, latents, dead, d_sae",
                           fix=did_you_mean(unknown[0], ("concepts", "latents", "dead", "d_sae")))
        concepts_raw = raw.get("concepts", {})
        if not isinstance(concepts_raw, Mapping):
            raise SAEError("must map concept names to lists of latent ids", file=source, field="concepts",
                           received=type(concepts_raw).__name__)
        concepts: dict[str, list[int]] = {}
        for name, ids in concepts_raw.items():
            if isinstance(ids, int) and not isinstance(ids, bool):
                ids = [ids]
            if not isinstance(ids, list) or not ids:
                raise SAEError("must be a non-empty list of latent ids", file=source, field=f"concepts.{name}",
                               received=ids)
            if not isinstance(name, str) or not name or name.startswith("#"):
                raise SAEError("concept names are non-empty and do not start with '#'", file=source,
                               field="concepts", received=name)
            concepts[name] = list(ids)
        latents_raw = raw.get("latents", {})
        if not isinstance(latents_raw, Mapping):
            raise SAEError("must map latent ids to statistics", file=source, field="latents",
                           received=type(latents_raw).__name__)
        dead_raw = raw.get("dead", [])
        if not isinstance(dead_raw, list):
            raise SAEError("must be a list of latent ids", file=source, field="dead", received=dead_raw,
                           allowed=f"integers in [0, {d_sae - 1}]")
        dead = list(dead_raw)
        latents: dict[int, dict[str, Any]] = {}
        for key, stats in latents_raw.items():
            if key == "dead" and isinstance(stats, list):  # tolerated legacy placement
                dead.extend(stats)
                continue
            try:
                idx = int(key)
            except (TypeError, ValueError):
                raise SAEError("latent keys are integer ids", file=source, field="latents", received=key) from None
            if not 0 <= idx < d_sae:
                raise SAEError(f"latent {idx} is outside the SAE's latents", file=source, field=f"latents.{key}",
                               received=idx, allowed=f"integers in [0, {d_sae - 1}]")
            if not isinstance(stats, Mapping):
                raise SAEError("latent statistics must be an object", file=source, field=f"latents.{key}",
                               received=stats)
            latents[idx] = dict(stats)
        for i in dead:
            if not isinstance(i, int) or isinstance(i, bool) or not 0 <= i < d_sae:
                raise SAEError("dead latent ids must be in range", file=source, field="dead", received=i,
                               allowed=f"integers in [0, {d_sae - 1}]")
        return cls(d_sae=d_sae, concepts=concepts, latents=latents, dead=sorted(set(dead)), source=source)

    @classmethod
    def load(cls, path: str | Path, *, d_sae: int) -> ConceptLabels:
        p = Path(path)
        try:
            raw = json.loads(p.read_text(encoding="utf-8"))
        except OSError as exc:
            raise SAEError(f"cannot read the label file ({exc.strerror})", file=str(p)) from None
        except json.JSONDecodeError as exc:
            raise SAEError(f"invalid JSON ({exc.msg})", file=str(p), line=exc.lineno) from None
        except (ValueError, RecursionError) as exc:  # not UTF-8, an integer too long, nested too deeply
            raise SAEError(f"invalid JSON ({type(exc).__name__}: {str(exc)[:80]})", file=str(p)) from None
        return cls.from_dict(raw, d_sae=d_sae, source=str(p))

    def to_dict(self) -> dict[str, Any]:
        return {
            "concepts": {name: list(ids) for name, ids in sorted(self.concepts.items())},
            "latents": {str(i): self.latents[i] for i in sorted(self.latents)},
            "dead": list(self.dead),
        }

    def save(self, path: str | Path) -> Path:
        from vsp_assert.files import atomic_write_text

        return atomic_write_text(path, json.dumps(self.to_dict(), indent=2, sort_keys=False) + "\n")

    # ------------------------------------------------------------------ lookup
    def resolve(self, ref: ConceptRef) -> list[int]:
        """Latent ids of a concept name, a ``"#id"`` string or an int id."""
        if isinstance(ref, bool):
            raise InputError("a concept is a name, '#id' or an int", received=ref)
        if isinstance(ref, int):
            return [self._check_id(ref, ref)]
        if not isinstance(ref, str):
            raise InputError("a concept is a name, '#id' or an int", received=ref)
        m = _ID.match(ref.strip())
        if m:
            return [self._check_id(int(m.group(1)), ref)]
        if ref.strip().isdigit():
            return [self._check_id(int(ref), ref)]
        if ref in self.concepts:
            return list(self.concepts[ref])
        known = sorted(self.concepts)
        hint = did_you_mean(ref, known)
        raise InputError(
            f"unknown concept '{ref}'",
            received=ref,
            allowed=(", ".join(known) if known else "no concept names (this SAE has no label file)")
            + f"; or a latent id '#0'..'#{self.d_sae - 1}'",
            fix=hint,
        )

    def resolve_many(self, refs: ConceptRef | Iterable[ConceptRef]) -> list[int]:
        if isinstance(refs, (str, int)):
            refs = [refs]
        out: list[int] = []
        for ref in refs:
            for i in self.resolve(ref):
                if i not in out:
                    out.append(i)
        return out

    def _check_id(self, idx: int, ref: ConceptRef) -> int:
        if not 0 <= idx < self.d_sae:
            raise InputError(
                f"latent id {idx} is out of range",
                received=ref,
                allowed=f"ids 0..{self.d_sae - 1} (d_sae={self.d_sae})",
            )
        return idx

    def name_of(self, latent: int) -> str | None:
        """The concept a latent belongs to, or None for an unlabelled latent."""
        return self._by_latent.get(latent)

    def display(self, latent: int) -> str:
        name = self.name_of(latent)
        return f"{name}#{latent}" if name else f"#{latent}"
