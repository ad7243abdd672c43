"""One case's section of the HTML report: image, prompt and answer, checks, interventions, heatmap table,
attention overlays and concept maps, as HTML fragments (and the PNG overlays they embed).

Split from :mod:`vsp_assert.render.html`, which assembles the page (CSS, summary, ``report.json``, atomic
writes) from these sections; the decisions (self-contained, record-then-format, PIL + numpy only, bounded) are
written down there. Everything here formats a recorded :class:`~vsp_assert.engine.trace.Trace` and its
:class:`~vsp_assert.checks.assertions.AssertionRecord` objects; nothing runs a model.

Shapes: patch values ``[P]`` → levels ``[rows, cols]`` in [0, 1] (:func:`grid_levels`); an overlay blends
``[H, W, 3]`` pixels with the colour ramp of the levels, one block per patch.
"""

from __future__ import annotations

import base64
import html
import io
import zlib
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from vsp_assert.render.colormap import css_gradient, hex_colour, ramp, text_colour
from vsp_assert.render.terminal import format_value

if TYPE_CHECKING:
    from PIL import Image as PILImage

    from vsp_assert.checks.assertions import AssertionRecord
    from vsp_assert.engine.analysis import Heatmap
    from vsp_assert.engine.trace import Trace

IMAGE_BOX = 192  # px: longest side of the case image
OVERLAY_BOX = 128  # px: longest side of each overlay
MAX_OVERLAYS = 8  # attention overlays per case (first output tokens)
MAX_CONCEPT_MAPS = 8  # spatial concept maps per case
THUMB_BOX = 64  # px: side of a latent's reference thumbnail (nearest-neighbour upscaled from the atlas)
OVERLAY_ALPHA = (0.2, 0.45)  # colour weight = a + b · level, so the image stays visible where nothing fires
PNG_COMPRESS_LEVEL = 3


# ---------------------------------------------------------------------- small helpers
def _e(value: Any) -> str:
    return html.escape(str(value), quote=True)


def _token_text(text: str) -> str:
    shown = text.replace("\n", "\\n").strip()
    return shown or repr(text)


# ---------------------------------------------------------------------- images
def png_data_uri(image: PILImage.Image) -> str:
    """``data:image/png;base64,…`` of a PIL image."""
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", compress_level=PNG_COMPRESS_LEVEL)
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def fit_image(image: PILImage.Image, box: int) -> PILImage.Image:
    """``image`` as RGB with its longest side ``box`` px: NEAREST when enlarging (crisp), antialiased otherwise."""
    from PIL import Image

    rgb = image.convert("RGB")
    w, h = rgb.size
    scale = box / max(w, h)
    size = (max(1, round(w * scale)), max(1, round(h * scale)))
    if size == rgb.size:
        return rgb
    resample = Image.Resampling.NEAREST if scale >= 1 else Image.Resampling.BILINEAR
    return rgb.resize(size, resample)


def grid_levels(values: np.ndarray, grid: tuple[int, int]) -> np.ndarray | None:
    """``values [P]`` normalised by their maximum and reshaped to ``[rows, cols]``; None if P ≠ rows·cols."""
    rows, cols = grid
    if values.size != rows * cols or rows * cols == 0:
        return None
    top = float(values.max())
    levels = values / top if top > 0 else np.zeros_like(values)
    return levels.reshape(rows, cols).astype(np.float64)


def overlay(base: PILImage.Image, levels: np.ndarray) -> PILImage.Image:
    """``base`` blended with the colour ramp of ``levels [rows, cols]`` (in [0, 1]), one block per patch."""
    from PIL import Image

    pixels = np.asarray(base, dtype=np.float64)  # [H, W, 3]
    height, width = pixels.shape[:2]
    rows, cols = levels.shape
    row_of = np.arange(height) * rows // height  # [H] patch row of each pixel row
    col_of = np.arange(width) * cols // width  # [W] patch column of each pixel column
    up = levels[row_of][:, col_of]  # [H, W]
    alpha = (OVERLAY_ALPHA[0] + OVERLAY_ALPHA[1] * up)[..., None]  # [H, W, 1]
    mixed = pixels * (1.0 - alpha) + ramp(up).astype(np.float64) * alpha  # [H, W, 3]
    return Image.fromarray(np.rint(mixed).astype(np.uint8))


