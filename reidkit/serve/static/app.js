"use strict";

// The search page: upload a picture or pick a stored query, show the nearest gallery images.
const QUERY_PAGE = 48; // query thumbnails added per "show more"
const byId = (id) => document.getElementById(id);
let health = null;
let queries = [];
let queriesShown = 0;
let previewUrl = null;

async function fetchJSON(url, options) {
  const response = await fetch(url, options);
  let body = null;
  try {
    body = await response.json();
  } catch {
    body = null; // not JSON: fall back to the HTTP status below
  }
  if (!response.ok) {
    const detail = body && typeof body.detail === "string" ? body.detail : null;
    throw new Error(detail || `the request failed (HTTP ${response.status})`);
  }
  return body;
}

function showError(message) {
  const box = byId("error");
  box.textContent = message || "";
  box.hidden = !message;
}

function setBusy(busy, text) {
  byId("search-button").disabled = busy;
  byId("results").setAttribute("aria-busy", String(busy));
  if (text) byId("status").textContent = text;
}

// Cameras and people by the data set's own names (camid and pid are internal indices).
function describe(item) {
  const person = item.identity !== null ? `person ${item.identity}` : "person unknown";
  const seen = item.sighting ? `, ${formatTime(item.sighting.time)}, frame ${item.sighting.frame}` : "";
  return `camera ${item.camera}, ${person}${seen}`;
}

function formatTime(seconds) {
  const minutes = Math.floor(seconds / 60);
  const rest = (seconds - 60 * minutes).toFixed(1).padStart(4, "0");
  return `${minutes}:${rest}`;
}

function showFrame(result, rank) {
  const s = result.sighting;
  byId("frame-image").src = `/gallery/${result.id}/frame`;
  byId("frame-image").alt = `Frame ${s.frame} of ${s.video} with match ${rank} boxed`;
  byId("frame-caption").textContent =
    `Match ${rank}: camera ${s.camera}, ${formatTime(s.time)} (${s.time.toFixed(1)} s), frame ` +
    `${s.frame} of ${s.video}, tracklet ${s.tracklet}`;
  byId("frame-view").hidden = false;
  byId("frame-view").scrollIntoView({ block: "nearest" });
}

function showPreview(src, caption) {
  if (previewUrl) URL.revokeObjectURL(previewUrl);
  previewUrl = src.startsWith("blob:") ? src : null;
  byId("query-image").src = src;
  byId("query-image").alt = caption;
  byId("query-caption").textContent = caption;
  byId("query-preview").hidden = false;
}

function field(list, name, value) {
  const dt = document.createElement("dt");
  dt.textContent = name;
  const dd = document.createElement("dd");
  dd.textContent = value;
  list.append(dt, dd);
}

function renderResults(results, queryPid) {
  const cards = results.map((r, rank) => {
    const card = document.createElement("li");
    card.className = "card";
    const same = queryPid !== null && queryPid >= 0 && r.pid === queryPid;
    if (same) card.classList.add("match");
    const img = document.createElement("img");
    img.src = `/gallery/${r.id}`;
    img.alt = `Match ${rank + 1}: gallery image ${r.id}, ${describe(r)}`;
    img.loading = "lazy";
    const facts = document.createElement("dl");
    field(facts, "Distance", r.distance.toFixed(4));
    field(facts, "Camera", r.camera);
    if (r.identity !== null) field(facts, "Person", r.identity);
    if (r.sighting) {
      field(facts, "Time", formatTime(r.sighting.time));
      field(facts, "Frame", String(r.sighting.frame));
    }
    card.append(img, facts);
    if (r.sighting) {
      const button = document.createElement("button");
      button.type = "button";
      button.className = "frame-button";
      button.textContent = "Show frame";
      button.addEventListener("click", () => showFrame(r, rank + 1));
      card.append(button);
    }
    if (same) {
      const badge = document.createElement("p");
      badge.className = "badge";
      badge.textContent = "Same person";
      card.append(badge);
    }
    return card;
  });
  byId("results").replaceChildren(...cards);
  const filtered = filterParams().toString() !== "";
  byId("status").textContent = results.length === 0 && filtered
    ? "No gallery image passes the filters."
    : `The ${results.length} nearest of ${health.gallery_size} gallery images` +
      `${filtered ? " that pass the filters" : ""}, nearest first.`;
}

