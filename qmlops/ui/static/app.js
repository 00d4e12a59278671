// qmlops web page: plain JavaScript, no build step. Every view reads the gateway's JSON API; data is put
// into the page as text (never as HTML), so nothing stored can inject markup.
"use strict";

const REFRESH_MS = 5000;
const view = document.getElementById("view");
const statusLine = document.getElementById("status");
const tokenInput = document.getElementById("token");
tokenInput.value = sessionStorage.getItem("qmlops-token") || "";
tokenInput.addEventListener("change", () => sessionStorage.setItem("qmlops-token", tokenInput.value));

// ---- small helpers -------------------------------------------------------------------------------------
function el(tag, attrs, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs || {})) {
    if (value === null || value === undefined || value === false) continue;
    if (key.startsWith("on")) node.addEventListener(key.slice(2), value);
    else node.setAttribute(key, value === true ? "" : value);
  }
  for (const child of children.flat()) {
    if (child === null || child === undefined) continue;
    node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return node;
}

function fmt(value, digits = 4) {
  if (value === null || value === undefined) return "–";
  if (typeof value === "number") {
    if (Number.isInteger(value)) return value.toLocaleString("en");
    const abs = Math.abs(value);
    return abs !== 0 && (abs < 1e-3 || abs >= 1e6) ? value.toExponential(2) : value.toFixed(digits);
  }
  if (typeof value === "boolean") return value ? "yes" : "no";
  if (typeof value === "object") return JSON.stringify(value);
  return String(value);
}

const when = (iso) => (iso ? iso.replace("T", " ").slice(0, 19) : "–");
const badge = (text, kind) => el("span", { class: `badge state-${kind || text}` }, text);
const section = (title, ...body) => el("section", {}, el("h2", {}, title), ...body);
const empty = (text) => el("p", { class: "muted" }, text);

function table(columns, rows, opts = {}) {
  // columns: [label, (row) => cell, {num: true}]
  const head = el("tr", {}, columns.map(([label]) => el("th", {}, label)));
  const body = rows.map((row) => {
    const tr = el("tr", { class: opts.onclick ? "clickable" : null, "data-key": opts.key ? opts.key(row) : null },
      columns.map(([, cell, o]) => {
        const v = cell(row);
        return el("td", { class: o && o.num ? "num" : null }, v instanceof Node ? v : fmt(v));
      }));
    if (opts.onclick) tr.addEventListener("click", () => opts.onclick(row));
    return tr;
  });
  return rows.length ? el("table", { class: opts.cls || null }, el("thead", {}, head), el("tbody", {}, body))
    : empty(opts.empty || "nothing yet");
}

function folded(obj) {
  const text = JSON.stringify(obj);
  if (text.length <= 140) return el("code", {}, text);
  return el("details", {}, el("summary", {}, text.slice(0, 140) + " ..."), el("pre", {}, JSON.stringify(obj, null, 1)));
}

function kv(obj) {
  return el("div", { class: "kv" }, Object.entries(obj || {}).flatMap(([k, v]) => [
    el("span", { class: "muted" }, k), el("span", {}, fmt(v))]));
}

async function api(path, init) {
  const response = await fetch(path, init);
  const body = await response.json().catch(() => ({}));
  if (!response.ok) {
    const err = body.error || {};
    throw new Error(`${response.status}: ${err.field ? err.field + ": " : ""}${err.reason || response.statusText}`);
  }
  return body;
}

function wsUrl(path) {
  return `${location.protocol === "https:" ? "wss" : "ws"}://${location.host}${path}`;
}

