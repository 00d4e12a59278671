"""Quality bar: qmlops LightGBM on the feature store vs Qlib's own LGBModel on Qlib's Alpha158 handler.

Same data (the bundled S&P 500 set, all instruments), same segments (the engine's default purged 60/20/20 split
after the 60-day Alpha158 warm-up), same parameters (the catalogue's lightgbm defaults: Qlib's benchmark values).
Prints both runs' test figures and the IC difference (goal: |delta IC| <= 0.002).

    python bench/lgb_vs_qlib.py [--home DIR]
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--home", default=None, help="QMLOPS_HOME to use (default: a fresh temporary one)")
    args = parser.parse_args()
    os.environ["QMLOPS_HOME"] = args.home or tempfile.mkdtemp(prefix="qmlops-bench-lgb-")
    os.environ["QMLOPS_METADATA_MODE"] = "local"
    from qmlops.data import ingest
    from qmlops.features import materialize
    from qmlops.training import TrainConfig, get_model_type, train
    from qmlops.training._reference import qlib_lgb_reference

    ds = ingest("sp500").record
    materialize(ds.id, "alpha158", engine="local")
    print(f"data: {ds.id} ({ds.n_rows:,} rows, {ds.n_instruments} instruments)")
    configs = {
        "Qlib benchmark parameters": {},
        "light regularisation": {"learning_rate": 0.05, "num_leaves": 31, "lambda_l1": 1.0, "lambda_l2": 1.0},
    }
    for title, overrides in configs.items():
        t0 = time.perf_counter()
        ours = train(TrainConfig("lightgbm", dataset=ds.id, params=overrides, register_as="", report=False))
        ours_s = time.perf_counter() - t0
        params = {**get_model_type("lightgbm").defaults, **overrides}
        t0 = time.perf_counter()
        ref, _ = qlib_lgb_reference(ds.id, ours.segments, params)
        ref_s = time.perf_counter() - t0
        print(f"\n{title}: {overrides or 'catalogue defaults'}; segments {ours.segments}")
        print(f"{'run':<46}{'test IC':>9}{'ICIR':>8}{'Rank IC':>9}{'MSE':>12}{'seconds':>9}")
        for label, ev, secs in (("Qlib LGBModel + Alpha158 handler (reference)", ref, ref_s),
                                ("qmlops engine, lightgbm on the feature store", ours.evaluation, ours_s)):  # fmt: skip
            print(f"{label:<46}{ev.ic:>9.4f}{ev.icir:>8.3f}{ev.rank_ic:>9.4f}{ev.mse:>12.6f}{secs:>9.1f}")
        delta = ours.evaluation.ic - ref.ic
        print(f"delta test IC: {delta:+.5f} (goal |delta| <= 0.002: {'met' if abs(delta) <= 0.002 else 'NOT met'}); "
              f"engine best round {ours.best_step}: {ours.stop_reason}")  # fmt: skip


if __name__ == "__main__":
    main()
