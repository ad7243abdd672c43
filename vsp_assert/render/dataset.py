"""A dataset case in the terminal and in the HTML report: rates with intervals and counts, controls, worst rows.

Terminal (:func:`render_dataset`): the aggregate records (each rate with its Wilson 95% interval and count, each
controlled check's specificity and p-value), then per failing check its worst rows — the rows that count against
its bound, most confident first, at most the case's ``show_rows`` — each with the full trace view (thumbnail and
heatmap, as a single case shows them).

HTML (:func:`dataset_html`): one section per dataset case with the same records, a rates table, a rows table
(thumbnail, fields, prompt, answer, p and a ✔/✘ per check) that sorts on a header click and filters on text or
failing rows (a few lines of inline script, nothing fetched), and the worst rows' full case views folded below.
Only formats what :mod:`vsp_assert.checks.dataset` recorded.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from vsp_assert.render.case import render_case, render_records
from vsp_assert.render.html_case import _e, case_html, png_data_uri, records_html
from vsp_assert.render.style import Style

if TYPE_CHECKING:
    from vsp_assert.checks.dataset import DatasetResult

#: rows listed in the HTML rows table at most (the rest are counted)
MAX_HTML_ROWS = 2000


def _head(title: str, result: DatasetResult, style: Style) -> str:
    failing = [r for r in result.records if not r.passed]
    status = style.red("FAILED") if failing else style.green("passed")
    return (f"{style.bold(title)}  {status}  ({len(failing)} of {len(result.records)} checks failed) — "
            f"{len(result.rows)} rows from {result.source}")


def render_dataset(title: str, result: DatasetResult, *, style: Style, width: int | None = None,
                   top_k: int = 5) -> str:
    """The failure view of a dataset case (see the module docstring)."""
    parts = [_head(title, result, style), "", render_records(result.records, style)]
    by_index = {o.row.index: o for o in result.rows}
    show = result.case.show_rows if result.case is not None and hasattr(result.case, "show_rows") else 3
    for s in result.summaries:
        if s.passed and s.specific_passed:
            continue
        against = len(s.worst)
        parts += ["", style.bold(f"✘ {s.description}: rate {s.rate.text()}") +
                  f"; {against} row(s) count against the bound"]
        if s.control_rate is not None:
            parts.append(f"  random controls: {s.control_rate.text()}, specificity {1 - s.control_rate.value:.3f}, "
                         f"p={s.p_value:.2g}")
        for index in s.worst[:show]:
            o = by_index[index]
            if o.trace is None:
                continue
            label = f"worst {o.row.label()}"
            row_records = [r for records in o.records for r in records]  # all its checks: the causal ones
            parts += ["", render_case(label, o.trace, row_records, style=style, top_k=top_k, width=width)]
        if against > show:
            parts.append(f"… and {against - show} more row(s) (show_rows: N shows more)")
    if result.missing:
        parts += ["", f"{len(result.missing)} row(s) skipped for missing images: "
                  + ", ".join(p for p, _ in result.missing[:10])]
    return "\n".join(parts)


def _rates_html(result: DatasetResult) -> str:
    rows = []
    for s in result.summaries:
        low, high = s.rate.interval
        ok = s.passed and s.specific_passed
        controls = "-"
        if s.control_rate is not None:
            controls = (f"{s.control_rate.value:.3f} ({s.control_rate.k}/{s.control_rate.n}), specificity "
                        f"{1 - s.control_rate.value:.3f}, p={s.p_value:.2g}, {s.matched} mass-matched")
        bound = []
        if s.check.min_rate is not None or not s.check.has_rate:
            bound.append(f"≥ {s.check.min_rate if s.check.min_rate is not None else 1:g}")
        if s.check.max_rate is not None:
            bound.append(f"≤ {s.check.max_rate:g}")
        rows.append(f'<tr class="{"passrow" if ok else "failrow"}"><td>{"✔" if ok else "✘"}</td>'
                    f"<td>{_e(s.description)}</td><td>{s.rate.value:.3f}</td><td>[{low:.3f}, {high:.3f}]</td>"
                    f"<td>{s.rate.k}/{s.rate.n}</td><td>{_e(' and '.join(bound))}"
                    f"{' (interval)' if s.check.on_interval else ''}</td><td>{_e(controls)}</td></tr>")
    return ('<table class="grid rates"><thead><tr><th></th><th>check</th><th>rate</th><th>Wilson 95%</th>'
            f'<th>count</th><th>bound</th><th>random controls</th></tr></thead><tbody>{"".join(rows)}</tbody></table>')


def _rows_html(result: DatasetResult, index: int) -> str:
    heads = "".join(f'<th data-k="n" title="{_e(s.description)}">c{i + 1}</th>' for i, s in enumerate(result.summaries))
    body = []
    for o in result.rows[:MAX_HTML_ROWS]:
        thumb = f'<img src="{png_data_uri(o.thumbnail)}" alt="row {o.row.index}">' if o.thumbnail is not None else ""
        fields = ", ".join(f"{k}={v}" for k, v in o.row.fields.items())
        marks = "".join(f'<td data-v="{int(p)}">{"✔" if p else "✘"}</td>' for p in o.passed)
        fail = "" if all(o.passed) else " failrow"
        body.append(f'<tr class="row{fail}"><td data-v="{o.row.index}">{o.row.index}</td><td>{thumb}</td>'
                    f"<td>{_e(fields)}</td><td>{_e(o.prompt)}</td><td>{_e(o.answer)}</td>"
                    f'<td data-v="{o.answer_prob:.6f}">{o.answer_prob:.3f}</td>{marks}</tr>')
    more = (f'<p class="note">{len(result.rows) - MAX_HTML_ROWS} more rows not listed</p>'
            if len(result.rows) > MAX_HTML_ROWS else "")
    tid = f"rows-{index}"
    return (f'<h3>rows</h3><p><input type="search" placeholder="filter rows" data-table="{tid}" class="rowfilter"> '
            f'<label><input type="checkbox" data-table="{tid}" class="failonly"> failing rows only</label> '
            '<span class="note">click a header to sort</span></p>'
            f'<table class="grid rows sortable" id="{tid}"><thead><tr><th data-k="n">#</th><th>image</th>'
            f'<th data-k="s">fields</th><th data-k="s">prompt</th><th data-k="s">answer</th><th data-k="n">p</th>'
            f'{heads}</tr></thead><tbody>{"".join(body)}</tbody></table>{more}')


SCRIPT = """<script>(function(){var root=document.currentScript.parentNode;
function apply(t){var q=(root.querySelector('.rowfilter')||{}).value||'';
var f=(root.querySelector('.failonly')||{}).checked;q=q.toLowerCase();
t.querySelectorAll('tbody tr').forEach(function(r){var ok=r.textContent.toLowerCase().indexOf(q)>=0;
if(f&&!r.classList.contains('failrow'))ok=false;r.style.display=ok?'':'none';});}
root.querySelectorAll('.rowfilter,.failonly').forEach(function(i){i.addEventListener('input',function(){
apply(root.querySelector('table.sortable'));});});
root.querySelectorAll('table.sortable th[data-k]').forEach(function(h){h.style.cursor='pointer';
h.addEventListener('click',function(){var t=h.closest('table'),c=Array.prototype.indexOf.call(h.parentNode.children,h),
n=h.dataset.k==='n',d=h.dataset.d==='1'?-1:1;h.dataset.d=d===1?'1':'0';var b=t.tBodies[0];
var rs=Array.prototype.slice.call(b.rows);rs.sort(function(a,x){var u=a.cells[c],v=x.cells[c];
var p=u.dataset.v!==undefined?u.dataset.v:u.textContent,q=v.dataset.v!==undefined?v.dataset.v:v.textContent;
return (n?(parseFloat(p)-parseFloat(q)):p.localeCompare(q))*d;});rs.forEach(function(r){b.appendChild(r);});});});
})();</script>"""


def dataset_html(index: int, nodeid: str, result: DatasetResult, *, top_k: int, max_overlays: int) -> str:
    """One dataset case's section of the report (anchor ``case-{index}``)."""
    failing = [r for r in result.records if not r.passed]
    status = "failed" if failing else "passed"
    badge = '<span class="badge fail">FAILED</span>' if failing else '<span class="badge pass">PASSED</span>'
    worst = []
    by_index = {o.row.index: o for o in result.rows}
    for i, s in enumerate(result.summaries):
        for row_index in s.worst:
            o = by_index[row_index]
            if o.trace is None:
                continue
            inner = case_html(0, f"{nodeid} · {o.row.label()}", o.trace, o.records[i], top_k=top_k,
                              max_overlays=max_overlays).replace('id="case-0"', f'id="case-{index}-row-{row_index}"', 1)
            worst.append(f"<details><summary>worst row for {_e(s.description)}: {_e(o.row.label())}</summary>"
                         f"{inner}</details>")
    return (f'<section class="case dataset {status}" id="case-{index}" data-status="{status}">'
            f"<h2>{badge}{_e(nodeid)}</h2>"
            f'<p>{len(result.rows)} rows from {_e(result.source)}'
            f'{f"; {len(result.missing)} skipped (missing images)" if result.missing else ""}</p>'
            f"<h3>checks</h3>{records_html(result.records)}<h3>rates</h3>{_rates_html(result)}"
            f"{_rows_html(result, index)}{''.join(worst)}{SCRIPT}</section>")