// A line chart as SVG: series [{name, color, points: [[x, y], ...]}], optional vertical marker at x.
function lineChart(series, opts = {}) {
  const W = 640, H = 220, L = 56, R = 10, T = 14, B = 24;
  const pts = series.flatMap((s) => s.points.filter((p) => p[1] !== null && Number.isFinite(p[1])));
  const svg = document.createElementNS("http://www.w3.org/2000/svg", "svg");
  svg.setAttribute("viewBox", `0 0 ${W} ${H}`);
  svg.setAttribute("class", "chart");
  if (opts.id) svg.setAttribute("id", opts.id);
  const add = (tag, attrs, text) => {
    const n = document.createElementNS("http://www.w3.org/2000/svg", tag);
    for (const [k, v] of Object.entries(attrs)) n.setAttribute(k, v);
    if (text !== undefined) n.textContent = text;
    svg.append(n);
    return n;
  };
  if (!pts.length) {
    add("text", { x: W / 2, y: H / 2, "text-anchor": "middle" }, "no points yet");
    return svg;
  }
  let [x0, x1] = [Math.min(...pts.map((p) => p[0])), Math.max(...pts.map((p) => p[0]))];
  let [y0, y1] = [Math.min(...pts.map((p) => p[1])), Math.max(...pts.map((p) => p[1]))];
  if (x1 === x0) x1 = x0 + 1;
  if (y1 === y0) { y0 -= Math.abs(y0) * 0.01 || 1; y1 += Math.abs(y1) * 0.01 || 1; }
  const sx = (x) => L + ((x - x0) / (x1 - x0)) * (W - L - R);
  const sy = (y) => T + (1 - (y - y0) / (y1 - y0)) * (H - T - B);
  add("line", { x1: L, y1: H - B, x2: W - R, y2: H - B, stroke: "#d0d5dd" });
  add("line", { x1: L, y1: T, x2: L, y2: H - B, stroke: "#d0d5dd" });
  add("text", { x: L - 4, y: T + 8, "text-anchor": "end" }, fmt(y1, 5));
  add("text", { x: L - 4, y: H - B, "text-anchor": "end" }, fmt(y0, 5));
  add("text", { x: L, y: H - 8 }, fmt(x0));
  add("text", { x: W - R, y: H - 8, "text-anchor": "end" }, `${fmt(x1)} ${opts.xlabel || ""}`);
  if (opts.marker !== undefined && opts.marker !== null && opts.marker >= x0 && opts.marker <= x1) {
    add("line", { x1: sx(opts.marker), y1: T, x2: sx(opts.marker), y2: H - B, stroke: "#98a2b3",
      "stroke-dasharray": "4 3" });
    add("text", { x: sx(opts.marker) + 3, y: T + 8 }, `best ${opts.marker}`);
  }
  series.forEach((s, i) => {
    const good = s.points.filter((p) => p[1] !== null && Number.isFinite(p[1]));
    if (good.length) {
      add("polyline", { fill: "none", stroke: s.color, "stroke-width": 1.6,
        points: good.map((p) => `${sx(p[0]).toFixed(1)},${sy(p[1]).toFixed(1)}`).join(" ") });
    }
    add("text", { x: L + 8 + i * 110, y: T + 2, fill: s.color, style: `fill:${s.color}` }, s.name);
  });
  return svg;
}

// ---- views ---------------------------------------------------------------------------------------------
const views = {};

views.models = async (root) => {
  const data = await api("/v1/registry/models");
  if (!data.models.length) return root.append(empty("No registered models yet: train one with `qmlops train run`."));
  for (const m of data.models) {
    root.append(section(`${m.name}`,
      table([
        ["version", (v) => `v${v.version}`],
        ["state", (v) => badge(v.state)],
        ["live", (v) => (v.serving && v.serving.weight > 0 ? `${v.serving.weight}% ${v.serving.role}` : "–")],
        ["note", (v) => v.serving_note || ""],
        ["aliases", (v) => v.aliases.join(", ") || "–"],
        ["type", (v) => v.model_type],
        ["test IC", (v) => v.metrics.test_ic, { num: true }],
        ["test rank IC", (v) => v.metrics.test_rank_ic, { num: true }],
        ["features", (v) => v.n_features, { num: true }],
        ["registered", (v) => when(v.created_at)],
        ["run", (v) => (v.run_id ? el("a", { href: `#training/${v.run_id}` }, v.run_id.slice(0, 16)) : "–")],
      ], m.versions, { key: (v) => v.id }),
      el("h3", {}, "lifecycle history"),
      table([
        ["when", (t) => when(t.changed_at)],
        ["version", (t) => `v${t.version}`],
        ["from", (t) => t.from_state || "–"],
        ["to", (t) => badge(t.to_state)],
        ["by", (t) => t.actor || "–"],
        ["reason", (t) => t.reason || ""],
      ], m.history.slice().reverse())));
  }
};

