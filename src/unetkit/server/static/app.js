// The unetkit page: drop or choose an image, POST it to /predict, show the overlay, legend and areas.
// Everything stays on this server: no other origin is contacted (see the page's Content-Security-Policy).
"use strict";

const $ = (id) => document.getElementById(id);
let info = null;  // GET /health: model, classes, colours, limits

function showError(message) {
  $("error").textContent = message;
  $("error").hidden = !message;
}

function swatch(color) {
  const span = document.createElement("span");
  span.className = "swatch";
  span.style.background = `rgb(${color.join(",")})`;
  return span;
}

function cell(text, numeric) {
  const td = document.createElement("td");
  td.textContent = text;
  if (numeric) td.className = "num";
  return td;
}

async function loadInfo() {
  try {
    const response = await fetch("/health");
    info = await response.json();
    $("model").textContent = `${info.model} (${info.backend}): ${info.classes.join(", ")}; ${info.in_channels} input channel(s)`;
    $("limits").textContent = `PNG, JPEG, TIFF or BMP; at most ${info.limits.max_upload_mb} MB and ${info.limits.max_pixels.toLocaleString("en")} pixels`;
  } catch (err) {
    $("model").textContent = "the server does not answer";
  }
}

function render(result) {
  $("overlay").src = `data:image/png;base64,${result.overlay_png}`;
  $("caption").textContent = `${result.file}: ${result.width} x ${result.height} pixels, segmented in ${result.seconds} s`;
  const body = $("areas").querySelector("tbody");
  body.replaceChildren();
  for (const c of result.classes) {
    const row = document.createElement("tr");
    const first = document.createElement("td");
    first.append(swatch(c.color));
    row.append(first, cell(c.name), cell(c.pixels.toLocaleString("en"), true), cell(`${(100 * c.fraction).toFixed(2)} %`, true));
    body.append(row);
  }
  const inst = result.instances;
  $("instances").hidden = !inst;
  if (inst) $("instances").textContent = `${inst.count} object(s) (${inst.method})`;
  $("result").hidden = false;
}

async function segment(file) {
  showError("");
  if (info && file.size > info.limits.max_upload_mb * 1048576) {
    showError(`${file.name} is ${(file.size / 1048576).toFixed(1)} MB; this server accepts at most ${info.limits.max_upload_mb} MB`);
    return;
  }
  $("status").textContent = `segmenting ${file.name}...`;
  const form = new FormData();
  form.append("file", file, file.name);
  try {
    const response = await fetch("/predict?format=json&overlay=true", { method: "POST", body: form });
    const result = await response.json().catch(() => ({ detail: `HTTP ${response.status}` }));
    if (!response.ok) {
      showError(typeof result.detail === "string" ? result.detail : JSON.stringify(result.detail));
      $("status").textContent = "";
      return;
    }
    render(result);
    $("mask-link").href = `data:image/png;base64,${result.mask_png}`;
    $("mask-link").download = file.name.replace(/\.[^.]*$/, "") + "_mask.png";
    $("status").textContent = "";
  } catch (err) {
    showError(`the request failed: ${err}`);
    $("status").textContent = "";
  }
}

function setup() {
  const drop = $("drop");
  $("file").addEventListener("change", (e) => { if (e.target.files.length) segment(e.target.files[0]); });
  for (const name of ["dragenter", "dragover"]) {
    drop.addEventListener(name, (e) => { e.preventDefault(); drop.classList.add("over"); });
  }
  for (const name of ["dragleave", "drop"]) {
    drop.addEventListener(name, () => drop.classList.remove("over"));
  }
  drop.addEventListener("drop", (e) => {
    e.preventDefault();
    if (e.dataTransfer.files.length) segment(e.dataTransfer.files[0]);
  });
  drop.addEventListener("keydown", (e) => { if (e.key === "Enter" || e.key === " ") $("file").click(); });
  loadInfo();
}

setup();
