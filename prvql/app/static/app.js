// prvql app: upload a video, draw a box on a frame, run a locate job, show the answer. Plain JS, no build step.
// Boxes are [x1, y1, x2, y2] in whole pixels of the video's frames; frame numbers are source-video frames,
// except in track.json's "frame" (the searched frames at the model's rate).
// The picture drawn on is always the server's decode of the frame (the reader the search uses); the player above it
// (the upload itself, or an H.264 preview made for formats browsers cannot play) is only for finding the moment.
"use strict";

const $ = (id) => document.getElementById(id);
const POLL_MS = 250;
const TYPE_MS = 300; // a typed frame number is shown once the typing pauses this long (no Enter needed)
const MIN_BOX_SIDE = 2; // pixels; a smaller drag is a click, which keeps the box
const SVG_NS = "http://www.w3.org/2000/svg";

const state = {
  settings: null,
  video: null, // the upload's info: id, name, num_frames, fps, width, height, duration, player
  frame: -1, // source frame chosen (slider, number, player); the query's frame
  image: null, // the picture of frame `imageFrame` (an ImageBitmap), null when none could be loaded
  imageFrame: -1, // the frame the canvas shows; differs from `frame` while it loads
  failedFrame: -1, // the frame whose picture could not be loaded (choosing it again retries)
  box: null, // [x1, y1, x2, y2] drawn on `boxFrame`
  boxFrame: -1,
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
  Object.assign(state, { frame: -1, image: null, imageFrame: -1, failedFrame: -1, box: null, boxFrame: -1 });
  state.crop = Boolean(info.crop);
  $("box-note").classList.add("hidden");
  $("video-meta").textContent =
    `${info.name}: ${info.width}x${info.height}, ${info.num_frames} frames at ${info.fps.toFixed(2)} fps ` +
    `(${info.duration.toFixed(1)} s); searched at ${state.settings.model_fps} fps (${info.searched_frames} frames)`;
  showPlayer(info.player);
  showMemory(info.memory);
  $("query-section").classList.remove("hidden");
  $("result-section").classList.add("hidden");
  const last = info.num_frames - 1;
  for (const input of [$("frame-slider"), $("frame-number")]) input.max = last;
  showCrop(state.crop ? `/api/videos/${info.id}/crop` : null);
  setHash();
  goToFrame(last);
}

// ---------------------------------------------------------------------------------------------------------- player
let previewTimer = null;
function showPlayer(player) {
  // the upload itself when the browser plays it, else the H.264 preview the server makes once (with its progress)
  clearTimeout(previewTimer);
  const video = $("source-video");
  const bar = $("preview-progress");
  const text = $("preview-text");
  text.dataset.state = player.state;
  if (player.url) {
    bar.classList.add("hidden");
    text.textContent = player.state === "ready" ? "Playing a preview made for the browser (H.264)." : "";
    if (!video.src.endsWith(player.url)) video.src = player.url;
    video.classList.remove("hidden");
    return;
  }
  video.removeAttribute("src");
  video.classList.add("hidden");
  if (player.state === "making") {
    bar.classList.remove("hidden");
    bar.max = Math.max(player.total, 1);
    bar.value = player.done;
    text.textContent =
      `The browser cannot play this format: making a playable preview, ${player.done} / ${player.total} frames. ` +
      "The frames below can be used already.";
    const id = state.video.id;
    previewTimer = setTimeout(async () => {
      try {
        const info = await api("GET", `/api/videos/${id}`);
        if (state.video && state.video.id === id) showPlayer(info.player);
      } catch (err) {
        showError(err.message);
      }
    }, POLL_MS);
  } else {
    bar.classList.add("hidden");
    text.textContent = `${player.message} The frames below can still be used.`;
  }
}

// ---------------------------------------------------------------------------------------------------------- memory
let memoryTimer = null;
function showMemory(memory) {
  // the video memory the server indexes once per upload: every search on it then runs the refinement stages only
  clearTimeout(memoryTimer);
  const text = $("memory-text");
  text.dataset.state = memory ? memory.state : "";
  if (!memory) {
    text.textContent = "";
  } else if (memory.state === "ready") {
    text.textContent = "Memory ready: each search on this video skips embedding its frames.";
  } else if (memory.state === "failed") {
    text.textContent = `${memory.message} Searches read the video itself.`;
  } else {
    text.textContent =
      `Indexing the video into a memory, ${memory.done} / ${memory.total} frames: ` +
      "a search asked now waits for it, later ones are faster.";
    const id = state.video.id;
    memoryTimer = setTimeout(async () => {
      try {
        const info = await api("GET", `/api/videos/${id}`);
        if (state.video && state.video.id === id) showMemory(info.memory);
      } catch (err) {
        showError(err.message);
      }
    }, POLL_MS);
  }
}

