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

// drawing faces: boxes (and, with geometry, pose axes and a gaze arrow) over an image or video; a list of faces

// SVG's namespace, as the HTML parser gives it (the assets name no URL)
const SVG = Object.assign(document.createElement("div"), { innerHTML: "<svg></svg>" }).firstChild.namespaceURI;
const COMPACT_LIST = 4; // more faces than this: one line per face, details on click

function svg(tag, attrs = {}) {
  const node = document.createElementNS(SVG, tag);
  for (const [k, v] of Object.entries(attrs)) node.setAttribute(k, String(v));
  return node;
}

function matmul(a, b) {
  return a.map((row) => b[0].map((_, j) => row.reduce((sum, v, k) => sum + v * b[k][j], 0)));
}

// the head-to-camera rotation R = Rz(roll) Ry(-yaw) Rx(-pitch) of docs/geometry.md (degrees; camera axes: x right,
// y down, z away from the camera; head axes: x to the person's left, y down their face, z to the back of the head)
function headRotation({ yaw, pitch, roll }) {
  const r = Math.PI / 180;
  const [y, p, z] = [-yaw * r, -pitch * r, roll * r];
  const rx = [[1, 0, 0], [0, Math.cos(p), -Math.sin(p)], [0, Math.sin(p), Math.cos(p)]];
  const ry = [[Math.cos(y), 0, Math.sin(y)], [0, 1, 0], [-Math.sin(y), 0, Math.cos(y)]];
  const rz = [[Math.cos(z), -Math.sin(z), 0], [Math.sin(z), Math.cos(z), 0], [0, 0, 1]];
  return matmul(rz, matmul(ry, rx));
}

// a unit direction from (yaw, pitch) degrees, signs as the head pose: (0, 0) looks into the camera (-z)
function gazeDirection(yaw, pitch) {
  const r = Math.PI / 180;
  return [Math.sin(yaw * r) * Math.cos(pitch * r), -Math.sin(pitch * r), -Math.cos(yaw * r) * Math.cos(pitch * r)];
}

// where a face's pose axes and gaze arrow go, in image pixels: axes from the nose tip (BlazeFace keypoint 2, else
// the box centre), half a box long; the gaze arrow from between the eyes, one box long (an orthographic view)
function geometryLines(face) {
  const [x, y, w, h] = face.box;
  const k = face.landmarks;
  const nose = k ? k[2] : [x + w / 2, y + h / 2];
  const eyes = k ? [(k[0][0] + k[1][0]) / 2, (k[0][1] + k[1][1]) / 2] : nose;
  const R = headRotation(face.pose);
  const column = (j, sign) => [sign * R[0][j], sign * R[1][j]];
  const axes = { x: column(0, 1), y: column(1, -1), z: column(2, -1) }; // the person's left, up, forward (nose)
  const lines = {};
  for (const [name, [dx, dy]] of Object.entries(axes)) lines[name] = [nose, [nose[0] + 0.5 * w * dx, nose[1] + 0.5 * w * dy]];
  if (face.gaze) {
    const [dx, dy] = gazeDirection(face.gaze.yaw, face.gaze.pitch);
    lines.gaze = [eyes, [eyes[0] + w * dx, eyes[1] + w * dy]];
  }
  return lines;
}

function drawGeometry(layer, face, i) {
  const lines = geometryLines(face);
  const axes = svg("g", { class: "pose-axes", "data-face": String(i) });
  for (const name of ["x", "y", "z"]) {
    const [[x1, y1], [x2, y2]] = lines[name];
    axes.append(svg("line", { class: `axis axis-${name}`, x1, y1, x2, y2 }));
  }
  layer.append(axes);
  if (!lines.gaze) return;
  const [[x1, y1], [x2, y2]] = lines.gaze;
  const arrow = svg("g", { class: "gaze-arrow" + (face.looking_at_camera ? " at-camera" : ""), "data-face": String(i) });
  const length = Math.hypot(x2 - x1, y2 - y1) || 1;
  const [ux, uy] = [(x2 - x1) / length, (y2 - y1) / length];
  const head = Math.max(3, 0.18 * face.box[2]);
  const tip = `${x2},${y2} ${x2 - head * ux + 0.5 * head * uy},${y2 - head * uy - 0.5 * head * ux} ${x2 - head * ux - 0.5 * head * uy},${y2 - head * uy + 0.5 * head * ux}`;
  arrow.append(svg("line", { class: "gaze", x1, y1, x2, y2 }), svg("polygon", { class: "gaze-head", points: tip }));
  layer.append(arrow);
}

