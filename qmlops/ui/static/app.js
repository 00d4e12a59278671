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
        return el("td", { class: o && o.num ? "num" : o && o.long ? "long" : null }, v instanceof Node ? v : fmt(v));
      }));
    if (opts.onclick) tr.addEventListener("click", () => opts.onclick(row));
    return tr;
  });
  // wrapped so that a wide table scrolls inside its box on a narrow window instead of cutting off columns
  return rows.length ? el("div", { class: opts.tall ? "scroll tall" : "scroll" }, el("table", { class: opts.cls || null }, el("thead", {}, head), el("tbody", {}, body)))
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

// ---- views ---------------------------------------------------------------------------------------------
const views = {};
const WINDOW_S = 3600; // the infrastructure charts' look-back
const BUCKET_S = 60;
// the traffic charts' look-back and bucket width, chosen on the Serving view (kept for the session)
const RANGES = { "15 min, 10 s buckets": [900, 10], "1 hour, 1 min buckets": [3600, 60], "1 day, 15 min buckets": [86400, 900] };
const trafficRange = () => RANGES[sessionStorage.getItem("qmlops-range")] || RANGES["15 min, 10 s buckets"];

// A run's progress as a bar with its stage and message (used by the runs list, the models view and a run's page).
function progressOf(run, lastStep) {
  const total = run.total_steps || null;
  const done = run.status !== "running";
  const share = done ? 1 : total && lastStep !== null && lastStep !== undefined ? Math.min(1, lastStep / total) : 0;
  const text = done ? run.status : `${run.stage || "starting"}${run.message ? ": " + run.message : ""}`;
  return el("div", { class: "progress", title: text },
    el("div", { class: `progress-fill state-${run.status}`, style: `width:${(share * 100).toFixed(1)}%` }),
    el("span", { class: "progress-text" }, `${Math.round(share * 100)}% · ${text}`));
}

views.models = async (root) => {
  const [data, live] = await Promise.all([api("/v1/registry/models"), api("/v1/runs?status=running&limit=50")]);
  root.append(section("training now (live)", table([
    ["run", (r) => el("a", { href: `#training/${r.id}` }, r.id)], ["type", (r) => r.model_type || "–"],
    ["name", (r) => r.name || "–"], ["progress", (r) => progressOf(r, r.last_step)],
    ["best step", (r) => r.best_step, { num: true }], ["started", (r) => when(r.started_at)],
  ], live.runs, { cls: "running", key: (r) => r.id, empty: "No training is running." })));
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
        ["tags", (v) => Object.entries(v.tags || {}).filter(([k]) => !["run_id", "report_uri"].includes(k))
          .map(([k, val]) => `${k}=${val}`).join(", ") || "–"],
        ["test IC", (v) => v.metrics.test_ic, { num: true }],
        ["test rank IC", (v) => v.metrics.test_rank_ic, { num: true }],
        ["features", (v) => v.n_features, { num: true }],
        ["registered", (v) => when(v.created_at)],
        ["run", (v) => (v.run_id ? el("a", { href: `#training/${v.run_id}` }, v.run_id.slice(0, 16)) : "–")],
      ], m.versions, { key: (v) => v.id, cls: "versions" }),
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
  root.append(section("runs (click one for its live view, curves and report)", table([
    ["run", (r) => r.id], ["kind", (r) => r.kind], ["type", (r) => r.model_type || "–"],
    ["status", (r) => badge(r.status)], ["progress", (r) => progressOf(r, r.last_step)],
    ["best step", (r) => r.best_step, { num: true }], ["stop reason", (r) => r.stop_reason || "–"],
    ["started", (r) => when(r.started_at)], ["seconds", (r) => r.duration_seconds, { num: true }],
  ], data.runs, { onclick: (r) => { location.hash = `#training/${r.id}`; }, key: (r) => r.id, cls: "runs" })));
};