views.catalogue = async (root) => {
  const data = await api("/v1/catalogue");
  const select = el("select", { id: "dataset" },
    data.datasets.map((d) => el("option", { value: d.id }, `${d.name} (${d.id.slice(0, 14)}, ${fmt(d.instruments)} instruments)`)));
  const picks = el("div", { id: "recommendation" });
  const run = async () => {
    picks.replaceChildren(empty("reading the features and ranking model types..."));
    try {
      const r = (await api(`/v1/catalogue?dataset=${encodeURIComponent(select.value)}`)).recommendation;
      picks.replaceChildren(kv(r.meta), el("h3", {}, "recommender's ranking"),
        table([["#", (x) => r.ranking.indexOf(x) + 1, { num: true }], ["model type", (x) => x.model_type],
          ["score", (x) => x.score, { num: true }], ["why", (x) => x.reason]], r.ranking, { cls: "ranking" }));
    } catch (e) { picks.replaceChildren(el("p", { class: "error" }, e.message)); }
  };
  root.append(section("recommended model types for a dataset",
    data.datasets.length ? el("p", {}, select, " ", el("button", { id: "recommend", onclick: run }, "recommend")) :
      empty("No dataset with materialised features yet."), picks));
  root.append(section("model-type catalogue", table([
    ["name", (t) => t.name], ["family", (t) => t.family], ["data", (t) => t.data],
    ["GPU", (t) => t.gpu], ["available", (t) => (t.available ? badge("yes", "finished") : badge("no", "failed"))],
    ["description", (t) => t.description + (t.reason ? ` (${t.reason})` : "")],
  ], data.types, { cls: "catalogue" })));
};
views.catalogue.noRefresh = true;

views.training = async (root, arg) => {
  if (arg) return runDetail(root, arg);
  const data = await api("/v1/runs?limit=100");
  root.append(section("runs (click one for its curves)", table([
    ["run", (r) => r.id], ["kind", (r) => r.kind], ["type", (r) => r.model_type || "–"],
    ["status", (r) => badge(r.status)], ["steps", (r) => r.total_steps, { num: true }],
    ["best step", (r) => r.best_step, { num: true }], ["stop reason", (r) => r.stop_reason || "–"],
    ["started", (r) => when(r.started_at)], ["seconds", (r) => r.duration_seconds, { num: true }],
  ], data.runs, { onclick: (r) => { location.hash = `#training/${r.id}`; }, key: (r) => r.id, cls: "runs" })));
};

