"""Concept baselines: a recorded profile per case, and the drift check against it.

A case that passes can still drift: the answer stays right but for another reason. A *profile* records what a
case's trace showed — the answer and its probability, per output token the top attention-weighted concepts
with scores, the top image-level (captured) concepts, and the outcome of the case's interventions. Profiles are
stored one JSON file per case file, beside it (``cases/misleading.yaml`` → ``cases/misleading.baseline.json``),
with sorted keys and rounded floats so that diffs read well in review.

``--vsp-update-baseline`` writes the profiles of the cases that ran; entries of cases that did not run are kept
(read–modify–write under an exclusive lock, so xdist workers can update one file together; written atomically
via a temp file + rename). Without the flag, a case with a baseline entry also asserts *no drift* beyond its
tolerances (:class:`~vsp_assert.checks.schema.Tolerance`, per case or in ``defaults``):

- the answer changed;
- the answer's probability moved by more than ``probability``;
- a concept entered or left a token's top-``top_k``;
- the Spearman rank correlation of a token's concept scores (over the latents recorded for it) fell below
  ``rank_correlation``;
- an intervention's outcome (its answer after) changed.

The drift failure shows a concept diff per token (gained / lost / moved) and the heatmaps of then and now.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from vsp_assert.checks.assertions import same_answer
from vsp_assert.errors import CaseError
from vsp_assert.files import atomic_write_text

if TYPE_CHECKING:
    from vsp_assert.checks.assertions import AssertionRecord, CaseResult
    from vsp_assert.checks.schema import Tolerance
    from vsp_assert.engine.trace import Trace

VERSION = 1
RECORDED_TOP = 10  # latents stored per token / for the image
DECIMALS = 4


def baseline_path(case_file: str | Path) -> Path:
    p = Path(case_file)
    return p.with_name(p.stem + ".baseline.json")


def _r(x: float) -> float:
    return round(float(x), DECIMALS)


def profile(trace: Trace, records: list[AssertionRecord] | None = None, top: int = RECORDED_TOP, *,
            sae_id: str | None = None) -> dict[str, Any]:
    """The recorded profile of one trace (and the interventions among its records). ``sae_id``: the identity of
    the SAE it was explained with (:func:`vsp_assert.engine.fit.sae_identity`); a baseline entry recorded with
    another SAE is not compared (its latents are other latents)."""
    tokens = []
    for t, text in enumerate(trace.output_tokens):
        tokens.append({
            "text": text,
            "top": [[trace.display(i), i, _r(s)] for i, s in trace.top_concepts(t, top)],
        })
    interventions = []
    for r in records or []:
        if r.intervention is not None:
            iv = r.intervention
            interventions.append({"intervention": r.description, "answer_after": iv.answer_after,
                                  "p_after": _r(iv.p_after), "drop": _r(iv.drop)})
    out: dict[str, Any] = {
        "answer": trace.answer,
        "answer_prob": _r(trace.answer_prob),
        "tokens": tokens,
        "captured": [[trace.display(i), i, _r(s)] for i, s in trace.top_captured(top)],
        "interventions": sorted(interventions, key=lambda d: d["intervention"]),
    }
    if trace.sae_fit is not None:
        out["sae_fit"] = _r(trace.sae_fit)
    if sae_id is not None:
        out["sae_identity"] = sae_id
    return out


# ---------------------------------------------------------------------- reading and writing
def read_baseline(path: str | Path) -> dict[str, Any]:
    """A baseline file's ``cases`` mapping (empty when the file does not exist); invalid files are CaseErrors."""
    p = Path(path)
    if not p.exists():
        return {}
    try:
        raw = json.loads(p.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError) as exc:
        raise CaseError(f"cannot read the baseline ({exc})", file=str(p)) from None
    except json.JSONDecodeError as exc:
        raise CaseError(f"the baseline is not valid JSON ({exc.msg})", file=str(p), line=exc.lineno,
                        fix="restore it from version control or rewrite it with --vsp-update-baseline") from None
    except (ValueError, RecursionError) as exc:  # an integer too long, nested too deeply
        raise CaseError(f"the baseline is not valid JSON ({type(exc).__name__}: {str(exc)[:80]})", file=str(p),
                        fix="restore it from version control or rewrite it with --vsp-update-baseline") from None
    if not isinstance(raw, dict) or not isinstance(raw.get("cases"), dict):
        raise CaseError("a baseline file is an object with a 'cases' mapping", file=str(p),
                        received=type(raw).__name__, fix="rewrite it with --vsp-update-baseline")
    if raw.get("version") != VERSION:
        raise CaseError("unsupported baseline version", file=str(p), field="version", received=raw.get("version"),
                        allowed=str(VERSION), fix="rewrite it with --vsp-update-baseline")
    for case_id, entry in raw["cases"].items():
        _validate_entry(entry, str(p), str(case_id))
    return dict(raw["cases"])


