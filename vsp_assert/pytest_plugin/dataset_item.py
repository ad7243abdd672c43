"""The pytest side of dataset cases (``each:``): running one as a test item, and its failure view.

:func:`run_dataset_item` runs a :class:`~vsp_assert.checks.dataset_schema.DatasetCase` on the item's Scratchpad
with the session's observer set aside (its rows are one case, not hundreds of traced cases), while every row's
trace still passes the session's SAE-fit check. Dataset cases keep no baseline entry: their claims are rates,
asserted every run. :func:`dataset_failure_text` is the terminal view (rates, intervals, counts, worst rows).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, TypeGuard

if TYPE_CHECKING:
    from vsp_assert.checks.dataset import DatasetResult
    from vsp_assert.checks.dataset_schema import DatasetCase
    from vsp_assert.pytest_plugin.session import VspSession


def is_dataset(case: Any) -> TypeGuard[DatasetCase]:
    from vsp_assert.checks.dataset_schema import DatasetCase

    return isinstance(case, DatasetCase)


def run_dataset_item(pad: Any, case: DatasetCase, session: VspSession) -> DatasetResult:
    from vsp_assert.checks.dataset import run_dataset_case

    observer, pad.observer = pad.observer, None
    try:
        return run_dataset_case(pad, case, on_trace=session.check_fit)
    finally:
        pad.observer = observer


def dataset_failure_text(nodeid: str, result: DatasetResult, session: VspSession) -> str:
    from vsp_assert.render.dataset import render_dataset

    return render_dataset(nodeid, result, style=session.style, width=session.width)


def dataset_json(result: DatasetResult) -> dict[str, Any]:
    """The figures of a dataset case for ``report.json``: per check its rate, interval, count, bound and controls;
    per row its fields, answer and per-check outcome."""
    checks = []
    for s in result.summaries:
        low, high = s.rate.interval
        entry: dict[str, Any] = {"description": s.description, "kind": s.check.kind, "k": s.rate.k, "n": s.rate.n,
                                 "rate": s.rate.value, "low": low, "high": high, "min_rate": s.check.min_rate,
                                 "max_rate": s.check.max_rate, "on_interval": s.check.on_interval,
                                 "passed": s.passed and s.specific_passed}
        if s.control_rate is not None:
            entry["controls"] = {"k": s.control_rate.k, "n": s.control_rate.n, "rate": s.control_rate.value,
                                 "specificity": 1 - s.control_rate.value, "p_value": s.p_value,
                                 "mass_matched": s.matched, "specific": bool(s.check.control and
                                                                             s.check.control.specific)}
        checks.append(entry)
    rows = [{"index": o.row.index, "where": o.row.where, "fields": {k: str(v) for k, v in o.row.fields.items()},
             "answer": o.answer, "answer_prob": o.answer_prob, "passed": list(o.passed)} for o in result.rows]
    return {"source": result.source, "rows": rows, "checks": checks,
            "missing": [list(m) for m in result.missing]}


def dataset_digest(out: dict[str, Any], nodeid: str, result: DatasetResult, top_k: int) -> None:
    """Turn a digest's HTML section and JSON entry into a dataset case's (in place)."""
    from vsp_assert.render.dataset import dataset_html
    from vsp_assert.render.html import MAX_OVERLAYS

    out["html"] = dataset_html(0, nodeid, result, top_k=top_k, max_overlays=MAX_OVERLAYS)
    every = sum(all(o.passed) for o in result.rows)
    out["answer_prob"] = every / len(result.rows) if result.rows else 0.0
    entry = out["json"]
    entry["prompt"] = result.case.prompt if result.case is not None else ""
    entry["answer"] = f"{every}/{len(result.rows)} rows pass every check"
    entry["answer_prob"] = out["answer_prob"]
    entry["output_tokens"] = []
    entry["dataset"] = dataset_json(result)