function drawBoxes(overlay, faces, width, height) {
  overlay.replaceChildren();
  const compact = faces.length > 8;
  const layer = svg("svg", { class: "geometry", viewBox: `0 0 ${width} ${height}`, preserveAspectRatio: "none" });
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
    const label = el("div", { class: compact || (100 * w) / width < 4 ? "face-label short" : "face-label" });
    label.append(el("span", { class: "num" }, face.track_id != null ? `#${face.track_id}` : `${i + 1}`));
    label.append(el("span", { class: "text" }, `${face.emotion} ${pct(face.probabilities[face.emotion])}`));
    box.append(label);
    overlay.append(box);
    if (face.pose) drawGeometry(layer, face, i);
  });
  if (layer.childElementCount) overlay.append(layer);
  layoutLabels(overlay);
}

// labels must not cover each other (a narrow screen, a crowd): first numbers only, then a label that still
// overlaps one placed before it goes below its box, and failing that is hidden (the face keeps its box and row)
function layoutLabels(overlay) {
  const labels = [...overlay.querySelectorAll(".face-label")];
  for (const label of labels) label.classList.remove("auto-short", "gone");
  for (const box of overlay.querySelectorAll(".face-box.flip")) box.classList.remove("flip");
  if (!overlay.clientWidth || labels.length < 2) return;
  const rects = () => labels.map((l) => l.getBoundingClientRect());
  const hit = (a, b) => a.left < b.right - 0.5 && b.left < a.right - 0.5 && a.top < b.bottom - 0.5 && b.top < a.bottom - 0.5;
  const anyHit = (rs) => rs.some((a, i) => rs.some((b, j) => j > i && hit(a, b)));
  if (!anyHit(rects())) return;
  for (const label of labels) label.classList.add("auto-short");
  const placed = [];
  for (const label of labels) {
    let rect = label.getBoundingClientRect();
    if (placed.some((p) => hit(rect, p))) {
      label.parentElement.classList.add("flip");
      rect = label.getBoundingClientRect();
      if (placed.some((p) => hit(rect, p))) {
        label.parentElement.classList.remove("flip");
        label.classList.add("gone");
        continue;
      }
    }
    placed.push(rect);
  }
}

function degrees(v) {
  const whole = Math.round(v);
  return `${whole < 0 ? "−" : ""}${Math.abs(whole)}°`;
}

function geometryCard(face) {
  const rows = [
    ["Head", `yaw ${degrees(face.pose.yaw)} · pitch ${degrees(face.pose.pitch)} · roll ${degrees(face.pose.roll)}`],
  ];
  if (face.gaze) rows.push(["Gaze", `yaw ${degrees(face.gaze.yaw)} · pitch ${degrees(face.gaze.pitch)}`]);
  rows.push(
    ["Eyes open", `right ${face.eyes.openness_right.toFixed(2)} · left ${face.eyes.openness_left.toFixed(2)}`],
    ["Mouth open", face.mouth_openness.toFixed(2)],
    ["Camera", face.looking_at_camera ? "looking at it" : "looking away"],
  );
  const list = el("dl", { class: "geo" });
  for (const [name, value] of rows) list.append(el("dt", {}, name), el("dd", {}, value));
  return list;
}