// One run: drawn at once from its stored steps; a running one then follows the run's WebSocket.
async function runDetail(root, runId) {
  const steps = new Map(); // step -> metrics row
  const fields = {
    status: el("span", { id: "run-status" }, "loading"), step: el("span", { id: "run-step" }, "–"),
    best: el("span", { id: "run-best" }, "–"), early: el("span", { id: "run-early-stop" }, "–"),
    patience: el("span", { id: "run-patience-left" }, "–"),
    reason: el("span", { id: "run-stop-reason" }, "–"), ic: el("span", { id: "run-valid-ic" }, "–"),
  };
  const labels = { status: "status", step: "step", best: "best step", early: "early-stopping state",
    patience: "patience left", reason: "stop reason", ic: "valid IC" };
  const head = el("div", { class: "kv" }, Object.keys(fields).flatMap((k) => [el("span", { class: "muted" }, labels[k]), fields[k]]));
  const title = el("h2", {}, `run ${runId}`);
  const bar = el("div", { id: "run-progress" });
  const charts = el("div", { class: "grid" });
  const extra = el("div", {});
  root.append(el("p", {}, el("a", { href: "#training" }, "← all runs")), el("section", {}, title, bar, head), charts, extra);
  let run = null;

  const draw = () => {
    const rows = [...steps.values()].sort((a, b) => a.step - b.step);
    const x = rows.map((m) => m.step);
    const best = run && run.best_step;
    const marks = best !== null && best !== undefined ? [{ x: best, label: `best ${best}`, color: "#13795b" }] : [];
    const lossData = [rows.map((m) => m.train_loss), rows.map((m) => m.valid_loss)];
    const icData = [rows.map((m) => m.valid_ic)];
    const loss = Charts.all["chart-loss"], ic = Charts.all["chart-ic"];
    if (loss && charts.contains(loss.root) && ic && charts.contains(ic.root)) { // live: new data into this view's charts
      loss.qmlops.marks = marks; ic.qmlops.marks = marks;
      loss.setData([x, ...lossData]);
      ic.setData([x, ...icData]);
      return;
    }
    charts.replaceChildren(
      el("section", {}, Charts.line("chart-loss", "loss per step", x, [
        { label: "train loss", values: lossData[0] }, { label: "valid loss", values: lossData[1] }],
      { xLabel: "step (boosting rounds / epochs)", yLabel: "loss", marks })),
      el("section", {}, Charts.line("chart-ic", "validation IC per step", x, [{ label: "valid IC", values: icData[0], color: "#13795b" }],
        { xLabel: "step (boosting rounds / epochs)", yLabel: "IC (Pearson)", marks,
          note: icData[0].some((v) => v !== null) ? null : "no validation IC stored for these steps yet" })));
    if (root.isConnected) Charts.mount();
  };
  const show = (msg) => {
    if (msg.error) { fields.status.replaceChildren(el("span", { class: "error" }, msg.error.reason)); return; }
    run = msg.run;
    for (const m of msg.metrics) steps.set(m.step, m);
    const last = [...steps.values()].sort((a, b) => a.step - b.step).pop();
    title.textContent = `run ${run.id} · ${run.model_type || run.kind}${run.name ? " · " + run.name : ""}`;
    bar.replaceChildren(progressOf(run, last && last.step));
    fields.status.replaceChildren(badge(run.status));
    fields.step.textContent = last ? `${last.step}${run.total_steps ? " / " + run.total_steps : ""}` : "–";
    fields.best.textContent = fmt(run.best_step ?? (last && last.best_step));
    const es = (last && last.early_stop) || {};
    fields.early.textContent = Object.entries(es).map(([k, v]) => `${k} ${fmt(v)}`).join(", ") || "–";
    fields.patience.textContent = es.patience !== undefined && es.since_best !== undefined
      ? String(Math.max(0, es.patience - es.since_best)) : "–";
    fields.reason.textContent = run.stop_reason || (run.status === "running" ? "still training" : "–");
    fields.ic.textContent = fmt(last && last.valid_ic);
    draw();
    if (run.status !== "running") {
      extra.replaceChildren(section("final metrics", kv(run.metrics)),
        run.report_uri ? section("training report", el("p", {}, el("a", { id: "run-report", href: `/v1/runs/${run.id}/report`, target: "_blank" },
          "open the training report (HTML, with its figures)"))) : empty(run.error || "no training report for this run"));
    }
  };
  show(await api(`/v1/runs/${encodeURIComponent(runId)}`)); // a finished run is complete with this one read
  if (run.status !== "running") return null;
  let closed = false;
  const socket = new WebSocket(wsUrl(`/v1/ws/runs/${encodeURIComponent(runId)}`));
  socket.onmessage = (event) => show(JSON.parse(event.data));
  socket.onclose = async () => {
    if (closed || !run || run.status !== "running") return;
    try { show(await api(`/v1/runs/${encodeURIComponent(runId)}`)); } catch (e) { /* the next visit reads it */ }
  };
  return () => { closed = true; socket.close(); };
}

