// ExpressNet page: photo upload, webcam over a WebSocket, video upload. Talks only to this origin.

const $ = (id) => document.getElementById(id);
const EMOTIONS = ["angry", "disgust", "fear", "happy", "sad", "surprise", "neutral", "contempt"];
const state = { classes: EMOTIONS.slice(0, 7), key: sessionStorage.getItem("expressnet-key") || "" };

function color(emotion) {
  const value = getComputedStyle(document.documentElement).getPropertyValue(`--${emotion}`).trim();
  if (value) return value;
  let h = 0;
  for (const ch of emotion) h = (h * 31 + ch.charCodeAt(0)) % 360;
  return `hsl(${h} 65% 48%)`;
}

function authHeaders() {
  return state.key ? { "X-API-Key": state.key } : {};
}

function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (k === "class") node.className = v;
    else if (k === "style") node.style.cssText = v;
    else node.setAttribute(k, v);
  }
  for (const child of children) node.append(child);
  return node;
}

function pct(p) {
  return `${(p * 100).toFixed(p >= 0.995 ? 0 : 1)}%`;
}

async function errorText(response) {
  try {
    const body = await response.json();
    return typeof body.detail === "string" ? body.detail : JSON.stringify(body.detail);
  } catch {
    return `${response.status} ${response.statusText}`;
  }
}

function showError(id, message) {
  const box = $(id);
  box.textContent = message;
  box.classList.toggle("hidden", !message);
}

// service status and model

async function loadModel() {
  const dot = $("status-dot");
  try {
    const r = await fetch("/v1/models", { headers: authHeaders() });
    if (r.status === 401) {
      $("keybar").classList.remove("hidden");
      $("model-badge").textContent = "API key needed";
      dot.className = "dot bad";
      return;
    }
    if (!r.ok) throw new Error(await errorText(r));
    const info = (await r.json()).loaded;
    state.classes = info.classes;
    $("keybar").classList.add("hidden");
    $("model-badge").textContent = `${info.name} · ${info.backend} · ${info.classes.length} emotions`;
    dot.className = "dot ok";
  } catch (err) {
    $("model-badge").textContent = "service unavailable";
    dot.className = "dot bad";
  }
}

$("api-key-save").addEventListener("click", () => {
  state.key = $("api-key").value.trim();
  sessionStorage.setItem("expressnet-key", state.key);
  loadModel();
});

// tabs

for (const tab of document.querySelectorAll(".tab")) {
  tab.addEventListener("click", () => {
    for (const t of document.querySelectorAll(".tab")) t.classList.toggle("active", t === tab);
    for (const p of document.querySelectorAll(".panel")) p.classList.toggle("active", p.id === `panel-${tab.dataset.tab}`);
    if (tab.dataset.tab !== "webcam") stopCamera();
  });
}

// drawing faces: boxes over an image or video, and one row per face

function drawBoxes(overlay, faces, width, height) {
  overlay.replaceChildren();
  faces.forEach((face, i) => {
    const [x, y, w, h] = face.box;
    const c = color(face.emotion);
    const box = el("div", {
      class: "face-box" + (y / height < 0.08 ? " below" : "") + ((x + w) / width > 0.85 ? " right" : ""),
      style: `--c:${c};left:${(100 * x) / width}%;top:${(100 * y) / height}%;width:${(100 * w) / width}%;height:${(100 * h) / height}%`,
      "data-face": String(i),
      "data-emotion": face.emotion,
    });
    // many (small) faces: numbers only, the list beside has the rest
    const compact = faces.length > 8 || (100 * w) / width < 4;
    const label = el("div", { class: compact ? "face-label compact" : "face-label" });
    label.append(el("span", { class: "num" }, face.track_id != null ? `#${face.track_id}` : `${i + 1}`));
    if (!compact) label.append(`${face.emotion} ${pct(face.probabilities[face.emotion])}`);
    box.append(label);
    overlay.append(box);
  });
}

