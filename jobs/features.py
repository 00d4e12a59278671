"""``ray job submit -- python -m jobs.features DATASET [--set alpha158|indicators|all] [--engine ray|qlib]``."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from jobs._shell import run_job


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="jobs.features", description=__doc__)
    parser.add_argument("dataset", help="dataset version id, id prefix, or name")
    parser.add_argument(
        "--set", dest="feature_set", default="alpha158", choices=["alpha158", "indicators", "all"]
    )
    parser.add_argument("--engine", default="ray", choices=["ray", "local", "qlib"])
    args = parser.parse_args(argv)

    def call() -> Any:
        from qmlops.features import materialize
        from qmlops.ray_utils import init_ray

        init_ray()

        def progress(done: int, total: int) -> None:
            print(f"features: {done}/{total} batches", flush=True)

        return materialize(args.dataset, args.feature_set, engine=args.engine, progress=progress)

    return run_job(call)


if __name__ == "__main__":
    sys.exit(main())
