// polyvec's search page: plain JavaScript over the gateway's /v1 API (no library, no build step).
const KEY = "polyvec.apiKey";
const $ = (sel, root = document) => root.querySelector(sel);
const $$ = (sel, root = document) => [...root.querySelectorAll(sel)];
const TEXT_KINDS = ["near_text", "bm25", "hybrid", "neural_sparse"];

const state = {
  collections: [],
  collection: null,      // GET /v1/collections/{name}
  image: null,           // base64 of the near_image query
  mlt: null,             // {id, vectors} of "more like this"
  last: {a: null, b: null},
};

// -- the API --------------------------------------------------------------------------------------------
class ApiError extends Error {
  constructor(status, body) {
    super((body && body.error) || `HTTP ${status}`);
    this.status = status;
    this.field = body && body.field;
    this.body = body;
  }
}

async function api(method, path, body) {
  const headers = {};
  if (body !== undefined) headers["content-type"] = "application/json";
  const key = sessionStorage.getItem(KEY);
  if (key) headers.authorization = `Bearer ${key}`;
  const started = performance.now();
  let resp;
  try {
    resp = await fetch(path, {method, headers, body: body === undefined ? undefined : JSON.stringify(body)});
  } catch (err) {
    throw new ApiError(0, {error: `the gateway did not answer (${err.message})`});
  }
  let data = null;
  try { data = await resp.json(); } catch { data = null; }
  const ms = performance.now() - started;
  if (resp.status === 401) {
    askForKey(key ? "The gateway refused this API key (401). Enter another one."
                  : "This gateway needs an API key: without one, its /v1 calls answer 401.");
  }
  if (!resp.ok) throw new ApiError(resp.status, data);
  return {data, ms};
}

const enc = encodeURIComponent;

// -- errors and the API key -------------------------------------------------------------------------------
function showError(err) {
  const box = $("#error");
  if (!err) { box.hidden = true; box.textContent = ""; return; }
  box.textContent = err.status ? `${err.status}: ${err.message}` : String(err.message || err);
  box.hidden = false;
}

function askForKey(message) {
  $("#key-message").textContent = message;
  $("#key-dialog").hidden = false;
  $("#key-input").focus();
}

$("#key-form").addEventListener("submit", (ev) => {
  ev.preventDefault();
  sessionStorage.setItem(KEY, $("#key-input").value.trim());
  $("#key-input").value = "";
  $("#key-dialog").hidden = true;
  showError(null);
  loadCollections();
});
$("#key-forget").addEventListener("click", () => {
  sessionStorage.removeItem(KEY);
  $("#key-message").textContent = "The key is forgotten.";
});
$("#key-button").addEventListener("click", () => {
  const dialog = $("#key-dialog");
  if (!dialog.hidden) { dialog.hidden = true; return; }
  askForKey(sessionStorage.getItem(KEY) ? "A key is set for this tab; enter another to replace it."
                                          : "Enter the gateway's API key (if it has API_KEYS set).");
});

// -- collections ------------------------------------------------------------------------------------------
async function loadCollections() {
  try {
    const {data} = await api("GET", "/v1/collections");
    state.collections = data.collections || [];
    const select = $("#collection");
    const previous = select.value || new URLSearchParams(location.search).get("collection");
    select.replaceChildren(...state.collections.map((c) => new Option(c.name, c.name)));
    if (!state.collections.length) {
      $("#collection-summary").textContent = "no collections yet: create one through the API (see API docs)";
      return;
    }
    if (previous && state.collections.some((c) => c.name === previous)) select.value = previous;
    await selectCollection(select.value);
  } catch (err) {
    showError(err);
  }
}

function vectorNames(col) { return Object.keys(col.vectorizers || {}); }
function imageFields(col) {
  return new Set(Object.values(col.vectorizers || {}).flatMap((v) => v.image_fields || []));
}
function hasBm25(col) { return !!(col.bm25 && (col.bm25.fields || []).length); }
function hasSparse(col) { return Object.keys(col.sparse_vectorizers || {}).length > 0; }
function modalities(col) {
  return new Set(Object.values(col.vectorizers || {}).flatMap((v) => v.modalities || []));
}

/** The search kinds this collection can answer. */
function kindsOf(col) {
  const kinds = [];
  const mods = modalities(col);
  if (mods.has("text")) kinds.push("near_text");
  if (hasBm25(col)) kinds.push("bm25");
  if (mods.has("text") && hasBm25(col)) kinds.push("hybrid");
  if (hasSparse(col)) kinds.push("neural_sparse");
  if (mods.has("image")) kinds.push("near_image");
  return kinds;
}

