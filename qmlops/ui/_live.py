"""Time series behind the page's charts: traffic and online accuracy per version, drift per feature over time,
resources per node, the job queue over time, performance-test history and experiment assignment.

Every series is shaped for the page's chart library: one shared, ascending time axis ``t`` (UNIX seconds) and,
per series, a list of the same length with ``None`` where the series has no value at that time. The shaping
functions (:func:`align`, :func:`job_timeline`, :func:`cumulative`, :func:`heatmap`) are pure; the views read
the store and call them.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from datetime import UTC, datetime
from typing import Any

__all__ = [
    "align",
    "assignment_view",
    "cumulative",
    "drift_history_view",
    "epoch",
    "heatmap",
    "infrastructure_view",
    "job_timeline",
    "traffic_view",
    "MARKED_EVENTS",
    "PSI_THRESHOLD",
]

# rollout events drawn as vertical marks on the traffic charts: weight steps, rollbacks and the end
MARKED_EVENTS = ("weights", "rolled_back", "succeeded")
PSI_THRESHOLD = 0.2  # the usual "significant shift" bound for PSI, when no max_psi alert rule is set


def epoch(iso: str | None) -> float | None:
    """A stored ISO timestamp (naive UTC, optional ``Z``) as UNIX seconds."""
    if not iso:
        return None
    return datetime.fromisoformat(iso.removesuffix("Z")).replace(tzinfo=UTC).timestamp()


def align(
    rows: Iterable[dict[str, Any]], group: Callable[[dict[str, Any]], Any], fields: Sequence[str]
) -> tuple[list[float], dict[Any, dict[str, list[Any]]]]:
    """Rows carrying ``t`` as one time axis and, per group, each field's values on it (``None`` where absent)."""
    rows = list(rows)
    times = sorted({float(r["t"]) for r in rows})
    index = {t: i for i, t in enumerate(times)}
    out: dict[Any, dict[str, list[Any]]] = {}
    for r in rows:
        series = out.setdefault(group(r), {f: [None] * len(times) for f in fields})
        for f in fields:
            series[f][index[float(r["t"])]] = r.get(f)
    return times, out


def job_timeline(jobs: Iterable[dict[str, Any]], now: float) -> dict[str, list[Any]]:
    """Queued and running job counts as step series, one point per change (a job waits from ``submitted_at``
    until ``admitted_at`` or ``ended_at``, and runs from ``admitted_at`` until ``ended_at``), ending at ``now``."""
    changes: dict[float, list[int]] = {}

    def bump(t: float | None, queued: int, running: int) -> None:
        if t is not None:
            d = changes.setdefault(t, [0, 0])
            d[0] += queued
            d[1] += running

    for j in jobs:
        submitted, admitted, ended = (epoch(j.get(k)) for k in ("submitted_at", "admitted_at", "ended_at"))
        bump(submitted, 1, 0)
        if admitted is not None:
            bump(admitted, -1, 1)
            bump(ended, 0, -1)
        else:
            bump(ended, -1, 0)
    t: list[float] = []
    queued: list[int] = []
    running: list[int] = []
    q = r = 0
    for when in sorted(changes):
        q, r = q + changes[when][0], r + changes[when][1]
        t.append(when)
        queued.append(q)
        running.append(r)
    if t and now > t[-1]:
        t.append(now)
        queued.append(q)
        running.append(r)
    return {"t": t, "queued": queued, "running": running}


def cumulative(rows: Iterable[dict[str, Any]], variants: Sequence[str], bucket_s: float) -> dict[str, Any]:
    """Per variant, units assigned so far at each bucket (rows: ``variant``, ``t``, ``units`` per bucket), from
    zero one bucket before the first exposure."""
    times, series = align(rows, lambda r: r["variant"], ("units",))
    if times:
        times = [times[0] - bucket_s, *times]
        series = {k: {"units": [0, *v["units"]]} for k, v in series.items()}
    out: dict[str, list[int]] = {}
    for v in variants:
        total, values = 0, []
        for n in (series.get(v) or {"units": [None] * len(times)})["units"]:
            total += int(n or 0)
            values.append(total)
        out[v] = values
    return {"t": times, "variants": out}