// Request rate, error rate and latency per version over time, rollout steps and rollbacks marked.
function trafficCharts(data, model) {
  const versions = data.versions.filter((v) => v.model === model);
  const label = (v) => `v${v.version}`;
  const marks = data.markers.filter((m) => m.model === model).map((m) => ({
    x: m.t, label: m.kind === "weights" ? "step" : m.kind === "rolled_back" ? "rollback" : "done",
    color: m.kind === "rolled_back" ? "#c0362c" : m.kind === "succeeded" ? "#13795b" : "#98a2b3",
  }));
  const slug = model.replace(/[^A-Za-z0-9_-]/g, "_");
  const note = `last ${data.window_s / 60} min in ${data.bucket_s} s buckets; vertical lines: rollout weight steps, rollbacks (red), completions (green)`;
  const perVersion = (field) => versions.map((v) => ({ label: label(v), values: v[field] }));
  return el("div", { class: "grid" },
    Charts.line(`chart-rps-${slug}`, `${model}: request rate`, data.t, perVersion("rps"),
      { time: true, xLabel: "time", yLabel: "requests / s", marks, note }),
    Charts.line(`chart-errors-${slug}`, `${model}: error rate`, data.t,
      versions.map((v) => ({ label: label(v), values: v.error_rate.map((r) => (r === null ? null : 100 * r)) })),
      { time: true, xLabel: "time", yLabel: "% of requests failed", marks }),
    Charts.line(`chart-latency-${slug}`, `${model}: latency p50 (solid) and p99 (dashed)`, data.t,
      versions.flatMap((v, i) => [{ label: `${label(v)} p50`, values: v.p50_ms, color: Charts.color(i) },
        { label: `${label(v)} p99`, values: v.p99_ms, color: Charts.color(i), dash: [6, 4] }]),
      { time: true, xLabel: "time", yLabel: "ms", marks }),
    Charts.line(`chart-ic-${slug}`, `${model}: online accuracy (IC from feedback)`, data.t, perVersion("ic"),
      { time: true, xLabel: "time", yLabel: "IC (Pearson)", marks, note: "a bucket with fewer than 3 labelled predictions has no point" }));
}

views.rollouts = async (root) => {
  const [windowS, bucketS] = trafficRange();
  const [data, traffic] = await Promise.all([api("/v1/rollouts"), api(`/v1/ui/traffic?window_s=${windowS}&bucket_s=${bucketS}`)]);
  const models = [...new Set(traffic.versions.map((v) => v.model))].sort();
  const current = Object.keys(RANGES).find((k) => RANGES[k][0] === windowS);
  const range = el("select", { id: "traffic-range", onchange: (e) => { sessionStorage.setItem("qmlops-range", e.target.value); route(); } },
    Object.keys(RANGES).map((k) => el("option", { value: k, selected: k === current }, k)));
  root.append(section("traffic and online accuracy per version", el("p", {}, "show the last ", range),
    models.length ? models.map((m) => el("div", { class: "model-traffic" }, el("h3", {}, m), trafficCharts(traffic, m)))
      : empty(`No predictions in the last ${current}.`)));
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
};

