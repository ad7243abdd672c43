"""The static HTML report (``--vsp-report DIR``): one self-contained page per session, for CI artifacts.

It is the offline counterpart of the paper's interactive interface. Per recorded case it shows the image, the
prompt and answer, the checks (expected vs measured), the intervention results, the clustered token × latent
heatmap, one attention overlay per output token and, for every asserted concept, where its latents fire.
Failing cases come first. Beside ``index.html`` it writes ``report.json`` with the key figures per case, for
tools that read CI results.

Decisions:

- **Self-contained.** CSS is inline, images are ``data:image/png;base64`` URIs, nothing is fetched: the page
  must open from a CI artifact store or a mail attachment. Every piece of text is ``html.escape``-d.
- **Record, then format.** Like the terminal report, this module only formats the recorded
  :class:`~vsp_assert.engine.trace.Trace` and :class:`~vsp_assert.checks.assertions.AssertionRecord` objects;
  it never runs a model, with one exception: the heatmap's *attributed* view reads ``Trace.attribution``, which a
  trace computes on first use (one batched backward) when no ``attributed`` check did. The heatmap is
  :func:`vsp_assert.engine.analysis.heatmap` with the asserted latents and tokens highlighted, exactly as the
  terminal shows it, but as an HTML table (every column, values printed in the cells), with a switch between its
  attended and attributed views.
- **PIL + numpy only.** Overlays are drawn here (our colour ramp, nearest-neighbour upsampling of the patch
  grid so each patch reads as one block) rather than with matplotlib, which the package does not depend on.
  Small images are upscaled with NEAREST so a 32-pixel test image stays crisp.
- **Fast and bounded.** Overlays are capped per case (first :data:`MAX_OVERLAYS` output tokens, first
  :data:`MAX_CONCEPT_MAPS` concepts) and PNGs are encoded with light compression, so a suite of a hundred cases
  writes in a few seconds.
- **Atomic.** Both files go through :func:`vsp_assert.files.atomic_write_text`; a killed run leaves the previous
  report intact.

This module assembles the page (CSS, summary table, ``report.json``, the atomic writes); each case's section
(image, checks, interventions, heatmap, overlays, concept maps) is built in :mod:`vsp_assert.render.html_case`.

Spatial maps are drawn over the whole image as the user gave it; a processor that centre-crops (CLIP-style)
saw a slightly smaller region, so near the cropped edges the maps are approximate.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from vsp_assert.files import atomic_write_text
from vsp_assert.render.html_case import (
    IMAGE_BOX,
    MAX_CONCEPT_MAPS,
    MAX_OVERLAYS,
    OVERLAY_BOX,
    _e,
    case_html,
    fit_image,
    overlay,
    png_data_uri,
)

if TYPE_CHECKING:
    from vsp_assert.checks.assertions import AssertionRecord
    from vsp_assert.engine.trace import Trace

# the page's names, and the section names callers (the plugin's digests, the tests) read from here
__all__ = ["CSS", "IMAGE_BOX", "MAX_CONCEPT_MAPS", "MAX_OVERLAYS", "OVERLAY_BOX", "case_html", "fit_image", "overlay",
           "png_data_uri", "render_report", "report_json", "summary_html", "write_report"]

Result = tuple[str, "Trace", Sequence["AssertionRecord"]]

CSS = """
body { font: 14px/1.4 system-ui, -apple-system, "Segoe UI", sans-serif; margin: 24px; color: #1d1d1f;
       background: #ffffff; }
h1 { font-size: 22px; margin: 0 0 8px; }
h2 { font-size: 17px; margin: 0 0 6px; word-break: break-all; }
h3 { font-size: 14px; margin: 18px 0 6px; color: #444; }
code, .mono { font-family: ui-monospace, "DejaVu Sans Mono", Menlo, monospace; font-size: 12px; }
.totals { margin: 0 0 12px; }
.badge { display: inline-block; padding: 1px 7px; border-radius: 4px; font-size: 12px; font-weight: 600;
         color: #fff; margin-right: 6px; }
.badge.fail { background: #c62828; } .badge.pass { background: #2e7d32; }
details.latent { display: inline-block; vertical-align: top; margin: 2px 6px 6px 0; border: 1px solid #ddd;
                 border-radius: 4px; padding: 2px 6px; max-width: 100%; }
details.latent summary { cursor: pointer; font-family: ui-monospace, "DejaVu Sans Mono", monospace; font-size: 12px; }
.refs figure.ref { display: inline-block; margin: 2px; } .refs img { image-rendering: pixelated; }
section.case { border: 1px solid #d0d0d0; border-radius: 6px; padding: 14px 16px; margin: 18px 0; }
section.case.failed { border-left: 6px solid #c62828; } section.case.passed { border-left: 6px solid #2e7d32; }
table { border-collapse: collapse; }
table.grid td, table.grid th { border: 1px solid #ddd; padding: 3px 7px; text-align: left; vertical-align: top; }
table.grid th { background: #f4f4f4; }
tr.failrow td { background: #fdecea; }
.ok { color: #2e7d32; font-weight: 600; } .ko { color: #c62828; font-weight: 600; }
.row { display: flex; gap: 20px; align-items: flex-start; flex-wrap: wrap; }
dl.qa { margin: 0; display: grid; grid-template-columns: auto 1fr; gap: 2px 12px; max-width: 900px; }
dl.qa dt { font-weight: 600; color: #555; } dl.qa dd { margin: 0; word-break: break-word; }
figure { margin: 0; display: inline-block; text-align: center; }
figure img { display: block; margin: 0 auto; image-rendering: pixelated; border: 1px solid #bbb; }
figcaption { font-size: 12px; color: #444; max-width: 200px; word-break: break-word; }
figcaption.hl { font-weight: 700; color: #000; }
.figures { display: flex; flex-wrap: wrap; gap: 12px; }
table.heatmap { font-family: ui-monospace, "DejaVu Sans Mono", Menlo, monospace; font-size: 11px; }
table.heatmap th, table.heatmap td { padding: 3px 5px; text-align: center; }
table.heatmap td.cell { min-width: 38px; height: 20px; border: 1px solid #ffffff; }
table.heatmap th.lat { font-weight: 400; vertical-align: bottom; max-width: 70px; word-break: break-all; }
table.heatmap th.lat.hl { font-weight: 700; background: #fff3c4; }
table.heatmap th.cluster { font-size: 10px; color: #666; border-bottom: 1px solid #999; }
table.heatmap th.token { text-align: right; font-weight: 400; white-space: nowrap; }
table.heatmap tr.hl th.token { font-weight: 700; background: #fff3c4; }
table.heatmap .cb { border-left: 3px solid #222 !important; }
.views > input { margin-left: 0; } .views > label { margin-right: 14px; font-size: 13px; }
.views > input.v-att:checked ~ .view.attributed, .views > input.v-attr:checked ~ .view.attended { display: none; }
.lid { color: #777; }
.legend { display: inline-block; width: 160px; height: 10px; vertical-align: middle; margin: 0 6px;
          border: 1px solid #999; }
.note { color: #666; font-size: 12px; }
"""


def _passed(records: Sequence[AssertionRecord]) -> bool:
    return all(r.passed for r in records)


def _jsonable(value: Any) -> Any:
    """Plain JSON (non-finite floats become null, tuples lists)."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    return value


def summary_html(ordered: Sequence[Result]) -> str:
    n_failed = sum(1 for _, _, records in ordered if not _passed(records))
    totals = (f'<p class="totals"><b>{len(ordered)}</b> case(s) · <span class="ok">{len(ordered) - n_failed} '
              f'passed</span> · <span class="ko">{n_failed} failed</span></p>')
    if not ordered:
        return totals + '<p class="note">no concept cases were recorded in this session</p>'
    rows = []
    for i, (nodeid, trace, records) in enumerate(ordered):
        ok = _passed(records)
        mark = '<span class="ok">✔ passed</span>' if ok else '<span class="ko">✘ FAILED</span>'
        failed = sum(1 for r in records if not r.passed)
        rows.append(f'<tr class="{"passrow" if ok else "failrow"}"><td>{mark}</td>'
                    f'<td><a href="#case-{i}">{_e(nodeid)}</a></td><td>{_e(repr(trace.answer))}</td>'
                    f"<td>{trace.answer_prob:.3g}</td><td>{failed} / {len(records)}</td></tr>")
    return (f'{totals}<table class="grid summary"><thead><tr><th>status</th><th>case</th><th>answer</th>'
            f'<th>p</th><th>failed checks</th></tr></thead><tbody>{"".join(rows)}</tbody></table>')


def report_json(ordered: Sequence[Result], title: str) -> dict[str, Any]:
    """The key figures per case (same order as the page: failing first)."""
    cases = []
    for nodeid, trace, records in ordered:
        cases.append({
            "nodeid": nodeid,
            "passed": _passed(records),
            "prompt": trace.prompt,
            "answer": trace.answer,
            "answer_prob": float(trace.answer_prob),
            "output_tokens": list(trace.output_tokens),
            "records": [{**r.to_dict(), "concept": r.concept} for r in records],
        })
    n_failed = sum(1 for c in cases if not c["passed"])
    return _jsonable({"title": title, "cases": len(cases), "passed": len(cases) - n_failed, "failed": n_failed,
                      "results": cases})


def order_results(results: Sequence[Result]) -> list[Result]:
    """Failing cases first, then passing ones; the recorded order within each group."""
    return ([r for r in results if not _passed(r[2])] + [r for r in results if _passed(r[2])])


def render_report(results: Sequence[Result], *, title: str = "vsp-assert report", top_k: int = 5,
                  max_overlays: int = MAX_OVERLAYS) -> str:
    """The whole page as one string."""
    ordered = order_results(results)
    sections = [case_html(i, nodeid, trace, records, top_k=top_k, max_overlays=max_overlays)
                for i, (nodeid, trace, records) in enumerate(ordered)]
    return page(title, summary_html(ordered), "".join(sections))


def page(title: str, summary: str, sections: str) -> str:
    """The page around a summary and the case sections (one wrapper for in-process and xdist reports)."""
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{_e(title)}</title><style>{CSS}</style></head><body>"
        f"<h1>{_e(title)}</h1>{summary}{sections}</body></html>\n"
    )


def write_report(directory: str | Path, results: Sequence[Result], *, title: str = "vsp-assert report",
                 top_k: int = 5, max_overlays: int = MAX_OVERLAYS) -> Path:
    """Write ``directory/index.html`` and ``directory/report.json`` atomically; returns the HTML path.

    ``results``: ``(nodeid, trace, records)`` per recorded case, as the plugin collects them.
    """
    folder = Path(directory)
    ordered = order_results(results)
    page = render_report(ordered, title=title, top_k=top_k, max_overlays=max_overlays)
    summary = json.dumps(report_json(ordered, title), indent=2, ensure_ascii=False, allow_nan=False)
    atomic_write_text(folder / "report.json", summary + "\n")
    return atomic_write_text(folder / "index.html", page)
