// stemdaq live view: state over server-sent events, maps over a WebSocket, geometry by PUT.
// Plain JavaScript, no build step, nothing loaded from the internet.
"use strict";

const API = "/api/v1";
const UNIT_NM = { m: 1e9, um: 1e3, nm: 1, angstrom: 0.1 };
const FINAL = ["completed", "completed_with_gaps", "aborted", "failed"];

// ---- state visible to tests: what the page drew and from which data ----------------------
const live = {
  header: null,      // last WebSocket header
  maps: {},          // name -> Float32Array (n_m * n_k), NaN where not filled
  scanShape: null,
  drawn: null,       // {name, lo, hi} of the image on the canvas
  status: null,      // GET /live
  info: null,        // latest AcquisitionInfo
  messages: 0,
};
window.stemdaqLive = live;

const $ = (id) => document.getElementById(id);

(function drawColorbar() {
  const c = $("cbar"), ctx = c.getContext("2d");
  const img = ctx.createImageData(256, 1);
  for (let i = 0; i < 256; i++) {
    img.data.set([LUT[i * 3], LUT[i * 3 + 1], LUT[i * 3 + 2], 255], i * 4);
  }
  for (let y = 0; y < c.height; y++) ctx.putImageData(img, 0, y);
})();

// ---- HTTP with the token -----------------------------------------------------------------
function token() { return localStorage.getItem("stemdaq-token") || ""; }
function askToken() {
  const t = window.prompt("Bearer token of the stemdaq service (STEMDAQ_API_TOKEN):", token());
  if (t !== null) localStorage.setItem("stemdaq-token", t.trim());
  return t !== null;
}
$("token-btn").onclick = () => { if (askToken()) connectMaps(); };

async function api(path, options = {}, retry = true) {
  const headers = Object.assign({}, options.headers || {});
  if (token()) headers.Authorization = "Bearer " + token();
  const r = await fetch(API + path, Object.assign({}, options, { headers }));
  if (r.status === 401 && retry && askToken()) return api(path, options, false);
  return r;
}

async function detail(r) {
  try { const j = await r.json(); return j.detail || JSON.stringify(j); } catch (e) { return r.statusText; }
}

function say(text) { $("message").textContent = text || ""; }

// ---- acquisition control -----------------------------------------------------------------
$("start").onclick = async () => {
  say("");
  const body = {};
  const shape = $("scan-shape").value.trim();
  if (shape) body.scan_shape = shape;
  const r = await api("/acquisitions", {
    method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify(body),
  });
  if (!r.ok) { say(`start refused (${r.status}): ${await detail(r)}`); return; }
  showInfo(await r.json());
};
async function command(what) {
  const info = live.info;
  if (!info) return;
  const r = await api(`/acquisitions/${encodeURIComponent(info.id)}/${what}`, { method: "POST" });
  if (!r.ok) say(`${what} refused (${r.status}): ${await detail(r)}`);
}
$("stop").onclick = () => command("stop");
$("abort").onclick = () => command("abort");

function showInfo(info) {
  if (!info) return;
  live.info = info;
  const st = $("state");
  st.textContent = info.state.replaceAll("_", " ");
  st.className = "badge state-" + info.state;
  st.dataset.state = info.state;
  $("acq-id").textContent = info.id;
  const pct = info.frames_expected ? (100 * info.frames_written) / info.frames_expected : 0;
  $("progress-bar").style.width = pct.toFixed(1) + "%";
  $("progress-pct").textContent = Math.floor(pct) + " %";
  $("frames").textContent = `${info.frames_written} / ${info.frames_expected}`;
  $("rate").textContent = FINAL.includes(info.state) ? "–"
    : `${Math.round(info.frames_per_second)} frames/s, ${info.mb_per_second.toFixed(1)} MB/s`;
  $("dropped").textContent = String(info.frames_dropped);
  $("dropped").style.color = info.frames_dropped ? "var(--bad)" : "";
  $("eta").textContent = info.eta_seconds == null || FINAL.includes(info.state) ? "–" : info.eta_seconds.toFixed(1) + " s";
  const running = !FINAL.includes(info.state);
  $("start").disabled = running;
  $("stop").disabled = !running;
  $("abort").disabled = !running;
  if (info.error) say(info.error);
  if (FINAL.includes(info.state)) loadHistory();
}