// The camera and time filters as query parameters (empty when none is set).
function filterParams() {
  const params = new URLSearchParams();
  for (const option of byId("camera-select").selectedOptions) params.append("camera", option.value);
  for (const [id, name] of [["time-from", "time_from"], ["time-to", "time_to"]]) {
    const value = byId(id).value.trim();
    if (value !== "") params.set(name, value);
  }
  return params;
}

function searchUrl(path, k) {
  const params = filterParams();
  params.set("k", String(k));
  return `${path}?${params}`;
}

async function runSearch(url, options, queryPid) {
  showError("");
  byId("results").replaceChildren();
  byId("frame-view").hidden = true;
  setBusy(true, "Searching…");
  try {
    const data = await fetchJSON(url, options);
    renderResults(data.results, queryPid);
  } catch (err) {
    showError(err.message);
    byId("status").textContent = "No results.";
  } finally {
    setBusy(false);
  }
}

function kValue() {
  const k = Number(byId("k-input").value);
  if (!Number.isInteger(k) || k < 1 || k > health.max_k) {
    throw new Error(`The number of matches must be a whole number from 1 to ${health.max_k}.`);
  }
  return k;
}

function onUpload(event) {
  event.preventDefault();
  const file = byId("image-input").files[0];
  try {
    if (!file) throw new Error("Choose a picture first.");
    if (file.size > health.max_upload_bytes) {
      throw new Error(`The file is ${file.size.toLocaleString()} bytes; the limit is ` +
        `${health.max_upload_bytes.toLocaleString()} bytes.`);
    }
    const k = kValue();
    showPreview(URL.createObjectURL(file), `Uploaded picture ${file.name}`);
    const form = new FormData();
    form.append("image", file);
    runSearch(searchUrl("/search", k), { method: "POST", body: form }, null);
  } catch (err) {
    showError(err.message);
  }
}

function pickQuery(query) {
  try {
    const k = kValue();
    showPreview(`/query/${query.id}`, `Query ${query.id}: ${describe(query)}`);
    runSearch(searchUrl(`/search/query/${query.id}`, k), { method: "POST" }, query.pid);
  } catch (err) {
    showError(err.message);
  }
}

function showMoreQueries() {
  const items = queries.slice(queriesShown, queriesShown + QUERY_PAGE).map((query) => {
    const item = document.createElement("li");
    const button = document.createElement("button");
    button.type = "button";
    button.className = "thumb";
    const img = document.createElement("img");
    img.src = `/query/${query.id}`;
    img.alt = `Query ${query.id}: ${describe(query)}`;
    img.loading = "lazy";
    button.append(img);
    button.addEventListener("click", () => pickQuery(query));
    item.append(button);
    return item;
  });
  byId("query-list").append(...items);
  queriesShown += items.length;
  byId("more-queries").hidden = queriesShown >= queries.length;
}

function setUpFilters() {
  const select = byId("camera-select");
  select.replaceChildren(...health.cameras.map((name) => {
    const option = document.createElement("option");
    option.value = name;
    option.textContent = `camera ${name}`;
    return option;
  }));
  select.size = Math.min(4, Math.max(2, health.cameras.length));
  byId("camera-field").hidden = health.cameras.length < 2;
  byId("time-field").hidden = !health.footage;
  if (health.time_range) {
    byId("time-from").placeholder = health.time_range[0].toFixed(1);
    byId("time-to").placeholder = health.time_range[1].toFixed(1);
  }
  byId("filters").hidden = byId("camera-field").hidden && byId("time-field").hidden;
}

async function init() {
  byId("upload-form").addEventListener("submit", onUpload);
  byId("frame-close").addEventListener("click", () => { byId("frame-view").hidden = true; });
  byId("more-queries").addEventListener("click", showMoreQueries);
  try {
    health = await fetchJSON("/health");
  } catch (err) {
    byId("service-info").textContent = "The service is not answering.";
    showError(err.message);
    return;
  }
  byId("service-info").textContent =
    `Gallery of ${health.gallery_size} images · model ${health.model}`;
  byId("k-input").max = String(health.max_k);
  byId("k-input").value = String(health.k_default);
  setUpFilters();
  if (health.query_size > 0) {
    try {
      queries = (await fetchJSON("/queries")).queries;
    } catch (err) {
      showError(err.message);
      return;
    }
    byId("query-count").textContent = String(queries.length);
    byId("query-picker").hidden = false;
    showMoreQueries();
  }
}

init();