function faceRows(list, empty, faces, overlay) {
  list.replaceChildren();
  empty.classList.toggle("hidden", faces.length > 0);
  const compact = faces.length > COMPACT_LIST;
  list.classList.toggle("compact", compact);
  faces.forEach((face, i) => {
    const c = color(face.emotion);
    const row = el("li", { class: "face-row", style: `--c:${c}`, "data-face": String(i), "data-emotion": face.emotion });
    const tag = face.track_id != null ? `#${face.track_id}` : `${i + 1}`;
    const p = face.probabilities[face.emotion];
    const head = el("div", { class: "face-head" },
      el("div", { class: "chip" }, tag),
      el("div", { class: "face-emotion" }, face.emotion),
      el("span", { class: "mini" }, el("span", { class: "fill", style: `width:${(100 * p).toFixed(1)}%;--c:${c}` })),
      el("div", { class: "face-conf" }, compact ? pct(p) : `${pct(p)} · score ${face.score.toFixed(2)}`));
    if (face.pose && compact) {  // a card says it in its geometry lines
      head.append(el("span", { class: "badge" + (face.looking_at_camera ? " on" : ""), title: face.looking_at_camera ? "looking at the camera" : "looking away" },
        face.looking_at_camera ? "at camera" : "away"));
    }
    row.append(head);
    const details = el("div", { class: "details" });
    const probs = el("div", { class: "probs" });
    for (const name of state.classes) {
      const q = face.probabilities[name] ?? 0;
      const top = name === face.emotion ? " top" : "";
      probs.append(
        el("span", { class: "name" + top }, name),
        el("span", { class: "track" }, el("span", { class: "fill", style: `width:${(100 * q).toFixed(1)}%;--c:${color(name)}` })),
        el("span", { class: "pct" + top }, pct(q)),
      );
    }
    details.append(probs);
    if (face.pose) details.append(geometryCard(face));
    if (compact) details.append(el("div", { class: "score" }, `detector score ${face.score.toFixed(2)}`));
    row.append(details);
    if (compact) {
      row.setAttribute("tabindex", "0");
      const toggle = () => row.classList.toggle("open");
      row.addEventListener("click", toggle);
      row.addEventListener("keydown", (e) => (e.key === "Enter" || e.key === " ") && (e.preventDefault(), toggle()));
    }
    if (overlay) {
      row.addEventListener("mouseenter", () => highlight(overlay, list, i));
      row.addEventListener("mouseleave", () => highlight(overlay, list, null));
    }
    list.append(row);
  });
}

function highlight(overlay, list, index) {
  for (const item of overlay.querySelectorAll("[data-face]")) {
    item.classList.toggle("hot", index !== null && item.dataset.face === String(index));
    item.classList.toggle("dim", index !== null && item.dataset.face !== String(index));
  }
  for (const row of list.children) row.classList.toggle("hot", row.dataset.face === String(index));
}

// the labels are laid out again whenever an overlay changes size (window, orientation, photo loaded)
const relayout = new ResizeObserver((entries) => {
  for (const entry of entries) layoutLabels(entry.target);
});
for (const id of ["photo-overlay", "cam-overlay", "video-overlay"]) relayout.observe($(id));

// photo

const photo = { file: null, url: null };

$("photo-score").addEventListener("input", () => {
  $("photo-score-value").textContent = Number($("photo-score").value).toFixed(2);
});
for (const id of ["photo-tiles", "photo-align", "photo-geometry"]) $(id).addEventListener("change", () => photo.file && analysePhoto());
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
  img.onload = () => {
    img.style.setProperty("--ar", String(img.naturalWidth / img.naturalHeight));
    $("photo-stage").classList.remove("unshown");
    $("photo-no-preview").classList.add("hidden");
  };
  // a format the API reads but this browser cannot show (TIFF): an empty frame of the photo's shape, boxes on it
  img.onerror = () => {
    $("photo-stage").classList.add("unshown");
    $("photo-no-preview").classList.remove("hidden");
  };
  img.src = photo.url;
  document.body.removeAttribute("data-photo-faces");
  $("photo-overlay").replaceChildren();
  analysePhoto();
}

// the upload's own fault (not an image, too large, undecodable): the photo is not shown, the drop zone is back
const REFUSED = new Set([413, 415, 422]);

function showPhotoStage(shown) {
  $("dropzone").classList.toggle("hidden", shown);
  $("photo-stage").classList.toggle("hidden", !shown);
  $("photo-again").classList.toggle("hidden", !shown);
}

