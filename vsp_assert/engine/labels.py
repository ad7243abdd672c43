"""Concept labels: names for SAE latents.

A label file maps a concept name to one or more latent ids (correlated latents often share a concept) and keeps
per-latent statistics from the labelling run. Everywhere a user names a concept, a raw latent id also works
(``"#123"`` in YAML or strings, ``123`` in Python), so an unlabelled latent can still be asserted on. An unknown
name fails with the closest known names. The file (``concepts.json`` beside the SAE; written by
``vsp-assert concepts build``, docs/concepts.md defines every field)::

    {"version": 2,
     "concepts": {"red": [12, 40], "stripes": [3]},
     "latents": {"12": {"label": "red", "precision": 0.97, "recall": 0.4, "firing_rate": 0.08,
                        "mean_activation": 1.3, "label_entropy": 0.2},
                 "7": {"firing_rate": 0.41, "mean_activation": 0.2, "label_entropy": 0.9, "dense": true}},
     "dead": [5, 77],
     "dense": [7],
     "concept_stats": {"red": {"level": "patch", "precision": {"12": 0.97, "40": 0.91},
                               "recall": {"12": 0.4, "40": 0.2}, "threshold": 0.031, "balanced_accuracy": 0.98}},
     "atlas": "atlas/index.json",
     "build": {"min_precision": 0.8, "n_images": 2000, ...}}

Only ``concepts`` is required; files written before version 2 (``concepts``, ``latents``, ``dead``) load
unchanged. A label's ``atlas`` index (relative to the label file) lists each latent's reference images.
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
#: The label file's format version (1: concepts, latents, dead only).
VERSION = 2
_KEYS = ("version", "concepts", "latents", "dead", "dense", "concept_stats", "atlas", "build", "d_sae")
ConceptRef = str | int


@dataclass
class ConceptLabels:
    """Concept name → latent ids, plus per-latent statistics. ``d_sae`` bounds every id."""

    d_sae: int
    concepts: dict[str, list[int]] = field(default_factory=dict)
    latents: dict[int, dict[str, Any]] = field(default_factory=dict)
    dead: list[int] = field(default_factory=list)
    source: str | None = None
    dense: list[int] = field(default_factory=list)
    #: per concept: level, per-latent precision/recall, calibrated ``threshold`` (see docs/concepts.md)
    concept_info: dict[str, dict[str, Any]] = field(default_factory=dict)
    #: how the labels were built (thresholds used, image counts); free-form
    build: dict[str, Any] = field(default_factory=dict)
    #: the atlas index, relative to the label file's folder
    atlas: str | None = None

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
        for key, ids in (("dead", self.dead), ("dense", self.dense)):
            for i in ids:
                if not isinstance(i, int) or isinstance(i, bool) or not 0 <= i < self.d_sae:
                    raise SAEError(f"{key} latent ids must be in range", file=self.source, field=key, received=i,
                                   allowed=f"integers in [0, {self.d_sae - 1}]")
        self._atlas_index: dict[str, Any] | None = None
        self._noise = frozenset(self.dead) | frozenset(self.dense)
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
        unknown = sorted(str(k) for k in set(raw) - set(_KEYS))
        if unknown:
            raise SAEError("unknown key in the label file", file=source, field=unknown[0], received=unknown[0],
                           allowed=", ".join(_KEYS), fix=did_you_mean(unknown[0], _KEYS))
        version = raw.get("version", 1)
        if not isinstance(version, int) or isinstance(version, bool) or not 1 <= version <= VERSION:
            raise SAEError("unsupported label file version", file=source, field="version", received=version,
                           allowed=f"1..{VERSION}",
                           fix="upgrade vsp-assert, or rebuild with 'vsp-assert concepts build'")
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
        dense = raw.get("dense", [])
        if not isinstance(dense, list):
            raise SAEError("must be a list of latent ids", file=source, field="dense", received=dense,
                           allowed=f"integers in [0, {d_sae - 1}]")
        info = _concept_info(raw.get("concept_stats", {}), concepts, source)
        build = raw.get("build", {})
        if not isinstance(build, Mapping):
            raise SAEError("must be an object", file=source, field="build", received=type(build).__name__)
        atlas = raw.get("atlas")
        if atlas is not None and (not isinstance(atlas, str) or not atlas):
            raise SAEError("must be a path relative to the label file", file=source, field="atlas", received=atlas)
        return cls(d_sae=d_sae, concepts=concepts, latents=latents, dead=sorted(set(dead)), source=source,
                   dense=sorted(set(dense)), concept_info=info, build=dict(build), atlas=atlas)

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
        out: dict[str, Any] = {
            "concepts": {name: list(ids) for name, ids in sorted(self.concepts.items())},
            "latents": {str(i): self.latents[i] for i in sorted(self.latents)},
            "dead": list(self.dead),
        }
        if self.dense or self.concept_info or self.build or self.atlas:
            out = {"version": VERSION, **out, "dense": list(self.dense)}
            out["concept_stats"] = {name: self.concept_info[name] for name in sorted(self.concept_info)}
            if self.atlas:
                out["atlas"] = self.atlas
            if self.build:
                out["build"] = self.build
        return out

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

    # ------------------------------------------------------------------ statistics
    def stats(self, latent: int) -> dict[str, Any]:
        """The labelling run's statistics of a latent (``{}`` when none were recorded); ``dead``/``dense`` set."""
        self._check_id(latent, latent)
        out = dict(self.latents.get(latent, {}))
        out["dead"] = latent in self.dead
        out["dense"] = bool(out.get("dense")) or latent in self.dense
        return out

    def is_noise(self, latent: int) -> bool:
        """Dead (never fired) or dense (fires on too many patches): filtered out of rankings by default."""
        return latent in self._noise

    @property
    def noise(self) -> frozenset[int]:
        """Every dead or dense latent."""
        return self._noise

    def threshold(self, concept: str) -> float | None:
        """The calibrated ``captured`` threshold of a concept (image score ``> threshold`` means present)."""
        self.resolve(concept)
        value = self.concept_info.get(concept, {}).get("threshold")
        return float(value) if value is not None else None

    def concept_stats(self, concept: str) -> dict[str, Any]:
        """Level, per-latent precision/recall and threshold of a named concept (``{}`` for older files)."""
        self.resolve(concept)
        return dict(self.concept_info.get(concept, {}))

    def atlas_path(self) -> Path | None:
        """The atlas index file, resolved beside the label file (None without one)."""
        if not self.atlas or not self.source:
            return None
        return Path(self.source).parent / self.atlas

    def atlas_index(self) -> dict[str, Any] | None:
        """The atlas index (read once), or None when there is none."""
        if self._atlas_index is None:
            path = self.atlas_path()
            if path is None or not path.exists():
                return None
            try:
                raw = json.loads(path.read_text(encoding="utf-8"))
            except (OSError, ValueError) as exc:
                raise SAEError(f"cannot read the atlas index ({exc})", file=str(path)) from None
            if not isinstance(raw, dict) or not isinstance(raw.get("latents"), dict) \
                    or not isinstance(raw.get("images"), list):
                raise SAEError("the atlas index must hold 'images' (a list) and 'latents' (an object)",
                               file=str(path), fix="rebuild it with 'vsp-assert concepts build'")
            self._atlas_index = raw
        return self._atlas_index

    def references(self, latent: int) -> list[tuple[str, float]]:
        """The latent's top-activating reference images ``(image path, image score)``, best first."""
        self._check_id(latent, latent)
        index = self.atlas_index()
        if index is None:
            return []
        entry = index["latents"].get(str(latent))
        if not entry:
            return []
        images = index["images"]
        return [(str(images[i]), float(score)) for i, score in entry.get("refs", [])]


def _concept_info(raw: Any, concepts: Mapping[str, list[int]], source: str | None) -> dict[str, dict[str, Any]]:
    if not isinstance(raw, Mapping):
        raise SAEError("must map concept names to their statistics", file=source, field="concept_stats",
                       received=type(raw).__name__)
    out: dict[str, dict[str, Any]] = {}
    for name, entry in raw.items():
        where = f"concept_stats.{name}"
        if name not in concepts:
            raise SAEError("statistics for a concept that the file does not name", file=source, field=where,
                           received=name, allowed=", ".join(sorted(concepts)) or "(no concepts)")
        if not isinstance(entry, Mapping):
            raise SAEError("must be an object", file=source, field=where, received=entry)
        t = entry.get("threshold")
        if t is not None and (isinstance(t, bool) or not isinstance(t, (int, float))):
            raise SAEError("a threshold is a number", file=source, field=f"{where}.threshold", received=t)
        out[name] = dict(entry)
    return out
