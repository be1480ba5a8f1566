// lungcls viewer: send dropped CXRs to the server's own API and show what comes back. Nothing is fetched from
// anywhere but this server; the CSV and the zip are made here, from the results already on the page.
"use strict";
const $ = (id) => document.getElementById(id);
const state = { models: null, results: [], columns: [], kind: "segment" };

function headers() {
  const token = $("token").value.trim();
  return token ? { Authorization: "Bearer " + token } : {};
}

async function loadModels() {
  const health = await fetch("/healthz").then((r) => r.json());
  $("version").textContent = health.version;
  const r = await fetch("/v1/models", { headers: headers() });
  if (r.status === 401) { $("tokenbox").hidden = false; $("models").textContent = "this server needs a token"; return; }
  const m = await r.json();
  state.models = m;
  state.kind = m.classifier ? "predict" : "segment";
  $("models").textContent = m.classifier
    ? `classifier ${m.classifier} (${m.modes.join(" / ")}), classes ${m.class_names.join(", ")}; lungs: ${m.segmenter}` +
      (m.infection ? `; infection: ${m.infection}` : "") + (m.gate ? "; input gate on" : "")
    : `no classifier: lungs (${m.segmenter})` + (m.infection ? ` and infection (${m.infection})` : "") +
      (m.gate ? ", input gate on" : "") + " only. Start with --model BUNDLE to classify.";
  if (m.modes && m.modes.length > 1) { $("mainmode").textContent = m.modes[0]; $("modeswitch").hidden = false; }
  $("explain").disabled = !m.classifier;
}

async function send(files) {
  if (!files.length) return;
  if (!state.models) await loadModels();
  const form = new FormData();
  for (const f of files) form.append("files", f, f.name);
  const explain = state.kind === "predict" && $("explain").checked;
  $("status").textContent = `analysing ${files.length} file(s)...`;
  const url = `/v1/${state.kind}?pictures=true&explain=${explain}`;
  let r;
  try {
    r = await fetch(url, { method: "POST", body: form, headers: headers() });
  } catch (e) {
    $("status").textContent = "the server could not be reached: " + e; return;
  }
  const body = await r.json().catch(() => ({}));
  if (!body.results) { $("status").textContent = `error ${r.status}: ${body.detail || r.statusText}`; return; }
  state.columns = body.columns;
  state.results = state.results.concat(body.results);
  $("status").textContent = `${body.results.length} result(s)` + (r.status === 422 ? ": no file could be read" : "");
  render();
}

function el(tag, attrs = {}, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) e.setAttribute(k, v);
  for (const c of children) e.append(c);
  return e;
}

function picture(src, caption, cls) {
  return el("figure", {}, el("img", { src, alt: caption, class: cls }), el("figcaption", {}, caption));
}

function probabilities(res) {
  const box = el("div", { class: "probs" });
  for (const name of (state.models.class_names || [])) {
    const p = res["p_" + name];
    if (p === undefined) continue;
    box.append(el("div", { class: "bar" }, el("span", { class: "fill", style: `width:${Math.round(p * 150)}px` }),
      `${name} ${p.toFixed(3)}`));
  }
  return box;
}

function card(res) {
  const useRaw = !$("modeswitch").hidden && document.querySelector("input[name=mode]:checked").value === "raw";
  const shown = useRaw && res.raw ? Object.assign({}, res, res.raw) : res;
  if (res.error) return el("div", { class: "card error" }, el("h2", {}, res.name), `could not be read: ${res.error}`);
  const refused = res.gate_accepted === false;
  const c = el("div", { class: "card" + (refused ? " refused" : ""), "data-name": res.name });
  c.append(el("h2", {}, res.name));
  const pics = el("div", { class: "pictures" });
  const p = res.pictures || {};
  if (p.overlay) pics.append(picture(p.overlay, "lungs (green)" + (res.infection_grade !== undefined ? ", infection (red)" : ""), "overlay"));
  if (p.crop) pics.append(picture(p.crop, state.kind === "predict" && !useRaw && state.models.modes[0] !== "raw"
    ? "lung crop (what the classifier sees)" : "lung crop", "crop"));
  if (p.explanation && !useRaw) pics.append(picture(p.explanation, "explanation map", "explanation"));
  c.append(pics);
  const facts = el("div", { class: "facts" });
  if (state.kind === "predict") {
    facts.append(el("div", {}, el("span", { class: "label" }, shown.predicted || "no class"),
      ` (${shown.decision}${res.decision_reason && !useRaw ? ": " + res.decision_reason : ""})`));
    facts.append(probabilities(shown));
  }
  facts.append(el("div", {}, "input gate: " + (res.gate_accepted === undefined ? "off" : res.gate_accepted
    ? `a frontal CXR (score ${res.gate_score})` : `refused: ${res.gate_reasons.join(", ")} (score ${res.gate_score})`)));
  facts.append(el("div", {}, `lungs: ${(100 * res.lung_fraction).toFixed(1)}% of the image, estimated mask Dice ` +
    `${res.mask_dice_estimate}`));
  if (res.infection_grade !== undefined && refused) {
    facts.append(el("div", {}, "infection: not shown (the input gate refused the picture)"));
  } else if (res.infection_grade !== undefined) {
    facts.append(el("div", {}, `infection: ${(100 * res.infection_share).toFixed(1)}% of the lungs (right ` +
      `${(100 * res.infection_share_right_lung).toFixed(1)}%, left ${(100 * res.infection_share_left_lung).toFixed(1)}%), ` +
      `grade ${res.infection_grade}`));
  }
  const flags = el("div", {}, "flags: ");
  for (const f of (res.flags ? res.flags.split(";") : [])) flags.append(el("span", { class: "flag" }, f));
  if (!res.flags) flags.append("none");
  facts.append(flags);
  c.append(facts);
  return c;
}

