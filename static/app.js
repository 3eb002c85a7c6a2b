// The dashboard: a live table of jobs fed by /ws, and a detail view fed by /ws/jobs/{jobId}.
import { signIn, token } from "./auth.js";
import { Feed } from "./feed.js";
import { renderDetail, setServerTime } from "./detail.js";
import { formatTime } from "./format.js";

const FINAL = new Set(["COMPLETED", "FAILED", "CANCELLED"]);
// Events that change who a job waits for, or until when: the detail takes the whole job afresh on each
// (GET /api/jobs/{jobId} has its participation), as an event alone does not say who is still awaited.
const PARTICIPATION_EVENTS = new Set([
  "client.done", "job.quorum_reached", "round.closed", "client.dropped", "shares.posted", "unmask.posted",
  "keys.registered", "keys.complete", "job.aggregating", "job.completed", "job.failed",
]);
const CONNECTION_TEXT = { connecting: "Connecting…", live: "Live", reconnecting: "Reconnecting…", offline: "Offline, retrying…" };

const jobs = new Map(); // jobId -> summary
const rows = new Map(); // jobId -> <tr>
const dirty = new Set();
let frame = 0;
let selected = null;
let detailFeed = null;
let detailJob = null;
let refresh = null; // {jobId, again}: the detail's re-fetch in flight, and whether another is due after it

const tbody = document.querySelector("#jobs tbody");
const filter = document.getElementById("status-filter");
const search = document.getElementById("search");
const connection = document.getElementById("connection");
const count = document.getElementById("job-count");
const empty = document.getElementById("empty");

function setConnection(state) {
  connection.dataset.state = state;
  connection.textContent = CONNECTION_TEXT[state] || state;
}

function schedule(jobId) {
  dirty.add(jobId);
  if (!frame) frame = requestAnimationFrame(flush);
}

function applySummary(summary) {
  const known = jobs.get(summary.jobId);
  if (known && known.version > summary.version) return;
  jobs.set(summary.jobId, { ...known, ...summary });
  schedule(summary.jobId);
}

function applyEvent(event) {
  const job = jobs.get(event.jobId);
  if (event.type === "job.expired") {
    jobs.delete(event.jobId);
    schedule(event.jobId);
    return;
  }
  if (job && event.version <= job.version) return;
  const next = job ? { ...job } : { jobId: event.jobId, status: "IN_PROGRESS", doneCount: 0, totalClients: 0, createdAt: event.at };
  next.version = event.version;
  next.updatedAt = event.at;
  if (event.totalClients !== undefined) next.totalClients = event.totalClients;
  if (event.doneCount !== undefined) next.doneCount = event.doneCount;
  if (event.status) next.status = event.status;
  if (event.type === "job.created") next.createdAt = event.at;
  jobs.set(event.jobId, next);
  schedule(event.jobId);
}

function buildRow(jobId) {
  const tr = document.createElement("tr");
  tr.dataset.jobId = jobId;
  tr.innerHTML = `<td><button type="button" class="job-link"></button></td>
    <td><span class="badge"></span></td>
    <td><div class="progress"><progress max="1" value="0"></progress><span class="ratio num"></span></div></td>
    <td class="created"></td><td class="updated"></td>`;
  const button = tr.querySelector("button");
  button.textContent = jobId;
  button.addEventListener("click", () => select(jobId));
  return tr;
}

function updateRow(tr, job) {
  const badge = tr.querySelector(".badge");
  badge.textContent = job.status.replace("_", " ");
  badge.dataset.status = job.status;
  const bar = tr.querySelector("progress");
  bar.max = Math.max(job.totalClients, 1);
  bar.value = job.doneCount;
  bar.setAttribute("aria-label", `${job.jobId}: ${job.doneCount} of ${job.totalClients} clients done`);
  tr.querySelector(".ratio").textContent = `${job.doneCount}/${job.totalClients}`;
  tr.querySelector(".created").textContent = formatTime(job.createdAt);
  tr.querySelector(".updated").textContent = formatTime(job.updatedAt);
  tr.dataset.status = job.status;
  tr.classList.toggle("selected", job.jobId === selected);
  tr.hidden = !visible(job);
}

function visible(job) {
  const status = filter.value;
  const text = search.value.trim().toLowerCase();
  return (!status || job.status === status) && (!text || job.jobId.toLowerCase().includes(text));
}

function flush() {
  frame = 0;
  const added = [];
  for (const jobId of dirty) {
    const job = jobs.get(jobId);
    let tr = rows.get(jobId);
    if (!job) {
      if (tr) tr.remove();
      rows.delete(jobId);
      continue;
    }
    if (!tr) {
      tr = buildRow(jobId);
      rows.set(jobId, tr);
      added.push(tr);
    }
    updateRow(tr, job);
  }
  dirty.clear();
  if (added.length) {
    // Newest first: new rows go on top, in their creation order.
    added.sort((a, b) => (jobs.get(b.dataset.jobId).createdAt || "").localeCompare(jobs.get(a.dataset.jobId).createdAt || ""));
    const fragment = document.createDocumentFragment();
    added.forEach((tr) => fragment.appendChild(tr));
    tbody.prepend(fragment);
  }
  refreshCount();
}

function refreshCount() {
  let shown = 0;
  for (const job of jobs.values()) if (visible(job)) shown += 1;
  count.textContent = shown === jobs.size ? `(${jobs.size})` : `(${shown} of ${jobs.size})`;
  empty.hidden = shown > 0;
  empty.textContent = jobs.size ? "No job matches the filter." : "No jobs yet.";
}

