"""The time series behind the page's charts: the store's bucketed reads and the pure shaping functions."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from qmlops.metadata import MetadataStore
from qmlops.metadata._db import utcnow
from qmlops.metadata._predictions import online_accuracy
from qmlops.ui import align, cumulative, heatmap, infrastructure_view, job_timeline, run_stage, traffic_view


def _epoch(ts: datetime) -> float:
    return ts.replace(tzinfo=UTC).timestamp()


def test_traffic_timeline_buckets_the_log_per_version(tmp_path: Path) -> None:
    store = MetadataStore(str(tmp_path / "t.duckdb"))
    now = utcnow().replace(microsecond=0)
    start = now - timedelta(seconds=now.second % 10 + 40)  # a bucket boundary 40-49 s ago
    rows, feedback = [], []
    for i in range(30):  # v1: 10 requests in each of 3 buckets, every 5th an error
        ts = start + timedelta(seconds=10 * (i // 10) + 1)
        rows.append({"request_id": f"a{i}", "ts": ts, "model_name": "m", "model_version": 1,
                     "status": "error" if i % 5 == 0 else "ok", "latency_ms": float(i % 10), "output": i / 30})  # fmt: skip
        feedback.append((f"a{i}", i / 30 + (0.01 if i % 2 else -0.01)))
    rows.append({"request_id": "b0", "ts": start + timedelta(seconds=21), "model_name": "m", "model_version": 2,
                 "status": "ok", "latency_ms": 3.0, "output": 0.1})  # fmt: skip
    store.predictions.append(rows)
    store.serving.add_feedback(feedback)
    out = store.predictions.timeline(window_s=300, bucket_s=10, model_name="m")
    v1 = [r for r in out if r["model_version"] == 1]
    assert [r["t"] for r in v1] == [_epoch(start), _epoch(start) + 10, _epoch(start) + 20]
    assert [r["requests"] for r in v1] == [10, 10, 10] and [r["errors"] for r in v1] == [2, 2, 2]
    assert v1[0]["rps"] == 1.0 and v1[0]["error_rate"] == 0.2
    assert v1[0]["p50_ms"] == pytest.approx(5.0)  # the answered ones only: latencies 1..4, 6..9
    assert v1[0]["labelled"] == 8 and v1[0]["ic"] > 0.9  # outputs against nearly equal realised values
    pairs = [(i / 30, v) for i, (_, v) in enumerate(feedback[:10]) if i % 5]  # bucket 0's answered requests
    assert v1[0]["ic"] == pytest.approx(online_accuracy(pairs)["ic"])  # the same IC as the window figures
    assert [r["requests"] for r in out if r["model_version"] == 2] == [1]

    view = traffic_view(store, window_s=300, bucket_s=10, model="m")
    assert view["t"] == [r["t"] for r in v1]  # one shared axis
    by_version = {v["version"]: v for v in view["versions"]}
    assert by_version[1]["requests"] == [10, 10, 10] and by_version[2]["requests"] == [None, None, 1]
    assert view["markers"] == []
    assert store.predictions.timeline(window_s=300, bucket_s=10, model_name="other") == []


def test_assignment_timeline_counts_each_unit_once(tmp_path: Path) -> None:
    store = MetadataStore(str(tmp_path / "a.duckdb"))
    t0 = datetime(2026, 1, 1, 12, 0, 0)
    store.experiments.add_exposures([
        ("ex-1", "u1", "control", "r1", _epoch(t0 + timedelta(seconds=5))),
        ("ex-1", "u1", "control", "r2", _epoch(t0 + timedelta(seconds=70))),  # again: not a new unit
        ("ex-1", "u2", "treatment", "r3", _epoch(t0 + timedelta(seconds=65))),
        ("ex-1", "u3", "treatment", "r4", _epoch(t0 + timedelta(seconds=130))),
        ("ex-2", "u9", "control", "r5", _epoch(t0)),
    ])  # fmt: skip
    rows = store.experiments.assignment_timeline("ex-1", bucket_s=60)
    assert [(r["variant"], r["t"] - _epoch(t0), r["units"]) for r in rows] == [
        ("control", 0.0, 1), ("treatment", 60.0, 1), ("treatment", 120.0, 1)]  # fmt: skip
    shaped = cumulative(rows, ["control", "treatment"], 60)
    assert [t - _epoch(t0) for t in shaped["t"]] == [-60, 0, 60, 120]  # from zero a bucket before the first
    assert shaped["variants"] == {"control": [0, 1, 1, 1], "treatment": [0, 0, 1, 2]}
    assert cumulative([], ["control"], 60) == {"t": [], "variants": {"control": []}}


def test_align_job_timeline_and_heatmap() -> None:
    times, series = align([{"t": 2, "g": "a", "x": 1}, {"t": 1, "g": "b", "x": 5}], lambda r: r["g"], ("x",))
    assert times == [1.0, 2.0] and series == {"a": {"x": [None, 1]}, "b": {"x": [5, None]}}

    iso = lambda s: f"2026-01-01T00:00:{s:02d}Z"  # noqa: E731
    jobs = [{"submitted_at": iso(0), "admitted_at": iso(2), "ended_at": iso(5)},
            {"submitted_at": iso(1), "admitted_at": None, "ended_at": None},
            {"submitted_at": iso(3), "admitted_at": None, "ended_at": iso(4)}]  # fmt: skip
    base = datetime(2026, 1, 1, tzinfo=UTC).timestamp()
    tl = job_timeline(jobs, now=base + 9)
    assert [t - base for t in tl["t"]] == [0, 1, 2, 3, 4, 5, 9]
    assert tl["queued"] == [1, 2, 1, 2, 1, 1, 1] and tl["running"] == [0, 0, 1, 1, 1, 0, 0]
    assert job_timeline([], now=base) == {"t": [], "queued": [], "running": []}

    def report(s: int, psis: dict[str, float]) -> dict:
        feats = [
            {"feature": k, "psi": v, "statistic": v / 2, "drifted_corrected": v > 0.2}
            for k, v in psis.items()
        ]
        return {"ts": iso(s), "drift_share": 0.5, "n_rows": 100, "report": {"features": feats}}

    heat = heatmap([report(9, {"a": 0.1, "b": 0.9, "c": 0.3}), report(1, {"a": 0.5, "b": 0.2})], top=2)
    assert heat["features"] == ["b", "a"]  # by their largest PSI: b 0.9, a 0.5 (c 0.3 left out)
    assert [t - base for t in heat["t"]] == [1, 9]  # oldest first
    assert heat["psi"] == [[0.2, 0.9], [0.5, 0.1]] and heat["drifted"] == [[False, True], [True, False]]


def test_run_stage_from_what_the_run_stored() -> None:
    running = {"status": "running", "total_steps": 50, "best_step": 20}
    assert run_stage(running, None)["stage"] == "preparing"
    assert run_stage(running, 30, {"since_best": 1, "patience": 3}) == {
        "stage": "training", "message": "step 30 of 50, best 20"}  # fmt: skip
    assert run_stage(running, 40, {"since_best": 3, "patience": 3})["stage"] == "finishing"
    assert run_stage(running, 50)["stage"] == "finishing"
    assert run_stage({"status": "finished", "stop_reason": "budget"}, 50) == {
        "stage": "finished",
        "message": "budget",
    }
    failed = run_stage({"status": "failed", "error": "ValueError: bad\ntraceback"}, 3)
    assert failed == {"stage": "failed", "message": "ValueError: bad"}


def test_infrastructure_series_per_node_with_gpus(tmp_path: Path) -> None:
    store = MetadataStore(str(tmp_path / "i.duckdb"))
    now = utcnow()
    gpu = lambda u, used: {"name": "gpu", "utilization": u, "memory_used": used, "memory_total": 1000}  # noqa: E731
    store.monitoring.add_samples([
        {"ts": now - timedelta(seconds=30), "node_id": "n-gpu", "cpu_percent": 10.0, "memory_percent": 20.0,
         "gpus": [gpu(50.0, 250), gpu(70.0, 500)]},
        {"ts": now - timedelta(seconds=20), "node_id": "n-gpu", "cpu_percent": 30.0, "memory_percent": 25.0,
         "gpus": [gpu(60.0, 750), gpu(80.0, 100)]},
        {"ts": now - timedelta(seconds=20), "node_id": "n-cpu", "cpu_percent": 5.0, "memory_percent": 9.0},
        {"ts": now - timedelta(hours=3), "node_id": "n-cpu", "cpu_percent": 99.0, "memory_percent": 99.0},
    ])  # fmt: skip
    for n, priority in enumerate((1, 5, 3)):
        store.monitoring.enqueue_job({"id": f"j{n}", "name": "x", "entrypoint": "true", "num_cpus": 1,
                                      "num_gpus": 0, "memory": 0, "priority": priority})  # fmt: skip
    store.monitoring.update_job("j0", state="running", admitted_at="now")
    view = infrastructure_view(store, window_s=3600, now=_epoch(now))
    nodes = {n["node_id"]: n["series"] for n in view["nodes"]}
    assert nodes["n-gpu"]["cpu_percent"] == [10.0, 30.0]
    assert nodes["n-gpu"]["gpu_utilization"] == [[50.0, 60.0], [70.0, 80.0]]
    assert nodes["n-gpu"]["gpu_memory_percent"] == [[25.0, 75.0], [50.0, 10.0]]
    assert nodes["n-cpu"]["cpu_percent"] == [5.0] and nodes["n-cpu"]["gpu_utilization"] == []  # 3 h ago: out
    assert [j["id"] for j in view["queue"]] == ["j1", "j2"]  # waiting, highest priority first
    assert view["job_timeline"]["queued"][-1] == 2 and view["job_timeline"]["running"][-1] == 1
    assert view["latest_performance_test"] is None and view["performance_history"] == []
