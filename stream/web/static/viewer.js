// SonoFlow browser viewer. Protocol (see sonoflow/stream/web/server.py):
// each binary message = uint32 big-endian n | n bytes JSON metadata | JPEG overlay.
// After drawing a frame the page sends {"ack": seq}; the server sends the next (newest)
// frame only then, so a slow page never accumulates a backlog.
"use strict";

const TOKEN = new URLSearchParams(location.search).get("token") || "";
// Okabe-Ito colours, the same as the overlay (sonoflow/stream/render/palette.py)
const CLASS_COLOURS = {
  cyst: "#56B4E9", hemangioma: "#009E73", metastasis: "#D55E00", hcc: "#CC79A7",
  other: "#F0E442", fat_sparing: "#F0E442",
};
const canvas = document.getElementById("overlay");
const ctx = canvas.getContext("2d");
const $ = (id) => document.getElementById(id);
// state the page exposes for tests and the benchmark (read-only for them)
window.sonoflow = { shown: 0, lastSeq: null, lesionRows: 0, ended: null, state: "connecting" };

function setStatus(state, text) {
  window.sonoflow.state = state;
  const el = $("status");
  el.dataset.state = state;
  el.textContent = text;
}

function fmt(value, digits, unit) {
  return value === null || value === undefined ? "-" : value.toFixed(digits) + (unit || "");
}

function renderLesions(rows) {
  const body = document.querySelector("#lesions tbody");
  const fresh = document.createElement("tbody");
  for (const r of rows.slice().sort((a, b) => a.lesion_id - b.lesion_id)) {
    if (r.confirmed === false) continue;
    const tr = document.createElement("tr");
    const cells = [
      "#" + r.lesion_id, r["class"], fmt(r.long_axis_mm, 1, " mm"), fmt(r.malignancy, 2),
      String(r.n_frames),
    ];
    cells.forEach((text, i) => {
      const td = document.createElement("td");
      if (i === 1) {
        const sw = document.createElement("span");
        sw.className = "swatch";
        sw.style.background = CLASS_COLOURS[text] || "#E69F00";
        td.appendChild(sw);
      }
      if (i >= 2) td.className = "num";
      td.appendChild(document.createTextNode(text));
      tr.appendChild(td);
    });
    fresh.appendChild(tr);
  }
  body.replaceWith(fresh);
  window.sonoflow.lesionRows = fresh.rows.length;
}

function showMeta(meta) {
  $("stream").textContent = meta.stream_id;
  $("frame").textContent = meta.frame_index + " (seq " + meta.seq + ")";
  $("fps").textContent = fmt(meta.fps, 1);
  $("e2e").textContent = fmt(meta.e2e_ms, 1, " ms");
  $("age").textContent = fmt(meta.age_ms_p50, 1, " ms");
  $("drops").textContent = meta.drops + " / " + meta.skipped;
  $("shown").textContent = String(window.sonoflow.shown);
  const q = meta.quality;
  $("quality").textContent = q ? q.score.toFixed(2) + (q.keyframe ? "" : " (not analysed: " +
    (q.reason || q.flags.join(", ")) + ")") : "-";
  $("lirads").textContent = meta.lirads || "--";
  $("synthetic").hidden = !meta.synthetic_models;
  renderLesions(meta.lesions);
}

function parse(buffer) {
  const n = new DataView(buffer).getUint32(0, false);
  const meta = JSON.parse(new TextDecoder().decode(new Uint8Array(buffer, 4, n)));
  const jpeg = new Blob([new Uint8Array(buffer, 4 + n)], { type: "image/jpeg" });
  return { meta, jpeg };
}

function connect() {
  const ws = new WebSocket("ws://" + location.host + "/ws?token=" + encodeURIComponent(TOKEN));
  ws.binaryType = "arraybuffer";
  ws.onopen = () => setStatus("live", "live");
  ws.onmessage = async (event) => {
    if (typeof event.data === "string") {
      const msg = JSON.parse(event.data);
      if (msg.end) {
        window.sonoflow.ended = msg.end;
        const finals = Object.values(msg.lirads || {}).filter((c) => c);
        if (finals.length) $("lirads").textContent = finals.join(", ") + " (final)";
        setStatus("ended", "stream ended (" + msg.end + ")");
      }
      return;
    }
    const { meta, jpeg } = parse(event.data);
    const bitmap = await createImageBitmap(jpeg);
    requestAnimationFrame(() => {
      if (canvas.width !== bitmap.width || canvas.height !== bitmap.height) {
        canvas.width = bitmap.width;
        canvas.height = bitmap.height;
      }
      ctx.drawImage(bitmap, 0, 0);
      bitmap.close();
      window.sonoflow.shown += 1;
      window.sonoflow.lastSeq = meta.seq;
      if (ws.readyState === WebSocket.OPEN) ws.send(JSON.stringify({ ack: meta.seq }));
      showMeta(meta);
    });
  };
  ws.onclose = () => {
    if (window.sonoflow.ended) return;
    setStatus("closed", "disconnected, retrying");
    setTimeout(connect, 1000);
  };
}

connect();