// server-sent events, read with fetch so that the token can go in a header
async function followEvents() {
  for (;;) {
    try {
      const r = await api("/events", {}, false);
      if (!r.ok || !r.body) throw new Error(String(r.status));
      const reader = r.body.getReader();
      const dec = new TextDecoder();
      let buf = "";
      for (;;) {
        const { value, done } = await reader.read();
        if (done) break;
        buf += dec.decode(value, { stream: true });
        let cut;
        while ((cut = buf.indexOf("\n\n")) >= 0) {
          const block = buf.slice(0, cut); buf = buf.slice(cut + 2);
          const data = block.split("\n").filter((l) => l.startsWith("data:")).map((l) => l.slice(5)).join("\n");
          if (data) showInfo(JSON.parse(data));
        }
      }
    } catch (e) { /* reconnect below */ }
    await new Promise((ok) => setTimeout(ok, 2000));
  }
}

async function loadHistory() {
  const r = await api("/acquisitions?limit=8", {}, false);
  if (!r.ok) return;
  const page = await r.json();
  const rows = page.items.map((a) => {
    const tr = document.createElement("tr");
    const cells = [a.id, a.state.replaceAll("_", " "), `${a.frames_written} / ${a.frames_expected}`,
      (a.finished_at || "").replace("T", " ").slice(0, 19)];
    for (const c of cells) { const td = document.createElement("td"); td.textContent = c; tr.appendChild(td); }
    const path = document.createElement("td"); path.className = "path";
    const link = document.createElement("a"); link.href = a.file_uri; link.textContent = a.file_path;
    path.appendChild(link); tr.appendChild(path);
    const meta = document.createElement("td");
    const m = document.createElement("a");
    m.href = `${API}/acquisitions/${encodeURIComponent(a.id)}/metadata`; m.textContent = "NeXus tree";
    m.target = "_blank"; meta.appendChild(m); tr.appendChild(meta);
    return tr;
  });
  $("history").replaceChildren(...rows);
}

// ---- the maps over the WebSocket -----------------------------------------------------------
let socket = null;
function connectMaps() {
  if (socket) socket.close();
  const proto = location.protocol === "https:" ? "wss:" : "ws:";
  const q = token() ? "?token=" + encodeURIComponent(token()) : "";
  socket = new WebSocket(`${proto}//${location.host}${API}/live/ws${q}`);
  socket.binaryType = "arraybuffer";
  socket.onopen = () => { $("conn").textContent = "maps: live"; };
  socket.onclose = () => {
    $("conn").textContent = "maps: reconnecting";
    setTimeout(connectMaps, 2000);
  };
  socket.onmessage = (ev) => onUpdate(ev.data);
}

function onUpdate(buffer) {
  const magic = new TextDecoder().decode(new Uint8Array(buffer, 0, 4));
  if (magic !== "SDLV") return;
  const n = new DataView(buffer).getUint32(4, true);
  const header = JSON.parse(new TextDecoder().decode(new Uint8Array(buffer, 8, n)));
  const data = new Float32Array(buffer, 8 + n);
  const [nm, nk] = header.scan_shape;
  if (header.full || !live.scanShape || live.scanShape[0] !== nm || live.scanShape[1] !== nk) {
    live.maps = {};
    for (const name of header.maps) live.maps[name] = new Float32Array(nm * nk).fill(NaN);
    live.scanShape = [nm, nk];
    loadStatus();
  }
  const rows = header.rows;
  header.maps.forEach((name, i) => {
    const target = live.maps[name];
    rows.forEach((row, j) => {
      target.set(data.subarray((i * rows.length + j) * nk, (i * rows.length + j + 1) * nk), row * nk);
    });
  });
  live.header = header;
  live.messages += 1;
  $("coverage").textContent = `${header.filled} of ${header.positions} positions` +
    (header.finished ? " (final)" : "");
  if (!dragging) showGeometry(header.detectors);
  drawMap();
  schedulePattern();
}