function faceRows(list, empty, faces, overlay) {
  list.replaceChildren();
  empty.classList.toggle("hidden", faces.length > 0);
  faces.forEach((face, i) => {
    const c = color(face.emotion);
    const row = el("li", { class: "face-row", style: `--c:${c}`, "data-face": String(i), "data-emotion": face.emotion });
    const tag = face.track_id != null ? `#${face.track_id}` : `${i + 1}`;
    row.append(
      el("div", { class: "face-head" },
        el("div", { class: "chip" }, tag),
        el("div", { class: "face-emotion" }, face.emotion),
        el("div", { class: "face-conf" }, `${pct(face.probabilities[face.emotion])} · score ${face.score.toFixed(2)}`)),
    );
    const probs = el("div", { class: "probs" });
    for (const name of state.classes) {
      const p = face.probabilities[name] ?? 0;
      const top = name === face.emotion ? " top" : "";
      probs.append(
        el("span", { class: "name" + top }, name),
        el("span", { class: "track" }, el("span", { class: "fill", style: `width:${(100 * p).toFixed(1)}%;--c:${color(name)}` })),
        el("span", { class: "pct" + top }, pct(p)),
      );
    }
    row.append(probs);
    if (overlay) {
      row.addEventListener("mouseenter", () => highlight(overlay, list, i));
      row.addEventListener("mouseleave", () => highlight(overlay, list, null));
    }
    list.append(row);
  });
}

function highlight(overlay, list, index) {
  for (const box of overlay.children) {
    box.classList.toggle("hot", index !== null && box.dataset.face === String(index));
    box.classList.toggle("dim", index !== null && box.dataset.face !== String(index));
  }
  for (const row of list.children) row.classList.toggle("hot", row.dataset.face === String(index));
}

// photo

const photo = { file: null, url: null };

$("photo-score").addEventListener("input", () => {
  $("photo-score-value").textContent = Number($("photo-score").value).toFixed(2);
});
for (const id of ["photo-tiles", "photo-align"]) $(id).addEventListener("change", () => photo.file && analysePhoto());
$("photo-score").addEventListener("change", () => photo.file && analysePhoto());
$("photo-input").addEventListener("change", (e) => e.target.files[0] && choosePhoto(e.target.files[0]));
$("photo-again").addEventListener("click", () => $("photo-input").click());

const drop = $("dropzone");
for (const kind of ["dragenter", "dragover"]) {
  drop.addEventListener(kind, (e) => { e.preventDefault(); drop.classList.add("over"); });
}
for (const kind of ["dragleave", "drop"]) {
  drop.addEventListener(kind, (e) => { e.preventDefault(); drop.classList.remove("over"); });
}
drop.addEventListener("drop", (e) => e.dataTransfer.files[0] && choosePhoto(e.dataTransfer.files[0]));
document.addEventListener("dragover", (e) => e.preventDefault());
document.addEventListener("drop", (e) => {
  e.preventDefault();
  if ($("panel-photo").classList.contains("active") && e.dataTransfer.files[0]) choosePhoto(e.dataTransfer.files[0]);
});

function choosePhoto(file) {
  photo.file = file;
  if (photo.url) URL.revokeObjectURL(photo.url);
  photo.url = URL.createObjectURL(file);
  const img = $("photo-img");
  // the CSS sizes the photo to fit the column and the window height from its aspect ratio
  img.onload = () => img.style.setProperty("--ar", String(img.naturalWidth / img.naturalHeight));
  img.src = photo.url;
  $("photo-overlay").replaceChildren();
  $("dropzone").classList.add("hidden");
  $("photo-stage").classList.remove("hidden");
  $("photo-again").classList.remove("hidden");
  analysePhoto();
}