views.experiments = async (root, arg) => {
  const data = await api("/v1/experiments");
  root.append(section("experiments (click one for its results)", table([
    ["id", (x) => x.id], ["name", (x) => x.name], ["model", (x) => x.model], ["state", (x) => badge(x.state)],
    ["layer", (x) => x.layer], ["traffic", (x) => x.traffic, { num: true }],
    ["variants", (x) => x.variants.map((v) => `${v.name} ${v.weight}: ${v.model_version}`).join(", ")],
  ], data.experiments, { onclick: (x) => { location.hash = `#experiments/${x.id}`; }, key: (x) => x.id, cls: "experiments" })));
  if (!arg) return;
  const [res, assigned] = await Promise.all([api(`/v1/experiments/${encodeURIComponent(arg)}/results`),
    api(`/v1/experiments/${encodeURIComponent(arg)}/assignment?bucket_s=${BUCKET_S}`)]);
  const rows = res.metrics || [];
  const cats = rows.map((m) => `${m.metric} · ${m.variant}`);
  const pct = (v) => (v === null || v === undefined ? null : 100 * v);
  root.append(section(`results of ${res.experiment.name}`,
    kv({ control: res.control, alpha: res.alpha, units: res.units, "SRM p-value": res.srm && res.srm.p_value,
      "sample-ratio mismatch": res.srm && res.srm.mismatch }),
    res.note ? empty(res.note) : null,
    el("div", { class: "grid" },
      rows.length ? Charts.intervals("chart-lift", "relative lift over the control with its confidence interval", cats,
        rows.map((m) => pct(m.relative_lift)), rows.map((m) => pct(m.relative_ci && m.relative_ci[0])),
        rows.map((m) => pct(m.relative_ci && m.relative_ci[1])),
        { xLabel: "metric · variant", yLabel: "lift (%)", estimateLabel: "lift", note: `${Math.round((1 - res.alpha) * 100)}% intervals; dashed: no change` })
        : empty("no metric to chart yet"),
      Charts.line("chart-assignment", "units assigned so far per variant", assigned.t,
        Object.entries(assigned.variants).map(([name, values]) => ({ label: name, values })),
        { time: true, step: true, xLabel: "time", yLabel: "units (cumulative)", note: `first exposures, ${assigned.bucket_s} s buckets` })),
    table([["metric", (m) => m.metric], ["variant", (m) => m.variant], ["test", (m) => m.test],
      ["control", (m) => m.control_mean, { num: true }], ["variant mean", (m) => m.variant_mean, { num: true }],
      ["lift", (m) => m.relative_lift, { num: true }],
      ["CI (relative)", (m) => `${fmt(m.relative_ci[0])} .. ${fmt(m.relative_ci[1])}`],
      ["p (Holm)", (m) => m.adjusted_p_value, { num: true }],
      ["always-valid p", (m) => m.always_valid_p_value, { num: true }],
      ["significant", (m) => badge(m.significant ? "yes" : "no", `ok-${m.significant}`)]],
    rows, { cls: "results" })));
};

views.drift = async (root, arg) => {
  const [model, version] = arg ? arg.split("@") : [null, null];
  const q = model ? `?model=${encodeURIComponent(model)}&version=${encodeURIComponent(version)}` : "";
  const [data, hist] = await Promise.all([api("/v1/drift?full=true&limit=10"), api(`/v1/ui/drift${q}`)]);
  if (!data.reports.length) return root.append(empty("No drift report yet: the gateway writes one per served version once enough requests arrived."));
  const heat = hist.heat;
  const score = sessionStorage.getItem("qmlops-drift-score") === "statistic" ? "statistic" : "psi";
  const scorePick = el("select", { id: "drift-score", onchange: (e) => { sessionStorage.setItem("qmlops-drift-score", e.target.value); route(); } },
    el("option", { value: "psi", selected: score === "psi" }, "PSI"),
    el("option", { value: "statistic", selected: score === "statistic" }, "test statistic (KS or chi-square)"));
  const pick = el("select", { id: "drift-version", onchange: (e) => { location.hash = `#drift/${e.target.value}`; } },
    hist.versions.map((v) => el("option", { value: `${v.model}@${v.version}`, selected: v.model === hist.model && v.version === hist.version },
      `${v.model} ${v.version}`)));
  const psi = score === "psi";
  root.append(section(`drift over time: ${hist.model} ${hist.version}`, el("p", {}, "version ", pick, " score ", scorePick),
    el("div", { class: "grid" },
      Charts.heatmap("chart-drift-heatmap", `${psi ? "PSI" : "test statistic"} of the top ${heat.features.length} features by PSI`,
        heat.t, heat.features, psi ? heat.psi : heat.statistic,
        { threshold: psi ? hist.threshold : null, xLabel: "report time", yLabel: "feature",
          note: psi ? `colour: PSI (white 0, amber at the threshold ${hist.threshold}, dark red at the largest, log scale above the threshold); outlined: above the threshold (${hist.threshold_source})`
            : "colour: the per-feature test's statistic (KS distance, or chi-square for discrete features), white 0 to dark red at the largest; no alert rule reads it, so nothing is outlined" }),
      Charts.line("chart-drift-share", "share of features drifted per report", heat.t,
        [{ label: "drift share", values: heat.drift_share }], { time: true, xLabel: "report time", yLabel: "share of features" }))));
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
      ["drifted", (f) => badge(f.drifted_corrected ? "yes" : "no", `ok-${!f.drifted_corrected}`)]], feats, { cls: "features", tall: true })));
};