async function loadStatus() {
  const r = await api("/live", {}, false);
  if (r.ok) { live.status = await r.json(); drawMap(); }
}

function drawMap() {
  const name = $("map-select").value;
  const values = live.maps[name];
  if (!values || !live.scanShape) return;
  const [nm, nk] = live.scanShape;
  const [lo, hi] = limits(values);
  const img = toImageData(values, nk, nm, lo, hi);
  const canvas = $("map-canvas"), ctx = canvas.getContext("2d");
  const scale = Math.max(1, Math.floor(512 / Math.max(nm, nk)));
  canvas.width = nk * scale; canvas.height = nm * scale;
  const off = new OffscreenCanvas(nk, nm);
  off.getContext("2d").putImageData(img, 0, 0);
  ctx.imageSmoothingEnabled = false;
  ctx.drawImage(off, 0, 0, canvas.width, canvas.height);
  drawScaleBar(ctx, canvas.width, canvas.height, nk);
  $("cmin").textContent = fmt(lo); $("cmax").textContent = fmt(hi);
  live.drawn = { name, lo, hi, width: nk, height: nm, scale };
}

function drawScaleBar(ctx, width, height, nk) {
  const st = live.status;
  if (!st) return;
  const stepNm = st.scan_step[1] * (UNIT_NM[st.scan_unit] || 1);
  const fieldNm = stepNm * nk;
  const len = niceLength(fieldNm / 4);
  const px = (len / fieldNm) * width;
  const x = width - px - 14, y = height - 16;
  ctx.fillStyle = "rgba(0,0,0,0.55)";
  ctx.fillRect(x - 8, y - 20, px + 16, 30);
  ctx.fillStyle = "#fff";
  ctx.fillRect(x, y, px, 4);
  ctx.font = "bold 13px system-ui, sans-serif";
  ctx.textAlign = "center";
  const label = len >= 1000 ? `${len / 1000} µm` : `${len} nm`;
  ctx.fillText(label, x + px / 2, y - 6);
  live.scaleBar = { nm: len, pixels: px };
}
$("map-select").onchange = drawMap;

// ---- the summed pattern and the detector geometry ----------------------------------------
let pattern = null;     // {values: Float64Array, ny, nx}
let patternTimer = null;
let patternVersion = -1;
function schedulePattern() {
  if (patternTimer) return;
  patternTimer = setTimeout(async () => {
    patternTimer = null;
    if (!live.header || live.header.version === patternVersion) return;
    patternVersion = live.header.version;
    await loadPattern();
  }, 700);
}

async function loadPattern() {
  const r = await api("/live/sum_pattern.npy", {}, false);
  if (!r.ok) return;
  const { shape, values } = parseNpy(await r.arrayBuffer());
  pattern = { ny: shape[0], nx: shape[1], values };
  drawPattern();
}

function geometry() {
  return {
    cx: parseFloat($("g-cx").value), cy: parseFloat($("g-cy").value), bf: parseFloat($("g-bf").value),
    inner: parseFloat($("g-inner").value), outer: parseFloat($("g-outer").value),
  };
}
function showGeometry(d) {
  if (!d) return;
  $("g-cx").value = d.center[0].toFixed(1); $("g-cy").value = d.center[1].toFixed(1);
  $("g-bf").value = d.bf_radius.toFixed(1); $("g-inner").value = d.adf_inner.toFixed(1);
  $("g-outer").value = d.adf_outer.toFixed(1);
  drawPattern();
}