// ---------------------------------------------------------------------------------------------- frame and the box
let frameTimer = null;
function goToFrame(n, fromVideo = false) {
  n = Math.max(0, Math.min(state.video.num_frames - 1, Math.round(Number(n) || 0)));
  $("frame-slider").value = n;
  $("frame-number").value = n;
  if (n === state.frame && state.failedFrame !== n) return; // the same frame: its picture and its box stay
  state.failedFrame = -1;
  if (state.box && state.boxFrame !== n) {
    const note = $("box-note");
    note.textContent = `The box drawn on frame ${state.boxFrame} was cleared: frame ${n} is shown now, draw it again.`;
    note.classList.remove("hidden");
    state.box = null;
  }
  state.frame = n;
  const times = state.video.frame_times; // a variable-rate video's own frame times
  $("frame-time").textContent = `${(times ? times[n] : n / state.video.fps).toFixed(2)} s`;
  $("frame-canvas").classList.add("stale"); // the old picture, dimmed, until frame n arrives
  $("frame-status").textContent = `loading frame ${n} ...`;
  updateQueryText();
  const video = $("source-video");
  if (!fromVideo && video.readyState > 0) {
    state.seekingFromSlider = true;
    video.currentTime = (n + 0.5) / state.video.fps;
  }
  clearTimeout(frameTimer);
  frameTimer = setTimeout(() => loadFrame(n), 60);
}

async function loadFrame(n) {
  let image;
  try {
    const response = await fetch(`/api/videos/${state.video.id}/frames/${n}`);
    if (!response.ok) {
      const data = await response.json().catch(() => null);
      throw new Error((data && data.error) || `HTTP ${response.status}`);
    }
    image = await createImageBitmap(await response.blob());
  } catch (err) {
    if (n === state.frame) frameFailed(n, err.message);
    return;
  }
  if (n !== state.frame) return;
  state.image = image;
  state.imageFrame = n;
  const canvas = $("frame-canvas");
  canvas.width = image.width;
  canvas.height = image.height;
  canvas.classList.remove("stale");
  $("frame-status").textContent = "";
  drawFrame();
  canvas.dataset.frame = String(n);
  updateQueryText();
}

function frameFailed(n, message) {
  // never leave another frame's picture under a label naming frame n: clear it and say why
  state.failedFrame = n;
  state.image = null;
  state.imageFrame = -1;
  const canvas = $("frame-canvas");
  canvas.classList.remove("stale");
  const ctx = canvas.getContext("2d");
  ctx.fillStyle = "#3a3f47";
  ctx.fillRect(0, 0, canvas.width, canvas.height);
  canvas.dataset.frame = "-1";
  $("frame-status").textContent = `Frame ${n} could not be loaded; pick another frame.`;
  showError(message);
  updateQueryText();
}