const ALERT_COLUMNS = [
    ["when", (x) => when(x.ts)], ["severity", (x) => badge(x.severity, x.severity)], ["source", (x) => x.source],
    ["subject", (x) => x.subject, { long: true }], ["message", (x) => x.message, { long: true }],
    ["repeats", (x) => x.repeats, { num: true }],
    ["acknowledged", (x) => (x.acknowledged_by ? `${x.acknowledged_by}` : el("button", { onclick: (e) => ack(e, x.id) }, "ack"))],
];

async function ack(event, id) {
  event.stopPropagation();
  try {
    await api(`/v1/alerts/${encodeURIComponent(id)}/ack`, { method: "POST",
      headers: { authorization: `Bearer ${tokenInput.value}`, "content-type": "application/json" },
      body: JSON.stringify({ by: "ui" }) });
    route();
  } catch (e) {
    statusLine.textContent = `ack failed: ${e.message}`;
    holdStatus = Date.now() + 15000; // the next refreshes leave the message up for a while
  }
}

views.alerts = async (root) => {
  const data = await api("/v1/alerts?limit=200");
  root.append(section("alerts (new ones arrive live)", table(ALERT_COLUMNS, data.alerts, { cls: "alerts", key: (a) => a.id })));
};

// Nodes and their resources, the admission queue, deployments with replicas, health checks, performance tests.
views.infrastructure = async (root) => {
  const data = await api(`/v1/ui/infrastructure?window_s=${WINDOW_S}`);
  const nodeCharts = data.nodes.map((n) => {
    const s = n.series;
    const slug = n.node_id.slice(0, 12);
    const gpuUtil = s.gpu_utilization.map((values, g) => ({ label: `GPU ${g} utilisation`, values }));
    const gpuMem = s.gpu_memory_percent.map((values, g) => ({ label: `GPU ${g} memory`, values, dash: [6, 4] }));
    return Charts.line(`chart-node-${slug}`, `${n.hostname || slug} (${slug}): CPU, memory${gpuUtil.length ? ", GPU" : ""}`, s.t,
      [{ label: "CPU", values: s.cpu_percent }, { label: "memory", values: s.memory_percent }, ...gpuUtil, ...gpuMem],
      { time: true, xLabel: "time", yLabel: "% used", yRange: [0, 100], note: gpuUtil.length ? null : "no GPU on this node" });
  });
  root.append(section("nodes", table([
    ["node", (n) => n.node_id.slice(0, 12)], ["host", (n) => n.hostname], ["sampled", (n) => when(n.ts)],
    ["CPU %", (n) => n.cpu_percent, { num: true }], ["memory %", (n) => n.memory_percent, { num: true }],
    ["disk %", (n) => n.disk_percent, { num: true }],
    ["GPUs", (n) => (n.gpus.length ? n.gpus.map((g) => `${g.name || "gpu"} ${fmt(g.utilization)}%`).join(", ") : n.gpu_note || "none")],
  ], data.nodes, { cls: "nodes", empty: "No samples: the resource monitor starts with `qmlops serve start`." }),
  el("div", { class: "grid" }, nodeCharts)));
  const jt = data.job_timeline;
  root.append(section("job queue",
    jt.t.length ? el("div", { class: "grid" }, Charts.line("chart-jobs", "jobs queued and running over time", jt.t,
      [{ label: "queued", values: jt.queued }, { label: "running", values: jt.running }],
      { time: true, step: true, xLabel: "time", yLabel: "jobs" })) : empty("No job has been queued yet."),
    el("h3", {}, "waiting for admission (highest priority first)"),
    table([["id", (j) => j.id], ["name", (j) => j.name], ["priority", (j) => j.priority, { num: true }],
      ["CPUs", (j) => j.num_cpus, { num: true }], ["GPUs", (j) => j.num_gpus, { num: true }],
      ["submitted", (j) => when(j.submitted_at)]], data.queue, { cls: "queue", empty: "Nothing is waiting." }),
    el("h3", {}, "recent jobs"),
    table([
      ["id", (j) => j.id], ["name", (j) => j.name], ["state", (j) => badge(j.state)], ["priority", (j) => j.priority, { num: true }],
      ["CPUs", (j) => j.num_cpus, { num: true }], ["GPUs", (j) => j.num_gpus, { num: true }],
      ["submitted", (j) => when(j.submitted_at)], ["entrypoint", (j) => j.entrypoint],
    ], data.jobs, { cls: "jobs", empty: "The queue is empty: `qmlops jobs submit` adds jobs." })));
  const deps = Object.entries(data.deployments);
  root.append(section("deployments",
    deps.length ? table([["deployment", ([name]) => name], ["status", ([, d]) => badge(d.status.toLowerCase(), d.status === "HEALTHY" ? "finished" : "pending")],
      ["replicas", ([, d]) => Object.entries(d.replicas).map(([k, v]) => `${v} ${k.toLowerCase()}`).join(", ") || "–"],
      ["message", ([, d]) => d.message || ""]], deps, { cls: "deployments" }) : empty("Serve reports no deployment."),
    el("h3", {}, "routes"),
    table([["model", (t) => t.model], ["revision", (t) => t.revision, { num: true }],
      ["versions (weight %)", (t) => t.entries.map((e) => `${e.model_version} ${e.role} ${fmt(e.weight)}`).join(", ")],
      ["updated", (t) => when(t.updated_at)]], data.routes, { cls: "routes", empty: "No model is served." })));
  const check = (c) => c.result || {};
  const latest = data.latest_performance_test;
  root.append(section("performance tests",
    latest ? el("div", { id: "latest-perf" }, el("h3", {}, `latest: ${latest.model_version}, ${when(latest.ts)}`),
      kv({ ok: latest.ok, rps: check(latest).rps, "p50 ms": check(latest).p50_ms, "p99 ms": check(latest).p99_ms,
        requests: check(latest).requests, errors: check(latest).errors })) : empty("No performance test yet (rollouts run them)."),
    data.performance_history.length ? el("div", { class: "grid" },
      Charts.line("chart-perf-rps", "throughput per performance test, per version", perfAxis(data.performance_history),
        perfSeries(data.performance_history, "rps"), { time: true, xLabel: "test time", yLabel: "requests / s" }),
      Charts.line("chart-perf-p99", "p99 latency per performance test, per version", perfAxis(data.performance_history),
        perfSeries(data.performance_history, "p99_ms"), { time: true, xLabel: "test time", yLabel: "ms" })) : null));
  root.append(section("health checks", table([
    ["when", (c) => when(c.ts)], ["version", (c) => c.model_version], ["ok", (c) => badge(String(c.ok), `ok-${c.ok}`)],
    ["requests", (c) => check(c).requests, { num: true }], ["errors", (c) => check(c).errors, { num: true }],
    ["rollout", (c) => c.rollout_id || "–"],
  ], data.health_checks, { cls: "health" })));
};

// performance history: one time axis over every version's tests, each version a series with gaps elsewhere
function perfAxis(history) {
  return [...new Set(history.flatMap((h) => h.t))].sort((a, b) => a - b);
}
function perfSeries(history, field) {
  const axis = perfAxis(history);
  return history.map((h) => {
    const at = new Map(h.t.map((t, i) => [t, h[field][i]]));
    return { label: h.model_version, values: axis.map((t) => (at.has(t) ? at.get(t) : null)) };
  });
}

const ALIASES = { resources: "infrastructure", jobs: "infrastructure" };

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
let holdStatus = 0; // until when the status line keeps a message (a failed acknowledgement)
let generation = 0; // a view that finishes loading after the user moved on is dropped

async function route() {
  const mine = ++generation;
  const [asked, ...rest] = (location.hash.slice(1) || "models").split("/");
  const name = ALIASES[asked] || asked;
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
    Charts.reset();
    view.replaceChildren(fresh);
    Charts.mount();
    if (Date.now() > holdStatus) statusLine.textContent = `updated ${new Date().toLocaleTimeString()}`;
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
