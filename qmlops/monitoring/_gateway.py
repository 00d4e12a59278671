"""Inline monitoring inside a gateway replica: prediction log, drift windows, metrics, alert evaluation.

The request path calls :meth:`GatewayMonitor.record` only: it buffers the log row, queues the rows for the
drift window and bumps the Ray metrics, O(1) in the number of requests so far. One background thread
(``qmlops-monitor``) does everything else on a schedule: flushes the log, folds queued rows into the
per-version :class:`DriftMonitor` windows, runs the drift tests every ``every_rows`` rows or ``every_s``
seconds, stores each report, evaluates the alert rules on drift, and every ``metrics_every_s`` seconds reads
the window aggregates of the shared log (all replicas) to evaluate latency, error-rate and accuracy rules.

Options (the gateway's ``user_config["monitoring"]``, every key optional)::

    {"enabled": true,  # false: no monitor at all in the replica (the benchmark's baseline)
     "log": {"enabled": true, "inputs": "hash" | "full", "sample_share": 0.05, "flush_interval_s": 1.0},
     "drift": {"enabled": true, "window": 10000, "every_rows": 10000, "every_s": 60, "min_rows": 200,
               "alpha": 0.05, "correction": "bh"},
     "metrics_every_s": 15, "metrics_window_s": 300}
"""

from __future__ import annotations

import collections
import logging
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np

from qmlops.exceptions import ValidationError, reject_unknown
from qmlops.monitoring._alerts import AlertManager
from qmlops.monitoring._drift import FeatureReference
from qmlops.monitoring._monitor import DriftMonitor
from qmlops.monitoring._predlog import LogOptions, PredictionLog, reconcile_losses
from qmlops.monitoring._sketch import should_run

__all__ = ["GatewayMonitor", "references_for", "DRIFT_DEFAULTS"]

log = logging.getLogger("qmlops.monitor")
# The tests run when the window has been replaced (every_rows = window) or once a minute, whichever is first.
DRIFT_DEFAULTS: dict[str, Any] = {"enabled": True, "window": 10_000, "every_rows": 10_000, "every_s": 60.0,
                                  "min_rows": 200, "alpha": 0.05, "correction": "bh"}  # fmt: skip


def _reference(stat: dict[str, Any], name: str | None = None) -> FeatureReference | None:
    edges, counts = stat.get("bin_edges") or [], stat.get("bin_counts") or []
    if len(edges) < 2 or sum(counts) <= 0:
        return None  # a feature with no finite training values cannot be tested
    return FeatureReference(name or stat["feature"], np.asarray(edges), np.asarray(counts),
                            mean=stat.get("mean") or float("nan"), std=stat.get("std") or float("nan"))  # fmt: skip


def references_for(
    store: Any, model_id: str, names: list[str]
) -> tuple[list[int], list[FeatureReference], FeatureReference | None, str]:
    """Column positions (within ``names``), their references, the prediction's reference and the source.

    The model version's own training-segment statistics when stored; otherwise the statistics of the feature
    set it was trained on (whole materialisation, no prediction reference).
    """
    stored = store.monitoring.get_reference(model_id)
    pred_ref = None
    if stored is not None:
        by_name = {s["feature"]: s for s in stored["stats"]}
        source = "train_segment"
        if stored.get("prediction"):
            pred_ref = _reference(stored["prediction"], "prediction")
    else:
        parents = [n for n in store.lineage.upstream(model_id) if n.kind == "feature_set"]
        if not parents:
            return [], [], None, "none"
        by_name = {s.feature: s.to_dict() for s in store.features.stats(parents[0].id)}
        source = "materialization"
    cols, refs = [], []
    for j, name in enumerate(names):
        stat = by_name.get(name)
        ref = _reference(stat, name) if stat else None
        if ref is not None:
            cols.append(j)
            refs.append(ref)
    return cols, refs, pred_ref, source


class _ModelDrift:
    def __init__(self, name: str, model_id: str, cols: list[int], monitor: DriftMonitor, source: str) -> None:
        self.name, self.model_id, self.cols, self.monitor, self.source = (
            name,
            model_id,
            np.asarray(cols),
            monitor,
            source,
        )
        self.last_run: float | None = None


class _Metrics:
    """Ray metrics (exported to Prometheus and the dashboard's metrics view); absent outside a Ray worker."""

    def __init__(self) -> None:
        try:
            from ray.util import metrics

            tags = ("model", "version", "variant")
            self.requests = metrics.Counter("qmlops_predictions_total", "Predictions answered by the gateway",
                                            tag_keys=(*tags, "status"))  # fmt: skip
            self.latency = metrics.Histogram("qmlops_prediction_latency_ms", "Gateway prediction latency (ms)",
                                             boundaries=[1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000],
                                             tag_keys=tags)  # fmt: skip
            self.drift = metrics.Gauge(
                "qmlops_drift_share", "Share of features drifted", tag_keys=("model", "version")
            )
            self.accuracy = metrics.Gauge("qmlops_online_ic", "Online IC from feedback", tag_keys=tags)
            self.enabled = True
        except Exception:  # not in a Ray worker (unit tests of the monitor alone)
            self.enabled = False

    def record(self, name: str, version: int, variant: str, status: str, latency_ms: float, n: int) -> None:
        if not self.enabled:
            return
        tags = {"model": name, "version": str(version), "variant": variant}
        self.requests.inc(n, tags={**tags, "status": status})
        if status == "ok":
            self.latency.observe(latency_ms, tags=tags)


