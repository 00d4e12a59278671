"""``ray job submit --working-dir . -- python -m jobs.tune [options]``: a tuning run on the cluster.

    python -m jobs.tune --models lightgbm,xgboost,linear --trials 16 --scheduler asha --searcher tpe
    python -m jobs.tune --resume tune-...        # continue an interrupted run (finished trials kept)

Prints the run summary (trials, best, registered model version) as JSON; bad input exits non-zero.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

from jobs._shell import run_job


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="jobs.tune", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    parser.add_argument("--models", default="lightgbm")
    parser.add_argument("--dataset", default="sp500")
    parser.add_argument("--feature-set", default="alpha158")
    parser.add_argument("--trials", type=int, default=16)
    parser.add_argument("--searcher", default="tpe")
    parser.add_argument("--scheduler", default="asha")
    parser.add_argument("--max-concurrent", type=int, default=2)
    parser.add_argument("--cpus-per-trial", type=float, default=1.0)
    parser.add_argument(
        "--gpus-per-trial", type=float, default=0.0, help="per trial of a type that can use a GPU"
    )
    parser.add_argument("--gpus-by-type", default=None, help='JSON: per-type GPU shares, e.g. {"gru": 0.5}')
    parser.add_argument("--instruments", default=None)
    parser.add_argument("--fixed", default=None, help='JSON: {"lightgbm": {"num_boost_round": 100}}')
    parser.add_argument("--run-id", default=None)
    parser.add_argument("--name", default=None)
    parser.add_argument("--no-register", action="store_true")
    parser.add_argument("--resume", default=None, metavar="RUN")
    args = parser.parse_args(argv)

    def call() -> Any:
        import json

        from qmlops.ray_utils import init_ray
        from qmlops.tuning import TuneConfig, resume_tuning, tune_models

        if args.resume:
            init_ray()
            return resume_tuning(args.resume)
        config = TuneConfig(
            model_types=args.models.split(","), dataset=args.dataset, feature_set=args.feature_set,
            num_samples=args.trials, searcher=args.searcher, scheduler=args.scheduler,
            max_concurrent=args.max_concurrent, cpus_per_trial=args.cpus_per_trial, gpus_per_trial=args.gpus_per_trial,
            instruments=args.instruments.split(",") if args.instruments else None,
            fixed_params=json.loads(args.fixed) if args.fixed else {},
            gpus_by_type=json.loads(args.gpus_by_type) if args.gpus_by_type else {},
            register_as="" if args.no_register else args.name,
        ).validate()  # fmt: skip
        init_ray()
        return tune_models(config, run_id=args.run_id)

    return run_job(call)


if __name__ == "__main__":
    sys.exit(main())