function runDetail(root, runId) {
  const steps = [];
  const fields = {
    status: el("span", { id: "run-status" }, "connecting"), step: el("span", { id: "run-step" }, "–"),
    best: el("span", { id: "run-best" }, "–"), early: el("span", { id: "run-early-stop" }, "–"),
    reason: el("span", { id: "run-stop-reason" }, "–"), ic: el("span", { id: "run-valid-ic" }, "–"),
  };
  const head = el("div", { class: "kv" }, ["status", "step", "best", "early", "reason", "ic"].flatMap((k) => [
    el("span", { class: "muted" }, { status: "status", step: "step", best: "best step", early: "early stopping",
      reason: "stop reason", ic: "valid IC" }[k]), fields[k]]));
  const title = el("h2", {}, `run ${runId}`);
  const charts = el("div", { class: "grid" });
  const extra = el("div", {});
  root.append(el("p", {}, el("a", { href: "#training" }, "← all runs")), el("section", {}, title, head), charts, extra);
  let run = null;
  const draw = () => {
    const best = run && run.best_step;
    const loss = lineChart([
      { name: "train loss", color: "#2557d6", points: steps.map((m) => [m.step, m.train_loss]) },
      { name: "valid loss", color: "#c0362c", points: steps.map((m) => [m.step, m.valid_loss]) },
    ], { marker: best, xlabel: "step", id: "chart-loss" });
    const ic = lineChart([{ name: "valid IC", color: "#13795b", points: steps.map((m) => [m.step, m.valid_ic]) }],
      { marker: best, xlabel: "step", id: "chart-ic" });
    charts.replaceChildren(section("loss", loss), section("validation IC", ic));
  };
  const show = (msg) => {
    if (msg.error) { fields.status.replaceChildren(el("span", { class: "error" }, msg.error.reason)); return; }
    run = msg.run;
    steps.push(...msg.metrics);
    const last = steps[steps.length - 1];
    title.textContent = `run ${run.id} · ${run.model_type || run.kind}${run.name ? " · " + run.name : ""}`;
    fields.status.replaceChildren(badge(run.status));
    fields.step.textContent = last ? `${last.step}${run.total_steps ? " / " + run.total_steps : ""}` : "–";
    fields.best.textContent = fmt(run.best_step ?? (last && last.best_step));
    fields.early.textContent = last && last.early_stop ? Object.entries(last.early_stop).map(([k, v]) => `${k} ${fmt(v)}`).join(", ") || "–" : "–";
    fields.reason.textContent = run.stop_reason || (run.status === "running" ? "still training" : "–");
    fields.ic.textContent = fmt(last && last.valid_ic);
    draw();
    if (run.status !== "running") {
      extra.replaceChildren(section("final metrics", kv(run.metrics)),
        run.report_uri ? el("p", {}, el("a", { id: "run-report", href: `/v1/runs/${run.id}/report`, target: "_blank" },
          "training report")) : empty(run.error || "no training report for this run"));
    }
  };
  const socket = new WebSocket(wsUrl(`/v1/ws/runs/${encodeURIComponent(runId)}`));
  socket.onmessage = (event) => show(JSON.parse(event.data));
  socket.onclose = () => { if (!run) fields.status.textContent = fields.status.textContent === "connecting" ? "no connection" : fields.status.textContent; };
  return () => socket.close();
}

