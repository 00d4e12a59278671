"""Monitoring overhead: gateway throughput with monitoring on versus off, and the cost of the drift tests.

(1) The qmlops gateway serving one LightGBM version (158 Alpha158 features) to single-row POSTs at concurrency 16
from a separate process (the load generator of bench/serving.py), alternating monitoring off / on twice in the
same run: "off" runs no monitor in the replica; "on" is the default (every prediction logged with its full
inputs, drift windows fed, Ray metrics, alert rules). Prints req/s, p50, p99 per round and the on/off ratio of
the medians. Goal (issue): at least 0.95.

(2) All drift tests (KS, PSI, chi-square where categorical, Jensen-Shannon, BH correction, the prediction)
for 158 features over a 10,000-row window, against the model's stored training reference, pinned to one core.
Goal: under 1 s.

    python bench/monitoring_overhead.py [--seconds 15] [--concurrency 16]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from dataclasses import replace
from typing import Any

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--seconds", type=float, default=15.0)
    parser.add_argument("--concurrency", type=int, default=16)
    args = parser.parse_args()
    from _setup import bench_home, sp500_alpha158
    from serving import free_port, load  # bench/serving.py's load generator (runs in its own process)

    bench_home("monitor")
    import numpy as np

    from qmlops.features import load_features
    from qmlops.metadata import get_store
    from qmlops.monitoring import DriftMonitor, references_for
    from qmlops.training import TrainConfig, train

    dataset = sp500_alpha158()
    result = train(TrainConfig("lightgbm", dataset=dataset, params={"num_leaves": 31, "learning_rate": 0.05},
                               register_as="bench", report=False))  # fmt: skip
    model_id = result.model_version["id"]
    frame = load_features(dataset, "alpha158", start="2010-05-01")["feature"]
    rows = [
        {k: float(v) for k, v in r.items()} for r in frame.fillna(0.0).head(500).to_dict(orient="records")
    ]

    # (2) drift tests on one core, before Ray starts
    store = get_store()
    names = list(store.models.get(model_id).signature["feature_names"])
    cols, refs, pred_ref, source = references_for(store, model_id, names)
    window = frame.to_numpy(dtype=np.float64)[:, cols]
    window = window[np.random.default_rng(0).integers(0, len(window), 10_000)]
    affinity = os.sched_getaffinity(0)
    os.sched_setaffinity(0, {min(affinity)})
    monitor = DriftMonitor(refs, window=10_000, prediction_reference=pred_ref)
    t0 = time.perf_counter()
    monitor.update_batch(window, np.random.default_rng(1).normal(0, 0.01, len(window)))
    fill_s = time.perf_counter() - t0
    timings = []
    for _ in range(5):
        t0 = time.perf_counter()
        report = monitor.evaluate()
        timings.append(time.perf_counter() - t0)
    os.sched_setaffinity(0, affinity)
    store.close()

    # (1) gateway throughput, monitoring off / on alternating
    os.environ["QMLOPS_METADATA_MODE"] = "ray"
    import ray

    from qmlops.ray_utils import init_ray
    from qmlops.serving import ServeOptions, ServeService

    init_ray(num_cpus=2, object_store_memory=400 * 1024 * 1024, include_dashboard=False, log_to_driver=False)
    port = free_port()
    service = ServeService()
    base = ServeOptions(port=port, max_ongoing_requests=64, monitoring={"enabled": False})
    service.start(base)
    service.deploy_model("bench", 1)
    bodies = [{"model": "bench", "user_id": f"user-{i}", "features": r} for i, r in enumerate(rows)]
    rounds: list[tuple[str, dict[str, Any]]] = []
    for mode in ("off", "on", "off", "on"):
        options = replace(base, monitoring={} if mode == "on" else {"enabled": False})
        service._save(options)
        service.apply(options)
        service.wait_revision()
        rounds.append(
            (mode, load(f"http://127.0.0.1:{port}/v1/predict", bodies, args.seconds, args.concurrency))
        )
    logged = get_store().predictions.count("bench")
    from ray import serve

    serve.shutdown()
    ray.shutdown()

    print(
        f"(1) gateway, single-row POSTs, concurrency {args.concurrency}, {args.seconds:g} s per round, 2 CPUs"
    )
    print(f"{'round':<18}{'req/s':>9}{'p50 ms':>9}{'p99 ms':>9}{'errors':>8}")
    for i, (mode, r) in enumerate(rounds):
        print(
            f"{f'{i + 1}. monitoring {mode}':<18}{r['rps']:>9.1f}{r['p50']:>9.1f}{r['p99']:>9.1f}{int(r['errors']):>8}"
        )
    on = statistics.median(r["rps"] for m, r in rounds if m == "on")
    off = statistics.median(r["rps"] for m, r in rounds if m == "off")
    print(
        f"monitoring on / off throughput: {on / off:.2f} (goal >= 0.95); prediction log rows written: {logged}"
    )
    print(
        f"\n(2) drift tests, {len(refs)} features (+ prediction) x 10,000 rows, reference {source}, one core:"
    )
    print(f"    window fill (update_batch of 10,000 rows): {fill_s * 1000:.0f} ms")
    print(f"    all tests: median {statistics.median(timings) * 1000:.0f} ms, best {min(timings) * 1000:.0f} ms "
          f"(goal < 1 s); drift share of this window {report.drift_share:.2f}")  # fmt: skip


if __name__ == "__main__":
    main()
