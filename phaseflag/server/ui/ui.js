// The phaseflag dashboard: reads /ui/api/* with the API key; no data without it.
"use strict";

const COLORS = ["#3659d6", "#1f9d55", "#e08a1e", "#9b51e0", "#c0392b", "#16a3b8", "#7f8c8d"];
const OPERATORS = {
  equals: "is", in: "is one of", contains: "contains", starts_with: "starts with",
  ends_with: "ends with", matches: "matches", gt: ">", gte: "≥", lt: "<", lte: "≤",
  semver_eq: "is version", semver_gt: "is a version after", semver_gte: "is version ≥",
  semver_lt: "is a version before", semver_lte: "is version ≤", before: "is before",
  after: "is after", exists: "is set", in_segment: "is in segment",
};

const state = { key: sessionStorage.getItem("phaseflag-key") || "", etag: null, flags: [] };

function el(tag, attrs, ...children) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(attrs || {})) {
    if (name === "class") node.className = value;
    else if (name === "style") {
      // CSSOM, not the style attribute: the page's Content-Security-Policy forbids inline CSS.
      for (const rule of value.split(";")) {
        const at = rule.indexOf(":");
        if (at > 0) node.style.setProperty(rule.slice(0, at).trim(), rule.slice(at + 1).trim());
      }
    }
    else node.setAttribute(name, value);
  }
  for (const child of children.flat()) {
    if (child === null || child === undefined) continue;
    node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return node;
}

async function api(path, options) {
  const headers = Object.assign({}, (options && options.headers) || {});
  if (state.key) headers.Authorization = "Bearer " + state.key;
  const response = await fetch(path, Object.assign({}, options, { headers }));
  if (response.status === 401) throw new Error("the server refused the key");
  return response;
}

function variationColor(flag, key) {
  const index = (flag.variations || []).findIndex((v) => v.key === key);
  return COLORS[(index < 0 ? 0 : index) % COLORS.length];
}

function valueOf(flag, key) {
  const found = (flag.variations || []).find((v) => v.key === key);
  return found ? JSON.stringify(found.value) : "?";
}

function conditionWords(c) {
  if (c.operator === "in_segment") {
    const names = (c.values || []).map((v) => JSON.stringify(v)).join(" or ");
    return `${c.negate ? "not " : ""}in segment ${names}`;
  }
  const op = OPERATORS[c.operator] || c.operator;
  const values = (c.values || []).map((v) => JSON.stringify(v)).join(", ");
  const not = c.negate ? "not " : "";
  return `${c.attribute} ${not}${op}${values ? " " + values : ""}` +
    (c.case_insensitive ? " (ignoring case)" : "");
}

function serveWords(flag, serve) {
  if (!serve) return [el("span", { class: "muted" }, "nothing")];
  if (serve.variation !== undefined) {
    return [el("code", {}, serve.variation), ` (${valueOf(flag, serve.variation)})`];
  }
  if (serve.rollout) return [rolloutBar(flag, serve.rollout)];
  return ["?"];
}

function rolloutBar(flag, rollout) {
  const parts = rollout.variations || [];
  const bar = el("div", { class: "bar", role: "img",
    "aria-label": "rollout " + parts.map((p) => `${p.variation} ${p.weight}%`).join(", ") });
  for (const part of parts) {
    bar.append(el("span", { title: `${part.variation}: ${part.weight}%`,
      style: `width:${part.weight}%;background:${variationColor(flag, part.variation)}` }));
  }
  const legend = el("div", { class: "legend" }, parts.map((p) =>
    el("span", {}, el("i", { style: `background:${variationColor(flag, p.variation)}` }),
      `${p.variation} ${p.weight}%`)));
  return el("div", { class: "rollout" },
    el("span", { class: "muted" }, `rollout by ${rollout.bucket_by || "user_id"}`), bar, legend);
}

function flagCard(flag, invalid) {
  const enabled = flag.enabled !== false;
  const title = el("h3", {}, el("code", {}, flag.key),
    el("span", { class: "badge" }, flag.type),
    el("span", { class: "badge " + (enabled ? "on" : "off") }, enabled ? "on" : "off"),
    invalid ? el("span", { class: "badge invalid" }, "INVALID_FLAG") : null,
    flag.version !== undefined ? el("span", { class: "muted" }, `v${flag.version}`) : null);
  const card = el("article", { class: "flag", "data-flag": flag.key }, title);
  if (flag.description) card.append(el("p", { class: "desc" }, flag.description));
  if (!enabled) {
    card.append(el("p", {}, "Off: serves ", ...serveWords(flag, { variation: flag.off_variation })));
    return card;
  }
  const steps = el("ol", { class: "rules" });
  for (const p of flag.prerequisites || []) {
    steps.append(el("li", {}, "requires ", el("code", {}, p.flag), " to serve ",
      el("code", {}, p.variation), ", else serves the off variation"));
  }
  for (const t of flag.targets || []) {
    steps.append(el("li", { class: "target" }, `users ${(t.user_ids || []).join(", ")} get `,
      ...serveWords(flag, { variation: t.variation })));
  }
  for (const r of flag.rules || []) {
    const when = (r.conditions || []).map(conditionWords).join(" and ") || "everyone";
    steps.append(el("li", { class: "rule" }, r.id ? el("span", { class: "muted" }, r.id + ": ") : null,
      `if ${when} then serve `, ...serveWords(flag, r.serve)));
  }
  steps.append(el("li", { class: "default" }, (flag.rules || []).length ? "otherwise serve " : "serve ",
    ...serveWords(flag, flag.default)));
  card.append(steps);
  return card;
}

