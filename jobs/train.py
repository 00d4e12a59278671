"""``ray job submit --working-dir . -- python -m jobs.train MODEL_TYPE [options]``: train one model on the cluster.

The training runs as a Ray task with the requested ``--num-cpus`` / ``--num-gpus``; its progress (one line per
boosting-round batch or epoch) goes to the job's log, and to the runs tables for ``qmlops train follow RUN``.
Prints the run summary as JSON at the end; bad input exits non-zero with a one-line error.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

from jobs._shell import run_job


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="jobs.train", description=__doc__)
    parser.add_argument("model_type", help="a model type from `qmlops models types`")
    parser.add_argument("--dataset", default="sp500")
    parser.add_argument("--feature-set", default="alpha158")
    parser.add_argument("--param", "-p", action="append", default=[], help="NAME=VALUE (JSON values)")
    parser.add_argument("--params-file", default=None)
    parser.add_argument("--early-stop", default=None)
    parser.add_argument("--split", default="0.6,0.2,0.2")
    parser.add_argument("--segments", default=None)
    parser.add_argument("--instruments", default=None)
    parser.add_argument("--step-len", type=int, default=20)
    parser.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    parser.add_argument("--name", default=None)
    parser.add_argument("--no-register", action="store_true")
    parser.add_argument("--num-cpus", type=float, default=1)
    parser.add_argument("--num-gpus", type=float, default=0)
    args = parser.parse_args(argv)

    def call() -> Any:
        from pathlib import Path

        import ray

        from qmlops.cli._train import parse_params, parse_segments, parse_split
        from qmlops.metadata import get_store
        from qmlops.ray_utils import init_ray
        from qmlops.training import TrainConfig, train_remote

        config = TrainConfig(
            model_type=args.model_type, dataset=args.dataset, feature_set=args.feature_set,
            params=parse_params(args.param, Path(args.params_file) if args.params_file else None),
            early_stopping=args.early_stop, split=parse_split(args.split), segments=parse_segments(args.segments),
            instruments=args.instruments.split(",") if args.instruments else None, step_len=args.step_len,
            device=args.device, register_as="" if args.no_register else args.name,
        ).validate()  # fmt: skip
        init_ray()
        run_id, ref = train_remote(config, num_cpus=args.num_cpus, num_gpus=args.num_gpus)
        print(f"train: run {run_id} started ({args.num_cpus} CPU, {args.num_gpus} GPU)", flush=True)
        store, last = get_store(), -1
        while not ray.wait([ref], timeout=0.5)[0]:
            for row in store.runs.metrics(run_id, after_step=last):
                last = row.step
                print(f"train: step {row.step} train_loss={row.train_loss} valid_loss={row.valid_loss} "
                      f"valid_ic={row.valid_ic} best_step={row.best_step} early_stop={row.early_stop}", flush=True)  # fmt: skip
        return ray.get(ref)

    return run_job(call)


if __name__ == "__main__":
    sys.exit(main())
