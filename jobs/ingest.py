"""``ray job submit -- python -m jobs.ingest SOURCE [--name N] [--on-error fail|quarantine]``.

Connects to the Ray cluster (so metadata goes through the cluster's single-writer actor) and ingests.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

from jobs._shell import run_job


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="jobs.ingest", description=__doc__)
    parser.add_argument("source", help="sp500, bokeh5, synthetic, or a path to a .csv/.parquet file")
    parser.add_argument("--name")
    parser.add_argument("--on-error", default="fail", choices=["fail", "quarantine"])
    parser.add_argument(
        "--local", action="store_true", help="do not connect to Ray (metadata file opened here)"
    )
    parser.add_argument(
        "--no-features", action="store_true", help="do not materialise the default feature sets"
    )
    args = parser.parse_args(argv)

    def call() -> Any:
        if not args.local:
            from qmlops.ray_utils import init_ray

            init_ray()
        from qmlops.data import ingest

        if args.no_features:
            return ingest(args.source, name=args.name, on_error=args.on_error)
        from qmlops.features import default_feature_sets, disable_auto_materialize, enable_auto_materialize

        enable_auto_materialize(default_feature_sets())
        try:
            return ingest(args.source, name=args.name, on_error=args.on_error)
        finally:
            disable_auto_materialize()

    return run_job(call)


if __name__ == "__main__":
    sys.exit(main())
