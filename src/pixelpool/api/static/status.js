// pixelpool's status page: plain DOM, no build step. It reads /api/status,
// /api/model-list and /api/jobs, follows /api/ws for live events, and submits jobs
// to /api/enqueue/generate. With auth on, the key stays in this tab's session
// storage and goes out as `Authorization: Bearer` (on the WebSocket: as the
// subprotocol `bearer.<key>`, never in a URL).
"use strict";

const KEY_STORE = "pixelpool.key";
const RECENT = 12;
const jobs = new Map(); // job id -> the latest view of it (from /api/jobs and events)
const thumbs = new Map(); // job id -> object URL of its result
let currentJob = null; // the job the form submitted last
let socket = null;
let retryMs = 500;

const $ = (id) => document.getElementById(id);
const key = () => sessionStorage.getItem(KEY_STORE) || "";

function headers(extra = {}) {
  const k = key();
  return k ? { ...extra, Authorization: `Bearer ${k}` } : extra;
}

class AuthError extends Error {}

async function api(path, options = {}) {
  const resp = await fetch(path, { ...options, headers: headers(options.headers) });
  if (resp.status === 401) throw new AuthError(await errorText(resp));
  if (!resp.ok) throw new Error(await errorText(resp));
  return resp;
}

async function errorText(resp) {
  try {
    const body = await resp.json();
    const detail = body.detail && Array.isArray(body.detail) ? body.detail[0] : null;
    return detail && detail.field ? `${detail.field}: ${detail.message}` : body.error || body.detail || resp.statusText;
  } catch {
    return resp.statusText;
  }
}

function el(tag, { dataset = {}, ...props } = {}, ...children) {
  const node = Object.assign(document.createElement(tag), props);
  Object.assign(node.dataset, dataset); // read-only as a property: filled in instead
  node.append(...children.filter((c) => c !== null && c !== undefined));
  return node;
}

function bytes(n) {
  if (n === null || n === undefined) return "";
  const units = ["B", "KiB", "MiB", "GiB", "TiB"];
  let i = 0;
  while (n >= 1024 && i < units.length - 1) { n /= 1024; i++; }
  return `${n.toFixed(i ? 1 : 0)} ${units[i]}`;
}

// ---- auth ----------------------------------------------------------------

function askForKey(message) {
  $("main").hidden = true;
  $("key-form").hidden = false;
  $("key-error").textContent = message || "";
  $("key").focus();
}

$("key-form").addEventListener("submit", (event) => {
  event.preventDefault();
  sessionStorage.setItem(KEY_STORE, $("key").value.trim());
  $("key").value = "";
  start();
});

$("forget-key").addEventListener("click", () => {
  sessionStorage.removeItem(KEY_STORE);
  if (socket) socket.close();
  askForKey("");
});

// ---- status, models, jobs ----------------------------------------------------

function renderStatus(status) {
  $("queue").textContent = `queue ${status.queue_depth}, active ${status.active_jobs}`;
  const list = status.devices.map((d) => {
    const cache = d.cache || {};
    const models = (cache.models || []).map((m) => el("li", { textContent: `${m.key} (${m.tier}, ${bytes(m.bytes)}${m.pinned ? ", pinned" : ""})` }));
    const memory = cache.budget_bytes ? `device ${bytes(cache.used_bytes)} / ${bytes(cache.budget_bytes)}, RAM ${bytes(cache.ram_used_bytes)} / ${bytes(cache.ram_budget_bytes)}` : "";
    const state = !d.ready ? "starting" : d.busy ? `busy (${(d.active_jobs || []).length} jobs)` : "idle";
    return el("div", { className: "device", dataset: { device: d.id } },
      el("strong", { textContent: `${d.id} ${d.name || ""}` }), ` ${state}`,
      el("div", { textContent: memory }),
      models.length ? el("ul", {}, ...models) : el("div", { textContent: "no model loaded" }));
  });
  $("devices").replaceChildren(...list);
}

async function refreshStatus() {
  renderStatus(await (await api("/api/status")).json());
}

async function loadModels() {
  const models = await (await api("/api/model-list")).json();
  $("models").tBodies[0].replaceChildren(...models.map((m) => el("tr", {},
    el("td", { textContent: m.name }), el("td", { textContent: m.family }),
    el("td", { textContent: m.architecture }), el("td", { textContent: bytes(m.size_bytes) }))));
  const select = $("model");
  const chosen = select.value;
  const options = models.filter((m) => m.family === "diffusion").map((m) => el("option", { value: m.name, textContent: m.name }));
  select.replaceChildren(...options);
  if (chosen) select.value = chosen;
}

async function loadJobs() {
  const page = await (await api(`/api/jobs?limit=${RECENT}`)).json();
  for (const view of page.jobs.reverse()) jobs.set(view.job_id, { ...jobs.get(view.job_id), ...view });
  renderJobs();
}

function renderJobs() {
  const recent = [...jobs.values()].sort((a, b) => (b.created_at || 0) - (a.created_at || 0)).slice(0, RECENT);
  $("jobs").replaceChildren(...recent.map((job) => {
    const img = el("img", { alt: job.status });
    if (thumbs.has(job.job_id)) img.src = thumbs.get(job.job_id);
    else if (job.preview) img.src = job.preview;
    else if (job.status === "completed") fetchThumb(job.job_id);
    const percent = Math.round(100 * (job.progress || 0));
    return el("li", { dataset: { job: job.job_id, status: job.status } }, img,
      el("div", { className: "bar" }, el("div", { style: `width: ${percent}%` })),
      el("div", { textContent: `${job.status} ${job.status === "running" ? percent + "%" : ""}` }),
      el("div", { textContent: `${job.op || ""} ${job.model || ""}` }),
      job.error ? el("div", { className: "error", textContent: job.error }) : null);
  }));
}