def _figure(uri: str, caption: str, *, css_class: str, highlight: bool = False, alt: str = "") -> str:
    cap = ' class="hl"' if highlight else ""
    return (f'<figure class="{css_class}"><img src="{uri}" alt="{_e(alt or caption)}">'
            f"<figcaption{cap}>{_e(caption)}</figcaption></figure>")


# ---------------------------------------------------------------------- sections of a case
def heatmap_html(hm: Heatmap, trace: Trace) -> str:
    """The heatmap as a table: one row per output token, one column per latent, clusters separated."""
    if not hm.latents or not hm.tokens:
        return '<p class="note">no active latents for these tokens</p>'
    vmax = float(np.abs(hm.values).max()) if hm.values.size else 0.0
    vmax = vmax if vmax > 0 else 1.0
    n = len(hm.latents)
    starts = [j == 0 or hm.clusters[j] != hm.clusters[j - 1] for j in range(n)]  # [n] first column of a cluster
    spans: list[tuple[int, int]] = []  # (cluster id, width)
    for j in range(n):
        if starts[j]:
            spans.append((hm.clusters[j], 0))
        spans[-1] = (spans[-1][0], spans[-1][1] + 1)
    head1 = "".join(f'<th class="cluster cb" colspan="{w}">cluster {c}</th>' for c, w in spans)
    head2 = []
    for j, latent in enumerate(hm.latents):
        classes = ["lat"] + (["hl"] if latent in hm.highlight_latents else []) + (["cb"] if starts[j] else [])
        mark = "★ " if latent in hm.highlight_latents else ""
        name = hm.names[j] if not hm.names[j].startswith("#") else ""
        head2.append(f'<th class="{" ".join(classes)}" data-latent="{latent}" title="{_e(_latent_title(trace, latent))}'
                     f'">{_e(mark + name)}<br><span class="lid">#{latent}</span></th>')
    body = []
    for t, token in enumerate(hm.tokens):
        hl = t in hm.highlight_tokens
        cells = []
        for j, latent in enumerate(hm.latents):
            value = float(hm.values[t, j])
            level = abs(value) / vmax
            cb = " cb" if starts[j] else ""
            tip = f"{_token_text(token)} × {trace.display(latent)}: {value:.4f}"
            cells.append(f'<td class="cell{cb}" style="background:{hex_colour(level)};color:{text_colour(level)}" '
                         f'title="{_e(tip)}">{_e(format_value(value))}</td>')
        marker = "▶ " if hl else ""
        body.append(f'<tr class="tok{" hl" if hl else ""}" data-token="{t}"><th class="token">'
                    f'{_e(marker + _token_text(token))}</th>{"".join(cells)}</tr>')
    cell = "attribution a[t, k] (gradient × activation)" if hm.view == "attributed" else \
        "attention-weighted score s[t, k]"
    legend = (f'<p class="note">rows: output tokens (▶ asserted) · columns: latents in clustered order (★ asserted,'
              f' thick line between clusters) · cell: {cell} · scale 0'
              f'<span class="legend" style="background:{css_gradient()}"></span>{_e(format_value(vmax))}</p>')
    return (f'{legend}<table class="heatmap"><thead><tr><th></th>{head1}</tr>'
            f'<tr><th class="corner">token \\ latent</th>{"".join(head2)}</tr></thead>'
            f'<tbody>{"".join(body)}</tbody></table>')


def _latent_title(trace: Trace, latent: int) -> str:
    """Hover text of a heatmap column: the latent's name and its statistics (when the label file has them)."""
    if trace.labels is None or not trace.labels.stats(latent):
        return trace.display(latent)
    from vsp_assert.render.concepts import latent_header

    return latent_header(trace.labels, latent)


def views_html(trace: Trace, hm: Heatmap, nodeid: str, *, top_k: int, latents: Sequence[int],
               tokens: Sequence[int], contrast: str | None) -> tuple[str, list[int]]:
    """The heatmap with its view switch: attended (where each token looked) and attributed (what it used),
    one shown at a time; attended alone when the trace cannot compute an attribution. Returns the HTML and the
    latents of both views (for the latent cards)."""
    from vsp_assert.engine.analysis import heatmap
    from vsp_assert.errors import VspError

    attended = heatmap_html(hm, trace)
    if not trace.can_attribute or trace.n_tokens == 0:
        return attended, list(hm.latents)
    try:
        other = heatmap(trace, top_k=top_k, extra=latents, highlight_tokens=tokens, view="attributed",
                        contrast=contrast)
    except VspError as exc:
        return attended + f'<p class="note">no attributed view: {_e(exc.message)}</p>', list(hm.latents)
    name = f"view-{zlib.crc32(nodeid.encode('utf-8')):08x}"
    against = f" (against {contrast!r})" if contrast else ""
    switch = (f'<input type="radio" class="v-att" name="{name}" id="{name}-a" checked>'
              f'<label for="{name}-a">attended (where each token looked)</label>'
              f'<input type="radio" class="v-attr" name="{name}" id="{name}-b">'
              f'<label for="{name}-b">attributed{_e(against)} (what each token used)</label>')
    return (f'<div class="views">{switch}<div class="view attended">{attended}</div>'
            f'<div class="view attributed">{heatmap_html(other, trace)}</div></div>',
            list(dict.fromkeys([*hm.latents, *other.latents])))


