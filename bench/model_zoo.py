"""Every available model type of the catalogue, trained by the engine on the bundled S&P 500 data.

Default split (purged 60/20/20 after the 60-day Alpha158 warm-up), catalogue defaults, each type's own early
stopping; sequence models use ``--step-len`` day windows. Prints one row per type: test IC, ICIR, Rank IC,
Rank ICIR, MSE, top-k long-short annualised return and IR, stop reason, best step and wall time.

    python bench/model_zoo.py [--types lightgbm,xgboost,...] [--epochs N] [--instruments N]
    python bench/model_zoo.py --dataset planted [--planted-instruments 500 --planted-days 750 --strength 0.1]

With ``--dataset planted`` the data is a planted market (a known signal, see README "A market with a known
answer"); each row adds the oracle's IC and Rank IC on the same test rows and the share of the oracle's IC the
model captured.
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
    parser.add_argument("--types", default=None, help="comma-separated (default: every available type)")
    parser.add_argument("--epochs", type=int, default=None, help="override n_epochs of NN types")
    parser.add_argument("--step-len", type=int, default=20)
    parser.add_argument("--instruments", type=int, default=0, help="use the first N instruments (0: all)")
    parser.add_argument("--dataset", choices=("sp500", "planted"), default="sp500")
    parser.add_argument("--planted-instruments", type=int, default=500)
    parser.add_argument("--planted-days", type=int, default=750)
    parser.add_argument("--strength", type=float, default=0.1, help="planted: target daily IC of the signal")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    os.environ.setdefault("QMLOPS_HOME", tempfile.mkdtemp(prefix="qmlops-bench-zoo-"))
    os.environ["QMLOPS_METADATA_MODE"] = "local"
    from qmlops.data import ingest, load_dataset
    from qmlops.features import materialize
    from qmlops.training import TrainConfig, list_model_types, train

    if args.dataset == "planted":
        ds = ingest("planted", n_instruments=args.planted_instruments, n_days=args.planted_days, seed=args.seed,
                    signal={"strength": args.strength}).record  # fmt: skip
        for row in ds.config["oracle"]:
            print(f"planted market: {row['weights']}, target IC {row['strength']}, oracle mean IC "
                  f"{row['oracle_ic']:.4f} over {row['days']} days")  # fmt: skip
    else:
        ds = ingest("sp500").record
    materialize(ds.id, "alpha158", engine="local")
    instruments = None
    if args.instruments:
        instruments = sorted(load_dataset(ds.id)["instrument"].unique())[: args.instruments]
    types = args.types.split(",") if args.types else [t.name for t in list_model_types(available_only=True)]
    print(f"data: {ds.id}, alpha158, {'all' if not instruments else len(instruments)} instruments")
    print(f"{'type':<12}{'IC':>8}{'ICIR':>8}{'RankIC':>8}{'RICIR':>8}{'MSE':>11}{'AnnRet':>8}{'IR':>7}"
          f"{'best':>6}{'secs':>7}  stop" + ("   oracleIC oracleRIC share" if args.dataset == "planted" else ""))  # fmt: skip
    for name in types:
        params = {}
        if args.epochs and name not in ("lightgbm", "xgboost", "catboost", "linear", "mlp"):
            params["n_epochs"] = args.epochs
        t0 = time.perf_counter()
        try:
            r = train(TrainConfig(name, dataset=ds.id, params=params, step_len=args.step_len, instruments=instruments,
                                  register_as="", report=False))  # fmt: skip
        except Exception as exc:  # a benchmark row, not a crash: report and go on
            print(f"{name:<12} failed: {type(exc).__name__}: {exc}")
            continue
        e, secs = r.evaluation, time.perf_counter() - t0
        print(f"{name:<12}{e.ic:>8.4f}{e.icir:>8.3f}{e.rank_ic:>8.4f}{e.rank_icir:>8.3f}{e.mse:>11.6f}"
              f"{e.annual_return:>8.3f}{e.information_ratio:>7.2f}{r.best_step!s:>6}{secs:>7.1f}  {r.stop_reason}"
              + (f"   {r.oracle.oracle_ic:.4f}   {r.oracle.oracle_rank_ic:.4f}  {r.oracle.share:.2f}" if r.oracle else ""),
              flush=True)  # fmt: skip


if __name__ == "__main__":
    main()
