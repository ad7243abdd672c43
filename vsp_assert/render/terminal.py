"""Terminal rendering of traces: the token × latent heatmap, spatial maps, top-concept tables.

Layout of the heatmap (``▶`` marks asserted tokens, ``*`` asserted concepts, ``│`` separates clusters)::

    token-latent heatmap  (rows: output tokens · columns: latents, clustered · │ between clusters)
                  *stripes stripes │ triangle │ red
                  #3       #99     │ #7       │ #12
     ▶ triangle     2.31    1.90   │   0.40   │  0.10

Cells are shaded (256-colour background with a legible value, or a shade glyph when colour is off). The width
adapts to the terminal: columns that do not fit are dropped from the right and counted. Spatial maps use
half-block characters, two patch rows per text line, so a 24×24 grid stays 12 lines high.
"""

from __future__ import annotations

import shutil
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from tabulate import tabulate

from vsp_assert.engine.analysis import Heatmap, heatmap
from vsp_assert.render.style import SHADES, Style, visible_len

if TYPE_CHECKING:
    from vsp_assert.engine.trace import Trace

CELL = 7  # characters per heatmap column (value + shade)
TOKEN_COL = 14


def terminal_width(default: int = 100) -> int:
    return max(40, shutil.get_terminal_size((default, 24)).columns)


def format_value(value: float) -> str:
    """A heatmap value in at most 4–5 characters (``·`` for an exact zero)."""
    if value == 0:
        return "·"
    if abs(value) >= 100:
        return f"{value:.0f}"
    if abs(value) >= 10:
        return f"{value:.1f}"
    return f"{value:.2f}"


def _token_label(text: str) -> str:
    text = text.replace("\n", "\\n").strip() or repr(text)
    return text if len(text) <= TOKEN_COL - 3 else text[: TOKEN_COL - 4] + "…"