async function selectCollection(name) {
  showError(null);
  const {data} = await api("GET", `/v1/collections/${enc(name)}`);
  state.collection = data;
  state.mlt = null;
  $("#mlt-chip").hidden = true;
  const kinds = kindsOf(data);
  for (const pane of ["a", "b"]) {
    const kindSelect = paneEl(pane, "kind");
    const old = kindSelect.value;
    kindSelect.replaceChildren(...kinds.map((k) => new Option(k, k)));
    if (kinds.includes(old)) kindSelect.value = old;
    const vectorSelect = paneEl(pane, "vector");
    vectorSelect.replaceChildren(...vectorNames(data).map((v) => new Option(v, v)));
    paneEl(pane, "vector").closest("label").hidden = vectorNames(data).length < 2;
  }
  if (kinds.includes("hybrid") && !$("#kind-b").dataset.touched) $("#kind-b").value = "hybrid";
  renderCollectionInfo(data);
  renderPropsChooser();
  syncForm();
}

function renderCollectionInfo(col) {
  const fields = col.fields ? Object.keys(col.fields) : [];
  $("#collection-summary").textContent =
    `${col.name}: ${col.count ?? "?"} objects · vectors ${vectorNames(col).join(", ") || "none"}` +
    (hasBm25(col) ? ` · BM25 on ${col.bm25.fields.join(", ")}` : "");
  const rows = Object.entries(col.vectorizers || {}).map(([name, v]) => {
    const model = v.model || v.inference_url || "your own vectors";
    const src = [...(v.text_fields || []).map((f) => `${f} (text)`), ...(v.image_fields || []).map((f) => `${f} (image)`)];
    return `<tr><td>${esc(name)}</td><td>${esc(model)}${v.model_name ? ` <small>${esc(v.model_name)}</small>` : ""}</td>` +
           `<td>${v.dimensions ?? ""}</td><td>${esc((v.modalities || []).join(", "))}</td><td>${esc(src.join(", "))}</td></tr>`;
  }).join("");
  $("#collection-details").innerHTML =
    `<p><b>${col.count ?? "?"}</b> objects · distance ${esc(col.distance || "cosine")}</p>` +
    `<table class="info"><thead><tr><th>vector</th><th>model</th><th>dims</th><th>modalities</th><th>fields</th></tr></thead><tbody>${rows}</tbody></table>` +
    (fields.length ? `<p>Declared fields: ${fields.map((f) => `<code>${esc(f)}</code> ${esc(typeName(col.fields[f]))}`).join(", ")}</p>` : "") +
    `<details><summary>definition (JSON)</summary><pre class="json">${esc(JSON.stringify(col, null, 2))}</pre></details>`;
}

function typeName(decl) { return typeof decl === "string" ? decl : (decl && decl.type) || ""; }

$("#collection").addEventListener("change", (ev) => selectCollection(ev.target.value).catch(showError));
$("#refresh").addEventListener("click", () => loadCollections());

// -- the search form --------------------------------------------------------------------------------------
function paneEl(pane, cls) { return $(`fieldset[data-pane="${pane}"] .${cls}`); }

function paneSettings(pane) {
  return {
    kind: paneEl(pane, "kind").value,
    vector: paneEl(pane, "vector").value || null,
    alpha: Number(paneEl(pane, "alpha").value),
    fusion: paneEl(pane, "fusion").value,
  };
}

function syncForm() {
  const kinds = ["a", "b"].filter((p) => p === "a" || $("#compare").checked).map((p) => paneEl(p, "kind").value);
  const usesImage = !state.mlt && kinds.includes("near_image");
  const usesText = state.mlt ? false : kinds.some((k) => TEXT_KINDS.includes(k));
  $("#image-drop").hidden = !usesImage;
  $("#query").disabled = !usesText && !!state.mlt;
  for (const pane of ["a", "b"]) {
    const fs = $(`fieldset[data-pane="${pane}"]`);
    $(".hybrid-only", fs).hidden = paneEl(pane, "kind").value !== "hybrid";
    $(".alpha-value", fs).textContent = Number(paneEl(pane, "alpha").value).toFixed(2);
  }
  $("#settings-b").hidden = !$("#compare").checked;
  $("#results-b").hidden = !$("#compare").checked;
  $("#overlap").hidden = !$("#compare").checked || !state.last.b;
}

