"""Case digests: the plain data a test report carries about its concept cases, and the HTML report built from them.

A test's report (its ``vsp`` attribute, set in ``pytest_runtest_makereport``) carries one digest per checked
trace — passed or not, whether it had checks, the ``--vsp-show`` view and, with ``--vsp-report``, the case's
rendered HTML section and its ``report.json`` entry — plus the model loads since the last report and the baseline
keys the test found missing. The digests are dicts of strings, numbers and lists, so pytest-xdist ships them from
a worker to the controller with the rest of the report (``TestReport`` keeps unknown attributes through
``pytest_report_to_serializable``/``_from_serializable``), and the controller — or the single process — builds
its summary and report from the same data.

Why sections and not traces: a :class:`~vsp_assert.engine.trace.Trace` holds ``[patches, d_sae]`` tensors (a
hundred MB for a large SAE) and a PIL image; shipping it to the controller would cost more than rendering it where
it is. So each worker renders its cases' sections (in parallel), and :func:`write_report` here only numbers them,
puts the failing ones first and adds the summary table and ``report.json`` with :mod:`vsp_assert.render.html`'s
own functions; ``tests/plugin/test_with_other_plugins.py`` checks the page equals ``render_report`` byte for byte.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

from vsp_assert.pytest_plugin.dataset_item import dataset_digest
from vsp_assert.pytest_plugin.shards import add_merge_data

if TYPE_CHECKING:
    from vsp_assert.checks.assertions import CaseResult

#: the report attribute that carries the payload
ATTRIBUTE = "vsp"


def digest(nodeid: str, result: CaseResult, *, show: str | None, report: bool, top_k: int) -> dict[str, Any]:
    """One checked trace of a test as plain data (``report``: render its HTML section and JSON entry too)."""
    out: dict[str, Any] = {"nodeid": nodeid, "passed": result.passed, "checked": bool(result.records),
                           "show": show, "html": None, "json": None, "sae_fit": result.trace.sae_fit}
    if report and result.records:
        from vsp_assert.render.html import MAX_OVERLAYS, case_html, report_json

        why = getattr(result, "explanation", None)  # why not the right answer, for a failure that names it
        out["html"] = case_html(0, nodeid, result.trace, result.records, top_k=top_k, max_overlays=MAX_OVERLAYS,
                                explanation=why)
        out["json"] = report_json([(nodeid, result.trace, result.records)], "")["results"][0]
        if why is not None:
            out["json"]["why_not_correct"] = why.to_dict()
        out["answer_prob"] = float(result.trace.answer_prob)
        if getattr(result, "summaries", None) is not None:  # a dataset case: its own section and figures
            dataset_digest(out, nodeid, result, top_k)  # type: ignore[arg-type]
    return out


@dataclass
class _Trace:
    """What ``summary_html``/``report_json`` read of a trace, from a digest."""

    prompt: str
    answer: str
    answer_prob: float
    output_tokens: list[str]


@dataclass
class _Record:
    """What ``summary_html``/``report_json`` read of a record, from a digest's JSON entry."""

    data: dict[str, Any]

    @property
    def passed(self) -> bool:
        return bool(self.data["passed"])

    @property
    def concept(self) -> str | None:
        return cast("str | None", self.data.get("concept"))

    def to_dict(self) -> dict[str, Any]:
        return dict(self.data)


def _section(html: str, index: int) -> str:
    """A section rendered as case 0, renumbered (the anchor is the first ``id`` of the section)."""
    return html.replace('id="case-0"', f'id="case-{index}"', 1)


def render_page(digests: Sequence[dict[str, Any]], *, title: str) -> tuple[str, dict[str, Any]]:
    """The page and the ``report.json`` document of the digests that carry a section (failing cases first)."""
    from vsp_assert.render.html import page, report_json, summary_html

    shown = [d for d in digests if d.get("html") is not None]
    ordered = [d for d in shown if not d["passed"]] + [d for d in shown if d["passed"]]
    results: list[Any] = []
    for d in ordered:
        entry = d["json"]
        trace = _Trace(entry["prompt"], entry["answer"], float(d["answer_prob"]), list(entry["output_tokens"]))
        results.append((entry["nodeid"], trace, [_Record(r) for r in entry["records"]]))
    sections = "".join(_section(d["html"], i) for i, d in enumerate(ordered))
    document = report_json(results, title)
    for d, entry in zip(ordered, document["results"], strict=True):  # what only a digest carries
        if "why_not_correct" in d["json"]:
            entry["why_not_correct"] = d["json"]["why_not_correct"]
    return page(title, summary_html(results), sections), document


def write_report(directory: str | Path, digests: Sequence[dict[str, Any]], *,
                 title: str = "vsp-assert report") -> Path:
    """Write ``directory/index.html`` and ``directory/report.json`` atomically; returns the HTML path."""
    from vsp_assert.files import atomic_write_text

    folder = Path(directory)
    page, doc = render_page(digests, title=title)
    add_merge_data(doc, digests)  # dataset figures, and the digests `vsp-assert report merge` reads (shards.py)
    atomic_write_text(folder / "report.json", json.dumps(doc, indent=2, ensure_ascii=False, allow_nan=False) + "\n")
    return atomic_write_text(folder / "index.html", page)
