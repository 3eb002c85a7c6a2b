// The job detail panel: summary, participation (k of n, rounds, who is awaited and until when), result per
// feature with small charts, clients, schema.
import { formatTime } from "./format.js";

const $ = (id) => document.getElementById(id);

function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs)) node.setAttribute(key, value);
  for (const child of children) node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  return node;
}

function formatValue(value) {
  if (value === null || value === undefined) return "–";
  if (typeof value === "number") return Number.isInteger(value) ? value.toLocaleString() : value.toLocaleString(undefined, { maximumFractionDigits: 4 });
  if (typeof value === "object") return JSON.stringify(value);
  return String(value);
}

function barChart(title, entries, scale = null) {
  const chart = el("div", { class: "chart", role: "img", "aria-label": title });
  const max = scale ?? Math.max(...entries.map(([, value]) => value), 0);
  for (const [label, value, shown] of entries) {
    const fill = el("div", { class: "fill" });
    fill.style.width = `${max > 0 ? (100 * value) / max : 0}%`;
    chart.append(el("span", {}, label), el("div", { class: "track" }, fill), el("span", { class: "num" }, shown ?? formatValue(value)));
  }
  return chart;
}

function categoryEntries(feature) {
  const source = feature.categoryCounts || feature.categories || feature.counts;
  if (!source || typeof source !== "object") return null;
  if (Array.isArray(source)) {
    return source.map((item) => [String(item.category ?? item.name), Number(item.count) || 0]);
  }
  return Object.entries(source).map(([name, value]) => [name, Number(typeof value === "object" ? value.count : value) || 0]);
}

function renderFeature(feature) {
  const name = feature.featureName || feature.name || "feature";
  const box = el("div", { class: "feature" }, el("h4", {}, `${name} `, el("span", { class: "badge" }, feature.dataType || "")));
  const table = el("table", {}, el("caption", { class: "visually-hidden" }, `Aggregated statistics of ${name}`));
  const body = el("tbody");
  for (const [key, value] of Object.entries(feature)) {
    if (["featureName", "name", "dataType", "categoryCounts", "categories", "counts"].includes(key)) continue;
    body.append(el("tr", {}, el("th", { scope: "row" }, key), el("td", { class: "num" }, formatValue(value))));
  }
  table.append(body);
  box.append(table);
  if (feature.dataType === "BOOLEAN" && typeof feature.percentage === "number") {
    box.append(barChart(`${name}: ${feature.percentage}% true`, [["true", feature.percentage, `${feature.percentage}%`], ["false", 100 - feature.percentage, `${Math.round((100 - feature.percentage) * 100) / 100}%`]], 100));
  }
  const categories = categoryEntries(feature);
  if (categories && categories.length) box.append(barChart(`${name}: count per category`, categories));
  return box;
}

function renderResult(job) {
  const target = $("detail-result");
  target.replaceChildren();
  const result = job?.finalResult;
  if (!result) {
    target.append(el("p", { class: "muted" }, job?.status === "FAILED" ? "The job failed; no result." : "No result yet."));
    return;
  }
  const features = Array.isArray(result) ? result : result.aggregatedResults;
  if (Array.isArray(features)) features.forEach((feature) => target.append(renderFeature(feature)));
  else target.append(el("pre", {}, JSON.stringify(result, null, 2)));
}

export function renderDetail(job, jobId) {
  const summary = $("detail-summary");
  summary.replaceChildren();
  if (!job) {
    summary.append(el("dt", {}, "Status"), el("dd", {}, `No job ${jobId} (yet)`));
  } else {
    const items = [
      ["Status", el("span", { class: "badge", "data-status": job.status }, job.status.replace("_", " "))],
      ["Progress", `${job.doneCount}/${job.totalClients} clients`],
      ["Aggregation", job.aggregation || "service default"],
      ...(job.keyRound ? [["Key round", `${job.keyRound.keyCount}/${job.keyRound.totalClients} keys${job.keyRound.complete ? " (complete)" : ""}`]] : []),
      ["Created", formatTime(job.createdAt)],
      ["Updated", formatTime(job.updatedAt)],
      ["Aggregating since", formatTime(job.aggregatingAt) || "–"],
      ["Finished", formatTime(job.completedAt) || "–"],
      ["Version", job.version],
    ];
    for (const [term, value] of items) summary.append(el("dt", {}, term), el("dd", {}, value));
  }
  const reason = $("detail-reason");
  reason.hidden = !job?.failureReason;
  reason.textContent = job?.failureReason ? `Failed: ${job.failureReason}` : "";
  renderParticipation(job);
  renderResult(job);
  renderDeliveries(job);
  const clients = document.querySelector("#detail-clients tbody");
  clients.replaceChildren(...(job?.clients || []).map((client, i) => el("tr", {}, el("td", { class: "num" }, i + 1), el("td", {}, client.clientId), el("td", {}, formatTime(client.reportedAt)))));
  const schema = document.querySelector("#detail-schema tbody");
  schema.replaceChildren(...(job?.schema || []).map((feature) => el("tr", {}, el("td", {}, feature.featureName || feature.name), el("td", {}, feature.dataType), el("td", {}, layoutText(feature)))));
}