function refilter() {
  for (const [jobId, tr] of rows) tr.hidden = !visible(jobs.get(jobId));
  refreshCount();
}

function onAllMessage(message) {
  if (message.type === "snapshot") {
    const fresh = new Set(message.jobs.map((job) => job.jobId));
    for (const jobId of jobs.keys()) {
      if (!fresh.has(jobId)) {
        jobs.delete(jobId);
        schedule(jobId);
      }
    }
    // Oldest first so that prepending keeps the newest on top.
    for (const summary of [...message.jobs].reverse()) {
      const known = jobs.get(summary.jobId);
      jobs.set(summary.jobId, summary.version >= (known?.version ?? -1) ? summary : known);
      schedule(summary.jobId);
    }
  } else if (message.type === "job.snapshot") {
    if (message.job) applySummary(message.job);
    else {
      jobs.delete(message.jobId);
      schedule(message.jobId);
    }
  } else if (message.jobId && (jobs.has(message.jobId) || message.type === "job.created")) {
    // The server sends a job.snapshot for a job this page does not know; an event alone never makes a row.
    applyEvent(message);
  }
}

function select(jobId) {
  if (detailFeed) detailFeed.close();
  selected = jobId;
  detailJob = null;
  history.replaceState(null, "", jobId ? `#job=${encodeURIComponent(jobId)}` : location.pathname);
  for (const [id, tr] of rows) tr.classList.toggle("selected", id === jobId);
  const panel = document.getElementById("detail");
  document.querySelector("main").classList.toggle("with-detail", Boolean(jobId));
  panel.hidden = !jobId;
  if (!jobId) return;
  document.getElementById("detail-id").textContent = jobId;
  renderDetail(null, jobId);
  detailFeed = new Feed(`/ws/jobs/${encodeURIComponent(jobId)}`, {
    onState: () => {},
    resumeQuery: () => (detailJob ? `since=${detailJob.version}` : ""),
    onMessage: (message) => onDetailMessage(jobId, message),
  });
}

function onDetailMessage(jobId, message) {
  if (jobId !== selected) return;
  if (message.type === "job.expired") {
    // Gone: show it as such, and never put its row back from here.
    detailJob = null;
    renderDetail(null, jobId);
    return;
  }
  if (message.type === "snapshot") {
    setServerTime(message.at);
    detailJob = message.job ? { ...message.job } : null;
    if (detailJob) detailJob.version = message.version;
  } else if (detailJob && message.version > detailJob.version) {
    detailJob.version = message.version;
    detailJob.updatedAt = message.at;
    if (message.doneCount !== undefined) detailJob.doneCount = message.doneCount;
    if (message.status) detailJob.status = message.status;
    if (message.type === "client.done") detailJob.clients = [...(detailJob.clients || []), { clientId: message.clientId, reportedAt: message.at }];
    if (message.type === "job.completed") {
      detailJob.finalResult = message.finalResult ?? null;
      detailJob.completedAt = message.at;
    }
    if (message.type === "job.failed") detailJob.failureReason = message.reason;
    if (message.type === "job.aggregating") detailJob.aggregatingAt = message.at;
    if (message.type === "keys.registered" || message.type === "keys.complete") {
      detailJob.keyRound = { keyCount: message.keyCount, totalClients: message.totalClients, complete: message.keyCount >= message.totalClients };
    }
    if (message.type === "delivery.succeeded" || message.type === "delivery.failed") {
      const { type, jobId, version, at, destination, ...record } = message;
      detailJob.deliveries = { ...(detailJob.deliveries || {}), [destination]: record };
    }
    if (PARTICIPATION_EVENTS.has(message.type)) refreshDetail(jobId);
  } else if (!detailJob && message.type === "job.created") {
    // Created after we opened it: take the whole job afresh.
    detailFeed.close();
    select(jobId);
    return;
  }
  renderDetail(detailJob, jobId);
  if (detailJob && FINAL.has(detailJob.status)) applySummary({ ...detailJob });
}

// Re-fetches the open job; a burst of events costs one request in flight and at most one after it.
function refreshDetail(jobId) {
  if (refresh?.jobId === jobId) {
    refresh.again = true;
    return;
  }
  const current = { jobId, again: true };
  refresh = current;
  (async () => {
    try {
      while (current.again && selected === jobId) {
        current.again = false;
        const job = await fetchJob(jobId);
        if (!job || selected !== jobId || !detailJob) continue;
        // Older than what the socket showed meanwhile (a delivery event, say): the server has that by now.
        if (job.version < detailJob.version) {
          current.again = true;
          continue;
        }
        detailJob = job;
        renderDetail(detailJob, jobId);
        if (FINAL.has(detailJob.status)) applySummary({ ...detailJob });
      }
    } finally {
      if (refresh === current) refresh = null;
    }
  })();
}

async function fetchJob(jobId) {
  const current = token();
  try {
    const response = await fetch(`/api/jobs/${encodeURIComponent(jobId)}`, { headers: current ? { Authorization: `Bearer ${current}` } : {} });
    return response.ok ? await response.json() : null;
  } catch {
    return null; // offline: the feed reconnects and its snapshot brings the job
  }
}

filter.addEventListener("change", refilter);
search.addEventListener("input", refilter);
document.getElementById("detail-close").addEventListener("click", () => select(null));

await signIn();
new Feed("/ws", { onMessage: onAllMessage, onState: setConnection });
const fromHash = /^#job=(.+)$/.exec(location.hash);
if (fromHash) select(decodeURIComponent(fromHash[1]));