class GatewayMonitor:
    @staticmethod
    def check_options(options: dict[str, Any]) -> tuple[LogOptions, dict[str, Any]]:
        """Validated (log options, drift options); a ``ValidationError`` names the bad key."""
        reject_unknown(options, ("enabled", "log", "drift", "metrics_every_s", "metrics_window_s"),
                       "monitoring option", prefix="monitoring.")  # fmt: skip
        log_options = LogOptions.from_dict(options.get("log"))
        reject_unknown(options.get("drift") or {}, DRIFT_DEFAULTS, "drift option", prefix="monitoring.drift.")
        drift = {**DRIFT_DEFAULTS, **(options.get("drift") or {})}
        for key in ("metrics_every_s", "metrics_window_s"):
            if key in options and not float(options[key]) > 0:
                raise ValidationError(f"{key} must be > 0", field=f"monitoring.{key}")
        return log_options, drift

    def __init__(self, store: Any, replica: str, home: str, options: dict[str, Any] | None = None) -> None:
        options = dict(options or {})
        self.store = store
        self.replica = replica
        self.log_options, self.drift_options = self.check_options(options)
        self.metrics_every_s = float(options.get("metrics_every_s", 15.0))
        self.metrics_window_s = float(options.get("metrics_window_s", 300.0))
        self.directory = Path(home) / "run" / "predlog"
        self.log = PredictionLog(store, replica, self.directory, self.log_options)
        self.alerts = AlertManager(store)
        self.metrics = _Metrics()
        self.drift: dict[str, _ModelDrift | None] = {}
        self._pending: collections.deque[tuple[str, str, np.ndarray, list[float]]] = collections.deque(
            maxlen=100_000
        )
        self._exposures: collections.deque[tuple[str, str, str, str, float]] = collections.deque(
            maxlen=1_000_000
        )
        self._stop = threading.Event()
        self._lock = threading.Lock()  # the drift windows: the monitor thread and on-demand evaluation
        self._last_metrics = time.time()
        self.errors = 0
        self.losses = reconcile_losses(store, self.directory)
        self._thread = threading.Thread(target=self._loop, name="qmlops-monitor", daemon=True)
        self._thread.start()

    # -- request path -------------------------------------------------------------------------------------
    def record(self, request_id: str, name: str, model_id: str, version: int, variant: str, rows: np.ndarray,
               outputs: list[float] | None, latency_ms: float, status: str) -> None:  # fmt: skip
        ts = time.time()
        if self.log_options.enabled:
            self.log.add(request_id, ts, name, model_id, version, variant, rows, outputs, latency_ms, status)
        if status == "ok" and outputs is not None and self.drift_options["enabled"]:
            self._pending.append((name, model_id, rows, outputs))
        self.metrics.record(name, version, variant, status, latency_ms, len(rows))

    def expose(self, experiment_id: str, unit: str, variant: str, request_id: str) -> None:
        """An experiment exposure (the request path: an append; the monitor thread stores them in batches)."""
        self._exposures.append((experiment_id, unit, variant, request_id, time.time()))

    def _flush_exposures(self) -> int:
        batch: list[tuple[str, str, str, str, float]] = []
        while self._exposures and len(batch) < 10_000:
            batch.append(self._exposures.popleft())
        if batch:
            try:
                self.store.experiments.add_exposures(batch)
            except Exception:
                self._exposures.extendleft(reversed(batch))
                raise
        return len(batch)

    # -- background ---------------------------------------------------------------------------------------
    def _loop(self) -> None:
        while not self._stop.wait(0.05):
            try:
                self.step()
            except Exception:  # monitoring must never take the gateway down; count and go on
                self.errors += 1
                log.exception("monitoring step failed")

    def step(self, *, force_drift: bool = False) -> None:
        if self.log.due():
            self.log.flush()
            self._flush_exposures()
        with self._lock:
            self._drift_step(force_drift)
        if time.time() - self._last_metrics >= self.metrics_every_s:
            self._last_metrics = time.time()
            self.evaluate_metrics()

    def _drift_step(self, force_drift: bool) -> None:
        self._fold()
        now = time.time()
        for md in list(self.drift.values()):
            if md is None:
                continue
            o = self.drift_options
            due = should_run(now, md.monitor.rows_since_evaluation, last_run_s=md.last_run,
                             every_rows=int(o["every_rows"]), every_s=float(o["every_s"]), min_rows=int(o["min_rows"]))  # fmt: skip
            if due or (force_drift and md.monitor.rows_since_evaluation > 0):
                self._evaluate_drift(md)

    def _fold(self) -> None:
        """Queued rows into the windows: one ``update_batch`` per version per pass (8 us a row, not 42)."""
        batches: dict[str, tuple[str, list[np.ndarray], list[float]]] = {}
        while self._pending:
            name, model_id, rows, outputs = self._pending.popleft()
            entry = batches.setdefault(model_id, (name, [], []))
            entry[1].append(rows)
            entry[2].extend(outputs)
        for model_id, (name, rows_list, outputs) in batches.items():
            if model_id not in self.drift:
                self.drift[model_id] = self._drift_for(name, model_id)
            md = self.drift[model_id]
            if md is not None:
                rows = np.concatenate(rows_list, axis=0)
                md.monitor.update_batch(rows[:, md.cols], np.asarray(outputs, dtype=np.float64))

    def _drift_for(self, name: str, model_id: str) -> _ModelDrift | None:
        record = self.store.models.get(model_id)
        names = list(record.signature["feature_names"])
        step_len = int(record.tags.get("step_len", "1"))
        base = [n.rsplit("@t-", 1)[0] for n in names[len(names) - len(names) // step_len :]]
        offset = len(names) - len(base)  # windows: watch the newest day of each feature
        cols, refs, pred_ref, source = references_for(self.store, model_id, base)
        if not refs:
            log.warning("no drift reference for %s; drift is not monitored for it", model_id)
            return None
        o = self.drift_options
        monitor = DriftMonitor(refs, window=int(o["window"]), prediction_reference=pred_ref, alpha=float(o["alpha"]),
                               correction=str(o["correction"]))  # fmt: skip
        return _ModelDrift(name, model_id, [offset + c for c in cols], monitor, source)

    def _evaluate_drift(self, md: _ModelDrift) -> dict[str, Any]:
        report = md.monitor.evaluate()
        md.last_run = time.time()
        data = report.to_dict()
        data["n_rows"] = md.monitor.sketch.size
        data["reference"] = md.source
        self.store.monitoring.add_drift(md.name, md.model_id, data)
        psis = [f["psi"] for f in data["features"] if f.get("psi") is not None]
        pred = data.get("prediction") or {}
        values = {"drift_share": data["drift_share"], "max_psi": max(psis) if psis else None,
                  "prediction_psi": pred.get("psi")}  # fmt: skip
        if self.metrics.enabled:
            self.metrics.drift.set(data["drift_share"], tags={"model": md.name, "version": md.model_id})
        top = sorted(
            (f for f in data["features"] if f.get("drifted_corrected")), key=lambda f: f["adjusted_p_value"]
        )
        self.alerts.evaluate("drift", md.name, values, {"model_version": md.model_id,
                                                        "drifted": [f["feature"] for f in top[:10]],
                                                        "n_rows": data["n_rows"]})  # fmt: skip
        return data

    def evaluate_metrics(self) -> list[dict[str, Any]]:
        """Window aggregates of the shared log against the latency / error-rate / accuracy rules."""
        rows = self.store.predictions.window_stats(window_s=self.metrics_window_s)
        for r in rows:
            subject = f"{r['model_name']} v{r['model_version']}"
            values = {k: r.get(k) for k in ("p99_ms", "p50_ms", "error_rate", "ic", "rank_ic", "hit_rate")}
            if r.get("labelled", 0) < 30:  # online accuracy on a handful of labels is noise
                values.update(ic=None, rank_ic=None, hit_rate=None)
            if self.metrics.enabled and r.get("ic") is not None:
                tags = {
                    "model": r["model_name"],
                    "version": str(r["model_version"]),
                    "variant": str(r["variant"]),
                }
                self.metrics.accuracy.set(r["ic"], tags=tags)
            self.alerts.evaluate("performance", subject, values, {"model_version": r["model_id"],
                                                                  "variant": r["variant"], "requests": r["requests"]})  # fmt: skip
        return rows

    def evaluate_drift_now(self) -> list[dict[str, Any]]:
        """Fold what is queued and run the drift tests of every watched version now (admin / tests)."""
        with self._lock:
            self._fold()
            return [self._evaluate_drift(md) for md in list(self.drift.values()) if md is not None
                    and md.monitor.sketch.size > 0]  # fmt: skip

    def status(self) -> dict[str, Any]:
        return {"log": self.log.status(), "errors": self.errors, "pending_drift_rows": len(self._pending),
                "watched": {k: (v.source if v else None) for k, v in self.drift.items()}}  # fmt: skip

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=10)
        self.log.close()
        self._flush_exposures()
