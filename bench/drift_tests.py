"""Benchmark: all drift tests for 158 features over a 10,000-row window on one core, and the sketch's per-row cost.

Run: ``.venv/bin/python bench/drift_tests.py [--features 158] [--window 10000] [--reference 10000]``.
Goal: evaluate() under 1 s; the inline update a few tens of microseconds per row.
"""

from __future__ import annotations

import argparse
import os
import time

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import numpy as np  # noqa: E402

from qmlops.monitoring import DriftMonitor, FeatureReference  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--features", type=int, default=158)
    parser.add_argument("--window", type=int, default=10_000)
    parser.add_argument("--reference", type=int, default=10_000)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    train = rng.standard_t(5, size=(args.reference, args.features))
    refs = [FeatureReference.from_values(f"f{j}", train[:, j]) for j in range(args.features)]
    binned = [
        FeatureReference.from_values(f"f{j}", train[:, j], keep_sample=False) for j in range(args.features)
    ]
    pred_ref = FeatureReference.from_values("prediction", rng.normal(size=args.reference))
    rows = rng.standard_t(5, size=(args.window, args.features))
    rows[:, :5] += 0.3

    for label, references in (("KS vs reference sample", refs), ("KS on binned CDF", binned)):
        monitor = DriftMonitor(references, window=args.window, prediction_reference=pred_ref)
        monitor.update_batch(rows, predictions=rng.normal(size=args.window))
        best = float("inf")
        for _ in range(args.repeats):
            start = time.perf_counter()
            report = monitor.evaluate()
            best = min(best, time.perf_counter() - start)
        print(f"evaluate ({label}): {args.features} features x {args.window} rows: {best * 1e3:.1f} ms "
              f"(drifted after BH: {report.n_drifted}, share {report.drift_share:.3f})")  # fmt: skip

    monitor = DriftMonitor(refs, window=args.window, prediction_reference=pred_ref)
    n_rows = 5000
    start = time.perf_counter()
    for i in range(n_rows):
        monitor.update(rows[i % args.window], prediction=0.0)
    per_row = (time.perf_counter() - start) / n_rows
    print(f"update (one row, {args.features} features + prediction): {per_row * 1e6:.1f} us/row")
    start = time.perf_counter()
    monitor.update_batch(rows)
    per_batch_row = (time.perf_counter() - start) / rows.shape[0]
    print(f"update_batch ({rows.shape[0]} rows): {per_batch_row * 1e6:.2f} us/row")


if __name__ == "__main__":
    main()