views.rollouts = async (root) => {
  const data = await api("/v1/rollouts");
  root.append(section("current traffic", data.routes.length ? data.routes.map((t) => el("div", {},
    el("h3", {}, `${t.model} (revision ${t.revision}, sticky on ${t.sticky_field || "–"})`),
    table([["version", (e) => e.model_version], ["role", (e) => e.role],
      ["weight %", (e) => e.weight, { num: true }],
      ["", (e) => el("div", { class: "bar", style: `width:${Math.max(1, e.weight) * 2}px` })]], t.entries, { cls: "weights" })))
    : empty("No model is served.")));
  root.append(section("rollouts", table([
    ["id", (r) => r.id], ["model", (r) => r.model], ["strategy", (r) => r.strategy], ["state", (r) => badge(r.state)],
    ["step", (r) => r.step, { num: true }], ["to", (r) => r.to_version], ["from", (r) => r.from_version || "–"],
    ["reason", (r) => r.reason || ""], ["updated", (r) => when(r.updated_at)],
  ], data.rollouts, { cls: "rollouts", key: (r) => r.id })));
  for (const r of data.rollouts.slice(0, 5)) {
    const g = r.gates || {};
    root.append(section(`${r.id}: ${r.strategy} of ${r.model}`,
      r.gates ? el("div", { class: "gates" }, el("h3", {}, `last analysis: ${g.verdict || "–"}`),
        kv({ "new requests": g.new && g.new.requests, "stable requests": g.stable && g.stable.requests }),
        table([["gate", (x) => x.name], ["ok", (x) => badge(x.ok ? "pass" : "fail", `ok-${x.ok}`)],
          ["new", (x) => x.new, { num: true }], ["stable", (x) => x.stable, { num: true }], ["why", (x) => x.reason || ""]],
        g.gates || [], { empty: "no gate evaluated yet (waiting for requests)" })) : null,
      el("h3", {}, "events"),
      table([["#", (e) => e.seq, { num: true }], ["when", (e) => when(e.ts)], ["event", (e) => e.kind],
        ["detail", (e) => folded(e.detail)]], r.events)));
  }
  const check = (c) => c.result || {};
  root.append(section("performance tests", table([
    ["when", (c) => when(c.ts)], ["version", (c) => c.model_version], ["ok", (c) => badge(String(c.ok), `ok-${c.ok}`)],
    ["requests", (c) => check(c).requests, { num: true }], ["errors", (c) => check(c).errors, { num: true }],
    ["rps", (c) => check(c).rps, { num: true }], ["p50 ms", (c) => check(c).p50_ms, { num: true }],
    ["p99 ms", (c) => check(c).p99_ms, { num: true }], ["rollout", (c) => c.rollout_id || "–"],
  ], data.performance_tests, { cls: "perf" })));
  root.append(section("health checks", table([
    ["when", (c) => when(c.ts)], ["version", (c) => c.model_version], ["ok", (c) => badge(String(c.ok), `ok-${c.ok}`)],
    ["requests", (c) => check(c).requests, { num: true }], ["errors", (c) => check(c).errors, { num: true }],
    ["rollout", (c) => c.rollout_id || "–"],
  ], data.health_checks, { cls: "health" })));
};

views.experiments = async (root, arg) => {
  const data = await api("/v1/experiments");
  root.append(section("experiments (click one for its results)", table([
    ["id", (x) => x.id], ["name", (x) => x.name], ["model", (x) => x.model], ["state", (x) => badge(x.state)],
    ["layer", (x) => x.layer], ["traffic", (x) => x.traffic, { num: true }],
    ["variants", (x) => x.variants.map((v) => `${v.name} ${v.weight}: ${v.model_version}`).join(", ")],
  ], data.experiments, { onclick: (x) => { location.hash = `#experiments/${x.id}`; }, key: (x) => x.id, cls: "experiments" })));
  if (!arg) return;
  const res = await api(`/v1/experiments/${encodeURIComponent(arg)}/results`);
  root.append(section(`results of ${res.experiment.name}`,
    kv({ control: res.control, alpha: res.alpha, units: res.units, "SRM p-value": res.srm && res.srm.p_value,
      "sample-ratio mismatch": res.srm && res.srm.mismatch }),
    res.note ? empty(res.note) : null,
    table([["metric", (m) => m.metric], ["variant", (m) => m.variant], ["test", (m) => m.test],
      ["control", (m) => m.control_mean, { num: true }], ["variant mean", (m) => m.variant_mean, { num: true }],
      ["lift", (m) => m.relative_lift, { num: true }],
      ["CI (relative)", (m) => `${fmt(m.relative_ci[0])} .. ${fmt(m.relative_ci[1])}`],
      ["p (Holm)", (m) => m.adjusted_p_value, { num: true }],
      ["always-valid p", (m) => m.always_valid_p_value, { num: true }],
      ["significant", (m) => badge(m.significant ? "yes" : "no", `ok-${m.significant}`)]],
    res.metrics, { cls: "results" })));
};