function render(data) {
  state.flags = data.flags;
  const invalid = new Set(data.invalid.map((path) => path.match(/^flags\[(\d+)\]/)?.[1]));
  document.getElementById("summary").textContent =
    `ruleset version ${data.version} · ${data.flags.length} flags · ${data.source} · ` +
    `loaded ${new Date(data.loaded_at).toLocaleTimeString()}`;
  const problems = document.getElementById("problems");
  problems.hidden = data.problems.length === 0;
  problems.replaceChildren(el("strong", {}, `${data.problems.length} invalid flag(s): `),
    data.problems.join("; "));
  document.getElementById("flags").replaceChildren(
    ...data.flags.map((flag, index) => flagCard(flag, invalid.has(String(index)))));
  const select = document.getElementById("eval-flag");
  const chosen = select.value;
  select.replaceChildren(...data.flags.map((f) => el("option", { value: f.key }, f.key)));
  if (chosen && data.flags.some((f) => f.key === chosen)) select.value = chosen;
}

function renderCounts(counts) {
  const box = document.getElementById("counts");
  if (!counts.length) {
    box.replaceChildren(el("p", { class: "muted" }, "No summaries received yet."));
    return;
  }
  const byFlag = new Map();
  for (const c of counts) {
    if (!byFlag.has(c.flag_key)) byFlag.set(c.flag_key, []);
    byFlag.get(c.flag_key).push(c);
  }
  const rows = [];
  for (const [key, items] of byFlag) {
    const flag = state.flags.find((f) => f.key === key) || { variations: [] };
    const total = items.reduce((sum, c) => sum + c.count, 0);
    const bar = el("div", { class: "bar" }, items.map((c) => el("span", {
      title: `${c.variation_key}: ${c.count}`,
      style: `width:${(100 * c.count) / total}%;background:${variationColor(flag, c.variation_key)}`,
    })));
    rows.push(el("div", { class: "count-row", "data-counts": key },
      el("span", { class: "name" }, key), el("span", { class: "muted" }, ` · ${total} evaluations`),
      bar, el("div", { class: "legend" }, items.map((c) => el("span", {},
        el("i", { style: `background:${variationColor(flag, c.variation_key)}` }),
        `${c.variation_key}: ${c.count}`)))));
  }
  box.replaceChildren(...rows);
}

async function refresh() {
  const headers = state.etag ? { "If-None-Match": state.etag } : {};
  const response = await api("/ui/api/flags", { headers });
  if (response.status === 200) {
    state.etag = response.headers.get("ETag");
    render(await response.json());
  }
  const counts = await api("/ui/api/counts");
  renderCounts((await counts.json()).counts);
}

async function evaluate(event) {
  event.preventDefault();
  const out = document.getElementById("eval-result");
  let attributes;
  try {
    attributes = JSON.parse(document.getElementById("eval-attrs").value || "{}");
  } catch (error) {
    out.replaceChildren(el("p", { class: "error" }, "attributes: not JSON: " + error.message));
    return;
  }
  const body = JSON.stringify({ flag_key: document.getElementById("eval-flag").value,
    user_id: document.getElementById("eval-user").value, attributes });
  const response = await api("/ui/api/evaluate", { method: "POST", body,
    headers: { "Content-Type": "application/json" } });
  const data = await response.json();
  if (!response.ok) {
    out.replaceChildren(el("p", { class: "error" }, data.message));
    return;
  }
  const r = data.result;
  out.replaceChildren(
    el("dl", {},
      el("dt", {}, "value"), el("dd", { id: "eval-value" }, JSON.stringify(r.value)),
      el("dt", {}, "reason"), el("dd", { id: "eval-reason" }, r.reason),
      el("dt", {}, "variation"), el("dd", { id: "eval-variation" }, r.variation_key ?? "—"),
      el("dt", {}, "rule"), el("dd", {}, r.rule_id ?? "—"),
      el("dt", {}, "bucket"), el("dd", { id: "eval-bucket" },
        data.bucket === null || data.bucket === undefined ? "—" : `${data.bucket} of 100000`),
      r.error_code ? [el("dt", {}, "error"), el("dd", { class: "error" }, r.error_code)] : null),
    el("strong", {}, "explain"),
    el("ol", { id: "eval-trace" }, data.trace.map((line) => el("li", {}, line))));
}

let timer = null;

async function connect(event) {
  if (event) event.preventDefault();
  state.key = document.getElementById("key").value.trim() || state.key;
  const status = document.getElementById("status");
  try {
    state.etag = null;
    await refresh();
    sessionStorage.setItem("phaseflag-key", state.key);
    document.getElementById("app").hidden = false;
    document.getElementById("locked").hidden = true;
    status.textContent = "live";
    status.className = "";
    if (timer === null) {
      timer = setInterval(() => refresh().catch((error) => {
        status.textContent = "disconnected: " + error.message;
      }), 1000);
    }
  } catch (error) {
    document.getElementById("app").hidden = true;
    document.getElementById("locked").hidden = false;
    status.textContent = error.message;
    status.className = "error";
  }
}

document.getElementById("key-form").addEventListener("submit", connect);
document.getElementById("evaluate-form").addEventListener("submit", (event) =>
  evaluate(event).catch((error) => {
    document.getElementById("eval-result").replaceChildren(el("p", { class: "error" }, error.message));
  }));
if (state.key) connect();