async function analysePhoto() {
  showError("photo-error", "");
  $("photo-none").classList.add("hidden");
  $("photo-busy").classList.remove("hidden");
  $("photo-summary").textContent = "Analysing…";
  const form = new FormData();
  form.append("image", photo.file, photo.file.name);
  const geometry = $("photo-geometry").checked;
  const query = new URLSearchParams({
    tiles: $("photo-tiles").value,
    min_score: $("photo-score").value,
    align: $("photo-align").checked,
    geometry,
  });
  try {
    const r = await fetch(`/v1/faces?${query}`, { method: "POST", body: form, headers: authHeaders() });
    if (!r.ok) throw Object.assign(new Error(await errorText(r)), { status: r.status });
    const result = await r.json();
    const { width, height } = result.image;
    showPhotoStage(true);
    $("photo-img").style.setProperty("--ar", String(width / height));
    drawBoxes($("photo-overlay"), result.faces, width, height);
    faceRows($("photo-faces"), $("photo-empty"), result.faces, $("photo-overlay"));
    const n = result.faces.length;
    $("photo-empty").classList.add("hidden");
    $("photo-none").classList.toggle("hidden", n > 0);
    $("photo-summary").textContent = `${n} face${n === 1 ? "" : "s"} · ${width}×${height} · ${Math.round(result.timing_ms.total)} ms`;
    $("photo-geo-legend").classList.toggle("hidden", !result.faces.some((f) => f.pose));
    document.body.dataset.photoFaces = String(n);
    document.body.dataset.photoGeometry = String(geometry);
  } catch (err) {
    $("photo-summary").textContent = "";
    showError("photo-error", err.message);
    $("photo-overlay").replaceChildren();
    $("photo-geo-legend").classList.add("hidden");
    faceRows($("photo-faces"), $("photo-empty"), [], null);
    if (REFUSED.has(err.status)) showPhotoStage(false);
    document.body.dataset.photoFaces = "error";
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

// video: upload with progress, NDJSON lines as they are computed, a preview with the boxes of the nearest processed
// frame, a timeline per track on a time axis, the table and a CSV

const video = { frames: [], name: "", url: null, media: null, size: null, duration: 0 };
$("video-input").addEventListener("change", (e) => e.target.files[0] && uploadVideo(e.target.files[0]));

function uploadVideo(file) {
  showError("video-error", "");
  video.frames = [];
  video.name = file.name;
  video.size = null;
  $("video-empty").classList.add("hidden");
  $("video-progress").classList.remove("hidden");
  $("video-csv").classList.add("hidden");
  $("video-rows").replaceChildren();
  $("video-timeline").classList.add("hidden");
  $("video-table-wrap").classList.remove("hidden");
  $("video-overlay").replaceChildren();
  $("video-name").textContent = file.name;
  if (video.media) URL.revokeObjectURL(video.media);
  video.media = URL.createObjectURL(file);
  $("video-preview").src = video.media;
  $("video-view").classList.remove("hidden");
  document.body.removeAttribute("data-video-frame");
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
    showPreviewFrame();
  };
  xhr.onload = async () => {
    if (xhr.status !== 200) {
      let message = `${xhr.status} ${xhr.statusText}`;
      try { message = JSON.parse(xhr.responseText).detail; } catch { /* not JSON */ }
      showError("video-error", message);
      $("video-progress").classList.add("hidden");
      $("video-table-wrap").classList.add("hidden");
      $("video-view").classList.add("hidden");
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
  if (!video.size && frame.image) {
    video.size = frame.image;
    $("video-stage").style.setProperty("--ar", String(frame.image.width / frame.image.height));
  }
  const body = $("video-rows");
  for (const face of frame.faces) {
    if (body.children.length >= MAX_TABLE_ROWS) break;
    const p = face.probabilities[face.emotion];
    const row = el("tr", { "data-time": String(frame.time_s) },
      el("td", {}, String(frame.frame)),
      el("td", {}, `${frame.time_s.toFixed(2)} s`),
      el("td", {}, face.track_id != null ? `#${face.track_id}` : "–"),
      el("td", {}, el("span", { class: "emo", style: `--c:${color(face.emotion)}` }, el("i"), face.emotion)),
      el("td", {}, pct(p)),
      el("td", {}, face.box.join(", ")));
    row.addEventListener("click", () => seekVideo(frame.time_s));
    body.append(row);
  }
  const rows = video.frames.reduce((n, f) => n + f.faces.length, 0);
  $("video-note").textContent = rows > MAX_TABLE_ROWS ? `Showing the first ${MAX_TABLE_ROWS} of ${rows} rows; the CSV has them all.` : "";
}

// the processed frame shown at time t: the last one at or before it (the first before any)
function frameAt(t) {
  const frames = video.frames;
  let lo = 0, hi = frames.length - 1, best = 0;
  while (lo <= hi) {
    const mid = (lo + hi) >> 1;
    if (frames[mid].time_s <= t + 1e-3) { best = mid; lo = mid + 1; } else hi = mid - 1;
  }
  return frames[best];
}

function showPreviewFrame() {
  if (!video.frames.length) return;
  const preview = $("video-preview");
  const frame = frameAt(preview.currentTime || 0);
  const overlay = $("video-overlay");
  if (overlay.dataset.frame !== String(frame.frame) || overlay.dataset.count !== String(frame.faces.length)) {
    drawBoxes(overlay, frame.faces, frame.image.width, frame.image.height);
    overlay.dataset.frame = String(frame.frame);
    overlay.dataset.count = String(frame.faces.length);
    const n = frame.faces.length;
    $("video-caption").textContent = `Frame ${frame.frame} · ${frame.time_s.toFixed(2)} s · ${n} face${n === 1 ? "" : "s"}`;
    document.body.dataset.videoFrame = String(frame.frame);
  }
  const at = video.duration ? (100 * (preview.currentTime || 0)) / video.duration : 0;
  for (const head of document.querySelectorAll("#video-timeline .playhead")) head.style.left = `${Math.min(100, at)}%`;
}

function seekVideo(t) {
  const preview = $("video-preview");
  preview.currentTime = t;
  showPreviewFrame();
}

const preview = $("video-preview");
for (const kind of ["timeupdate", "seeked", "loadeddata"]) preview.addEventListener(kind, showPreviewFrame);
preview.addEventListener("play", function follow() {
  // boxes follow the picture while it plays (timeupdate alone comes 4 times a second)
  if (preview.paused || preview.ended) return;
  showPreviewFrame();
  requestAnimationFrame(follow);
});

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
  showPreviewFrame();
}

// tick spacing: the smallest of these (seconds) that gives at most 8 ticks
const TICK_STEPS = [0.1, 0.2, 0.5, 1, 2, 5, 10, 15, 30, 60, 120, 300, 600, 1800, 3600];

function timeLabel(t, step) {
  if (t >= 60 || step >= 60) {
    const s = Math.round(t);
    return `${Math.floor(s / 60)}:${String(s % 60).padStart(2, "0")}`;
  }
  return `${step < 1 ? t.toFixed(1) : t.toFixed(0)} s`;
}

function timeAxis(duration) {
  const axis = el("div", { class: "time-axis" });
  const step = TICK_STEPS.find((s) => duration / s <= 8) ?? TICK_STEPS[TICK_STEPS.length - 1];
  for (let k = 0; k * step <= duration + 1e-9; k++) {
    const t = k * step;
    const at = (100 * t) / duration;
    const shift = at > 94 ? "transform:translateX(-100%)" : ""; // the last label stays inside the axis
    axis.append(el("span", { class: "tick", style: `left:${at}%;${shift}`, "data-time": t.toFixed(3) }, timeLabel(t, step)));
  }
  return axis;
}

function drawTimeline() {
  const box = $("video-timeline");
  box.replaceChildren();
  const frames = video.frames;
  if (!frames.length) return;
  // the processed frames span [first, last + one step]; the preview's duration when it knows it
  const step = frames.length > 1 ? frames[1].time_s - frames[0].time_s : 0.04;
  const media = $("video-preview").duration;
  video.duration = Number.isFinite(media) && media > 0 ? Math.max(media, frames[frames.length - 1].time_s) : frames[frames.length - 1].time_s + step;
  const tracks = new Map();
  for (const frame of frames) {
    for (const face of frame.faces) {
      if (!tracks.has(face.track_id)) tracks.set(face.track_id, []);
      tracks.get(face.track_id).push([frame.time_s, face.emotion]);
    }
  }
  const lane = (content) => {
    const node = el("div", { class: "lane" }, content, el("div", { class: "playhead" }));
    node.addEventListener("click", (e) => {
      const r = node.getBoundingClientRect();
      seekVideo(((e.clientX - r.left) / r.width) * video.duration);
    });
    return node;
  };
  if (!tracks.size) {
    box.append(el("div", { class: "timeline-row" }, el("span", {}, "Faces"), lane(el("div", { class: "lane-empty" }, "No face in any processed frame"))));
  }
  for (const [id, points] of [...tracks.entries()].slice(0, 8)) {
    const canvas = el("canvas", { width: "1000", height: "16" });
    const ctx = canvas.getContext("2d");
    for (const [t, emotion] of points) {
      ctx.fillStyle = color(emotion);
      ctx.fillRect((1000 * t) / video.duration, 0, Math.max(1, (1000 * step) / video.duration), 16);
    }
    box.append(el("div", { class: "timeline-row" }, el("span", {}, `Track #${id}`), lane(canvas)));
  }
  box.append(el("div", { class: "timeline-row axis-row" }, el("span", {}, "Time"), timeAxis(video.duration)));
  const legend = el("div", { class: "legend" });
  for (const name of state.classes) legend.append(el("span", { style: `--c:${color(name)}` }, el("i"), name));
  box.append(legend);
  box.classList.remove("hidden");
}

loadModel();