def latents_html(trace: Trace, latents: Sequence[int]) -> str:
    """A card per heatmap latent (click to open): statistics, labels and the atlas's reference images, if any."""
    labels = trace.labels
    if labels is None or not latents:
        return ""
    from PIL import Image

    from vsp_assert.render.concepts import latent_header

    index, index_path = labels.atlas_index(), labels.atlas_path()
    cards = []
    for latent in latents:
        thumbs: list[PILImage.Image] = []
        if index is not None and index_path is not None:
            from vsp_assert.concepts.atlas import thumbnails

            thumbs = thumbnails(index_path, index, latent)
        refs = labels.references(latent)
        figures = "".join(
            _figure(png_data_uri(thumb.resize((THUMB_BOX, THUMB_BOX), Image.Resampling.NEAREST)),
                    f"score {score:.3g}", css_class="ref", alt=f"reference image {n + 1} of #{latent}")
            for n, (thumb, (_, score)) in enumerate(zip(thumbs, refs)))
        named = [c for c, ids in labels.concepts.items() if latent in ids]
        header = latent_header(labels, latent) if labels.stats(latent) else trace.display(latent)
        body = (f'<p class="mono">{_e(header)}</p><p>labels: {_e(", ".join(named) or "none (unlabelled)")}</p>'
                + (f'<div class="refs">{figures}</div>' if figures else
                   '<p class="note">no reference images (build them with vsp-assert concepts build)</p>'))
        cards.append(f'<details class="latent" data-latent="{latent}"><summary>{_e(trace.display(latent))}'
                     f'</summary>{body}</details>')
    return f'<h3>latents of the heatmap</h3><div class="latents">{"".join(cards)}</div>'


def records_html(records: Sequence[AssertionRecord]) -> str:
    if not records:
        return '<p class="note">no checks recorded</p>'
    rows = []
    for r in records:
        mark = '<span class="ok">✔</span>' if r.passed else '<span class="ko">✘</span>'
        rows.append(f'<tr class="{"passrow" if r.passed else "failrow"}"><td>{mark}</td><td>{_e(r.kind)}</td>'
                    f"<td>{_e(r.description)}</td><td>{_e(r.expected)}</td><td>{_e(r.measured)}</td></tr>")
    return ('<table class="grid records"><thead><tr><th></th><th>check</th><th>assertion</th><th>expected</th>'
            f'<th>measured</th></tr></thead><tbody>{"".join(rows)}</tbody></table>')


def interventions_html(trace: Trace, records: Sequence[AssertionRecord]) -> str:
    rows = []
    for r in records:
        res = r.intervention
        if res is None:
            continue
        mark = '<span class="ok">✔</span>' if r.passed else '<span class="ko">✘</span>'
        latents = ", ".join(trace.display(i) for i in res.latents) or "-"
        rows.append(
            f"<tr><td>{mark}</td><td>{_e(res.intervention.describe())}</td><td class=\"mono\">{_e(latents)}</td>"
            f"<td>{_e(repr(res.answer_before))}</td><td>{_e(repr(res.answer_after))}</td>"
            f"<td>{'yes' if res.changed else 'no'}</td><td>{res.p_before:.4g}</td><td>{res.p_after:.4g}</td>"
            f"<td>{res.drop:+.4g}</td></tr>"
        )
    if not rows:
        return ""
    return ('<h3>interventions</h3><table class="grid interventions"><thead><tr><th></th><th>intervention</th>'
            "<th>latents</th><th>answer before</th><th>answer after</th><th>changed</th><th>p before</th>"
            f'<th>p after</th><th>drop</th></tr></thead><tbody>{"".join(rows)}</tbody></table>')