async function analysePhoto() {
  showError("photo-error", "");
  $("photo-busy").classList.remove("hidden");
  $("photo-summary").textContent = "Analysing…";
  const form = new FormData();
  form.append("image", photo.file, photo.file.name);
  const query = new URLSearchParams({
    tiles: $("photo-tiles").value,
    min_score: $("photo-score").value,
    align: $("photo-align").checked,
  });
  try {
    const r = await fetch(`/v1/faces?${query}`, { method: "POST", body: form, headers: authHeaders() });
    if (!r.ok) throw new Error(await errorText(r));
    const result = await r.json();
    const { width, height } = result.image;
    drawBoxes($("photo-overlay"), result.faces, width, height);
    faceRows($("photo-faces"), $("photo-empty"), result.faces, $("photo-overlay"));
    const n = result.faces.length;
    $("photo-summary").textContent = `${n} face${n === 1 ? "" : "s"} · ${width}×${height} · ${Math.round(result.timing_ms.total)} ms`;
    document.body.dataset.photoFaces = String(n);
  } catch (err) {
    $("photo-summary").textContent = "";
    showError("photo-error", err.message);
    $("photo-overlay").replaceChildren();
    faceRows($("photo-faces"), $("photo-empty"), [], null);
  } finally {
    $("photo-busy").classList.add("hidden");
  }
}

// webcam: frames as JPEG over a WebSocket, one in flight at a time

const cam = { stream: null, ws: null, canvas: document.createElement("canvas"), last: 0, fps: 0, running: false };

$("cam-toggle").addEventListener("click", () => (cam.running ? stopCamera() : startCamera()));
$("cam-smooth").addEventListener("change", () => {
  if (cam.ws && cam.ws.readyState === WebSocket.OPEN) {
    cam.ws.send(JSON.stringify({ smooth: $("cam-smooth").checked ? 0.5 : null }));
  }
});

async function startCamera() {
  showError("cam-error", "");
  try {
    cam.stream = await navigator.mediaDevices.getUserMedia({ video: { width: { ideal: 960 }, height: { ideal: 540 } }, audio: false });
  } catch (err) {
    showError("cam-error", `Cannot open the camera: ${err.message}`);
    return;
  }
  const video = $("cam-video");
  video.srcObject = cam.stream;
  await video.play();
  $("cam-placeholder").classList.add("hidden");
  const proto = location.protocol === "https:" ? "wss" : "ws";
  const query = new URLSearchParams($("cam-smooth").checked ? { smooth: "0.5" } : {});
  if (state.key) query.set("api_key", state.key);
  cam.ws = new WebSocket(`${proto}://${location.host}/v1/stream?${query}`);
  cam.ws.binaryType = "arraybuffer";
  cam.running = true;
  $("cam-toggle").textContent = "Stop camera";
  cam.ws.onopen = () => sendFrame();
  cam.ws.onmessage = (event) => onCamMessage(JSON.parse(event.data));
  cam.ws.onclose = (event) => {
    if (cam.running) showError("cam-error", `The stream closed (${event.code}${event.reason ? `: ${event.reason}` : ""}).`);
    stopCamera();
  };
}

function stopCamera() {
  cam.running = false;
  if (cam.ws) { cam.ws.onclose = null; cam.ws.close(); cam.ws = null; }
  if (cam.stream) { for (const track of cam.stream.getTracks()) track.stop(); cam.stream = null; }
  $("cam-video").srcObject = null;
  $("cam-overlay").replaceChildren();
  $("cam-placeholder").classList.remove("hidden");
  $("cam-toggle").textContent = "Start camera";
}

function sendFrame() {
  if (!cam.running || !cam.ws || cam.ws.readyState !== WebSocket.OPEN) return;
  const video = $("cam-video");
  if (!video.videoWidth) { setTimeout(sendFrame, 50); return; }
  const scale = Math.min(1, 640 / video.videoWidth);
  cam.canvas.width = Math.round(video.videoWidth * scale);
  cam.canvas.height = Math.round(video.videoHeight * scale);
  cam.canvas.getContext("2d").drawImage(video, 0, 0, cam.canvas.width, cam.canvas.height);
  cam.sent = performance.now();
  cam.canvas.toBlob((blob) => blob && cam.ws && cam.ws.send(blob), "image/jpeg", 0.8);
}