function layoutText(feature) {
  if (feature.fields) return feature.fields.join(", ");
  if (feature.categories) return feature.categories.join(", ");
  if (feature.bounds) return `[${feature.bounds.join(", ")}], ${feature.scale || 0} decimals`;
  return "";
}

function renderDeliveries(job) {
  const list = $("detail-deliveries");
  const deliveries = Object.entries(job?.deliveries || {});
  if (!deliveries.length) {
    list.replaceChildren(el("li", { class: "muted" }, "None yet."));
    return;
  }
  list.replaceChildren(
    ...deliveries.map(([destination, d]) => {
      const details = [`attempt ${d.attempts ?? 0}`];
      if (d.httpStatus) details.push(`HTTP ${d.httpStatus}`);
      if (d.deliveredAt) details.push(formatTime(d.deliveredAt));
      if (d.reason || d.lastError) details.push(d.reason || d.lastError);
      return el("li", { "data-destination": destination, "data-state": d.state },
        el("strong", {}, destination), ": ", el("span", { class: "badge", "data-status": d.state }, d.state), ` (${details.join(", ")})`);
    }),
  );
}

// --- Participation: k of n, the round in progress, who answered, who is awaited and until when -------------

const ROUNDS = ["keys", "shares", "inputs", "unmask"];
const ANSWERED_TERM = { collect: "Reported", keys: "Registered keys", shares: "Posted shares", inputs: "Sent inputs", unmask: "Answered unmask", done: "Answered" };
const CLOSED_BY_TEXT = { all: "every client answered", deadline: "the deadline", timeout: "a round timeout", admin: "an admin" };
const NAMED = 20; // how many client ids a line names before "and N more"

let clockOffset = 0; // the server's clock minus this browser's, in ms: deadlines are the server's
let ticker = 0;

// Takes the server's time (a snapshot's `at`, ISO) so that a countdown does not depend on this browser's clock.
export function setServerTime(iso) {
  const at = Date.parse(iso);
  if (!Number.isNaN(at)) clockOffset = at - Date.now();
}

function names(ids) {
  if (ids.length <= NAMED) return ids.join(", ");
  return `${ids.slice(0, NAMED).join(", ")} and ${ids.length - NAMED} more`;
}

function clients(count) {
  return `${count} client${count === 1 ? "" : "s"}`;
}

// "closes in 1 min 20 s": the two largest units, the second left out when it is zero; "closing…" once past.
export function formatRemaining(ms) {
  if (ms <= 0) return "closing…";
  const seconds = Math.ceil(ms / 1000);
  const units = [[Math.floor(seconds / 86400), "d"], [Math.floor((seconds % 86400) / 3600), "h"], [Math.floor((seconds % 3600) / 60), "min"], [seconds % 60, "s"]];
  const first = units.findIndex(([value]) => value > 0);
  const shown = units.slice(first, first + 2).filter(([value], i) => i === 0 || value > 0);
  return `closes in ${shown.map(([value, unit]) => `${value} ${unit}`).join(" ")}`;
}

function tick() {
  const nodes = document.querySelectorAll("#detail-participation [data-deadline]");
  if (!nodes.length) {
    clearInterval(ticker);
    ticker = 0;
    return;
  }
  const now = Date.now() + clockOffset;
  for (const node of nodes) node.textContent = formatRemaining(Number(node.dataset.deadline) - now);
}