for (const el of $$("#search-form select, #search-form input[type=range], #compare")) {
  el.addEventListener("input", syncForm);
}
$("#kind-b").addEventListener("change", (ev) => { ev.target.dataset.touched = "1"; });
$("#compare").addEventListener("change", () => { syncForm(); if (state.last.a) runSearch(); });

// the image of near_image: file, drag-and-drop, paste
function readImage(file) {
  if (!file || !file.type.startsWith("image/")) { showError(new Error("that is not an image file")); return; }
  const reader = new FileReader();
  reader.onload = () => {
    const url = String(reader.result);
    state.image = url.slice(url.indexOf(",") + 1);
    const preview = $("#image-preview");
    preview.src = url;
    preview.hidden = false;
    if (!state.mlt) runSearch();
  };
  reader.readAsDataURL(file);
}
$("#image-file").addEventListener("change", (ev) => readImage(ev.target.files[0]));
const drop = $("#image-drop");
drop.addEventListener("dragover", (ev) => { ev.preventDefault(); drop.classList.add("over"); });
drop.addEventListener("dragleave", () => drop.classList.remove("over"));
drop.addEventListener("drop", (ev) => {
  ev.preventDefault();
  drop.classList.remove("over");
  readImage(ev.dataTransfer.files[0]);
});
document.addEventListener("paste", (ev) => {
  const item = [...(ev.clipboardData?.items || [])].find((i) => i.type.startsWith("image/"));
  if (!item || $("#panel-search").hidden) return;
  ev.preventDefault();
  if (kindsOf(state.collection || {}).includes("near_image")) $("#kind").value = "near_image";
  syncForm();
  readImage(item.getAsFile());
});

// the filter box: JSON checked here, everything else by the gateway (its error shown at the box)
function readFilter() {
  const text = $("#filter").value.trim();
  if (!text) return undefined;
  try {
    return JSON.parse(text);
  } catch (err) {
    throw Object.assign(new ApiError(0, {error: `filter: not valid JSON (${err.message})`, field: "filter"}));
  }
}

function showFilterError(err) {
  const box = $("#filter-error");
  $("#filter").classList.toggle("invalid", !!err);
  if (!err) { box.hidden = true; box.textContent = ""; return; }
  box.textContent = err.field ? `${err.field}: ${err.message.replace(`${err.field}: `, "")}` : err.message;
  box.hidden = false;
}

function buildRequest(pane) {
  const s = paneSettings(pane);
  const body = {limit: Number($("#limit").value) || 10};
  const filter = readFilter();
  if (filter !== undefined) body.filter = filter;
  const query = $("#query").value.trim();
  if (state.mlt) {
    const name = s.vector || vectorNames(state.collection)[0];
    const vector = state.mlt.vectors[name];
    if (!vector) throw new Error(`object ${state.mlt.id} has no vector ${name}`);
    body.near_vector = {vector};
    body.vector = name;
    return body;
  }
  if (s.vector && s.kind !== "bm25") body.vector = s.vector;
  if (s.kind === "near_image") {
    if (!state.image) throw new Error("near_image: drop, paste or choose an image first");
    body.near_image = {image: state.image};
  } else if (s.kind === "hybrid") {
    body.hybrid = {query, alpha: s.alpha, fusion: s.fusion};
  } else {
    body[s.kind] = {query};
  }
  return body;
}

function describe(pane) {
  if (state.mlt) return `near_vector: more like ${state.mlt.id} (${paneSettings(pane).vector || vectorNames(state.collection)[0]})`;
  const s = paneSettings(pane);
  return s.kind === "hybrid" ? `hybrid alpha ${s.alpha.toFixed(2)} ${s.fusion}` : s.kind;
}

async function runSearch() {
  if (!state.collection) return;
  showError(null);
  showFilterError(null);
  const panes = $("#compare").checked ? ["a", "b"] : ["a"];
  let bodies;
  try {
    bodies = panes.map(buildRequest);
  } catch (err) {
    if (err.field === "filter") showFilterError(err); else showError(err);
    return;
  }
  const name = state.collection.name;
  const answers = await Promise.allSettled(bodies.map((b) => api("POST", `/v1/collections/${enc(name)}/search`, b)));
  state.last = {a: null, b: null};
  answers.forEach((answer, i) => {
    const pane = panes[i];
    if (answer.status === "fulfilled") {
      state.last[pane] = {...answer.value.data, e2e: answer.value.ms, label: describe(pane)};
    } else {
      const err = answer.reason;
      if (err.field && err.field.startsWith("filter")) showFilterError(err); else showError(err);
    }
  });
  renderResults();
}