function drawFrame() {
  const canvas = $("frame-canvas");
  const ctx = canvas.getContext("2d");
  if (state.image) ctx.drawImage(state.image, 0, 0);
  const box = state.drag ? dragBox() : state.boxFrame === state.imageFrame ? state.box : null;
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

function queryReady() {
  if (state.crop) return true;
  return Boolean(state.box) && state.boxFrame === state.frame && state.imageFrame === state.frame;
}

function updateQueryText() {
  const text = $("box-text");
  if (state.crop) text.textContent = "The query is the crop image; the frame only sets the time of the question.";
  else if (state.box && state.boxFrame === state.frame) {
    const [x1, y1, x2, y2] = state.box;
    text.textContent = `box ${x1}, ${y1}, ${x2}, ${y2} (${x2 - x1}x${y2 - y1} px) on frame ${state.frame}`;
  } else text.textContent = "Drag on the picture to draw a box around the object.";
  $("locate").disabled = !queryReady() || jobActive();
}

function setupCanvas() {
  const canvas = $("frame-canvas");
  canvas.addEventListener("mousedown", (e) => {
    if (!state.image || state.imageFrame !== state.frame || state.crop || e.button !== 0) return;
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
    if (box[2] - box[0] >= MIN_BOX_SIDE && box[3] - box[1] >= MIN_BOX_SIDE) {
      // a real drag draws the new box; a click (or a tiny drag) keeps the one there was
      state.box = box;
      state.boxFrame = state.frame;
      $("box-note").classList.add("hidden");
    }
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
    const what = {
      render: "drawing the result video",
      index: "waiting for the video's memory (every search on this video then skips the frames' embedding)",
    }[status.phase] || "searching";
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
  showVerdict(report);
  if (frames.length) {
    const first = frames[0];
    const last = frames[frames.length - 1];
    $("summary").textContent =
      `${report.verdict === "not_found" ? "Best guess" : "Last seen"} ${first.time.toFixed(2)}-${last.time.toFixed(2)} s (video frames ${first.source_frame}-` +
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
  $("result-section").scrollIntoView({ behavior: "smooth", block: "start" });
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
  const line = $("curve").querySelector(".playhead");
  if (!line || !state.report || k < 0 || k >= state.report.curve.length) return;
  const x = CURVE.x(k, state.report.curve.length).toFixed(1);
  line.setAttribute("x1", x);
  line.setAttribute("x2", x);
  line.classList.remove("hidden");
}

// the score curve: an SVG with its axes (searched frames shown as video frame and time, score), the track's span,
// the two thresholds of the post-processing (prvql.infer.postprocess.TrackWindow) and the peak; a legend below
const CURVE = {
  width: 640,
  height: 230,
  left: 54,
  right: 12,
  top: 10,
  bottom: 50,
  x(k, n) {
    return this.left + ((k + 0.5) / Math.max(n, 1)) * (this.width - this.left - this.right);
  },
  y(score) {
    return this.top + (1 - Math.max(0, Math.min(1, score))) * (this.height - this.top - this.bottom);
  },
  frameAt(clientX, rect, n) {
    const px = ((clientX - rect.left) / rect.width) * this.width;
    return Math.floor(((px - this.left) / (this.width - this.left - this.right)) * n);
  },
};

function svgElement(parent, tag, attributes, text) {
  const element = document.createElementNS(SVG_NS, tag);
  for (const [key, value] of Object.entries(attributes)) element.setAttribute(key, String(value));
  if (text !== undefined) element.textContent = text;
  parent.appendChild(element);
  return element;
}

function tickStep(n, most) {
  // the smallest of 1, 2, 5, 10, 20, 50, ... searched frames that gives at most `most` ticks
  for (let scale = 1; ; scale *= 10) {
    for (const step of [1, 2, 5]) if (Math.ceil(n / (step * scale)) <= most) return step * scale;
  }
}

function drawCurve() {
  const report = state.report;
  const svg = $("curve");
  svg.textContent = "";
  svg.setAttribute("viewBox", `0 0 ${CURVE.width} ${CURVE.height}`);
  const n = report.curve.length;
  const track = report.track;
  const [left, right] = [CURVE.left, CURVE.width - CURVE.right];
  const [top, bottom] = [CURVE.top, CURVE.height - CURVE.bottom];
  if (track.frames.length) {
    const x0 = CURVE.x(track.start - 0.5, n);
    svgElement(svg, "rect", { class: "track", x: x0, y: top, width: CURVE.x(track.end + 0.5, n) - x0, height: bottom - top });
  }
  for (const score of [0, 0.25, 0.5, 0.75, 1]) {
    svgElement(svg, "line", { class: "grid", x1: left, x2: right, y1: CURVE.y(score), y2: CURVE.y(score) });
    svgElement(svg, "text", { class: "tick", x: left - 6, y: CURVE.y(score) + 4, "text-anchor": "end" }, score.toFixed(2));
  }
  const step = tickStep(n, 7);
  for (let k = 0; k < n; k += step) {
    const x = CURVE.x(k, n);
    const c = report.curve[k];
    svgElement(svg, "line", { class: "axis", x1: x, x2: x, y1: bottom, y2: bottom + 4 });
    svgElement(svg, "text", { class: "tick", x, y: bottom + 15, "text-anchor": "middle" }, String(c.source_frame));
    svgElement(svg, "text", { class: "tick time", x, y: bottom + 28, "text-anchor": "middle" }, `${c.time.toFixed(1)} s`);
  }
  svgElement(svg, "line", { class: "axis", x1: left, x2: right, y1: bottom, y2: bottom });
  svgElement(svg, "line", { class: "axis", x1: left, x2: left, y1: top, y2: bottom });
  svgElement(svg, "text", { class: "axis-title", x: (left + right) / 2, y: CURVE.height - 4, "text-anchor": "middle" },
    "video frame / time (s)");
  const yTitle = (top + bottom) / 2;
  svgElement(svg, "text", { class: "axis-title", x: 14, y: yTitle, "text-anchor": "middle",
    transform: `rotate(-90 14 ${yTitle})` }, "score");
  for (const [name, value] of [["peak-threshold", track.peak_threshold], ["track-threshold", track.track_threshold]]) {
    svgElement(svg, "line", { class: `threshold ${name}`, x1: left, x2: right, y1: CURVE.y(value), y2: CURVE.y(value) });
  }
  const points = report.curve.map((c, k) => `${CURVE.x(k, n).toFixed(1)},${CURVE.y(c.score).toFixed(1)}`);
  svgElement(svg, "polyline", { class: "score", points: points.join(" ") });
  if (track.frames.length) {
    const peak = report.curve[track.peak];
    const marker = svgElement(svg, "circle", { class: "peak", cx: CURVE.x(track.peak, n), cy: CURVE.y(track.peak_score), r: 5 });
    svgElement(marker, "title", {}, `peak: frame ${peak.source_frame} (${peak.time.toFixed(2)} s), score ${track.peak_score.toFixed(3)}`);
  }
  if (report.verdict) {
    svgElement(svg, "text", { class: `verdict-mark ${report.verdict}`, x: right, y: top + 14, "text-anchor": "end" },
      verdictText(report));
  }
  svgElement(svg, "line", { class: "playhead hidden", x1: 0, x2: 0, y1: top, y2: bottom });
  drawLegend(report);
}

function drawLegend(report) {
  const track = report.track;
  const items = [
    ["score", `score of each searched frame (${report.searched_frames} frames at ${report.model_fps} fps)`],
    [
      "peak-threshold",
      `peak threshold ${track.peak_threshold.toFixed(3)}: a peak counts if it scores above this ` +
        "(a fixed fraction of the highest peak); the latest such peak is the answer",
    ],
    [
      "track-threshold",
      `track threshold ${track.track_threshold.toFixed(3)}: the track spans the frames around the peak ` +
        "scoring at least this (a fixed fraction of the peak's score)",
    ],
  ];
  if (track.frames.length) {
    const first = track.frames[0];
    const last = track.frames[track.frames.length - 1];
    const peak = report.curve[track.peak];
    items.push(["track", `track: video frames ${first.source_frame}-${last.source_frame} (${first.time.toFixed(2)}-${last.time.toFixed(2)} s)`]);
    items.push(["peak", `peak: video frame ${peak.source_frame} (${peak.time.toFixed(2)} s), score ${track.peak_score.toFixed(3)}`]);
  }
  const legend = $("curve-legend");
  legend.textContent = "";
  for (const [kind, text] of items) {
    const item = document.createElement("li");
    item.dataset.kind = kind;
    const swatch = document.createElement("span");
    swatch.className = `swatch ${kind}`;
    item.append(swatch, text);
    legend.appendChild(item);
  }
}

// The verdict of track.json in words (prvql.infer.confidence.verdict_text), or nothing for a report without one.
function verdictText(report) {
  if (!report.verdict) return "";
  const confidence = report.confidence.toFixed(2);
  if (report.verdict === "found") return `Found, confidence ${confidence}`;
  const frames = report.track.frames;
  const guess = frames.length
    ? ` (best guess video frames ${frames[0].source_frame}-${frames[frames.length - 1].source_frame})`
    : "";
  return `Not found${guess}, confidence ${confidence}`;
}

function showVerdict(report) {
  const line = $("verdict");
  line.textContent = verdictText(report);
  line.className = report.verdict ? `verdict ${report.verdict}` : "hidden";
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
  let typing = null;
  const typedFrame = (e) => {
    // the typed number, or null while the field is empty or not a number (then nothing moves)
    clearTimeout(typing);
    const text = e.target.value.trim();
    return text !== "" && Number.isFinite(Number(text)) ? text : null;
  };
  $("frame-number").addEventListener("input", (e) => {
    const text = typedFrame(e); // shown once the typing pauses: no Enter needed
    if (text !== null) typing = setTimeout(() => goToFrame(text), TYPE_MS);
  });
  $("frame-number").addEventListener("change", (e) => {
    const text = typedFrame(e); // Enter or leaving the field: at once, before a click elsewhere acts
    if (text !== null) goToFrame(text);
  });
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
  source.addEventListener("loadedmetadata", () => {
    // a player that arrives late (the preview) starts at the frame already chosen
    if (!state.video || state.frame < 0) return;
    state.seekingFromSlider = true;
    source.currentTime = (state.frame + 0.5) / state.video.fps;
  });
  const result = $("result-video");
  result.addEventListener("timeupdate", () => {
    if (state.report && !result.seeking) markFrame(Math.floor(result.currentTime * state.report.model_fps));
  });
  $("curve").addEventListener("click", (e) => {
    if (!state.report) return;
    const n = state.report.curve.length;
    const k = CURVE.frameAt(e.clientX, $("curve").getBoundingClientRect(), n);
    seekResult(Math.max(0, Math.min(n - 1, k)));
  });
  setupCanvas();
  await restore();
}

main();