def render_heatmap(hm: Heatmap, *, style: Style, width: int | None = None) -> str:
    """The heatmap as text, at most ``width`` characters wide."""
    width = width or terminal_width()
    against = f" against {hm.contrast!r}" if hm.contrast is not None else ""
    what = (f"attributed: gradient × activation{against}" if hm.view == "attributed"
            else "rows: output tokens · columns: latents, clustered")
    title = style.bold("token-latent heatmap") + style.dim(f"  ({what} · │ between clusters)")
    if not hm.latents or not hm.tokens:
        return title + "\n  (no active latents for these tokens)"
    fit = max(1, (width - TOKEN_COL) // (CELL + 1))
    n = min(len(hm.latents), fit)
    vmax = float(np.abs(hm.values[:, :n]).max()) if hm.values.size else 0.0
    vmax = vmax if vmax > 0 else 1.0

    def sep(j: int) -> str:
        return style.dim("│") if j > 0 and hm.clusters[j] != hm.clusters[j - 1] else " "

    names, ids = [], []
    for j in range(n):
        mark = "*" if hm.latents[j] in hm.highlight_latents else ""
        name = (mark + hm.names[j])[:CELL]
        names.append(sep(j) + (style.bold(name.ljust(CELL)) if mark else name.ljust(CELL)))
        ids.append(sep(j) + style.dim(f"#{hm.latents[j]}".ljust(CELL)))
    lines = [title, " " * TOKEN_COL + "".join(names), " " * TOKEN_COL + "".join(ids)]
    for t, token in enumerate(hm.tokens):
        marker = "▶ " if t in hm.highlight_tokens else "  "
        label = (marker + _token_label(token)).ljust(TOKEN_COL)
        label = style.bold(label) if t in hm.highlight_tokens else label
        cells = []
        for j in range(n):
            value = float(hm.values[t, j])
            cells.append(sep(j) + style.cell(format_value(value).rjust(CELL - 1), abs(value) / vmax))
        lines.append(label + "".join(cells))
    if n < len(hm.latents):
        lines.append(style.dim(f"  … {len(hm.latents) - n} more latent(s) not shown (terminal width {width})"))
    return "\n".join(lines)


def _levels(values: torch.Tensor) -> torch.Tensor:
    top = float(values.max()) if values.numel() else 0.0
    return values / top if top > 0 else torch.zeros_like(values)


def _grid_lines(levels: torch.Tensor, grid: tuple[int, int], style: Style,
                colours: list[tuple[int, int, int]] | None = None) -> list[str]:
    """A ``[rows*cols]`` map as text, two characters per patch.

    With colour: half blocks, two patch rows per line (``colours`` gives RGB per patch for the image panel).
    Without colour: one line per patch row, shade glyphs.
    """
    rows, cols = grid
    lv = levels.reshape(rows, cols)
    if not style.enabled:
        return ["".join(SHADES[round(float(lv[r, c]) * (len(SHADES) - 1))] * 2 for c in range(cols))
                for r in range(rows)]
    lines = []
    for r in range(0, rows, 2):
        chars = []
        for c in range(cols):
            top = float(lv[r, c])
            bottom = float(lv[r + 1, c]) if r + 1 < rows else 0.0
            rgb = None
            if colours is not None:
                rgb = (colours[r * cols + c], colours[(r + 1) * cols + c] if r + 1 < rows else (0, 0, 0))
            chars.append(style.half_block(top, bottom, rgb=rgb) * 2)
        lines.append("".join(chars))
    return lines


def _thumbnail(image: Any, grid: tuple[int, int]) -> list[tuple[int, int, int]] | None:
    if image is None:
        return None
    rows, cols = grid
    small = image.convert("RGB").resize((cols, rows))
    return [(int(r), int(g), int(b)) for r, g, b in np.asarray(small).reshape(-1, 3)]


def render_spatial(trace: Trace, latents: Sequence[int], token: int | None, *, style: Style,
                   concept: str = "concept") -> str:
    """Side by side: the image, where ``latents`` fire, and where output token ``token`` attends — for a video one
    such row per time slice, named by its frames (levels scaled over the whole clip, so slices compare)."""
    from vsp_assert.render.frames import panels

    rows, cols = trace.grid
    ids = torch.tensor(list(latents), dtype=torch.long)
    fires = _levels(trace.sparse_acts.columns(ids).sum(1) if len(ids) else torch.zeros(trace.n_patches))  # [P]
    att = _levels(trace.attention[token]) if token is not None and trace.n_tokens else None  # [P]
    shown, more = panels(trace)
    blocks = []
    for panel in shown:
        maps: list[tuple[str, list[str]]] = []
        colours = _thumbnail(panel.image, trace.grid)
        if colours is not None and style.enabled:
            maps.append((panel.label, _grid_lines(torch.zeros(rows * cols), trace.grid, style, colours)))
        elif panel.label != "image":
            maps.append((panel.label, []))
        maps.append((f"{concept} fires", _grid_lines(fires[panel.lo : panel.hi], trace.grid, style)))
        if att is not None:
            label = f"'{_token_label(trace.output_tokens[token or 0])}' attends"
            maps.append((label, _grid_lines(att[panel.lo : panel.hi], trace.grid, style)))
        blocks.append(_side_by_side(maps, cols, style))
    if more:
        blocks.append(style.dim(f"… {more} more time slice(s) or view(s) not shown"))
    return "\n".join(blocks)


def _side_by_side(maps: list[tuple[str, list[str]]], cols: int, style: Style) -> str:
    width = max(cols * 2, max(len(t) for t, _ in maps)) + 3
    header = "".join(style.dim(t.ljust(width)) for t, _ in maps)
    height = max(len(lines) for _, lines in maps)
    body = []
    for i in range(height):
        parts = []
        for _, lines in maps:
            text = lines[i] if i < len(lines) else ""
            parts.append(text + " " * (width - visible_len(text)))
        body.append("".join(parts).rstrip())
    return "\n".join([header, *body])


def layer_rows(trace: Trace, token: int, k: int = 5) -> list[tuple[int, float | None, list[tuple[int, float]]]]:
    """Per chosen LM layer: ``(layer, share of its attention on the image or None, top-k concepts under that
    layer's attention alone)`` for output token ``token``."""
    from vsp_assert.engine.trace import top_k as top_of

    out = []
    for i, layer in enumerate(trace.layers[: trace.attention_by_layer.shape[0]]):
        att = trace.attention_by_layer[i, token]  # [P]
        scores = trace.sparse_acts.weighted(att[None])[0]  # [d_sae]
        mass = float(trace.attention_mass[i, token]) if trace.attention_mass is not None else None
        out.append((int(layer), mass, top_of(scores, k, trace.hidden)))
    return out


def render_layer_rows(trace: Trace, token: int, *, style: Style, k: int = 5) -> str:
    """Which layer looked where, for a token whose ``attended`` check failed: per layer its image share and its
    top concepts, then each layer's attention map side by side."""
    rows = [[layer, "-" if mass is None else f"{mass:.3f}",
             ", ".join(f"{trace.display(i)} {v:.2f}" for i, v in tops) or "-"]
            for layer, mass, tops in layer_rows(trace, token, k)]
    label = _token_label(trace.output_tokens[token])
    head = style.bold(f"attention of '{label}' per LM layer") + style.dim(
        f"  ({trace.attention_by_layer.shape[0]} layers; Trace.attention aggregates them)")
    table = tabulate(rows, headers=["layer", "image share", f"top-{k} concepts under this layer's attention"],
                     tablefmt="simple")
    panels = [(f"layer {layer}", _grid_lines(_levels(trace.attention_by_layer[i, token]), trace.grid, style))
              for i, layer in enumerate(trace.layers[: trace.attention_by_layer.shape[0]])]
    if trace.n_patches != trace.grid[0] * trace.grid[1]:
        return "\n".join([head, table])
    rows_, cols = trace.grid
    width = max(cols * 2, max(len(t) for t, _ in panels)) + 3
    lines = ["".join(style.dim(t.ljust(width)) for t, _ in panels)]
    for i in range(max(len(p) for _, p in panels)):
        lines.append("".join((p[i] if i < len(p) else "") + " " * (width - visible_len(p[i] if i < len(p) else ""))
                             for _, p in panels).rstrip())
    return "\n".join([head, table, *lines])


def render_top_concepts(trace: Trace, k: int = 5, view: str = "attended", contrast: str | None = None) -> str:
    """Per output token, its top-k latents by attention-weighted score (``attended``) or attribution."""
    rows = []
    for t, token in enumerate(trace.output_tokens):
        tops = trace.top_concepts(t, k) if view == "attended" else trace.top_attributed(t, k, contrast=contrast)
        rows.append([t, _token_label(token),
                     ", ".join(f"{trace.display(i)} {s:.2f}" for i, s in tops) or "-"])
    against = f" against {contrast!r}" if contrast is not None else ""
    what = "attended concepts (score)" if view == "attended" else f"attributed concepts (attribution{against})"
    return tabulate(rows, headers=["#", "token", f"top-{k} {what}"], tablefmt="simple")


def render_latent_legend(trace: Trace, latents: Sequence[int], *, style: Style) -> str:
    """One line per heatmap latent: its name, statistics and best label from the label file (nothing when the
    labels carry no statistics)."""
    labels = trace.labels
    if labels is None or not any(labels.stats(i) for i in latents):
        return ""
    from vsp_assert.render.concepts import latent_header

    lines = [style.bold("latents") + style.dim("  (statistics from the labelling run; `vsp-assert concepts show "
                                               "#ID` prints reference images)")]
    lines += ["  " + latent_header(labels, i) for i in latents]
    return "\n".join(lines)


def render_frames(trace: Trace, latents: Sequence[int], *, limit: int = 12) -> str:
    """For a video: per heatmap latent, the patch where it fires most (its frames, row and col) and its share of
    activation in each time slice (at most 8 slices), so the heatmap's columns can be read in time."""
    from vsp_assert.render.frames import MAX_PANELS

    if not trace.frames or not latents:
        return ""
    ids = list(latents)[:limit]
    size = trace.grid[0] * trace.grid[1]
    fires = trace.sparse_acts.columns(torch.tensor(ids, dtype=torch.long))  # [P, n]
    per_slice = fires.reshape(len(trace.frames), size, len(ids)).sum(1)  # [S, n]
    total = per_slice.sum(0).clamp_min(1e-12)  # [n]
    shown = trace.frames[:MAX_PANELS]
    rows = []
    for j, latent in enumerate(ids):
        peak = trace.patch_label(int(fires[:, j].argmax())) if float(fires[:, j].max()) > 0 else "-"
        rows.append([trace.display(latent), peak,
                     *(f"{float(per_slice[s, j] / total[j]):.0%}" for s in range(len(shown)))])
    return tabulate(rows, headers=["latent", "fires most at", *shown], tablefmt="simple")


def render_trace(
    trace: Trace,
    *,
    style: Style,
    width: int | None = None,
    top_k: int = 5,
    highlight_latents: Sequence[int] = (),
    highlight_tokens: Sequence[int] = (),
    spatial: Sequence[tuple[str, Sequence[int], int | None]] = (),
    view: str = "attended",
    contrast: str | None = None,
) -> str:
    """Answer, top concepts per token, the heatmap and spatial maps of a trace. ``view``: ``attended`` (the
    attention-weighted heatmap), ``attributed`` (attribution, contrastive against ``contrast`` when given) or
    ``both``."""
    width = width or terminal_width()
    fit = max(1, (width - TOKEN_COL) // (CELL + 1))  # columns the terminal can show
    views = ["attended", "attributed"] if view == "both" else [view]
    maps = [heatmap(trace, top_k=top_k, extra=highlight_latents, highlight_tokens=highlight_tokens,
                    max_columns=min(24, fit), view=v, contrast=contrast) for v in views]
    captured = ", ".join(
        f"{trace.display(i)} {s:.2f}" for i, s in trace.top_captured(6)
    )
    parts = [
        f"{style.bold('prompt:')} {trace.prompt}",
        f"{style.bold('answer:')} {trace.answer!r}  (p={trace.answer_prob:.3f})",
        f"{style.bold('captured:')} {captured or '-'}",
    ]
    for v, m in zip(views, maps):
        parts += ["", render_top_concepts(trace, top_k, v, contrast), "", render_heatmap(m, style=style, width=width)]
    columns = list(dict.fromkeys(i for m in maps for i in m.latents))
    legend = render_latent_legend(trace, columns, style=style)
    if legend:
        parts += ["", legend]
    if trace.frames and columns:  # a video: where in time the heatmap's latents fire
        parts += ["", style.bold("the heatmap's latents in time") + style.dim("  (share of each latent's activation "
                                                                              "per time slice)"),
                  render_frames(trace, columns)]
    for concept, latents, token in spatial:
        parts += ["", render_spatial(trace, latents, token, style=style, concept=concept)]
    return "\n".join(parts)