def _validate_entry(entry: Any, source: str, case_id: str) -> None:
    def bad(field_: str, received: Any, allowed: str) -> CaseError:
        return CaseError("invalid baseline entry", file=source, field=f"cases.{case_id}.{field_}",
                         received=received, allowed=allowed, fix="rewrite it with --vsp-update-baseline")

    if not isinstance(entry, dict):
        raise bad("", type(entry).__name__, "an object")
    if not isinstance(entry.get("answer"), str):
        raise bad("answer", entry.get("answer"), "a string")
    prob = entry.get("answer_prob")
    if isinstance(prob, bool) or not isinstance(prob, (int, float)) or not 0.0 <= float(prob) <= 1.0:
        raise bad("answer_prob", prob, "a number in [0, 1]")
    for key in ("tokens", "captured", "interventions"):
        if not isinstance(entry.get(key), list):
            raise bad(key, entry.get(key), "a list")
    for i, tok in enumerate(entry["tokens"]):
        if (not isinstance(tok, dict) or not isinstance(tok.get("top"), list)
                or not isinstance(tok.get("text", ""), str)):
            raise bad(f"tokens[{i}]", tok, "{text, top: [[name, id, score], …]}")
        for item in tok["top"]:
            if not _is_scored(item):
                raise bad(f"tokens[{i}].top", item, "[name, latent id, score]")
    for item in entry["captured"]:
        if not _is_scored(item):
            raise bad("captured", item, "[name, latent id, score]")
    if "sae_identity" in entry and not isinstance(entry["sae_identity"], str):
        raise bad("sae_identity", entry["sae_identity"], "the SAE's identity, a hex string")
    for i, iv in enumerate(entry["interventions"]):
        if (not isinstance(iv, dict) or not isinstance(iv.get("intervention"), str)
                or not isinstance(iv.get("answer_after"), str)):
            raise bad(f"interventions[{i}]", iv, "{intervention, answer_after, p_after, drop}")


def _is_scored(item: Any) -> bool:
    """A recorded ``[name, latent id, score]`` triple."""
    return (isinstance(item, list) and len(item) == 3 and isinstance(item[0], str)
            and isinstance(item[1], int) and not isinstance(item[1], bool)
            and isinstance(item[2], (int, float)) and not isinstance(item[2], bool))