function drawPattern() {
  const canvas = $("pattern-canvas"), ctx = canvas.getContext("2d");
  if (!pattern) return;
  const { ny, nx, values } = pattern;
  const logv = new Float64Array(values.length);
  for (let i = 0; i < values.length; i++) logv[i] = Math.log10(1 + Math.max(0, values[i]));
  const [lo, hi] = limits(logv);
  const off = new OffscreenCanvas(nx, ny);
  off.getContext("2d").putImageData(toImageData(logv, nx, ny, lo, hi), 0, 0);
  const s = Math.min(384 / nx, 384 / ny);
  canvas.width = Math.round(nx * s); canvas.height = Math.round(ny * s);
  ctx.imageSmoothingEnabled = false;
  ctx.drawImage(off, 0, 0, canvas.width, canvas.height);
  const g = geometry();
  if (![g.cx, g.cy, g.bf, g.inner, g.outer].every(Number.isFinite)) return;
  const X = (x) => (x + 0.5) * s, Y = (y) => (y + 0.5) * s;
  ctx.lineWidth = 2;
  ctx.strokeStyle = "#ffffff";
  circle(ctx, X(g.cx), Y(g.cy), g.bf * s);
  ctx.strokeStyle = "#ff8c42";
  circle(ctx, X(g.cx), Y(g.cy), g.inner * s);
  circle(ctx, X(g.cx), Y(g.cy), g.outer * s);
  ctx.strokeStyle = "#ffffff";
  ctx.beginPath();
  ctx.moveTo(X(g.cx) - 8, Y(g.cy)); ctx.lineTo(X(g.cx) + 8, Y(g.cy));
  ctx.moveTo(X(g.cx), Y(g.cy) - 8); ctx.lineTo(X(g.cx), Y(g.cy) + 8);
  ctx.stroke();
  pattern.scale = s;
}
function circle(ctx, x, y, r) { ctx.beginPath(); ctx.arc(x, y, Math.max(0, r), 0, 2 * Math.PI); ctx.stroke(); }

// drag: the centre (near the cross) or the nearest circle
let dragging = null;
$("pattern-canvas").addEventListener("pointerdown", (ev) => {
  if (!pattern || !pattern.scale) return;
  const g = geometry(), s = pattern.scale;
  const x = ev.offsetX / s - 0.5, y = ev.offsetY / s - 0.5;
  const r = Math.hypot(x - g.cx, y - g.cy);
  const parts = [["center", r], ["g-bf", Math.abs(r - g.bf)], ["g-inner", Math.abs(r - g.inner)],
    ["g-outer", Math.abs(r - g.outer)]];
  parts.sort((a, b) => a[1] - b[1]);
  dragging = r < 3 ? "center" : parts.filter((p) => p[0] !== "center")[0][0];
  ev.target.setPointerCapture(ev.pointerId);
});
$("pattern-canvas").addEventListener("pointermove", (ev) => {
  if (!dragging) return;
  const s = pattern.scale, g = geometry();
  const x = ev.offsetX / s - 0.5, y = ev.offsetY / s - 0.5;
  if (dragging === "center") { $("g-cx").value = x.toFixed(1); $("g-cy").value = y.toFixed(1); }
  else $(dragging).value = Math.hypot(x - g.cx, y - g.cy).toFixed(1);
  drawPattern();
});
$("pattern-canvas").addEventListener("pointerup", () => { if (dragging) { dragging = null; applyGeometry(); } });

async function applyGeometry() {
  const g = geometry();
  const body = { center: [g.cx, g.cy], bf_radius: g.bf, adf_inner: g.inner, adf_outer: g.outer };
  const r = await api("/live/detectors", {
    method: "PUT", headers: { "Content-Type": "application/json" }, body: JSON.stringify(body),
  });
  if (!r.ok) { say(`geometry refused (${r.status}): ${await detail(r)}`); return; }
  say("");
  showGeometry(await r.json());
}
$("geometry").addEventListener("submit", (ev) => { ev.preventDefault(); applyGeometry(); });
for (const id of ["g-cx", "g-cy", "g-bf", "g-inner", "g-outer"]) $(id).addEventListener("input", drawPattern);

// ---- start ----------------------------------------------------------------------------------
(async function main() {
  const r = await api("/status", {}, true);
  if (r.ok) { const s = await r.json(); if (s.acquisition) showInfo(s.acquisition); }
  loadHistory();
  connectMaps();
  followEvents();
  loadStatus();
})();