def heatmap(reports: Sequence[dict[str, Any]], top: int) -> dict[str, Any]:
    """Drift reports (any order) as a feature-by-time PSI matrix over the ``top`` features by their largest PSI.

    ``psi[i][j]`` is feature ``features[i]`` in the report at ``t[j]`` (``None`` when that report did not test it);
    ``statistic`` holds the test statistic (KS or chi-square) the same way."""
    ordered = sorted(reports, key=lambda r: r["ts"])
    peak: dict[str, float] = {}
    for r in ordered:
        for f in (r.get("report") or {}).get("features") or []:
            if f.get("psi") is not None:
                peak[f["feature"]] = max(peak.get(f["feature"], float("-inf")), float(f["psi"]))
    features = sorted(peak, key=lambda k: (-peak[k], k))[:top]
    row = {name: i for i, name in enumerate(features)}
    psi: list[list[float | None]] = [[None] * len(ordered) for _ in features]
    stat: list[list[float | None]] = [[None] * len(ordered) for _ in features]
    drifted: list[list[bool | None]] = [[None] * len(ordered) for _ in features]
    for j, r in enumerate(ordered):
        for f in (r.get("report") or {}).get("features") or []:
            i = row.get(f["feature"])
            if i is not None:
                psi[i][j], stat[i][j] = f.get("psi"), f.get("statistic")
                drifted[i][j] = bool(f.get("drifted_corrected"))
    return {"t": [epoch(r["ts"]) for r in ordered], "features": features, "psi": psi, "statistic": stat,
            "drifted": drifted, "drift_share": [r["drift_share"] for r in ordered],
            "n_rows": [r["n_rows"] for r in ordered]}  # fmt: skip


# ---------------------------------------------------------------------------------------------------- views
def traffic_view(
    store: Any, *, window_s: float = 3600.0, bucket_s: float = 60.0, model: str | None = None
) -> dict[str, Any]:
    """Per served version: request rate, error rate, p50/p99 latency and online IC per time bucket, and the
    rollout events (weight steps, rollbacks, completions) inside the window to mark on the charts."""
    from qmlops.ui._views import clean

    rows = store.predictions.timeline(window_s=window_s, bucket_s=bucket_s, model_name=model)
    fields = ("requests", "rps", "errors", "error_rate", "p50_ms", "p99_ms", "ic", "labelled")
    times, series = align(rows, lambda r: (r["model_name"], r["model_version"]), fields)
    versions = [{"model": name, "version": version, **values}
                for (name, version), values in sorted(series.items(), key=lambda kv: (kv[0][0], kv[0][1] or 0))]  # fmt: skip
    start = times[0] if times else None
    rollouts = store.serving.list_rollouts(model, limit=50)
    events = store.serving.events_for([r["id"] for r in rollouts])
    markers = []
    for r in rollouts:
        for e in events[r["id"]]:
            t = epoch(e["ts"])
            if e["kind"] in MARKED_EVENTS and t is not None and (start is None or t >= start):
                markers.append({"t": t, "model": r["model"], "rollout": r["id"], "kind": e["kind"],
                                "detail": e["detail"]})  # fmt: skip
    markers.sort(key=lambda m: m["t"])
    return clean({"window_s": window_s, "bucket_s": bucket_s, "t": times, "versions": versions,
                  "markers": markers})  # fmt: skip


def drift_history_view(
    store: Any, *, model: str | None = None, version: str | None = None, top: int = 12, limit: int = 50
) -> dict[str, Any]:
    """The last ``limit`` drift reports of one served version (the newest report's when not named) as a PSI
    heatmap of its ``top`` features, with the alert threshold the page draws against."""
    from qmlops.ui._views import clean

    latest = store.monitoring.drift(model_name=model, model_version=version, limit=1)
    if not latest:
        return {
            "model": model,
            "version": version,
            "threshold": None,
            "heat": heatmap([], top),
            "versions": [],
        }
    model, version = latest[0]["model_name"], latest[0]["model_version"]
    reports = store.monitoring.drift(model_name=model, model_version=version, limit=limit, full=True)
    rules = [r for r in store.monitoring.rules() if r["metric"] == "max_psi" and r.get("enabled", True)]
    threshold = min((float(r["threshold"]) for r in rules), default=PSI_THRESHOLD)
    seen = store.monitoring.drift(limit=200)
    versions = sorted({(r["model_name"], r["model_version"]) for r in seen})
    return clean({"model": model, "version": version, "threshold": threshold,
                  "threshold_source": "alert rule max_psi" if rules else "PSI convention (no max_psi rule)",
                  "heat": heatmap(reports, top),
                  "versions": [{"model": m, "version": v} for m, v in versions]})  # fmt: skip