views.drift = async (root) => {
  const data = await api("/v1/drift?full=true&limit=10");
  if (!data.reports.length) return root.append(empty("No drift report yet: the gateway writes one per served version once enough requests arrived."));
  root.append(section("drift reports", table([
    ["when", (r) => when(r.ts)], ["model", (r) => r.model_name], ["version", (r) => r.model_version],
    ["rows", (r) => r.n_rows, { num: true }], ["drift share", (r) => r.drift_share, { num: true }],
    ["drifted (most shifted first)", (r) => (r.drifted || []).slice(0, 8).join(", ") + ((r.drifted || []).length > 8 ? " ..." : "")],
  ], data.reports, { cls: "reports" })));
  const latest = data.reports[0];
  const feats = ((latest.report || {}).features || []).slice().sort((a, b) => (b.psi || 0) - (a.psi || 0));
  root.append(section(`per feature, latest report (${latest.model_name} ${latest.model_version}, ${when(latest.ts)})`,
    latest.prediction ? el("div", {}, el("h3", {}, "predictions"), kv(latest.prediction)) : null,
    table([["feature", (f) => f.feature], ["PSI", (f) => f.psi, { num: true }], ["statistic", (f) => f.statistic, { num: true }],
      ["p-value", (f) => f.p_value, { num: true }], ["test", (f) => f.test],
      ["drifted", (f) => badge(f.drifted_corrected ? "yes" : "no", `ok-${!f.drifted_corrected}`)]], feats, { cls: "features" })));
};

const ALERT_COLUMNS = [
    ["when", (x) => when(x.ts)], ["severity", (x) => badge(x.severity, x.severity)], ["source", (x) => x.source],
    ["subject", (x) => x.subject], ["message", (x) => x.message], ["repeats", (x) => x.repeats, { num: true }],
    ["acknowledged", (x) => (x.acknowledged_by ? `${x.acknowledged_by}` : el("button", { onclick: (e) => ack(e, x.id) }, "ack"))],
];

async function ack(event, id) {
  event.stopPropagation();
  try {
    await api(`/v1/alerts/${encodeURIComponent(id)}/ack`, { method: "POST",
      headers: { authorization: `Bearer ${tokenInput.value}`, "content-type": "application/json" },
      body: JSON.stringify({ by: "ui" }) });
    route();
  } catch (e) { statusLine.textContent = `ack failed: ${e.message}`; }
}

views.alerts = async (root) => {
  const data = await api("/v1/alerts?limit=200");
  root.append(section("alerts (new ones arrive live)", table(ALERT_COLUMNS, data.alerts, { cls: "alerts", key: (a) => a.id })));
};

views.resources = async (root) => {
  const data = await api("/v1/resources");
  root.append(section("per node (latest sample)", table([
    ["node", (n) => n.node_id.slice(0, 12)], ["host", (n) => n.hostname], ["sampled", (n) => when(n.ts)],
    ["CPU %", (n) => n.cpu_percent, { num: true }], ["memory %", (n) => n.memory_percent, { num: true }],
    ["disk %", (n) => n.disk_percent, { num: true }],
    ["GPUs", (n) => (n.gpus.length ? n.gpus.map((g) => `${g.name || "gpu"} ${fmt(g.utilization)}%`).join(", ") : n.gpu_note || "none")],
  ], data.nodes, { cls: "nodes", empty: "No samples: the resource monitor starts with `qmlops serve start`." })));
};

views.jobs = async (root) => {
  const data = await api("/v1/jobs");
  root.append(section("job queue", table([
    ["id", (j) => j.id], ["name", (j) => j.name], ["state", (j) => badge(j.state)], ["priority", (j) => j.priority, { num: true }],
    ["CPUs", (j) => j.num_cpus, { num: true }], ["GPUs", (j) => j.num_gpus, { num: true }],
    ["submitted", (j) => when(j.submitted_at)], ["entrypoint", (j) => j.entrypoint],
  ], data.jobs, { cls: "jobs", empty: "The queue is empty: `qmlops jobs submit` adds jobs." })));
};

