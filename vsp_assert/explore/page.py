"""The explorer's one page: HTML and CSS (the script is in :mod:`vsp_assert.explore.page_js`).

Self-contained like the static report: no external asset, font or script is fetched, images arrive as
``data:`` URIs, and the heatmap's table styles are the report's (:data:`vsp_assert.render.html.CSS`), so the
heatmap looks the same in both. Element ids are the page's contract with the browser test
(tests/explore/test_browser.py) and with docs/explore.md.
"""

from __future__ import annotations

import html

from vsp_assert.explore.page_js import SCRIPT

EXTRA_CSS = """
body { margin: 0; }
header { background: #1d1d1f; color: #fff; padding: 10px 20px; display: flex; gap: 18px; align-items: baseline; }
header h1 { font-size: 18px; margin: 0; } header .mono { color: #ccc; }
main { display: grid; grid-template-columns: 330px 1fr; gap: 18px; padding: 16px 20px; }
.panel { border: 1px solid #d0d0d0; border-radius: 6px; padding: 10px 12px; margin-bottom: 14px; }
.panel h2 { font-size: 15px; margin: 0 0 8px; }
label { display: block; font-size: 12px; color: #555; margin: 6px 0 2px; }
input[type=text], select { width: 100%; box-sizing: border-box; padding: 4px 6px; font: inherit; }
button { font: inherit; padding: 3px 10px; margin: 4px 4px 0 0; cursor: pointer; border: 1px solid #888;
         border-radius: 4px; background: #f6f6f6; }
button.primary { background: #1f5fbf; color: #fff; border-color: #1f5fbf; }
button:disabled { opacity: 0.5; cursor: wait; }
#preview img { image-rendering: pixelated; border: 1px solid #bbb; margin-top: 8px; }
#message { min-height: 20px; padding: 6px 10px; margin: 0 20px; border-radius: 4px; white-space: pre-wrap;
           font-size: 13px; }
#message.error { background: #fdecea; color: #8e1c1c; border: 1px solid #e6a1a1; }
#message.info { background: #eef5ee; color: #245c27; border: 1px solid #a9d3ab; }
#answer { font-size: 20px; font-weight: 700; }
.chip { display: inline-block; border: 1px solid #ccc; border-radius: 10px; padding: 1px 8px; margin: 2px;
        font-family: ui-monospace, "DejaVu Sans Mono", monospace; font-size: 12px; }
.clusters li { margin: 3px 0; } .clusters button { margin: 0 4px 0 0; font-size: 12px; padding: 1px 6px; }
table.heatmap th.lat { cursor: pointer; } table.heatmap th.lat.sel { outline: 2px solid #1f5fbf; }
table.pending td, table.pending th { padding: 2px 4px; } table.pending input { width: 70px; }
tr.changed td { background: #fff3c4; }
.switches { display: flex; gap: 22px; flex-wrap: wrap; align-items: center; margin: 4px 0 8px; }
.switches label { display: inline; margin: 0 4px; color: #333; font-size: 13px; }
#saved, #message { word-break: break-all; }
pre.yaml { background: #f6f6f6; padding: 8px; overflow-x: auto; font-size: 12px; }
#latent-panel img { image-rendering: pixelated; }
"""


def page_html(*, model: str, sae: str) -> str:
    """The whole page (static: everything after load comes from the JSON API)."""
    from vsp_assert.render.html import CSS

    e = html.escape
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">
<title>vsp-assert explore</title><style>{CSS}{EXTRA_CSS}</style></head>
<body data-busy="0">
<header><h1>vsp-assert explore</h1><span class="mono">model {e(model)} · SAE {e(sae)}</span></header>
<div id="message" role="status"></div>
<main>
<div>
  <div class="panel"><h2>1 · Image and question</h2>
    <label for="scene">shapes scene</label>
    <select id="scene"><option value="">— pick a scene —</option></select>
    <label for="upload">… or upload an image (PNG, JPEG, …)</label>
    <input type="file" id="upload" accept="image/*">
    <div id="preview"></div>
    <label for="prompt">question</label>
    <input type="text" id="prompt" placeholder="What shape is the red object?">
    <button id="run" class="primary">Run</button>
  </div>
  <div class="panel"><h2>3 · Interventions</h2>
    <p class="note">Add latents or clusters from the heatmap (or type a concept), choose ablate, set a value or
      scale, then re-run them all in one batch.</p>
    <label for="concept">concept, #id or ids (comma-separated)</label>
    <input type="text" id="concept" placeholder="stripes  or  #236, #240">
    <button id="add-concept">Add</button>
    <table class="pending"><thead><tr><th>target</th><th>do</th><th>amount</th><th></th></tr></thead>
      <tbody id="pending"></tbody></table>
    <button id="rerun" class="primary">Re-run interventions</button>
    <button id="sufficient">Sufficient set</button>
  </div>
  <div class="panel"><h2>4 · Save as case</h2>
    <label for="case-file">case file (under <span id="cases-dir" class="mono"></span>)</label>
    <input type="text" id="case-file" value="explore_cases.yaml">
    <label for="case-id">case id (optional)</label>
    <input type="text" id="case-id" placeholder="from the prompt and answer">
    <button id="save" class="primary">Save case</button>
    <div id="saved"></div>
  </div>
</div>
<div>
  <div class="panel"><h2>2 · What the model used</h2>
    <div>answer: <span id="answer">—</span> <span id="answer-p" class="note"></span></div>
    <div id="tokens"></div><div id="captured" class="note"></div>
    <div class="switches">
      <span>ranking:
        <label><input type="radio" name="ranking" value="attention" checked> attention-weighted</label>
        <label><input type="radio" name="ranking" value="average"> plain patch average</label></span>
      <span><label for="max-rate">max firing rate <b id="max-rate-value"></b></label>
        <input type="range" id="max-rate" min="0" max="1" step="0.01" value="0.25"></span>
      <span><label for="min-mean">min mean activation <b id="min-mean-value"></b></label>
        <input type="range" id="min-mean" min="0" max="30" step="0.5" value="0"></span>
      <span id="hidden-count" class="note"></span>
    </div>
    <div id="heatmap"><p class="note">Pick an image, ask a question and press Run.</p></div>
    <h3>clusters</h3><ul id="clusters" class="clusters"></ul>
    <h3>interventions tried</h3>
    <table class="grid"><thead><tr><th>intervention</th><th>latents</th><th>answer before → after</th>
      <th>changed</th><th>p(original) before → after</th></tr></thead><tbody id="results"></tbody></table>
    <div id="sufficient-result"></div>
    <div id="latent-panel"></div>
    <div id="attention"></div>
  </div>
</div>
</main>
<script>{SCRIPT}</script>
</body></html>
"""
