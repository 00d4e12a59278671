"""A batch request is one request with many rows: the log's metrics count requests and rows apart and take its
latency once (before: a 1,000-row request showed as 1,000 requests with its latency as p50 and p99)."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np


def test_a_batch_counts_once_with_its_rows_apart(tmp_path: Path) -> None:
    from qmlops.metadata import MetadataStore
    from qmlops.monitoring import PredictionLog

    store = MetadataStore(str(tmp_path / "m.duckdb"))
    log = PredictionLog(store, "replica-a", tmp_path / "predlog")
    now = time.time()
    log.add("big", now, "alpha", "mv-1", 1, "stable", np.zeros((1000, 3)), [0.0] * 1000, 766.0, "ok")
    for i in range(9):
        log.add(f"one-{i}", now, "alpha", "mv-1", 1, "stable", np.zeros((1, 3)), [0.0], 10.0 + i, "ok")
    log.add("bad", now, "alpha", "mv-1", 1, "stable", np.zeros((5, 3)), None, 50.0, "error")
    assert log.flush() == 1014
    (stats,) = store.predictions.window_stats(window_s=600)
    assert stats["requests"] == 11 and stats["rows"] == 1014
    assert stats["errors"] == 1 and abs(stats["error_rate"] - 1 / 11) < 1e-12
    assert stats["p50_ms"] == 14.5  # the median of the ten answered requests: 10..18 ms and 766 ms
    assert stats["p99_ms"] < 766.0 and stats["p99_ms"] > 18.0
    (by_version,) = store.predictions.version_stats(now - 60, ["mv-1"]).values()
    assert by_version["requests"] == 11 and by_version["rows"] == 1014
    store.close()
