"""The explorer page's script: plain JavaScript, no library, talking to the JSON API of
:mod:`vsp_assert.explore.server`.

It keeps no model state of its own: every answer from the server carries what to show (the heatmap and overlays
as HTML fragments rendered by :mod:`vsp_assert.render`), and the page only holds the controls' values and the
interventions not yet run. Text from the server is inserted with ``textContent``; only the fragments the
renderers produced (escaped there) are inserted as HTML. ``body[data-busy]`` is 1 while a request is in flight
(the browser test waits on it).
"""

SCRIPT = r"""
"use strict";
const $ = (id) => document.getElementById(id);
let pending = [];          // interventions not yet run: {concepts, label, mode, amount}
let selected = null;       // latent whose details are open

function message(text, kind) {
  const m = $("message");
  m.textContent = text || "";
  m.className = text ? (kind || "info") : "";
}

function busy(on) {
  document.body.dataset.busy = on ? "1" : "0";
  for (const b of document.querySelectorAll("button")) b.disabled = on;
}

async function api(path, body, raw) {
  busy(true);
  try {
    const init = {method: "POST", headers: {}};
    if (raw) {
      init.headers["Content-Type"] = "application/octet-stream";
      init.headers["X-Filename"] = raw.name.replace(/[^\x20-\x7e]/g, "_");
      init.body = raw;
    } else {
      init.headers["Content-Type"] = "application/json";
      init.body = JSON.stringify(body || {});
    }
    const response = await fetch(path, init);
    let data;
    try { data = await response.json(); } catch (e) { data = {error: "the server answered " + response.status}; }
    if (!response.ok || data.error) { message(data.error || ("error " + response.status), "error"); return null; }
    return data;
  } catch (e) {
    message("the server cannot be reached (" + e + ")", "error");
    return null;
  } finally {
    busy(false);
  }
}

function viewOptions() {
  return {
    ranking: document.querySelector("input[name=ranking]:checked").value,
    max_rate: parseFloat($("max-rate").value),
    min_mean: parseFloat($("min-mean").value),
  };
}

function showImage(data) {
  const box = $("preview");
  box.textContent = "";
  if (!data || !data.image) return;
  const img = document.createElement("img");
  img.src = data.image; img.alt = "the image"; img.id = "preview-img";
  box.appendChild(img);
  const cap = document.createElement("div");
  cap.className = "note"; cap.textContent = data.name + " · " + data.size.join("×") + " px";
  box.appendChild(cap);
}

function chip(text, title) {
  const s = document.createElement("span");
  s.className = "chip"; s.textContent = text; if (title) s.title = title;
  return s;
}

function showTrace(data) {
  if (!data || !data.trace) return;
  const t = data.trace;
  $("answer").textContent = JSON.stringify(t.answer);
  $("answer-p").textContent = "p = " + t.answer_prob.toPrecision(4)
    + (t.sae_fit !== null ? " · SAE fit " + t.sae_fit.toFixed(3) : "");
  const tokens = $("tokens");
  tokens.textContent = "tokens: ";
  t.tokens.forEach((tok, i) =>
    tokens.appendChild(chip(i + ": " + JSON.stringify(tok.text) + " p=" + tok.p.toFixed(3))));
  $("captured").textContent = "captured: " + t.captured.map(c => c.name + " " + c.score.toFixed(2)).join(", ");
  $("heatmap").innerHTML = (t.ranking === "average"
      ? '<p class="note">plain patch average: every token reads every patch alike (cells: mean activation)</p>'
      : "") + t.heatmap_html;
  $("attention").innerHTML = t.attention_html;
  $("max-rate").value = t.filters.max_rate; $("max-rate-value").textContent = (+t.filters.max_rate).toFixed(2);
  $("min-mean").value = t.filters.min_mean; $("min-mean-value").textContent = (+t.filters.min_mean).toFixed(1);
  $("hidden-count").textContent = t.hidden + " latent(s) hidden as noise";
  const list = $("clusters");
  list.textContent = "";
  for (const c of t.clusters) {
    const li = document.createElement("li");
    li.dataset.cluster = c.id;
    const ab = document.createElement("button");
    ab.textContent = "ablate"; ab.className = "ablate-cluster"; ab.dataset.cluster = c.id;
    const what = "cluster " + c.id + " [" + c.names.join(", ") + "]";
    ab.onclick = () => addPending(c.latents.map(i => "#" + i), what, "ablate");
    const st = document.createElement("button");
    st.textContent = "steer"; st.className = "steer-cluster"; st.dataset.cluster = c.id;
    st.onclick = () => addPending(c.latents.map(i => "#" + i), what, "scale");
    li.appendChild(ab); li.appendChild(st);
    li.appendChild(document.createTextNode("cluster " + c.id + ": " + c.names.join(", ")));
    list.appendChild(li);
  }
  for (const th of document.querySelectorAll("#heatmap th.lat")) {
    th.onclick = () => openLatent(parseInt(th.dataset.latent, 10));
    if (+th.dataset.latent === selected) th.classList.add("sel");
  }
  if (data.tried) showTried(data.tried);
}

function showTried(tried) {
  const body = $("results");
  body.textContent = "";
  for (const r of tried) {
    const tr = document.createElement("tr");
    if (r.changed) tr.className = "changed";
    for (const text of [r.intervention, r.latents.join(", "), JSON.stringify(r.answer_before) + " → "
        + JSON.stringify(r.answer_after), r.changed ? "yes" : "no",
        r.p_before.toFixed(3) + " → " + r.p_after.toFixed(3)]) {
      const td = document.createElement("td"); td.textContent = text; tr.appendChild(td);
    }
    body.appendChild(tr);
  }
}

async function openLatent(id) {
  const data = await api("/api/latent", {latent: id});
  if (!data) return;
  selected = id;
  for (const th of document.querySelectorAll("#heatmap th.lat"))
    th.classList.toggle("sel", +th.dataset.latent === id);
  const panel = $("latent-panel");
  panel.innerHTML = data.card_html;
  const info = document.createElement("p");
  info.className = "mono";
  info.textContent = data.name + ": image score " + data.image_score.toFixed(3) + " · peak " + data.peak.toFixed(3);
  panel.appendChild(info);
  if (data.fires) {
    const fig = document.createElement("figure");
    fig.innerHTML = '<img alt="where the latent fires" src="' + data.fires + '">'
      + "<figcaption>where it fires</figcaption>";
    panel.appendChild(fig);
  }
  const details = panel.querySelector("details"); if (details) details.open = true;
  for (const [text, mode] of [["ablate this latent", "ablate"], ["steer this latent", "scale"]]) {
    const b = document.createElement("button");
    b.textContent = text; b.onclick = () => addPending(["#" + id], data.name, mode);
    panel.appendChild(b);
  }
}

function addPending(concepts, label, mode) {
  pending.push({concepts: concepts, label: label, mode: mode, amount: mode === "scale" ? "2" : "0"});
  drawPending();
}

function drawPending() {
  const body = $("pending");
  body.textContent = "";
  pending.forEach((p, i) => {
    const tr = document.createElement("tr");
    const target = document.createElement("td"); target.textContent = p.label; tr.appendChild(target);
    const mode = document.createElement("select"); mode.className = "mode";
    for (const [v, t] of [["ablate", "ablate"], ["value", "set to"], ["scale", "scale ×"]]) {
      const o = document.createElement("option"); o.value = v; o.textContent = t; mode.appendChild(o);
    }
    mode.value = p.mode; mode.onchange = () => { p.mode = mode.value; drawPending(); };
    const td1 = document.createElement("td"); td1.appendChild(mode); tr.appendChild(td1);
    const amount = document.createElement("input"); amount.type = "text"; amount.className = "amount";
    amount.inputMode = "decimal"; amount.value = p.amount; amount.disabled = p.mode === "ablate";
    amount.oninput = () => { p.amount = amount.value; };
    const td2 = document.createElement("td"); td2.appendChild(amount); tr.appendChild(td2);
    const rm = document.createElement("button"); rm.textContent = "×"; rm.title = "remove";
    rm.onclick = () => { pending.splice(i, 1); drawPending(); };
    const td3 = document.createElement("td"); td3.appendChild(rm); tr.appendChild(td3);
    body.appendChild(tr);
  });
}

async function refreshView() {
  const data = await api("/api/view", viewOptions());
  if (data) showTrace(data);
}

async function pickScene() {
  const name = $("scene").value;
  if (!name) return;
  const data = await api("/api/scene", {name: name});
  if (!data) return;
  showImage(data);
  $("upload").value = "";
  if (!$("prompt").value.trim()) $("prompt").value = data.prompt;
  message("scene " + name + " · press Run");
}

async function uploadFile() {
  const file = $("upload").files[0];
  if (!file) return;
  const data = await api("/api/upload", null, file);
  if (!data) return;
  showImage(data);
  $("scene").value = "";
  message("uploaded " + data.name + " · press Run");
}

async function run() {
  const data = await api("/api/run", Object.assign({prompt: $("prompt").value}, viewOptions()));
  if (!data) return;
  pending = []; drawPending(); selected = null;
  $("latent-panel").textContent = ""; $("sufficient-result").textContent = ""; $("saved").textContent = "";
  showTrace(data);
  message("answer " + JSON.stringify(data.trace.answer));
}

async function rerun() {
  if (!pending.length) { message("add an intervention first (ablate or steer a cluster or latent)", "error"); return; }
  const items = pending.map(p => ({concepts: p.concepts, mode: p.mode, amount: p.amount}));
  const data = await api("/api/intervene", {interventions: items});
  if (!data) return;
  pending = []; drawPending();
  showTried(data.tried);
  message(data.results.map(r => r.intervention + ": " + JSON.stringify(r.answer_before) + " → "
    + JSON.stringify(r.answer_after)).join("\n"));
}

async function sufficient() {
  const data = await api("/api/sufficient", {});
  if (!data) return;
  const s = data.sufficient;
  $("sufficient-result").textContent = s.found
    ? "sufficient set: " + s.latents.join(", ") + " → answer " + JSON.stringify(s.result.answer_after)
    : "no sufficient set among the top clusters (" + s.tried + " tried)";
  showTried(data.tried);
}

async function save() {
  const data = await api("/api/save", {file: $("case-file").value, id: $("case-id").value});
  if (!data) return;
  const box = $("saved");
  box.textContent = "";
  const p = document.createElement("p");
  p.id = "saved-path"; p.dataset.file = data.file; p.dataset.id = data.id;
  p.textContent = "saved case " + data.id + " to " + data.file;
  const pre = document.createElement("pre"); pre.className = "yaml"; pre.textContent = data.yaml;
  box.appendChild(p); box.appendChild(pre);
  message("saved case " + data.id + " · run it: pytest " + data.file);
}

async function start() {
  const response = await fetch("/api/state", {method: "POST", headers: {"Content-Type": "application/json"},
                                              body: "{}"});
  const data = await response.json();
  $("cases-dir").textContent = data.cases_dir;
  for (const [name, prompt] of Object.entries(data.scenes)) {
    const o = document.createElement("option"); o.value = name; o.textContent = name + " (" + prompt + ")";
    $("scene").appendChild(o);
  }
  if (data.image) { showImage(data); if (data.scene) $("scene").value = data.scene; }
  if (data.prompt) $("prompt").value = data.prompt;
  showTrace(data);
  document.body.dataset.ready = "1";
}

$("scene").onchange = pickScene;
$("upload").onchange = uploadFile;
$("run").onclick = run;
$("prompt").onkeydown = (e) => { if (e.key === "Enter") run(); };
$("rerun").onclick = rerun;
$("sufficient").onclick = sufficient;
$("save").onclick = save;
$("add-concept").onclick = () => {
  const text = $("concept").value.trim();
  if (!text) { message("type a concept name or #id", "error"); return; }
  addPending(text.split(",").map(s => s.trim()).filter(s => s), text, "ablate");
  $("concept").value = "";
};
for (const r of document.querySelectorAll("input[name=ranking]")) r.onchange = refreshView;
$("max-rate").onchange = refreshView;
$("min-mean").onchange = refreshView;
$("max-rate").oninput = () => { $("max-rate-value").textContent = (+$("max-rate").value).toFixed(2); };
$("min-mean").oninput = () => { $("min-mean-value").textContent = (+$("min-mean").value).toFixed(1); };
start();
"""