function countdown(iso) {
  const node = el("time", { class: "countdown", datetime: iso, "data-deadline": String(Date.parse(iso)) });
  return el("span", {}, node, el("span", { class: "muted" }, ` (${formatTime(iso)})`));
}

// The secure sum's rounds as steps: done, the one in progress, the ones to come.
function roundSteps(job, round) {
  const current = ROUNDS.indexOf(round);
  const finished = round === "done" && (job.status === "AGGREGATING" || job.status === "COMPLETED");
  const steps = el("ol", { class: "steps", "aria-label": "Secure-sum rounds" });
  ROUNDS.forEach((name, i) => {
    const state = finished || (current >= 0 && i < current) ? "done" : i === current ? "current" : "pending";
    const attrs = { "data-round": name, "data-state": state };
    if (state === "current") attrs["aria-current"] = "step";
    steps.append(el("li", attrs, name));
  });
  return steps;
}

function waitingText(p) {
  if (p.expected) return p.waitingFor.length ? `waiting for ${names(p.waitingFor)}` : "nobody: every client expected answered";
  return p.waitingCount > 0 ? `waiting for ${p.waitingCount} more ${p.waitingCount === 1 ? "client" : "clients"}` : "nobody";
}

function quorumText(job, p, open) {
  const text = `needs ${p.minClients} of ${job.totalClients}`;
  if (!open) return text;
  const short = p.minClients - p.answered.length;
  return `${text}: ${short > 0 ? `${short} more needed` : "reached"}${p.round === "collect" ? "" : ` in the ${p.round} round`}`;
}

function droppedList(dropped) {
  const shown = dropped.slice(0, NAMED).map((d) => el("li", { "data-client": d.clientId, "data-round": d.round }, `${d.clientId} at the ${d.round} round`));
  if (dropped.length > NAMED) shown.push(el("li", {}, `and ${dropped.length - NAMED} more`));
  return el("ul", { class: "dropped" }, ...shown);
}

function missingText(result) {
  const known = result.missingClients || [];
  const unknown = (result.missingCount ?? known.length) - known.length;
  const parts = known.length ? [names(known)] : [];
  if (unknown > 0) parts.push(`${clients(unknown)} never reported`);
  return parts.join("; ") || "none";
}

function renderParticipation(job) {
  const section = $("participation");
  const list = $("detail-participation");
  const p = job?.participation;
  section.hidden = !p;
  list.replaceChildren();
  if (!p) return;
  const open = p.round !== "done" && job.status === "IN_PROGRESS";
  const result = job.finalResult && Array.isArray(job.finalResult.contributors) ? job.finalResult : null;
  const items = [["quorum", "Quorum", quorumText(job, p, open)]];
  if (job.aggregation === "secure-sum") items.push(["round", "Round", roundSteps(job, p.round)]);
  if (open || !result) {
    const of = p.expected ? p.expected.length : job.totalClients;
    items.push(["answered", ANSWERED_TERM[p.round] || "Answered", `${p.answered.length} of ${of}${p.answered.length ? `: ${names(p.answered)}` : ""}`]);
  }
  if (open) {
    items.push(["waiting", "Waiting for", waitingText(p)]);
    const closes = p.roundDeadline || p.deadline;
    if (closes) items.push(["closes", p.round === "collect" ? "Collection" : `The ${p.round} round`, countdown(closes)]);
  }
  if (p.dropped.length) items.push(["dropped", "Dropped", droppedList(p.dropped)]);
  // A secure sum's closedBy is what closed its last round (an earlier one may have timed out: see Dropped).
  const closedTerm = job.aggregation === "secure-sum" ? "Last round closed by" : "Closed by";
  if (p.closedBy) items.push(["closed-by", closedTerm, CLOSED_BY_TEXT[p.closedBy] || p.closedBy]);
  if (result) {
    items.push(["result", "Result", `result over ${result.contributors.length} of ${job.totalClients} clients`]);
    items.push(["contributors", "Contributors", names(result.contributors) || "none"]);
    items.push(["missing", "Missing", missingText(result)]);
  }
  for (const [key, term, value] of items) {
    list.append(el("dt", {}, term), el("dd", { "data-item": key }, value));
  }
  tick();
  if (!ticker && list.querySelector("[data-deadline]")) ticker = setInterval(tick, 1000);
}
