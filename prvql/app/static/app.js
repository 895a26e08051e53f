// prvql app: upload a video, draw a box on a frame, run a locate job, show the answer. Plain JS, no build step.
// Boxes are [x1, y1, x2, y2] in whole pixels of the video's frames; frame numbers are source-video frames,
// except in track.json's "frame" (the searched frames at the model's rate).
"use strict";

const $ = (id) => document.getElementById(id);
const POLL_MS = 250;
const MIN_BOX_SIDE = 2; // pixels

const state = {
  settings: null,
  video: null, // the upload's info: id, name, num_frames, fps, width, height, duration
  frame: 0, // source frame shown on the canvas
  image: null, // that frame's picture
  box: null, // [x1, y1, x2, y2] on state.frame
  drag: null,
  crop: false,
  job: null,
  report: null, // track.json of the finished job
  seekingFromSlider: false,
};

// ---------------------------------------------------------------------------------------------------------- errors
function showError(message) {
  const box = $("error");
  box.textContent = String(message).split("\n")[0];
  box.style.display = "block";
}
function clearError() {
  $("error").style.display = "none";
  $("error").textContent = "";
}

async function api(method, url, body, contentType) {
  const options = { method, headers: {} };
  if (body !== undefined) {
    options.body = body;
    if (contentType) options.headers["Content-Type"] = contentType;
  }
  let response;
  try {
    response = await fetch(url, options);
  } catch (err) {
    throw new Error("the server does not answer (is prvql app still running?)");
  }
  const text = await response.text();
  let data = null;
  try {
    data = text ? JSON.parse(text) : null;
  } catch (err) {
    data = null;
  }
  if (!response.ok) throw new Error((data && data.error) || `${method} ${url}: HTTP ${response.status}`);
  return data;
}

function sizeText(n) {
  for (const [unit, scale] of [["GB", 2 ** 30], ["MB", 2 ** 20], ["kB", 2 ** 10]]) {
    if (n >= scale) return `${(n / scale).toFixed(1)} ${unit}`;
  }
  return `${n} bytes`;
}

function setHash() {
  const parts = [];
  if (state.video) parts.push(`video=${state.video.id}`);
  if (state.job) parts.push(`job=${state.job}`);
  history.replaceState(null, "", parts.length ? `#${parts.join("&")}` : location.pathname);
}

// ---------------------------------------------------------------------------------------------------------- upload
function uploadVideo(file) {
  clearError();
  const limit = state.settings.max_upload_bytes;
  if (file.size > limit) {
    showError(`${file.name} is ${sizeText(file.size)}; the limit is ${sizeText(limit)} (prvql app --max-upload-mb)`);
    return;
  }
  const bar = $("upload-progress");
  bar.classList.remove("hidden");
  bar.value = 0;
  $("video-meta").textContent = `uploading ${file.name} ...`;
  const xhr = new XMLHttpRequest();
  xhr.open("POST", `/api/videos?name=${encodeURIComponent(file.name)}`);
  xhr.upload.onprogress = (e) => {
    if (e.lengthComputable) bar.value = e.loaded / e.total;
  };
  xhr.onload = () => {
    bar.classList.add("hidden");
    let data = null;
    try {
      data = JSON.parse(xhr.responseText);
    } catch (err) {
      data = null;
    }
    if (xhr.status !== 201) {
      $("video-meta").textContent = "";
      showError((data && data.error) || `upload failed (HTTP ${xhr.status})`);
      return;
    }
    state.job = null;
    setVideo(data);
  };
  xhr.onerror = () => {
    bar.classList.add("hidden");
    $("video-meta").textContent = "";
    showError("the upload failed: the connection to the server was lost");
  };
  xhr.send(file);
}

function setVideo(info) {
  state.video = info;
  state.box = null;
  state.crop = Boolean(info.crop);
  $("video-meta").textContent =
    `${info.name}: ${info.width}x${info.height}, ${info.num_frames} frames at ${info.fps.toFixed(2)} fps ` +
    `(${info.duration.toFixed(1)} s); searched at ${state.settings.model_fps} fps (${info.searched_frames} frames)`;
  const video = $("source-video");
  video.src = `/api/videos/${info.id}/file`;
  video.classList.remove("hidden");
  $("query-section").classList.remove("hidden");
  $("result-section").classList.add("hidden");
  const last = info.num_frames - 1;
  for (const input of [$("frame-slider"), $("frame-number")]) input.max = last;
  showCrop(state.crop ? `/api/videos/${info.id}/crop` : null);
  setHash();
  goToFrame(last);
}

