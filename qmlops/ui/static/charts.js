// qmlops charts: thin helpers over the vendored uPlot (uplot-1.6.32.min.js, MIT). Each helper returns a box
// element at once and draws into it when the view is on the page (uPlot needs the box's real width); every
// drawn chart is kept in Charts.all by id, so the page's tests can read what each chart holds.
"use strict";

const Charts = (() => {
  const all = {};
  let pending = [];
  const PALETTE = ["#2557d6", "#c0362c", "#13795b", "#b54708", "#7a5af8", "#0e7090", "#c11574", "#667085"];
  const color = (i) => PALETTE[i % PALETTE.length];
  const HEIGHT = 220;

  function box(id, title, note) {
    const head = document.createElement("div");
    head.className = "chart-title";
    head.textContent = title;
    const node = document.createElement("div");
    node.className = "chart";
    node.id = id;
    node.dataset.chart = "pending";
    const wrap = document.createElement("figure");
    wrap.className = "chart-box";
    wrap.append(head, node);
    if (note) {
      const cap = document.createElement("figcaption");
      cap.className = "muted";
      cap.textContent = note;
      wrap.append(cap);
    }
    return { wrap, node };
  }

  let previous = {}; // the replaced view's charts, kept until mount so that a refresh can reuse them

  // reuse (line charts): {key, data, qmlops}; a refreshed view whose chart has the same key keeps the drawn
  // chart and only gets the new data (no flicker, no lost hover state)
  function later(node, make, reuse) {
    pending.push({ node, make, reuse });
  }

  function observe(node, u) {
    if (u.qmlopsObserver) u.qmlopsObserver.disconnect();
    u.qmlopsObserver = new ResizeObserver(() => {
      const w = Math.max(280, node.clientWidth);
      if (node.isConnected && Math.abs(w - u.width) > 2) u.setSize({ width: w, height: u.height });
    });
    u.qmlopsObserver.observe(node);
  }

  function drop(u) {
    if (u.qmlopsObserver) u.qmlopsObserver.disconnect();
    u.destroy();
  }

  // Draw every chart built since the last call whose box is now in the document (the router calls this
  // after it puts a view on the page); boxes that were dropped are forgotten.
  function mount() {
    const waiting = pending;
    pending = [];
    for (const { node, make, reuse } of waiting) {
      if (!node.isConnected) continue;
      const old = previous[node.id];
      delete previous[node.id];
      if (all[node.id]) drop(all[node.id]); // the same chart drawn anew within a view
      let u;
      if (old && reuse && old.qmlopsKey === reuse.key) {
        node.append(old.root);
        old.qmlops = reuse.qmlops;
        old.setData(reuse.data);
        u = old;
      } else {
        if (old) drop(old);
        u = make(Math.max(280, node.clientWidth || node.parentNode.clientWidth || 600));
        if (reuse) u.qmlopsKey = reuse.key;
      }
      all[node.id] = u;
      node.dataset.chart = "drawn";
      observe(node, u);
    }
    for (const u of Object.values(previous)) drop(u);
    previous = {};
  }

  // The view is being replaced: its charts wait for the next mount, which reuses or drops them.
  function reset() {
    for (const u of Object.values(previous)) drop(u);
    previous = { ...all };
    for (const id of Object.keys(all)) delete all[id];
  }

  // vertical marks (rollout steps, best step) and a horizontal threshold, drawn over the plot area
  function overlay(marks, threshold, thresholdScale) {
    return (u) => {
      const { ctx, bbox } = u;
      ctx.save();
      ctx.font = `${10 * devicePixelRatio}px system-ui, sans-serif`;
      let labelled = -Infinity; // marks close together keep their lines; only the first gets a label
      for (const m of (u.qmlops && u.qmlops.marks) || marks || []) {
        const x = u.valToPos(m.x, "x", true);
        if (!(x >= bbox.left && x <= bbox.left + bbox.width)) continue;
        ctx.strokeStyle = m.color || "#98a2b3";
        ctx.lineWidth = devicePixelRatio * (m.width || 1);
        ctx.setLineDash(m.dash || [4 * devicePixelRatio, 3 * devicePixelRatio]);
        ctx.beginPath();
        ctx.moveTo(x, bbox.top);
        ctx.lineTo(x, bbox.top + bbox.height);
        ctx.stroke();
        if (x - labelled > 48 * devicePixelRatio) {
          ctx.fillStyle = m.color || "#667085";
          ctx.fillText(m.label || "", x + 3 * devicePixelRatio, bbox.top + 10 * devicePixelRatio);
          labelled = x;
        }
      }
      if (threshold !== null && threshold !== undefined) {
        const y = u.valToPos(threshold, thresholdScale || "y", true);
        if (y >= bbox.top && y <= bbox.top + bbox.height) {
          ctx.strokeStyle = "#c0362c";
          ctx.lineWidth = devicePixelRatio;
          ctx.setLineDash([6 * devicePixelRatio, 4 * devicePixelRatio]);
          ctx.beginPath();
          ctx.moveTo(bbox.left, y);
          ctx.lineTo(bbox.left + bbox.width, y);
          ctx.stroke();
          ctx.fillStyle = "#c0362c";
          ctx.fillText(`threshold ${threshold}`, bbox.left + 4 * devicePixelRatio, y - 3 * devicePixelRatio);
        }
      }
      ctx.restore();
    };
  }

  // A line chart. x: the shared axis values (UNIX seconds when opts.time, else e.g. steps); series:
  // [{label, values, color?, dash?}] of the same length; opts: {xLabel, yLabel, time, marks, threshold, step}
  function line(id, title, x, series, opts = {}) {
    const { wrap, node } = box(id, title, opts.note);
    const info = { marks: opts.marks || [], threshold: opts.threshold ?? null, xLabel: opts.xLabel, yLabel: opts.yLabel };
    later(node, (width) => {
      const u = new uPlot({
        width, height: opts.height || HEIGHT,
        // one point in time: a minute either side of it (uPlot would otherwise span years)
        scales: { x: opts.time && new Set(x).size === 1 ? { time: true, range: [x[0] - 60, x[0] + 60] } : { time: !!opts.time },
          y: opts.yRange ? { range: opts.yRange } : {} },
        legend: { live: false },
        cursor: { drag: { x: true, y: false } },
        series: [
          { label: opts.xLabel },
          ...series.map((s, i) => ({
            label: s.label, stroke: s.color || color(i), width: 1.6, dash: s.dash, spanGaps: false,
            points: { show: true, size: 4 },
            paths: opts.step ? uPlot.paths.stepped({ align: 1 }) : undefined,
          })),
        ],
        axes: [
          { label: opts.xLabel, labelSize: 18, size: 36 },
          { label: opts.yLabel, labelSize: 18, size: 56 },
        ],
        hooks: { draw: [overlay(opts.marks, opts.threshold)] },
      }, [x, ...series.map((s) => s.values)], node);
      u.qmlops = info;
      return u;
    }, { key: JSON.stringify([title, opts.time, opts.step, opts.yRange, opts.xLabel, opts.yLabel, series.map((s) => [s.label, s.color, s.dash]),
      opts.time && new Set(x).size === 1]), data: [x, ...series.map((s) => s.values)], qmlops: info });
    return wrap;
  }

  // A heatmap over time: rows (features) by columns (times t); cells coloured by value against a threshold
  // (white at 0, amber at the threshold, dark red at the largest value, on a log scale above the threshold, so
  // that large shifts stay apart; a cell over the threshold is outlined).
  function heatmap(id, title, t, rows, values, opts = {}) {
    const { wrap, node } = box(id, title, opts.note);
    const largest = Math.max(0, ...values.flat().filter((v) => v !== null && Number.isFinite(v)));
    const outline = opts.threshold !== null && opts.threshold !== undefined;
    // without a threshold, colours run from 0 to the largest value (amber half way)
    const threshold = outline ? opts.threshold : (largest / 2 || 1);
    const top = Math.max(2 * threshold, largest);
    const fill = (v) => {
      if (v === null || v === undefined) return "#f2f4f7";
      const a = v <= threshold ? 0.5 * Math.max(0, v) / threshold
        : 0.5 + 0.5 * Math.min(1, Math.log(v / threshold) / Math.log(top / threshold));
      // white -> amber (0.5) -> dark red (1)
      const mix = (p, q, f) => Math.round(p + (q - p) * f);
      if (a <= 0.5) { const f = a / 0.5; return `rgb(${mix(255, 247, f)},${mix(255, 144, f)},${mix(255, 9, f)})`; }
      const f = (a - 0.5) / 0.5;
      return `rgb(${mix(247, 122, f)},${mix(144, 39, f)},${mix(9, 26, f)})`;
    };
    const edges = t.map((v, j) => {
      const left = j > 0 ? (t[j - 1] + v) / 2 : v - (t.length > 1 ? (t[1] - t[0]) / 2 : 30);
      const right = j < t.length - 1 ? (v + t[j + 1]) / 2 : v + (t.length > 1 ? (v - t[j - 1]) / 2 : 30);
      return [left, right];
    });
    later(node, (width) => {
      const u = new uPlot({
        width, height: Math.max(HEIGHT, 26 * rows.length + 60),
        scales: {
          x: { time: true, range: () => [edges.length ? edges[0][0] : 0, edges.length ? edges[edges.length - 1][1] : 1] },
          row: { auto: false, range: [-0.5, rows.length - 0.5] },
          y: { auto: true },
        },
        legend: { show: false },
        cursor: { show: false },
        series: [
          { label: opts.xLabel },
          ...rows.map((name) => ({ label: name, scale: "y", show: true, paths: () => null, points: { show: false } })),
        ],
        axes: [
          { label: opts.xLabel, labelSize: 18, size: 36 },
          { scale: "row", label: opts.yLabel, labelSize: 18, size: 150,
            splits: () => rows.map((_, i) => i), values: (_, splits) => splits.map((i) => rows[rows.length - 1 - i] || "") },
        ],
        hooks: {
          draw: [(u) => {
            const { ctx } = u;
            ctx.save();
            rows.forEach((_, i) => {
              const yTop = u.valToPos(rows.length - 1 - i + 0.5, "row", true);
              const yBot = u.valToPos(rows.length - 1 - i - 0.5, "row", true);
              edges.forEach(([l, r], j) => {
                const v = values[i][j];
                const x0 = u.valToPos(l, "x", true), x1 = u.valToPos(r, "x", true);
                ctx.fillStyle = fill(v);
                ctx.fillRect(x0 + 1, yTop + 1, x1 - x0 - 2, yBot - yTop - 2);
                if (outline && v !== null && v !== undefined && v > threshold) {
                  ctx.strokeStyle = "#7a271a";
                  ctx.lineWidth = devicePixelRatio * 1.5;
                  ctx.strokeRect(x0 + 1, yTop + 1, x1 - x0 - 2, yBot - yTop - 2);
                }
              });
            });
            ctx.restore();
          }],
        },
      }, [t, ...values], node);
      u.qmlops = { rows, threshold: outline ? threshold : null, xLabel: opts.xLabel, yLabel: opts.yLabel };
      return u;
    });
    return wrap;
  }

  // Estimates with intervals per category (experiment lifts): a point per category and its [low, high] whisker,
  // with a zero line. cats: labels; est, low, high: numbers (null where undefined).
  function intervals(id, title, cats, est, low, high, opts = {}) {
    const { wrap, node } = box(id, title, opts.note);
    const x = cats.map((_, i) => i);
    later(node, (width) => {
      const u = new uPlot({
        width, height: opts.height || HEIGHT,
        scales: { x: { time: false, range: [-0.5, cats.length - 0.5] } },
        legend: { live: false },
        cursor: { show: false },
        series: [
          { label: opts.xLabel },
          { label: opts.estimateLabel || "estimate", stroke: "#2557d6", paths: () => null, points: { show: true, size: 9, fill: "#2557d6" } },
          { label: "CI low", stroke: "#98a2b3", paths: () => null, points: { show: true, size: 3 } },
          { label: "CI high", stroke: "#98a2b3", paths: () => null, points: { show: true, size: 3 } },
        ],
        axes: [
          { label: opts.xLabel, labelSize: 18, size: 40, splits: () => x, values: (_, s) => s.map((i) => cats[i] ?? "") },
          { label: opts.yLabel, labelSize: 18, size: 60 },
        ],
        hooks: {
          draw: [(u) => {
            const { ctx, bbox } = u;
            ctx.save();
            ctx.strokeStyle = "#2557d6";
            ctx.lineWidth = 2 * devicePixelRatio;
            x.forEach((i) => {
              if (low[i] === null || high[i] === null || low[i] === undefined || high[i] === undefined) return;
              const px = u.valToPos(i, "x", true);
              const y0 = u.valToPos(low[i], "y", true), y1 = u.valToPos(high[i], "y", true);
              ctx.beginPath();
              ctx.moveTo(px, y0); ctx.lineTo(px, y1);
              ctx.moveTo(px - 6, y0); ctx.lineTo(px + 6, y0);
              ctx.moveTo(px - 6, y1); ctx.lineTo(px + 6, y1);
              ctx.stroke();
            });
            const zero = u.valToPos(0, "y", true);
            if (zero >= bbox.top && zero <= bbox.top + bbox.height) {
              ctx.strokeStyle = "#667085";
              ctx.lineWidth = devicePixelRatio;
              ctx.setLineDash([4, 3]);
              ctx.beginPath(); ctx.moveTo(bbox.left, zero); ctx.lineTo(bbox.left + bbox.width, zero); ctx.stroke();
            }
            ctx.restore();
          }],
        },
      }, [x, est, low, high], node);
      u.qmlops = { categories: cats, xLabel: opts.xLabel, yLabel: opts.yLabel };
      return u;
    });
    return wrap;
  }

  // How many pixels of the plot area the canvas has painted in colour: series lines, points, heatmap cells,
  // intervals (the grid and the axes are grey or black, so an empty plot counts 0).
  function inked(u) {
    const { left, top, width, height } = u.bbox;
    if (width < 1 || height < 1) return 0;
    const px = u.ctx.getImageData(left, top, width, height).data;
    let n = 0;
    for (let i = 0; i < px.length; i += 4) {
      if (px[i + 3] > 128 && Math.max(px[i], px[i + 1], px[i + 2]) - Math.min(px[i], px[i + 1], px[i + 2]) > 60) n += 1;
    }
    return n;
  }

  // What a test (or a curious reader) can ask of a drawn chart: per series, its label and how many values it
  // holds and how many of them are numbers; the axis labels; the marks.
  function describe(id) {
    const u = all[id];
    if (!u) return null;
    return {
      series: u.series.slice(1).map((s, i) => ({
        label: s.label, length: u.data[i + 1].length,
        points: u.data[i + 1].filter((v) => v !== null && v !== undefined && Number.isFinite(v)).length,
      })),
      x: u.data[0].length, axes: u.axes.map((a) => a.label || null), inked: inked(u),
      width: u.width, height: u.height, ...(u.qmlops || {}),
    };
  }

  return { all, line, heatmap, intervals, mount, reset, describe, color };
})();
window.Charts = Charts;