@contextmanager
def _locked(path: Path) -> Iterator[None]:
    """An exclusive advisory lock on ``path`` (POSIX; a no-op where fcntl is missing). The lock file lives in the
    temp folder, keyed by the resolved path, so nothing is left beside the user's cases."""
    import hashlib
    import tempfile

    key = hashlib.sha1(str(path.resolve()).encode()).hexdigest()[:16]
    lock_path = Path(tempfile.gettempdir()) / f"vsp-assert-baseline-{key}.lock"
    try:
        import fcntl
    except ImportError:  # pragma: no cover - Windows
        yield
        return
    with open(lock_path, "w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


_TRIPLET = re.compile(r'\[\s+("(?:[^"\\]|\\.)*"),\s+(-?\d+),\s+(-?[\d.eE+-]+)\s+\]')


def dump_baseline(doc: dict[str, Any]) -> str:
    """Stable, diff-friendly JSON: sorted keys, one line per ``[name, id, score]`` entry."""
    text = json.dumps(doc, indent=1, sort_keys=True, ensure_ascii=False)
    return _TRIPLET.sub(r"[\1, \2, \3]", text) + "\n"


def update_baseline(path: str | Path, entries: dict[str, dict[str, Any]], *, model: str, sae: str) -> Path:
    """Merge ``entries`` (case id → profile) into the baseline at ``path``; other cases' entries are kept."""
    p = Path(path)
    with _locked(p):
        cases = read_baseline(p)
        cases.update(entries)
        doc = {"version": VERSION, "model": model, "sae": sae, "cases": {k: cases[k] for k in sorted(cases)}}
        atomic_write_text(p, dump_baseline(doc))
    return p


# ---------------------------------------------------------------------- drift
@dataclass
class TokenDiff:
    index: int
    text: str
    gained: list[str] = field(default_factory=list)
    lost: list[str] = field(default_factory=list)
    moved: list[str] = field(default_factory=list)
    rank_correlation: float | None = None


@dataclass
class Drift:
    """Differences between a baseline profile and a new one."""

    answer: tuple[str, str] | None = None
    probability: tuple[float, float] | None = None
    tokens: list[TokenDiff] = field(default_factory=list)
    interventions: list[tuple[str, str, str]] = field(default_factory=list)  # (intervention, then, now)
    baseline: dict[str, Any] | None = None  # the recorded profile compared against (for the "then" heatmap)
    explanation: Any = None  # why a changed answer flipped (vsp_assert.engine.flip.FlipExplanation), when known

    def changed_tokens(self) -> list[TokenDiff]:
        return [t for t in self.tokens if t.gained or t.lost or t.moved]


def _spearman(a: list[float], b: list[float]) -> float | None:
    if len(a) < 3:
        return None
    from scipy.stats import spearmanr

    if len(set(a)) == 1 or len(set(b)) == 1:
        return 1.0 if a == b else 0.0
    return float(spearmanr(a, b).statistic)


def diff_profiles(old: dict[str, Any], new: dict[str, Any], trace: Trace | None, top_k: int) -> Drift:
    """Compare two profiles; ``trace`` (the new run) provides scores of latents outside the new top list."""
    drift = Drift()
    if not same_answer(old["answer"], new["answer"]):
        drift.answer = (old["answer"], new["answer"])
    drift.probability = (float(old["answer_prob"]), float(new["answer_prob"]))
    for t, (then, now) in enumerate(zip(old["tokens"], new["tokens"])):
        then_ids = [item[1] for item in then["top"]]
        now_ids = [item[1] for item in now["top"]]
        names = {item[1]: item[0] for item in then["top"] + now["top"]}
        then_k, now_k = then_ids[:top_k], now_ids[:top_k]
        diff = TokenDiff(t, now.get("text", ""))
        diff.gained = [names[i] for i in now_k if i not in then_k]
        diff.lost = [names[i] for i in then_k if i not in now_k]
        diff.moved = [f"{names[i]} {then_k.index(i) + 1}→{now_k.index(i) + 1}" for i in now_k
                      if i in then_k and then_k.index(i) != now_k.index(i)]
        if trace is not None and t < trace.n_tokens:
            current = [float(trace.scores[t, i]) for i in then_ids]
            diff.rank_correlation = _spearman([float(item[2]) for item in then["top"]], current)
        drift.tokens.append(diff)
    then_iv = {d["intervention"]: d for d in old.get("interventions", [])}
    for d in new.get("interventions", []):
        prev = then_iv.get(d["intervention"])
        if prev is not None and not same_answer(prev["answer_after"], d["answer_after"]):
            drift.interventions.append((d["intervention"], prev["answer_after"], d["answer_after"]))
    return drift


def drift_records(drift: Drift, tolerance: Tolerance) -> list[AssertionRecord]:
    """The drift checks as assertion records (all of them, passing or not)."""
    from vsp_assert.checks.assertions import AssertionRecord

    records = []
    then, now = drift.answer or ("", "")
    why = f"; {drift.explanation.sentence()}" if drift.answer and drift.explanation is not None else ""
    records.append(AssertionRecord("drift", "answer unchanged since baseline",
                                   "same answer", f"{then!r} → {now!r}{why}" if drift.answer else "same",
                                   drift.answer is None))
    if drift.probability is not None:
        p0, p1 = drift.probability
        records.append(AssertionRecord("drift", "answer probability within tolerance",
                                       f"|Δp| <= {tolerance.probability:g}", f"{p0:.3f} → {p1:.3f}",
                                       abs(p1 - p0) <= tolerance.probability + 1e-9))
    for tok in drift.tokens:
        changed = tok.gained or tok.lost
        detail = "; ".join(part for part in (
            f"gained {', '.join(tok.gained)}" if tok.gained else "",
            f"lost {', '.join(tok.lost)}" if tok.lost else "",
        ) if part) or "same set"
        records.append(AssertionRecord("drift", f"token {tok.index} '{tok.text.strip()}' keeps its top concepts",
                                       f"same top-{tolerance.top_k}", detail, not changed, tokens=[tok.index]))
        if tok.rank_correlation is not None:
            records.append(AssertionRecord(
                "drift", f"token {tok.index} '{tok.text.strip()}' concept ranking stable",
                f"spearman >= {tolerance.rank_correlation:g}", f"{tok.rank_correlation:.3f}",
                tok.rank_correlation >= tolerance.rank_correlation, tokens=[tok.index]))
    for what, then_answer, now_answer in drift.interventions:
        records.append(AssertionRecord("drift", f"{what}: same outcome as baseline", f"answer after {then_answer!r}",
                                       f"answer after {now_answer!r}", False))
    return records


def explain_drift(trace: Trace, old_answer: str) -> Any:
    """Why the answer left its baseline (:func:`vsp_assert.engine.flip.explain_flip` on the current model), or
    None when the trace has no Scratchpad to attribute and ablate with."""
    from vsp_assert.engine.flip import explain_flip
    from vsp_assert.errors import VspError

    pad = getattr(trace, "scratchpad", None)
    if pad is None or not trace.can_attribute:
        return None
    try:
        return explain_flip(pad, trace, old_answer)
    except VspError:
        return None


class BaselineStore:
    """Per-session state: baselines read once per case file, profiles collected for ``--vsp-update-baseline``."""

    def __init__(self, *, model: str, sae: str) -> None:
        self.model, self.sae = model, sae
        self._read: dict[Path, dict[str, Any]] = {}
        self.pending: dict[Path, dict[str, dict[str, Any]]] = {}
        self.missing: set[str] = set()  # a set: a rerun case counts once
        self.incomparable: set[str] = set()  # entries recorded with another SAE (not compared)

    def entry(self, case_file: str, case_id: str) -> dict[str, Any] | None:
        path = baseline_path(case_file)
        if path not in self._read:
            self._read[path] = read_baseline(path)
        return self._read[path].get(case_id)

    def record(self, case_file: str, case_id: str, prof: dict[str, Any]) -> None:
        self.pending.setdefault(baseline_path(case_file), {})[case_id] = prof

    def flush(self) -> list[Path]:
        written = [update_baseline(path, entries, model=self.model, sae=self.sae)
                   for path, entries in sorted(self.pending.items())]
        self.pending.clear()
        return written


def check_result(store: BaselineStore, result: CaseResult, *, update: bool,
                 sae_id: str | None = None) -> list[AssertionRecord]:
    """Compare one YAML case result with its baseline entry: sets ``result.drift`` (the :class:`Drift`, with the
    baseline profile in ``drift.baseline``) and returns the drift records (none when updating, when the case has
    no entry, or when the entry was recorded with another SAE — ``store.incomparable`` then names the case).
    Rendering the drift is the renderer's job (:mod:`vsp_assert.render.drift`)."""
    case = result.case
    assert case is not None, "baselines are kept for YAML cases"
    prof = profile(result.trace, result.records, sae_id=sae_id)
    if update:
        store.record(case.file, case.id, prof)
        return []
    old = store.entry(case.file, case.id)
    name = f"{os.path.relpath(case.file)}::{case.id}"
    if old is None:
        store.missing.add(name)
        return []
    recorded_with = old.get("sae_identity")
    if sae_id is not None and recorded_with is not None and recorded_with != sae_id:
        store.incomparable.add(name)
        return []
    drift = diff_profiles(old, prof, result.trace, case.tolerance.top_k)
    drift.baseline = old
    if drift.answer is not None:  # the old model is gone: attribute the old answer against the new one on this one
        drift.explanation = explain_drift(result.trace, drift.answer[0])
    result.drift = drift
    return drift_records(drift, case.tolerance)