// ---------------------------------------------------------------------------------------------- frame and the box
let frameTimer = null;
function goToFrame(n, fromVideo = false) {
  n = Math.max(0, Math.min(state.video.num_frames - 1, Math.round(Number(n) || 0)));
  state.frame = n;
  $("frame-slider").value = n;
  $("frame-number").value = n;
  $("frame-time").textContent = `${(n / state.video.fps).toFixed(2)} s`;
  state.box = null;
  updateQueryText();
  const video = $("source-video");
  if (!fromVideo && video.readyState > 0) {
    state.seekingFromSlider = true;
    video.currentTime = (n + 0.5) / state.video.fps;
  }
  clearTimeout(frameTimer);
  frameTimer = setTimeout(() => loadFrame(n), 60);
}

function loadFrame(n) {
  const image = new Image();
  image.onload = () => {
    if (n !== state.frame) return;
    state.image = image;
    const canvas = $("frame-canvas");
    canvas.width = image.naturalWidth;
    canvas.height = image.naturalHeight;
    drawFrame();
    canvas.dataset.frame = String(n);
  };
  image.onerror = () => showError(`frame ${n} could not be read from the video`);
  image.src = `/api/videos/${state.video.id}/frames/${n}`;
}

function drawFrame() {
  const canvas = $("frame-canvas");
  const ctx = canvas.getContext("2d");
  if (state.image) ctx.drawImage(state.image, 0, 0);
  const box = state.drag ? dragBox() : state.box;
  if (box) {
    ctx.lineWidth = Math.max(2, canvas.width / 320);
    ctx.strokeStyle = "#ffdd00";
    ctx.strokeRect(box[0], box[1], box[2] - box[0], box[3] - box[1]);
  }
}

function canvasPoint(event) {
  const canvas = $("frame-canvas");
  const rect = canvas.getBoundingClientRect();
  const x = ((event.clientX - rect.left) * canvas.width) / rect.width;
  const y = ((event.clientY - rect.top) * canvas.height) / rect.height;
  return [Math.max(0, Math.min(canvas.width, x)), Math.max(0, Math.min(canvas.height, y))];
}

function dragBox() {
  const [a, b] = [state.drag.start, state.drag.end];
  return [
    Math.round(Math.min(a[0], b[0])),
    Math.round(Math.min(a[1], b[1])),
    Math.round(Math.max(a[0], b[0])),
    Math.round(Math.max(a[1], b[1])),
  ];
}

function updateQueryText() {
  const text = $("box-text");
  if (state.crop) text.textContent = "The query is the crop image; the frame only sets the time of the question.";
  else if (state.box) {
    const [x1, y1, x2, y2] = state.box;
    text.textContent = `box ${x1}, ${y1}, ${x2}, ${y2} (${x2 - x1}x${y2 - y1} px) on frame ${state.frame}`;
  } else text.textContent = "Drag on the picture to draw a box around the object.";
  $("locate").disabled = !(state.box || state.crop) || jobActive();
}

function setupCanvas() {
  const canvas = $("frame-canvas");
  canvas.addEventListener("mousedown", (e) => {
    if (!state.image || state.crop || e.button !== 0) return;
    e.preventDefault();
    const p = canvasPoint(e);
    state.drag = { start: p, end: p };
    drawFrame();
  });
  window.addEventListener("mousemove", (e) => {
    if (!state.drag) return;
    state.drag.end = canvasPoint(e);
    drawFrame();
  });
  window.addEventListener("mouseup", (e) => {
    if (!state.drag) return;
    state.drag.end = canvasPoint(e);
    const box = dragBox();
    state.drag = null;
    state.box = box[2] - box[0] >= MIN_BOX_SIDE && box[3] - box[1] >= MIN_BOX_SIDE ? box : null;
    drawFrame();
    updateQueryText();
  });
}

// ------------------------------------------------------------------------------------------------------------ crop
function showCrop(url) {
  const img = $("crop-preview");
  img.classList.toggle("hidden", !url);
  $("crop-clear").classList.toggle("hidden", !url);
  if (url) img.src = url;
  updateQueryText();
}

async function uploadCrop(file) {
  clearError();
  try {
    await api("PUT", `/api/videos/${state.video.id}/crop`, file, file.type || "application/octet-stream");
    state.crop = true;
    state.box = null;
    drawFrame();
    showCrop(URL.createObjectURL(file));
  } catch (err) {
    showError(err.message);
  }
  $("crop-file").value = "";
}