def infrastructure_view(
    store: Any, *, window_s: float = 3600.0, deployments: dict[str, Any] | None = None, now: float
) -> dict[str, Any]:
    """Nodes (latest sample and their CPU, memory and GPU series), the admission queue with priorities and
    its history, deployments (routes and Serve's replicas), health checks and performance tests."""
    from qmlops.ui._views import clean

    latest = store.monitoring.latest_samples()
    samples = store.monitoring.samples(since_s=window_s, limit=5000 * max(1, len(latest)))
    per_node: dict[str, list[dict[str, Any]]] = {}
    for s in reversed(samples):  # oldest first
        per_node.setdefault(s["node_id"], []).append(s)
    nodes = []
    for n in latest:
        rows = per_node.get(n["node_id"], [])
        gpus = max((len(s["gpus"]) for s in rows), default=0)
        nodes.append({**n, "series": {
            "t": [epoch(s["ts"]) for s in rows],
            "cpu_percent": [s["cpu_percent"] for s in rows],
            "memory_percent": [s["memory_percent"] for s in rows],
            "gpu_utilization": [[(s["gpus"][g] if g < len(s["gpus"]) else {}).get("utilization") for s in rows]
                                for g in range(gpus)],
            "gpu_memory_percent": [[_gpu_memory(s["gpus"][g] if g < len(s["gpus"]) else {}) for s in rows]
                                   for g in range(gpus)],
        }})  # fmt: skip
    jobs = store.monitoring.jobs(limit=500)
    waiting = sorted(
        (j for j in jobs if j["state"] == "queued"), key=lambda j: (-j["priority"], j["submitted_at"])
    )
    checks = store.serving.checks(limit=500)
    perf = [c for c in checks if c["kind"] != "health"]
    return clean({
        "nodes": nodes,
        "queue": waiting,
        "jobs": jobs[:100],
        "job_timeline": job_timeline(jobs, now),
        "routes": [{k: t[k] for k in ("model", "revision", "sticky_field", "entries", "updated_at")}
                   for t in store.serving.list_tables()],
        "deployments": deployments or {},
        "health_checks": [c for c in checks if c["kind"] == "health"][:50],
        "latest_performance_test": perf[0] if perf else None,
        "performance_history": _perf_history(perf),
    })  # fmt: skip


def _gpu_memory(gpu: dict[str, Any]) -> float | None:
    used, total = gpu.get("memory_used"), gpu.get("memory_total")
    if used is None or not total:
        return gpu.get("memory_percent")
    return 100.0 * float(used) / float(total)


def _perf_history(perf: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per model version, its performance tests oldest first: time, rps, p50 and p99 (a trend per version)."""
    by_version: dict[str, list[dict[str, Any]]] = {}
    for c in sorted(perf, key=lambda c: c["ts"]):
        by_version.setdefault(c["model_version"], []).append(c)
    return [{"model_version": v, "t": [epoch(c["ts"]) for c in cs],
             "rps": [c["result"].get("rps") for c in cs], "p50_ms": [c["result"].get("p50_ms") for c in cs],
             "p99_ms": [c["result"].get("p99_ms") for c in cs], "ok": [c["ok"] for c in cs]}
            for v, cs in sorted(by_version.items())]  # fmt: skip


def assignment_view(store: Any, experiment: str, *, bucket_s: float = 60.0) -> dict[str, Any]:
    """Units assigned so far per variant over time (first exposures, cumulated per bucket)."""
    from qmlops.ui._views import clean

    exp = store.experiments.get(experiment)
    rows = store.experiments.assignment_timeline(exp["id"], bucket_s=bucket_s)
    return clean({"experiment": exp["id"], "bucket_s": bucket_s,
                  **cumulative(rows, [v["name"] for v in exp["variants"]], bucket_s)})  # fmt: skip