function onCamMessage(message) {
  if (message.type === "frame") {
    const now = performance.now();
    if (cam.last) cam.fps = cam.fps ? 0.8 * cam.fps + 0.2 * (1000 / (now - cam.last)) : 1000 / (now - cam.last);
    cam.last = now;
    $("cam-fps").textContent = cam.fps.toFixed(1);
    $("cam-latency").textContent = String(Math.round(now - cam.sent));
    drawBoxes($("cam-overlay"), message.faces, message.image.width, message.image.height);
    faceRows($("cam-faces"), $("cam-empty"), message.faces, null);
    document.body.dataset.camFrames = String(message.frame + 1);
    sendFrame();
  } else if (message.type === "error") {
    if (message.status === 503) setTimeout(sendFrame, 1000 * (message.retry_after || 1));
    else { showError("cam-error", message.detail); sendFrame(); }
  }
}

// video: upload with progress, NDJSON lines as they are computed, table, timeline, CSV

const video = { frames: [], name: "", url: null };
$("video-input").addEventListener("change", (e) => e.target.files[0] && uploadVideo(e.target.files[0]));

function uploadVideo(file) {
  showError("video-error", "");
  video.frames = [];
  video.name = file.name;
  $("video-empty").classList.add("hidden");
  $("video-progress").classList.remove("hidden");
  $("video-csv").classList.add("hidden");
  $("video-rows").replaceChildren();
  $("video-timeline").classList.add("hidden");
  $("video-table-wrap").classList.remove("hidden");
  $("video-name").textContent = file.name;
  const bar = $("video-bar");
  bar.classList.remove("done");
  const query = new URLSearchParams({ every: $("video-every").value });
  if ($("video-smooth").checked) query.set("smooth", "0.5");
  const xhr = new XMLHttpRequest();
  xhr.open("POST", `/v1/videos?${query}`);
  xhr.setRequestHeader("Content-Type", file.type || "application/octet-stream");
  for (const [k, v] of Object.entries(authHeaders())) xhr.setRequestHeader(k, v);
  let seen = 0;
  xhr.upload.onprogress = (e) => {
    if (!e.lengthComputable) return;
    bar.style.width = `${(50 * e.loaded) / e.total}%`;
    $("video-state").textContent = `Uploading ${Math.round((100 * e.loaded) / e.total)}%`;
  };
  xhr.onprogress = () => {
    if (xhr.status !== 200) return;
    const text = xhr.responseText;
    const end = text.lastIndexOf("\n") + 1;
    for (const line of text.slice(seen, end).split("\n")) if (line) addFrame(JSON.parse(line));
    seen = end;
    const expected = Number(xhr.getResponseHeader("X-Expected-Frames")) || 0;
    const done = video.frames.length;
    bar.style.width = `${50 + (expected ? (50 * done) / expected : 25)}%`;
    $("video-state").textContent = expected ? `Processing frame ${done} of ${expected}` : `Processed ${done} frames`;
  };
  xhr.onload = async () => {
    if (xhr.status !== 200) {
      let message = `${xhr.status} ${xhr.statusText}`;
      try { message = JSON.parse(xhr.responseText).detail; } catch { /* not JSON */ }
      showError("video-error", message);
      $("video-progress").classList.add("hidden");
      $("video-table-wrap").classList.add("hidden");
      $("video-empty").classList.remove("hidden");
      return;
    }
    xhr.onprogress();
    bar.style.width = "100%";
    bar.classList.add("done");
    const faces = video.frames.reduce((n, f) => n + f.faces.length, 0);
    $("video-state").textContent = `Done · ${video.frames.length} frames · ${faces} faces`;
    finishVideo();
  };
  xhr.onerror = () => showError("video-error", "The upload failed (connection lost).");
  xhr.send(file);
  $("video-state").textContent = "Uploading…";
}