$("#search-form").addEventListener("submit", (ev) => { ev.preventDefault(); runSearch(); });
$("#mlt-clear").addEventListener("click", () => { state.mlt = null; $("#mlt-chip").hidden = true; syncForm(); });

// -- results ----------------------------------------------------------------------------------------------
function esc(text) {
  return String(text).replace(/[&<>"']/g, (c) => ({"&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;"}[c]));
}

const MAGIC = [["iVBORw0KGgo", "image/png"], ["/9j/", "image/jpeg"], ["R0lGOD", "image/gif"], ["UklGR", "image/webp"], ["Qk", "image/bmp"]];

/** An <img> source for a property value, or null when it is no image. */
function imageSource(value, declared) {
  if (typeof value !== "string" || !value) return null;
  if (value.startsWith("data:image/")) return value;
  if (/^https?:\/\//i.test(value)) {
    return declared || /\.(png|jpe?g|gif|webp|bmp|svg)(\?|#|$)/i.test(value) ? value : null;
  }
  const mime = MAGIC.find(([magic]) => value.startsWith(magic));
  if (mime && value.length > 64) return `data:${mime[1]};base64,${value}`;
  if (declared && value.length > 64) return `data:image/png;base64,${value}`;
  return null;
}

function knownProperties() {
  const col = state.collection || {};
  const names = new Set([...Object.keys(col.fields || {}),
    ...Object.values(col.vectorizers || {}).flatMap((v) => v.text_fields || [])]);
  for (const pane of ["a", "b"]) {
    for (const hit of state.last[pane]?.hits || []) Object.keys(hit.properties || {}).forEach((k) => names.add(k));
  }
  for (const f of imageFields(col)) names.delete(f);
  return [...names];
}

function renderPropsChooser() {
  const list = $("#props-list");
  const hidden = new Set($$("input:not(:checked)", list).map((i) => i.value));
  list.replaceChildren(...knownProperties().map((name) => {
    const label = document.createElement("label");
    label.innerHTML = `<input type="checkbox" value="${esc(name)}" ${hidden.has(name) ? "" : "checked"}> ${esc(name)}`;
    return label;
  }));
}
$("#props-list").addEventListener("change", () => renderResults());

function shownProperties() {
  return new Set($$("#props-list input:checked").map((i) => i.value));
}

function renderResults() {
  renderPropsChooser();
  const compare = $("#compare").checked && state.last.a && state.last.b;
  const ids = {a: new Set((state.last.a?.hits || []).map((h) => h.id)), b: new Set((state.last.b?.hits || []).map((h) => h.id))};
  for (const pane of ["a", "b"]) {
    const section = $(`#results-${pane}`);
    const result = state.last[pane];
    const grid = $(".grid", section);
    if (!result) { grid.replaceChildren(); $(".stats", section).textContent = ""; continue; }
    $(".pane-title", section).textContent = `${pane.toUpperCase()}: ${result.label}`;
    $(".stats", section).innerHTML = `${result.hits.length} hits · took_ms <b class="took">${result.took_ms.toFixed(1)}</b>` +
      ` · end to end <b class="e2e">${result.e2e.toFixed(1)}</b> ms`;
    const other = pane === "a" ? ids.b : ids.a;
    grid.replaceChildren(...result.hits.map((hit, rank) => card(hit, rank, compare && other.has(hit.id), pane)));
    if (!result.hits.length) grid.innerHTML = `<p class="empty">No hits.</p>`;
  }
  const overlap = $("#overlap");
  if (compare) {
    const both = [...ids.a].filter((id) => ids.b.has(id)).length;
    overlap.innerHTML = `Overlap: <b id="overlap-count">${both}</b> of ${Math.max(ids.a.size, ids.b.size)} hits are in both lists (highlighted).`;
    overlap.hidden = false;
  } else {
    overlap.hidden = true;
  }
}

function card(hit, rank, inBoth, pane) {
  const el = document.createElement("article");
  el.className = "card" + (inBoth ? " both" : "");
  el.dataset.id = hit.id;
  const props = hit.properties || {};
  const declared = imageFields(state.collection || {});
  const shown = shownProperties();
  const images = [];
  const rows = [];
  for (const [key, value] of Object.entries(props)) {
    const src = imageSource(value, declared.has(key));
    if (src) images.push([key, src]);
    else if (shown.has(key)) rows.push(`<dt>${esc(key)}</dt><dd>${esc(typeof value === "string" ? value : JSON.stringify(value))}</dd>`);
  }
  el.innerHTML =
    (images.length ? images.map(([k, src]) => `<img class="card-image" loading="lazy" alt="${esc(k)} of ${esc(hit.id)}" src="${esc(src)}">`).join("") : "") +
    `<div class="card-head"><span class="rank">#${rank + 1}</span> <span class="hit-id">${esc(hit.id)}</span>` +
    `<span class="score" title="score">${Number(hit.score).toFixed(4)}</span>${inBoth ? '<span class="badge">in both</span>' : ""}</div>` +
    `<dl class="props">${rows.join("")}</dl>` +
    `<div class="card-actions"><button type="button" class="more-like-this">More like this</button>` +
    `<details class="raw"><summary>JSON</summary><pre class="json"></pre></details></div>`;
  $(".json", el).textContent = JSON.stringify(hit, null, 2);
  $(".more-like-this", el).addEventListener("click", () => moreLikeThis(hit.id, pane));
  return el;
}

async function moreLikeThis(id, pane) {
  try {
    const name = state.collection.name;
    const {data} = await api("GET", `/v1/collections/${enc(name)}/objects/${enc(id)}?with_vectors=true`);
    if (!data.vectors || !Object.keys(data.vectors).length) throw new Error(`object ${id} has no stored vector`);
    state.mlt = {id, vectors: data.vectors};
    $("#mlt-text").textContent = `near_vector: more like ${id} (its stored vector)`;
    $("#mlt-chip").hidden = false;
    syncForm();
    await runSearch();
  } catch (err) {
    showError(err);
  }
}

// -- tabs -------------------------------------------------------------------------------------------------
for (const tab of $$("nav [role=tab]")) {
  tab.addEventListener("click", () => {
    for (const t of $$("nav [role=tab]")) t.setAttribute("aria-selected", String(t === tab));
    $("#panel-search").hidden = tab.dataset.tab !== "search";
    $("#panel-eval").hidden = tab.dataset.tab !== "eval";
  });
}

// -- evaluation: the gateway runs it (the same code as `polyvec eval`) and this page draws the answer ------
const list = (text) => text.split(",").map((s) => s.trim()).filter(Boolean);

$("#eval-form").addEventListener("submit", async (ev) => {
  ev.preventDefault();
  const error = $("#eval-error");
  error.hidden = true;
  const [queries, qrels] = [$("#eval-queries").files[0], $("#eval-qrels").files[0]];
  if (!state.collection) { error.textContent = "choose a collection first"; error.hidden = false; return; }
  if (!queries || !qrels) { error.textContent = "choose a queries file and a qrels file"; error.hidden = false; return; }
  const body = {queries: await queries.text(), qrels: await qrels.text(),
                alphas: list($("#eval-alphas").value).map(Number), fusion: list($("#eval-fusion").value),
                k: list($("#eval-k").value).map(Number)};
  if ($("#eval-kinds").value.trim()) body.kinds = list($("#eval-kinds").value);
  const status = $("#eval-status");
  const started = performance.now();
  const timer = setInterval(() => { status.textContent = `running… ${((performance.now() - started) / 1000).toFixed(0)} s`; }, 500);
  $("#eval-run").disabled = true;
  try {
    const {data, ms} = await api("POST", `/v1/collections/${enc(state.collection.name)}/evaluate`, body);
    status.textContent = `${data.queries.evaluated} queries × ${data.runs.length} runs in ${(ms / 1000).toFixed(1)} s` +
      (data.queries.without_qrels ? ` (${data.queries.without_qrels} queries without qrels skipped)` : "");
    renderEval(data);
  } catch (err) {
    status.textContent = "";
    error.textContent = err.field ? `${err.field}: ${err.message.replace(`${err.field}: `, "")}` : `${err.status || ""} ${err.message}`;
    error.hidden = false;
  } finally {
    clearInterval(timer);
    $("#eval-run").disabled = false;
  }
});

function renderEval(report) {
  const measures = report.measures;
  const head = `<tr><th>run</th><th>queries</th>${measures.map((m) => `<th>${esc(m)}</th>`).join("")}<th>p50 ms</th><th>p99 ms</th></tr>`;
  const scored = report.runs.filter((r) => r.metrics);
  const best = Object.fromEntries(measures.map((m) => [m, Math.max(...scored.map((r) => r.metrics[m]))]));
  const rows = report.runs.map((r) => `<tr><td>${esc(r.name)}</td><td>${r.queries}</td>` + (r.metrics
    ? measures.map((m) => `<td class="${r.metrics[m] === best[m] ? "best" : ""}">${fmt(r.metrics[m])}</td>`).join("") +
      `<td>${fmt(r.latency_ms.p50, 1)}</td><td>${fmt(r.latency_ms.p99, 1)}</td>`
    : `<td colspan="${measures.length + 2}" class="failed">${esc(r.error || "failed")}</td>`) + "</tr>").join("");
  $("#eval-table").innerHTML = `<div class="table-wrap"><table class="metrics"><thead>${head}</thead><tbody>${rows}</tbody></table></div>`;
  const charts = [];
  const recall = report.k.map((k) => `R@${k}`);
  charts.push(lineChart("Recall@K per run", report.k.map(String),
    scored.map((r) => ({name: r.name, values: recall.map((m) => r.metrics[m])}))));
  const hybrid = scored.filter((r) => r.kind === "hybrid");
  const alphas = [...new Set(hybrid.map((r) => r.alpha))].sort((x, y) => x - y);
  if (alphas.length > 1) {
    const series = [];
    for (const fusion of [...new Set(hybrid.map((r) => r.fusion))]) {
      for (const m of ["nDCG@10", "MRR@10", "AvgRecall"].filter((x) => measures.includes(x))) {
        series.push({name: `${m} ${fusion}`, values: alphas.map((a) => hybrid.find((r) => r.fusion === fusion && r.alpha === a)?.metrics[m])});
      }
    }
    charts.push(lineChart("hybrid: metric against alpha", alphas.map((a) => a.toFixed(2)), series));
  }
  $("#eval-charts").innerHTML = charts.join("");
}

function fmt(value, digits = 3) { return value === undefined || value === null ? "" : Number(value).toFixed(digits); }

const COLOURS = ["#2563eb", "#dc2626", "#16a34a", "#9333ea", "#ea580c", "#0891b2", "#be185d", "#4d7c0f", "#6b7280", "#a16207"];

/** A small SVG line chart: x labels, series of values in [0, 1]. */
function lineChart(title, labels, series) {
  const w = 520, h = 260, left = 40, right = 24, top = 24, bottom = 30;
  const x = (i) => left + (labels.length === 1 ? 0.5 : i / (labels.length - 1)) * (w - left - right);
  const y = (v) => top + (1 - v) * (h - top - bottom);
  const grid = [0, 0.25, 0.5, 0.75, 1].map((v) => `<line x1="${left}" x2="${w - right}" y1="${y(v)}" y2="${y(v)}" class="gridline"/>` +
    `<text x="${left - 4}" y="${y(v) + 4}" text-anchor="end">${v}</text>`).join("");
  const xs = labels.map((l, i) => `<text x="${x(i)}" y="${h - 10}" text-anchor="middle">${esc(l)}</text>`).join("");
  const lines = series.map((s, n) => {
    const colour = COLOURS[n % COLOURS.length];
    const pts = s.values.map((v, i) => (v === undefined ? null : [x(i), y(v)])).filter(Boolean);
    return `<polyline fill="none" stroke="${colour}" stroke-width="2" points="${pts.map((p) => p.join(",")).join(" ")}"/>` +
      pts.map((p) => `<circle cx="${p[0]}" cy="${p[1]}" r="3" fill="${colour}"/>`).join("");
  }).join("");
  const legend = series.map((s, n) => `<span><svg class="swatch" viewBox="0 0 10 10"><rect width="10" height="10" rx="2" fill="${COLOURS[n % COLOURS.length]}"/></svg>${esc(s.name)}</span>`).join("");
  return `<figure class="chart"><figcaption>${esc(title)}</figcaption>` +
    `<svg viewBox="0 0 ${w} ${h}" role="img" aria-label="${esc(title)}">${grid}${xs}${lines}</svg>` +
    `<div class="legend">${legend}</div></figure>`;
}

// -- start ------------------------------------------------------------------------------------------------
syncForm();
loadCollections();
