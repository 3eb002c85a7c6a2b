// The job detail panel: summary, result per feature with small charts, clients, schema.
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