def _overlays(trace: Trace, values: np.ndarray, caption: str, *, css_class: str, highlight: bool,
              alt: str) -> list[str] | None:
    """``values [P]`` over the trace's picture: one figure for a still image, one per time slice of a video
    (levels scaled over the whole clip); None when the patches do not form the recorded grid."""
    from vsp_assert.render.frames import panels

    shown, _ = panels(trace)
    top = float(values.max()) if values.size else 0.0
    figures = []
    for panel in shown:
        part = values[panel.lo : panel.hi]
        levels = grid_levels(part, trace.grid)
        if levels is None or panel.image is None:
            return None
        if trace.frames:  # one scale for the clip: a slice where nothing happens stays dark
            levels = levels * (float(part.max()) / top if top > 0 else 0.0)
        label = f"{caption} · {panel.label}" if trace.frames else caption
        figures.append(_figure(png_data_uri(overlay(fit_image(panel.image, OVERLAY_BOX), levels)), label,
                               css_class=css_class, highlight=highlight, alt=alt))
    return figures


def attention_html(trace: Trace, highlight: set[int], max_overlays: int) -> str:
    if trace.image is None or trace.n_tokens == 0:
        return ""
    attention = trace.attention.detach().float().numpy()  # [T, P]
    figures = []
    for t in range(min(trace.n_tokens, max_overlays)):
        token = _token_text(trace.output_tokens[t])
        shown = _overlays(trace, attention[t], f"{t}: {token}", css_class="attention", highlight=t in highlight,
                          alt=f"attention of output token {t}")
        if shown is None:
            return '<p class="note">attention overlays skipped: the patches do not form the recorded grid</p>'
        figures += shown
    more = trace.n_tokens - min(trace.n_tokens, max_overlays)
    note = f'<p class="note">… {more} more output token(s) not shown</p>' if more > 0 else ""
    return ('<h3>attention per output token</h3><p class="note">where each output token reads the image '
            f'(text-to-image attention, brighter = more)</p><div class="figures">{"".join(figures)}</div>{note}')


def layers_html(trace: Trace, records: Sequence[AssertionRecord], top_k: int) -> str:
    """For each token whose ``attended`` check failed: per LM layer, its share of attention on the image and its
    top concepts under that layer's attention alone (which layer looked where)."""
    from vsp_assert.render.terminal import layer_rows

    tokens = sorted({t for r in records if r.kind == "attended" and not r.passed for t in r.tokens})
    if not tokens or trace.attention_by_layer.shape[0] < 2:
        return ""
    parts = []
    for t in tokens[:MAX_OVERLAYS]:
        body = "".join(
            f"<tr><td>{layer}</td><td>{'-' if mass is None else f'{mass:.3f}'}</td><td class=\"mono\">"
            f"{_e(', '.join(f'{trace.display(i)} {v:.2f}' for i, v in tops) or '-')}</td></tr>"
            for layer, mass, tops in layer_rows(trace, t, top_k))
        parts.append(f"<p>token {t} {_e(repr(_token_text(trace.output_tokens[t])))}</p><table class=\"grid\">"
                     f"<thead><tr><th>layer</th><th>image share</th><th>top-{top_k} concepts under this layer's "
                     f"attention</th></tr></thead><tbody>{body}</tbody></table>")
    return ('<h3>attention per LM layer (failing attended checks)</h3><p class="note">Trace.attention aggregates '
            f'these layers; each row ranks concepts by one layer\'s attention alone</p>{"".join(parts)}')


def concepts_html(trace: Trace, records: Sequence[AssertionRecord]) -> str:
    if trace.image is None:
        return ""
    seen: dict[tuple[str, tuple[int, ...]], list[AssertionRecord]] = {}
    for r in records:
        if r.concept and r.latents:
            seen.setdefault((r.concept, tuple(r.latents)), []).append(r)
    if not seen:
        return ""
    figures = []
    for (concept, latents), recs in list(seen.items())[:MAX_CONCEPT_MAPS]:
        fires = trace.sparse_acts.columns(list(latents)).sum(1).float().numpy()  # [P], from the sparse codes
        peak = float(fires.max()) if fires.size else 0.0
        failed = any(not r.passed for r in recs)
        names = ", ".join(trace.display(i) for i in latents)
        checks = ", ".join(dict.fromkeys(r.kind for r in recs))
        caption = f"{concept} [{names}] · peak {peak:.2f}" + ("" if peak > 0 else " (does not fire)")
        caption += f" · {checks}{' ✘' if failed else ''}"
        shown = _overlays(trace, fires, caption, css_class="concept", highlight=failed, alt=f"where {concept} fires")
        if shown is None:
            return '<p class="note">concept maps skipped: the patches do not form the recorded grid</p>'
        figures += shown
    more = len(seen) - min(len(seen), MAX_CONCEPT_MAPS)
    note = f'<p class="note">… {more} more concept(s) not shown</p>' if more > 0 else ""
    return ('<h3>asserted concepts: where they fire</h3><p class="note">summed activation of the concept\'s '
            f'latents per patch, scaled to its peak</p><div class="figures">{"".join(figures)}</div>{note}')