async function clearCrop() {
  try {
    await api("DELETE", `/api/videos/${state.video.id}/crop`);
  } catch (err) {
    showError(err.message);
  }
  state.crop = false;
  showCrop(null);
}

// ------------------------------------------------------------------------------------------------------------- job
function jobActive() {
  return Boolean(state.job) && !$("cancel").classList.contains("hidden");
}

async function startJob() {
  clearError();
  const search = document.querySelector("input[name=search]:checked").value;
  const body = { frame: state.frame, box: state.crop ? null : state.box, crop: state.crop, search };
  try {
    const status = await api("POST", `/api/videos/${state.video.id}/jobs`, JSON.stringify(body), "application/json");
    state.job = status.id;
    setHash();
    $("result-section").classList.add("hidden");
    showStatus(status);
    poll();
  } catch (err) {
    showError(err.message);
  }
}

let pollTimer = null;
async function poll() {
  clearTimeout(pollTimer);
  if (!state.job) return;
  const job = state.job;
  try {
    const status = await api("GET", `/api/jobs/${job}`);
    if (job !== state.job) return;
    showStatus(status);
    if (status.state === "queued" || status.state === "running") pollTimer = setTimeout(poll, POLL_MS);
  } catch (err) {
    showError(err.message);
    endJob();
  }
}

function endJob() {
  $("cancel").classList.add("hidden");
  $("job-progress").classList.add("hidden");
  updateQueryText();
}

function showStatus(status) {
  const bar = $("job-progress");
  const text = $("job-text");
  if (status.state === "queued" || status.state === "running") {
    $("cancel").classList.remove("hidden");
    bar.classList.remove("hidden");
    $("locate").disabled = true;
  }
  if (status.state === "queued") {
    bar.removeAttribute("value");
    text.textContent = `waiting: number ${status.position} in the queue`;
  } else if (status.state === "running") {
    bar.max = Math.max(status.total, 1);
    bar.value = status.done;
    const what = status.phase === "render" ? "drawing the result video" : "searching";
    text.textContent = `${what}: ${status.done} / ${status.total} frames (${status.seconds.toFixed(1)} s)`;
  } else {
    endJob();
    if (status.state === "done") {
      text.textContent = `done in ${status.seconds.toFixed(1)} s`;
      showResult(status);
    } else if (status.state === "failed") {
      text.textContent = "";
      showError(status.message);
    } else if (status.state === "cancelled") text.textContent = "cancelled";
  }
  text.dataset.state = status.state;
}

async function cancelJob() {
  if (!state.job) return;
  try {
    showStatus(await api("POST", `/api/jobs/${state.job}/cancel`));
  } catch (err) {
    showError(err.message);
  }
}

// ---------------------------------------------------------------------------------------------------------- result
async function showResult(status) {
  let report;
  try {
    report = await api("GET", status.files["track.json"]);
  } catch (err) {
    showError(err.message);
    return;
  }
  state.report = report;
  const track = report.track;
  const frames = track.frames;
  if (frames.length) {
    const first = frames[0];
    const last = frames[frames.length - 1];
    $("summary").textContent =
      `Last seen ${first.time.toFixed(2)}-${last.time.toFixed(2)} s (video frames ${first.source_frame}-` +
      `${last.source_frame}), peak score ${track.peak_score.toFixed(3)}; ${report.searched_frames} frames searched.`;
  } else $("summary").textContent = `Not found in the ${report.searched_frames} frames searched.`;
  const video = $("result-video");
  video.src = `${status.files["track.mp4"]}?job=${status.id}`;
  $("download").href = status.files["track.json"];
  $("scores-png").href = status.files["scores.png"];
  const body = $("track-table").querySelector("tbody");
  body.textContent = "";
  for (const f of frames) {
    const row = document.createElement("tr");
    row.dataset.frame = String(f.frame);
    for (const value of [f.source_frame, f.time.toFixed(2), f.box.map((v) => v.toFixed(1)).join(", "), f.score.toFixed(3)]) {
      const cell = document.createElement("td");
      cell.textContent = value;
      row.appendChild(cell);
    }
    row.addEventListener("click", () => seekResult(f.frame));
    body.appendChild(row);
  }
  $("result-section").classList.remove("hidden");
  drawCurve();
}

function seekResult(k) {
  const video = $("result-video");
  video.pause();
  video.currentTime = (k + 0.5) / state.report.model_fps;
  markFrame(k);
}

function markFrame(k) {
  for (const row of $("track-table").querySelectorAll("tbody tr")) {
    const on = Number(row.dataset.frame) === k;
    row.classList.toggle("selected", on);
    if (on) row.scrollIntoView({ block: "nearest" });
  }
  drawCurve(k);
}