async function fetchThumb(jobId) {
  if (thumbs.has(jobId)) return thumbs.get(jobId);
  thumbs.set(jobId, ""); // fetching
  try {
    const resp = await api(`/api/job/${encodeURIComponent(jobId)}/result`);
    if (!(resp.headers.get("content-type") || "").startsWith("image/")) return "";
    const url = URL.createObjectURL(await resp.blob());
    thumbs.set(jobId, url);
    renderJobs();
    if (jobId === currentJob) showCurrent();
    return url;
  } catch {
    thumbs.delete(jobId);
    return "";
  }
}

// ---- the generate form -----------------------------------------------------

$("generate-form").addEventListener("submit", async (event) => {
  event.preventDefault();
  const number = (id) => ($(id).value === "" ? undefined : Number($(id).value));
  const body = {
    prompt: $("prompt").value, model: $("model").value || undefined,
    width: number("width"), height: number("height"), steps: number("steps"), seed: number("seed"),
    preview: true,
  };
  $("submit").disabled = true;
  $("current").hidden = false;
  $("current-image").removeAttribute("src");
  try {
    const resp = await api("/api/enqueue/generate", {
      method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify(body),
    });
    currentJob = (await resp.json()).job_id;
    jobs.set(currentJob, { job_id: currentJob, status: "queued", created_at: Date.now() / 1000, op: "generate", model: body.model, ...jobs.get(currentJob) });
    showCurrent();
    renderJobs();
    if (!socket || socket.readyState !== WebSocket.OPEN) pollCurrent(currentJob);
  } catch (error) {
    $("current-status").textContent = error.message;
    $("current-status").className = "error";
    $("submit").disabled = false;
    if (error instanceof AuthError) askForKey(error.message);
  }
});

function showCurrent() {
  const job = jobs.get(currentJob);
  if (!job) return;
  const percent = Math.round(100 * (job.status === "completed" ? 1 : job.progress || 0));
  $("current-progress").style.width = `${percent}%`;
  $("current-status").className = job.error ? "error" : "";
  $("current-status").textContent = `${currentJob}: ${job.status}${job.status === "running" ? ` ${percent}%` : ""}${job.error ? ` (${job.error})` : ""}`;
  $("current").dataset.status = job.status;
  const image = $("current-image");
  if (thumbs.get(currentJob)) {
    image.src = thumbs.get(currentJob);
    image.dataset.kind = "result";
  } else if (job.preview) {
    image.src = job.preview;
    image.dataset.kind = "preview";
  }
  if (["completed", "failed", "cancelled", "expired"].includes(job.status)) {
    $("submit").disabled = false;
    if (job.status === "completed") fetchThumb(currentJob);
  }
}

async function pollCurrent(jobId) {
  // Only while the WebSocket is down: it carries the live events otherwise.
  while (jobId === currentJob && (!socket || socket.readyState !== WebSocket.OPEN)) {
    try {
      const view = await (await api(`/api/job/${encodeURIComponent(jobId)}`)).json();
      onEvent({ ...view, type: view.status });
      if (["completed", "failed", "cancelled", "expired"].includes(view.status)) return;
    } catch {
      return;
    }
    await new Promise((resolve) => setTimeout(resolve, 1000));
  }
}

// ---- live events -------------------------------------------------------------

function onEvent(event) {
  if (event.type === "status_update") {
    refreshStatus().catch(() => {});
    return;
  }
  if (!event.job_id || event.type === "complete") return; // `complete`: FoxBurrow's copy
  const job = { ...(jobs.get(event.job_id) || { job_id: event.job_id, created_at: Date.now() / 1000 }) };
  if (event.status) job.status = event.status;
  if (typeof event.progress === "number") job.progress = event.progress;
  if (event.type === "preview") job.preview = `data:${event.media_type || "image/png"};base64,${event.image}`;
  if (event.error) job.error = event.error;
  jobs.set(event.job_id, job);
  if (["started", "completed", "failed", "cancelled"].includes(event.type)) refreshStatus().catch(() => {});
  renderJobs();
  if (event.job_id === currentJob) showCurrent();
}

const TOKEN_CHARS = /^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$/; // what a subprotocol may carry

function connect() {
  let url = `${location.protocol === "https:" ? "wss" : "ws"}://${location.host}/api/ws`;
  const protocols = ["pixelpool"];
  if (TOKEN_CHARS.test(key())) protocols.push(`bearer.${key()}`);
  else if (key()) url += `?apikey=${encodeURIComponent(key())}`; // redacted from our logs
  const ws = new WebSocket(url, protocols);
  socket = ws;
  ws.onopen = () => {
    retryMs = 500;
    $("connection").textContent = "live";
    $("connection").className = "pill live";
  };
  ws.onmessage = (message) => onEvent(JSON.parse(message.data));
  ws.onclose = (close) => {
    if (socket !== ws) return;
    $("connection").textContent = "disconnected";
    $("connection").className = "pill down";
    if (close.code === 4401) { askForKey(close.reason); return; }
    setTimeout(connect, retryMs);
    retryMs = Math.min(retryMs * 2, 10000);
    if (currentJob) pollCurrent(currentJob);
  };
}

// ---- start -----------------------------------------------------------------

async function start() {
  try {
    await Promise.all([refreshStatus(), loadModels(), loadJobs()]);
  } catch (error) {
    if (error instanceof AuthError) { askForKey(key() ? error.message : ""); return; }
    $("connection").textContent = error.message;
    $("connection").className = "pill down";
    return;
  }
  $("key-form").hidden = true;
  $("main").hidden = false;
  $("forget-key").hidden = !key();
  if (socket) { const old = socket; socket = null; old.close(); }
  connect();
}

start();