def case_html(index: int, nodeid: str, trace: Trace, records: Sequence[AssertionRecord], *, top_k: int,
              max_overlays: int, explanation: Any = None) -> str:
    """One case's section (anchor ``case-{index}``); ``explanation``: why not the case's right answer (a
    ``FlipExplanation``), shown under the checks."""
    from vsp_assert.engine.analysis import heatmap

    failing = [r for r in records if not r.passed]
    status = "failed" if failing else "passed"
    badge = '<span class="badge fail">FAILED</span>' if failing else '<span class="badge pass">PASSED</span>'
    latents = list(dict.fromkeys(i for r in records for i in r.latents))
    tokens = sorted({t for r in (failing or records) for t in r.tokens if r.kind != "answer"})
    hm = heatmap(trace, top_k=top_k, extra=latents, highlight_tokens=tokens)
    contrast = next((key for key in trace.attributions if key is not None), None)
    views, view_latents = views_html(trace, hm, nodeid, top_k=top_k, latents=latents, tokens=tokens, contrast=contrast)
    captured = ", ".join(f"{trace.display(i)} {s:.2f}" for i, s in trace.top_captured(6)) or "-"
    image = ""
    if trace.image is not None and trace.frames:
        w, h = trace.image.size
        image = _figure(png_data_uri(fit_image(trace.image.frames[0], IMAGE_BOX)),
                        f"video {len(trace.image)} frames {w}×{h} px · {len(trace.frames)} time slices · patch grid "
                        f"{trace.grid[0]}×{trace.grid[1]} per slice", css_class="image", alt="case video, first frame")
    elif trace.image is not None:
        shown = fit_image(trace.image, IMAGE_BOX)
        w, h = trace.image.size
        image = _figure(png_data_uri(shown), f"image {w}×{h} px · patch grid {trace.grid[0]}×{trace.grid[1]}",
                        css_class="image", alt="case image")
    qa = (f'<dl class="qa"><dt>prompt</dt><dd>{_e(trace.prompt)}</dd>'
          f'<dt>answer</dt><dd><b>{_e(repr(trace.answer))}</b> (p={trace.answer_prob:.4g})</dd>'
          f'<dt>tokens</dt><dd class="mono">{_e(" | ".join(_token_text(t) for t in trace.output_tokens) or "-")}'
          f'</dd><dt>captured</dt><dd class="mono">{_e(captured)}</dd>'
          f'<dt>checks</dt><dd>{len(failing)} of {len(records)} failed</dd></dl>')
    return (
        f'<section class="case {status}" id="case-{index}" data-status="{status}">'
        f"<h2>{badge}{_e(nodeid)}</h2>"
        f'<div class="row">{image}{qa}</div>'
        f"<h3>checks</h3>{records_html(records)}"
        f"{_why_html(explanation)}"
        f"{interventions_html(trace, records)}"
        f"<h3>token × latent heatmap</h3>{views}"
        f"{latents_html(trace, view_latents)}"
        f"{attention_html(trace, set(tokens), max_overlays)}"
        f"{layers_html(trace, records, top_k)}"
        f"{concepts_html(trace, records)}"
        "</section>"
    )


def _why_html(explanation: Any) -> str:
    """Why not the right answer: the terminal's lines (the concepts that carry the wrong answer, the ablations)."""
    if explanation is None:
        return ""
    from vsp_assert.render.compare import explanation_lines
    from vsp_assert.render.style import Style

    lines = explanation_lines(explanation, Style(False))
    return (f'<h3>why not {_e(repr(explanation.old_answer))}</h3>'
            f'<pre class="mono why">{_e(chr(10).join(lines))}</pre>')