function curveX(k, n, width) {
  return ((k + 0.5) / Math.max(n, 1)) * width;
}

function drawCurve(playhead) {
  const report = state.report;
  if (!report) return;
  const canvas = $("curve");
  const ctx = canvas.getContext("2d");
  const w = canvas.width;
  const h = canvas.height;
  const n = report.curve.length;
  const y = (s) => h - 4 - s * (h - 8);
  ctx.clearRect(0, 0, w, h);
  const track = report.track;
  if (track.frames.length) {
    ctx.fillStyle = "rgba(0, 200, 100, 0.25)";
    const x0 = curveX(track.start - 0.5, n, w);
    ctx.fillRect(x0, 0, curveX(track.end + 0.5, n, w) - x0, h);
  }
  ctx.setLineDash([4, 4]);
  for (const [value, color] of [[track.peak_threshold, "#e08000"], [track.track_threshold, "#2a9d8f"]]) {
    ctx.strokeStyle = color;
    ctx.beginPath();
    ctx.moveTo(0, y(value));
    ctx.lineTo(w, y(value));
    ctx.stroke();
  }
  ctx.setLineDash([]);
  ctx.strokeStyle = "#1f4e9c";
  ctx.lineWidth = 1.5;
  ctx.beginPath();
  report.curve.forEach((c, k) => (k ? ctx.lineTo : ctx.moveTo).call(ctx, curveX(k, n, w), y(c.score)));
  ctx.stroke();
  if (track.frames.length) {
    ctx.fillStyle = "#d62828";
    ctx.beginPath();
    ctx.arc(curveX(track.peak, n, w), y(report.curve[track.peak].score), 4, 0, 2 * Math.PI);
    ctx.fill();
  }
  if (playhead !== undefined) {
    ctx.strokeStyle = "#000";
    ctx.beginPath();
    ctx.moveTo(curveX(playhead, n, w), 0);
    ctx.lineTo(curveX(playhead, n, w), h);
    ctx.stroke();
  }
}

// ------------------------------------------------------------------------------------------------------------ wire
async function restore() {
  const params = new URLSearchParams(location.hash.slice(1));
  const video = params.get("video");
  if (!video) return;
  try {
    setVideo(await api("GET", `/api/videos/${video}`));
  } catch (err) {
    history.replaceState(null, "", location.pathname);
    return;
  }
  if (params.get("job")) {
    state.job = params.get("job");
    setHash();
    poll();
  }
}

async function main() {
  try {
    state.settings = await api("GET", "/api/settings");
  } catch (err) {
    showError(err.message);
    return;
  }
  $("limit").textContent = `up to ${sizeText(state.settings.max_upload_bytes)}; searched on ${state.settings.device}`;
  $("video-file").addEventListener("change", (e) => e.target.files.length && uploadVideo(e.target.files[0]));
  $("crop-file").addEventListener("change", (e) => e.target.files.length && uploadCrop(e.target.files[0]));
  $("crop-clear").addEventListener("click", clearCrop);
  $("frame-slider").addEventListener("input", (e) => goToFrame(e.target.value));
  $("frame-number").addEventListener("change", (e) => goToFrame(e.target.value));
  $("locate").addEventListener("click", startJob);
  $("cancel").addEventListener("click", cancelJob);
  const source = $("source-video");
  const followVideo = () => {
    // the user moved the player: show its frame for drawing (a frame already shown keeps its box)
    if (!state.video) return;
    const n = Math.min(state.video.num_frames - 1, Math.floor(source.currentTime * state.video.fps + 1e-6));
    if (n !== state.frame) goToFrame(n, true);
  };
  source.addEventListener("seeked", () => {
    if (state.seekingFromSlider) state.seekingFromSlider = false;
    else followVideo();
  });
  source.addEventListener("pause", () => {
    if (!state.seekingFromSlider) followVideo();
  });
  const result = $("result-video");
  result.addEventListener("timeupdate", () => {
    if (state.report && !result.seeking) markFrame(Math.floor(result.currentTime * state.report.model_fps));
  });
  $("curve").addEventListener("click", (e) => {
    if (!state.report) return;
    const rect = e.target.getBoundingClientRect();
    const k = Math.floor(((e.clientX - rect.left) / rect.width) * state.report.curve.length);
    seekResult(Math.max(0, Math.min(state.report.curve.length - 1, k)));
  });
  setupCanvas();
  await restore();
}

main();