views.loop = async (root, arg) => {
  const data = await api(`/v1/loops${arg ? `?name=${encodeURIComponent(arg)}` : ""}`);
  root.append(section("loops (click one for its timeline)", table([
    ["name", (l) => l.id], ["mode", (l) => l.mode], ["state", (l) => badge(l.state)], ["last day", (l) => l.last_day],
    ["production", (l) => l.production || "–"], ["source", (l) => l.source || "–"], ["updated", (l) => when(l.updated_at)],
  ], data.loops, { onclick: (l) => { location.hash = `#loop/${l.id}`; }, key: (l) => l.id, cls: "loops",
    empty: "No loop yet: `qmlops loop replay` or `qmlops loop start`." })));
  const loop = data.loop;
  if (!loop) return;
  root.append(section(`loop ${loop.id}`, kv(loop.summary)));
  const ic = (d, role) => Object.entries(d.ic).filter(([, v]) => v.role === role).map(([k, v]) => `${k.slice(0, 11)} ${fmt(v.ic, 3)}`).join(", ");
  root.append(section("timeline (newest first)", table([
    ["day", (d) => d.day], ["data version", (d) => d.version || "–"], ["oracle IC", (d) => d.oracle_ic, { num: true }],
    ["production IC", (d) => ic(d, "production")], ["shadow IC", (d) => ic(d, "shadow")],
    ["drift share", (d) => d.drift_share, { num: true }], ["quarantined", (d) => d.quarantined, { num: true }],
    ["decisions", (d) => d.decisions.map((x) => `${x.kind}${x.model_version ? " " + x.model_version : ""}: ${x.reason}`).join("; ")],
  ], loop.timeline.slice().reverse(), { cls: "timeline" })));
};

// ---- router --------------------------------------------------------------------------------------------
let cleanup = null;
let timer = null;
let generation = 0; // a view that finishes loading after the user moved on is dropped

async function route() {
  const mine = ++generation;
  const [name, ...rest] = (location.hash.slice(1) || "models").split("/");
  const arg = rest.join("/") || null;
  const render = views[name] || views.models;
  if (cleanup) { cleanup(); cleanup = null; }
  clearTimeout(timer);
  document.querySelectorAll("#tabs a").forEach((a) => a.classList.toggle("active", a.dataset.view === name));
  const fresh = el("div", { id: `view-${name}` });
  try {
    const result = await render(fresh, arg);
    if (mine !== generation) { if (typeof result === "function") result(); return; }
    if (typeof result === "function") cleanup = result;
    view.replaceChildren(fresh);
    statusLine.textContent = `updated ${new Date().toLocaleTimeString()}`;
  } catch (e) {
    if (mine !== generation) return;
    view.replaceChildren(el("p", { class: "error", id: "view-error" }, e.message));
  }
  view.dataset.loaded = name;
  if (!render.noRefresh && !(name === "training" && arg)) timer = setTimeout(refresh, REFRESH_MS);
}

async function refresh() {
  if (document.activeElement && ["SELECT", "INPUT", "BUTTON"].includes(document.activeElement.tagName)) {
    timer = setTimeout(refresh, REFRESH_MS);
    return;
  }
  route();
}

// New alerts arrive over a WebSocket on every view: a counter on the tab, and the list if it is showing.
let unseen = 0;
function followAlerts() {
  const socket = new WebSocket(wsUrl("/v1/ws/alerts"));
  socket.onmessage = () => {
    unseen += 1;
    const b = document.getElementById("alert-badge");
    b.textContent = String(unseen);
    b.classList.remove("hidden");
    if (view.dataset.loaded === "alerts") route();
  };
  socket.onclose = () => setTimeout(followAlerts, 3000);
}

window.addEventListener("hashchange", () => {
  if (location.hash === "#alerts") { unseen = 0; document.getElementById("alert-badge").classList.add("hidden"); }
  route();
});
route();
followAlerts();
