"""Tuning benchmark: ASHA vs FIFO on Ray Tune, and standalone Optuna with its HyperbandPruner, same budget.

Same search space (the catalogue's LightGBM space), same Optuna TPE seed, same trial count (>= 16) on the
bundled S&P 500 data (all instruments, Alpha158, default purged split). Each trial may run 300 boosting rounds
(no in-trial early stopping, so the schedulers decide) and reports valid MSE every 10 rounds. Prints wall time,
best validation MSE and the number of trials stopped early, and the ratios against FIFO, for two ASHA settings
(grace 3 reports and reduction factor 3; grace 1 and reduction factor 4). Goal (issue): ASHA at least 3x less wall
time than FIFO with the best metric within 2%.

Then a short combined search (LightGBM, XGBoost, Linear, MLP as a search dimension) and where the recommender's
first pick lands in it.

    python bench/tune_asha_vs_fifo.py [--trials 16] [--rounds 300]

With ``--dataset planted`` the data is a planted market (a known signal, README "A market with a known answer"),
where the quality differences between configurations are real: FIFO and ASHA settings only, each search's
best trial (by its tuning metric) retrained in full to read its **test** IC, printed next to the oracle's IC on
the same test rows.

    python bench/tune_asha_vs_fifo.py --dataset planted [--planted-instruments 200 --planted-days 500]
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from typing import Any


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--trials", type=int, default=16)
    parser.add_argument("--rounds", type=int, default=300)
    parser.add_argument("--combined-trials", type=int, default=8)
    parser.add_argument("--dataset", choices=("sp500", "planted"), default="sp500")
    parser.add_argument("--planted-instruments", type=int, default=200)
    parser.add_argument("--planted-days", type=int, default=500)
    parser.add_argument("--strength", type=float, default=0.1, help="planted: target daily IC of the signal")
    args = parser.parse_args()
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    if args.dataset == "planted":
        planted(args)
        return
    from _setup import bench_home, sp500_alpha158

    bench_home("tune")
    from qmlops.features import load_features
    from qmlops.metadata import get_store

    dataset = sp500_alpha158()
    get_store().close()
    os.environ["QMLOPS_METADATA_MODE"] = "ray"
    import optuna

    from qmlops.ray_utils import init_ray
    from qmlops.training import TrainConfig, train
    from qmlops.tuning import TuneConfig, meta_features, recommend, seed_points, tune_models

    init_ray(num_cpus=2, object_store_memory=400 * 1024 * 1024, include_dashboard=False, log_to_driver=False)
    common: dict[str, Any] = {"model_types": ["lightgbm"], "dataset": dataset, "num_samples": args.trials,
                              "searcher": "tpe", "seed": 7, "max_concurrent": 2, "cpus_per_trial": 1.0,
                              "progress_every": 10, "early_stopping": "none", "register_as": "",
                              "fixed_params": {"lightgbm": {"num_boost_round": args.rounds, "num_threads": 1}},
                              "max_t": args.rounds // 10}  # fmt: skip
    rows: dict[str, dict[str, Any]] = {}
    print(f"LightGBM on {dataset} (all instruments, Alpha158), {args.trials} trials, up to {args.rounds} rounds, "
          "2 at a time on 2 CPUs, TPE seed 7")  # fmt: skip
    print(f"{'setup':<44}{'wall s':>9}{'best valid MSE':>16}{'stopped early':>15}")

    def show(name: str) -> None:
        r = rows[name]
        print(f"{name:<44}{r['seconds']:>9.1f}{r['best']:>16.6f}{r['stopped']:>9}/{r['trials']}", flush=True)

    runs = [("FIFO", "fifo", 3, 3), ("ASHA grace 3 rf 3", "asha", 3, 3), ("ASHA grace 1 rf 4", "asha", 1, 4)]
    for label, scheduler, grace, rf in runs:
        t0 = time.perf_counter()
        result = tune_models(
            TuneConfig(scheduler=scheduler, grace_period=grace, reduction_factor=rf, **common)
        )
        rows[f"Ray Tune + Optuna TPE, {label}"] = {
            "seconds": time.perf_counter() - t0, "best": result.best["valid_loss"],
            "stopped": sum(t["stopped_early"] for t in result.trials), "trials": len(result.trials)}  # fmt: skip
        show(f"Ray Tune + Optuna TPE, {label}")
    fifo = rows["Ray Tune + Optuna TPE, FIFO"]
    for label in ("ASHA grace 3 rf 3", "ASHA grace 1 rf 4"):
        asha = rows[f"Ray Tune + Optuna TPE, {label}"]
        print(f"{label} vs FIFO: {fifo['seconds'] / asha['seconds']:.2f}x less wall time (goal >= 3x), best metric "
              f"{(asha['best'] - fifo['best']) / fifo['best']:+.2%} (goal within 2%)", flush=True)  # fmt: skip

    # standalone Optuna: the same TPE seed and space, HyperbandPruner on the same per-10-round reports
    space = TuneConfig(**common).space("lightgbm")
    store = get_store()

    class Pruned(Exception):
        pass

    def objective(trial: optuna.Trial) -> float:
        params = {"num_boost_round": args.rounds, "num_threads": 1}
        for name, spec in space.items():
            if spec["type"] == "float":
                params[name] = trial.suggest_float(
                    f"lightgbm.{name}", spec["low"], spec["high"], log=spec["log"]
                )
            elif spec["type"] == "int":
                params[name] = trial.suggest_int(
                    f"lightgbm.{name}", spec["low"], spec["high"], log=spec["log"]
                )
            else:
                params[name] = trial.suggest_categorical(f"lightgbm.{name}", spec["choices"])
        best = [float("inf")]

        def on_progress(run_id: str, step: int, row: dict[str, Any]) -> None:
            loss = row.get("valid_loss")
            if loss is not None:
                best[0] = min(best[0], float(loss))
                trial.report(float(loss), step // 10)
                if trial.should_prune():
                    raise Pruned()

        try:
            train(TrainConfig("lightgbm", dataset=dataset, params=params, early_stopping="none", progress_every=10,
                              register_as="", report=False), store=store, on_progress=on_progress)  # fmt: skip
        except Pruned:
            raise optuna.TrialPruned() from None
        return best[0]

    study = optuna.create_study(direction="minimize", sampler=optuna.samplers.TPESampler(
        seed=7, n_startup_trials=max(2, args.trials // 4)),
        pruner=optuna.pruners.HyperbandPruner(min_resource=3, max_resource=args.rounds // 10, reduction_factor=3))  # fmt: skip
    t0 = time.perf_counter()
    study.optimize(objective, n_trials=args.trials, n_jobs=2)
    done = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    rows["standalone Optuna TPE + HyperbandPruner"] = {
        "seconds": time.perf_counter() - t0, "best": study.best_value if done else float("nan"),
        "stopped": sum(t.state == optuna.trial.TrialState.PRUNED for t in study.trials), "trials": len(study.trials)}  # fmt: skip
    show("standalone Optuna TPE + HyperbandPruner")

    # the recommender's first pick in a short combined search
    candidates = ["lightgbm", "xgboost", "linear", "mlp"]
    ranked = [
        r
        for r in recommend(meta_features(load_features(dataset, "alpha158", store=store)))
        if r.model_type in candidates
    ]
    combined = TuneConfig(model_types=candidates, dataset=dataset, num_samples=args.combined_trials, searcher="tpe",
                          seed=7, scheduler="fifo", max_concurrent=2, register_as="",
                          fixed_params={"mlp": {"max_steps": 200}, "lightgbm": {"num_threads": 1}})  # fmt: skip
    combined.points_to_evaluate = seed_points(combined, [ranked[0].model_type])
    result = tune_models(combined)
    order = sorted((t for t in result.trials if t["valid_loss"] is not None), key=lambda t: t["valid_loss"])
    by_type: dict[str, float] = {}
    for t in order:
        by_type.setdefault(t["model_type"], t["valid_loss"])
    ranking = sorted(by_type, key=lambda k: by_type[k])
    pick = ranked[0].model_type
    print(f"\nrecommender's first pick: {pick} ({ranked[0].reason}); in a {args.combined_trials}-trial combined search "
          f"its best trial ranks {ranking.index(pick) + 1 if pick in ranking else 'n/a'} of {len(ranking)} model types "
          f"by valid MSE: " + ", ".join(f"{k} {v:.6f}" for k, v in by_type.items()))  # fmt: skip


# (label, scheduler, grace period in reports of 10 rounds, reduction factor, metric, mode)
PLANTED_SETUPS = [
    ("FIFO", "fifo", 3, 3, "valid_loss", "min"),
    ("ASHA grace 3 rf 3, valid MSE", "asha", 3, 3, "valid_loss", "min"),
    ("ASHA grace 10 rf 3, valid MSE", "asha", 10, 3, "valid_loss", "min"),
    ("ASHA grace 3 rf 3, valid IC", "asha", 3, 3, "valid_ic", "max"),
]


def planted(args: argparse.Namespace) -> None:
    """FIFO against ASHA settings on a planted market, judged by the best trial's test IC against the oracle."""
    from _setup import bench_home

    bench_home("tune-planted")
    from qmlops.data import ingest
    from qmlops.features import materialize
    from qmlops.metadata import get_store

    ds = ingest("planted", n_instruments=args.planted_instruments, n_days=args.planted_days, seed=0,
                signal={"strength": args.strength}).record  # fmt: skip
    materialize(ds.id, "alpha158", engine="local")
    for row in ds.config["oracle"]:
        print(f"planted market {ds.id}: {args.planted_instruments} instruments x {args.planted_days} days, "
              f"{row['weights']}, target IC {row['strength']}, oracle mean IC {row['oracle_ic']:.4f}")  # fmt: skip
    get_store().close()
    os.environ["QMLOPS_METADATA_MODE"] = "ray"
    from qmlops.ray_utils import init_ray
    from qmlops.training import TrainConfig, train
    from qmlops.tuning import TuneConfig, tune_models

    init_ray(num_cpus=2, object_store_memory=400 * 1024 * 1024, include_dashboard=False, log_to_driver=False)
    fixed = {"num_boost_round": args.rounds, "num_threads": 1}
    print(f"LightGBM, Alpha158, {args.trials} trials of up to {args.rounds} rounds reporting every 10, 2 at a time "
          "on 2 CPUs, TPE seed 7, no in-trial early stopping; each search's best trial retrained in full for its "
          "test IC")  # fmt: skip
    print(
        f"{'setup':<32}{'wall s':>8}{'stopped':>9}{'best valid':>12}{'test IC':>9}{'oracle IC':>11}{'share':>7}"
    )
    rows: dict[str, dict[str, float]] = {}
    for label, scheduler, grace, rf, metric, mode in PLANTED_SETUPS:
        t0 = time.perf_counter()
        result = tune_models(TuneConfig(
            model_types=["lightgbm"], dataset=ds.id, num_samples=args.trials, searcher="tpe", seed=7,
            max_concurrent=2, cpus_per_trial=1.0, progress_every=10, early_stopping="none", register_as="",
            fixed_params={"lightgbm": fixed}, max_t=args.rounds // 10, scheduler=scheduler, grace_period=grace,
            reduction_factor=rf, metric=metric, mode=mode))  # fmt: skip
        seconds = time.perf_counter() - t0
        best = result.best
        params = {**best["params"], **fixed}
        full = train(TrainConfig("lightgbm", dataset=ds.id, params=params, early_stopping="none",
                                 register_as="", report=False))  # fmt: skip
        assert full.oracle is not None  # a planted version always has its oracle
        o = full.oracle
        rows[label] = {"seconds": seconds, "ic": o.model_ic, "oracle": o.oracle_ic}
        stopped = sum(t["stopped_early"] for t in result.trials)
        print(f"{label:<32}{seconds:>8.1f}{stopped:>5}/{len(result.trials):<3}{best[metric]:>12.6f}"
              f"{o.model_ic:>9.4f}{o.oracle_ic:>11.4f}{o.share:>7.0%}", flush=True)  # fmt: skip
    fifo = rows["FIFO"]
    for label, r in rows.items():
        if label != "FIFO":
            print(f"{label} vs FIFO: {fifo['seconds'] / r['seconds']:.2f}x less wall time (goal >= 3x), best test "
                  f"IC {(r['ic'] - fifo['ic']) / abs(fifo['ic']):+.1%} of FIFO's (goal within 2%)")  # fmt: skip


if __name__ == "__main__":
    main()
