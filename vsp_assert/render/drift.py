"""The drift view of a failing YAML case: what changed since its baseline, and the heatmaps then and now.

The drift itself is computed as data by :mod:`vsp_assert.checks.baseline` (a :class:`Drift`, carrying the
baseline profile it was compared with, and for a changed answer why it flipped: the concepts that carry the
change on the current model, confirmed by ablation); this module only formats it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from vsp_assert.engine.analysis import Heatmap
from vsp_assert.render.style import Style
from vsp_assert.render.terminal import render_heatmap

if TYPE_CHECKING:
    from vsp_assert.checks.baseline import Drift
    from vsp_assert.engine.trace import Trace


def render_drift(drift: Drift, trace: Trace, style: Style, width: int) -> str:
    """The concept diff per token and the heatmaps of then (baseline) and now over the same latents."""
    old = drift.baseline or {"tokens": []}

    lines = [style.bold("concept drift since baseline")]
    if drift.answer:
        lines.append(f"  answer: {drift.answer[0]!r} → {drift.answer[1]!r}")
        if drift.explanation is not None:
            from vsp_assert.render.compare import explanation_lines

            lines += ["    " + line for line in explanation_lines(drift.explanation, style)]
    if drift.probability:
        lines.append(f"  p(answer): {drift.probability[0]:.3f} → {drift.probability[1]:.3f}")
    for tok in drift.tokens:
        parts = [style.green("+ " + ", ".join(tok.gained)) if tok.gained else "",
                 style.red("- " + ", ".join(tok.lost)) if tok.lost else "",
                 ("moved " + ", ".join(tok.moved)) if tok.moved else ""]
        rho = f" (ρ={tok.rank_correlation:.2f})" if tok.rank_correlation is not None else ""
        lines.append(f"  token {tok.index} '{tok.text.strip()}'{rho}: " + ("  ".join(p for p in parts if p) or "same"))
    for what, then_answer, now_answer in drift.interventions:
        lines.append(f"  {what}: answer after {then_answer!r} → {now_answer!r}")
    ids: list[int] = []
    names: dict[int, str] = {}
    for tok in old["tokens"]:
        for name, i, _ in tok["top"][:6]:
            if i not in names:
                ids.append(i)
                names[i] = name.split("#")[0] or f"#{i}"
    for t in range(trace.n_tokens):
        for i, _ in trace.top_concepts(t, 6):
            if i not in names:
                ids.append(i)
                names[i] = (trace.labels.name_of(i) if trace.labels else None) or f"#{i}"
    if ids:
        then_values = np.zeros((len(old["tokens"]), len(ids)))
        for t, tok in enumerate(old["tokens"]):
            recorded = {i: s for _, i, s in tok["top"]}
            for j, i in enumerate(ids):
                then_values[t, j] = recorded.get(i, 0.0)
        now_values = trace.scores[:, ids].numpy() if trace.n_tokens else np.zeros((0, len(ids)))
        clusters = list(range(1, len(ids) + 1))
        then_hm = Heatmap([tok.get("text", "") for tok in old["tokens"]], ids, [names[i] for i in ids],
                          then_values, clusters)
        now_hm = Heatmap(list(trace.output_tokens), ids, [names[i] for i in ids], now_values.astype(float), clusters)
        lines += ["", style.bold("then (baseline)"), render_heatmap(then_hm, style=style, width=width),
                  "", style.bold("now"), render_heatmap(now_hm, style=style, width=width)]
    return "\n".join(lines)
