"""Rollout gates read the monitoring figures: the prediction log's per-version window (all replicas), online IC
from feedback, and the latest drift report of the new version."""

from __future__ import annotations

import time
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

from qmlops.deploy import RolloutController
from qmlops.deploy._controller import DEFAULTS
from qmlops.metadata import get_store


def _log(
    store: object, model_id: str, preds: np.ndarray, realised: np.ndarray, latency: float, errors: int
) -> None:
    now = datetime.now(UTC).replace(tzinfo=None)
    rows = [
        {
            "request_id": f"{model_id}-{i}",
            "ts": now,
            "model_name": "m",
            "model_id": model_id,
            "variant": "x",
            "output": float(p),
            "latency_ms": latency + i % 7,
            "status": "ok",
        }
        for i, p in enumerate(preds)
    ]
    rows += [{"request_id": f"{model_id}-e{i}", "ts": now, "model_name": "m", "model_id": model_id,
              "latency_ms": latency, "status": "error"} for i in range(errors)]  # fmt: skip
    store.predictions.append(rows)  # type: ignore[attr-defined]
    store.serving.add_feedback([(f"{model_id}-{i}", float(v)) for i, v in enumerate(realised)])  # type: ignore[attr-defined]


def test_gates_use_the_log_online_ic_and_drift(tmp_home: Path) -> None:
    store = get_store()
    controller = RolloutController(store=store)
    since = time.time() - 5
    rng = np.random.default_rng(0)
    truth_new, truth_old = rng.normal(size=80), rng.normal(size=80)
    # the stable version tracks the outcome (IC ~0.9); the new one is noise (IC ~0)
    pred_old, pred_new = truth_old + rng.normal(0, 0.5, 80), rng.normal(size=80)
    _log(store, "mv-old", pred_old, truth_old, 10.0, 0)
    _log(store, "mv-new", pred_new, truth_new, 11.0, 2)
    stats = controller._window_stats(since, ["mv-new", "mv-old"])
    assert (
        stats["mv-new"]["requests"] == 82
        and stats["mv-new"]["errors"] == 2
        and stats["mv-new"]["labelled"] == 80
    )
    assert abs(stats["mv-old"]["ic"] - float(np.corrcoef(pred_old, truth_old)[0, 1])) < 1e-12
    assert stats["mv-old"]["ic"] > 0.8 and abs(stats["mv-new"]["ic"]) < 0.3
    opts = DEFAULTS["canary"]
    gates = controller._canary_gates(stats["mv-new"], stats["mv-old"], opts)
    assert gates["verdict"] == "fail"  # 2 errors in 82 is over the +2% error-rate allowance
    controller._monitoring_gates(gates, "mv-new", "mv-old", since, stats, opts)
    by_name = {g["name"]: g for g in gates["gates"]}
    assert not by_name["online_ic"]["ok"] and "online IC" in by_name["online_ic"]["reason"]
    assert "drift_share" not in by_name  # no drift report in the window: no drift gate
    store.monitoring.add_drift("m", "mv-new", {"drift_share": 0.8, "features": [], "n_rows": 500})
    gates = controller._canary_gates(stats["mv-new"], stats["mv-old"], {**opts, "max_error_rate_delta": 0.05})
    controller._monitoring_gates(gates, "mv-new", "mv-old", since, stats, opts)
    by_name = {g["name"]: g for g in gates["gates"]}
    assert by_name["error_rate"]["ok"] and not by_name["drift_share"]["ok"] and gates["verdict"] == "fail"
    # a drift report from before the window does not count; with the IC allowance widened the step passes
    later = time.time() + 1
    gates = controller._canary_gates(stats["mv-new"], stats["mv-old"], {**opts, "max_error_rate_delta": 0.05})
    controller._monitoring_gates(gates, "mv-new", "mv-old", later, stats, {**opts, "max_ic_drop": 2.0})
    assert {g["name"] for g in gates["gates"]} == {"error_rate", "p99_latency_ratio", "online_ic"}
    assert gates["verdict"] == "pass"