const MAX_TABLE_ROWS = 400;

function addFrame(frame) {
  video.frames.push(frame);
  const body = $("video-rows");
  for (const face of frame.faces) {
    if (body.children.length >= MAX_TABLE_ROWS) break;
    const p = face.probabilities[face.emotion];
    body.append(
      el("tr", {},
        el("td", {}, String(frame.frame)),
        el("td", {}, `${frame.time_s.toFixed(2)} s`),
        el("td", {}, face.track_id != null ? `#${face.track_id}` : "–"),
        el("td", {}, el("span", { class: "emo", style: `--c:${color(face.emotion)}` }, el("i"), face.emotion)),
        el("td", {}, pct(p)),
        el("td", {}, face.box.join(", "))),
    );
  }
  const rows = video.frames.reduce((n, f) => n + f.faces.length, 0);
  $("video-note").textContent = rows > MAX_TABLE_ROWS ? `Showing the first ${MAX_TABLE_ROWS} of ${rows} rows; the CSV has them all.` : "";
}

function finishVideo() {
  // the API's CSV columns (expressnet predict --csv), one row per face
  const columns = ["source", "frame", "time_s", "face_detected", "face", "track_id", "x", "y", "w", "h", "score", "emotion", ...state.classes.map((c) => `p_${c}`)];
  const lines = [columns.join(",")];
  const quote = (v) => (/[",\n]/.test(v) ? `"${v.replace(/"/g, '""')}"` : v);
  for (const frame of video.frames) {
    frame.faces.forEach((face, i) => {
      const [x, y, w, h] = face.box;
      const values = [video.name, frame.frame, frame.time_s.toFixed(4), face.score > 0 ? "True" : "False", i, face.track_id ?? "", x, y, w, h, face.score.toFixed(4), face.emotion,
        ...state.classes.map((c) => (face.probabilities[c] ?? 0).toFixed(6))];
      lines.push(values.map((v) => quote(String(v))).join(","));
    });
  }
  if (video.url) URL.revokeObjectURL(video.url);
  video.url = URL.createObjectURL(new Blob([lines.join("\n") + "\n"], { type: "text/csv" }));
  const link = $("video-csv");
  link.href = video.url;
  link.download = `${video.name.replace(/\.[^.]+$/, "")}_faces.csv`;
  link.classList.remove("hidden");
  drawTimeline();
}

function drawTimeline() {
  const box = $("video-timeline");
  box.replaceChildren();
  const tracks = new Map();
  for (const frame of video.frames) {
    for (const face of frame.faces) {
      if (!tracks.has(face.track_id)) tracks.set(face.track_id, []);
      tracks.get(face.track_id).push([frame.frame, face.emotion]);
    }
  }
  if (!tracks.size) return;
  const last = video.frames[video.frames.length - 1].frame + 1;
  const step = video.frames.length > 1 ? video.frames[1].frame - video.frames[0].frame : 1;
  for (const [id, points] of [...tracks.entries()].slice(0, 8)) {
    const canvas = el("canvas", { width: "1000", height: "16" });
    const ctx = canvas.getContext("2d");
    for (const [frame, emotion] of points) {
      ctx.fillStyle = color(emotion);
      ctx.fillRect((1000 * frame) / last, 0, Math.max(1, (1000 * step) / last), 16);
    }
    box.append(el("div", { class: "timeline-row" }, el("span", {}, `Track #${id}`), canvas));
  }
  const legend = el("div", { class: "legend" });
  for (const name of state.classes) legend.append(el("span", { style: `--c:${color(name)}` }, el("i"), name));
  box.append(legend);
  box.classList.remove("hidden");
}

loadModel();