function render() {
  const box = $("results");
  box.replaceChildren(...state.results.map(card));
  $("csv").disabled = $("zip").disabled = state.results.length === 0;
}

function csvText() {
  const cols = ["name"].concat(state.columns.filter((c) => c !== "name" && c !== "path"));
  const cell = (v) => {
    if (v === undefined || v === null) return "";
    const s = Array.isArray(v) ? v.join(";") : String(v);
    return /[",\n]/.test(s) ? '"' + s.replace(/"/g, '""') + '"' : s;
  };
  const rows = state.results.map((r) => cols.map((c) => cell(c === "error" ? r.error : r[c])).join(","));
  return [cols.join(",")].concat(rows).join("\n") + "\n";
}

function download(blob, name) {
  const a = el("a", { href: URL.createObjectURL(blob), download: name });
  document.body.append(a); a.click(); a.remove();
}

// a zip archive with stored (uncompressed) entries: the PNGs are compressed already
const CRC = new Uint32Array(256).map((_, n) => {
  let c = n; for (let k = 0; k < 8; k++) c = c & 1 ? 0xedb88320 ^ (c >>> 1) : c >>> 1; return c >>> 0;
});
function crc32(bytes) {
  let c = 0xffffffff; for (const b of bytes) c = CRC[(c ^ b) & 0xff] ^ (c >>> 8); return (c ^ 0xffffffff) >>> 0;
}
function zip(files) {
  const enc = new TextEncoder(), parts = [], central = [];
  let offset = 0;
  for (const [name, data] of files) {
    const n = enc.encode(name), crc = crc32(data);
    const head = new DataView(new ArrayBuffer(30));
    [[0, 0x04034b50, 4], [4, 20, 2], [14, crc, 4], [18, data.length, 4], [22, data.length, 4], [26, n.length, 2]]
      .forEach(([at, v, size]) => size === 4 ? head.setUint32(at, v, true) : head.setUint16(at, v, true));
    const dir = new DataView(new ArrayBuffer(46));
    [[0, 0x02014b50, 4], [4, 20, 2], [6, 20, 2], [16, crc, 4], [20, data.length, 4], [24, data.length, 4],
     [28, n.length, 2], [42, offset, 4]].forEach(([at, v, size]) => size === 4 ? dir.setUint32(at, v, true) : dir.setUint16(at, v, true));
    parts.push(head, n, data); central.push(dir, n);
    offset += 30 + n.length + data.length;
  }
  const size = central.reduce((s, p) => s + p.byteLength, 0);
  const end = new DataView(new ArrayBuffer(22));
  [[0, 0x06054b50, 4], [8, files.length, 2], [10, files.length, 2], [12, size, 4], [16, offset, 4]]
    .forEach(([at, v, s]) => s === 4 ? end.setUint32(at, v, true) : end.setUint16(at, v, true));
  return new Blob(parts.concat(central, [end]), { type: "application/zip" });
}

function pictureFiles() {
  const out = [], seen = {};
  for (const r of state.results) {
    const stem = (r.name || "image").replace(/\.[^.]*$/, "");
    const k = seen[stem] = (seen[stem] || 0) + 1;
    for (const [kind, url] of Object.entries(r.pictures || {})) {
      const bin = atob(url.split(",")[1]);
      out.push([`${stem}${k > 1 ? "_" + k : ""}_${kind}.png`, Uint8Array.from(bin, (ch) => ch.charCodeAt(0))]);
    }
  }
  return out;
}

$("files").addEventListener("change", (e) => send([...e.target.files]));
const drop = $("drop");
drop.addEventListener("dragover", (e) => { e.preventDefault(); drop.classList.add("over"); });
drop.addEventListener("dragleave", () => drop.classList.remove("over"));
drop.addEventListener("drop", (e) => { e.preventDefault(); drop.classList.remove("over"); send([...e.dataTransfer.files]); });
document.querySelectorAll("input[name=mode]").forEach((r) => r.addEventListener("change", render));
$("csv").addEventListener("click", () => download(new Blob([csvText()], { type: "text/csv" }), "lungcls_results.csv"));
$("zip").addEventListener("click", () => download(zip(pictureFiles()), "lungcls_pictures.zip"));
$("token").addEventListener("change", loadModels);
loadModels().catch((e) => { $("models").textContent = "could not load the models: " + e; });
