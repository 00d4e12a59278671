"""``ray job submit -- python -m jobs.features DATASET [--set alpha158|indicators|all] [--engine ray|qlib]``."""

from __future__ import annotations

import argparse
import json
import sys

from qmlops.exceptions import QmlopsError


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="jobs.features", description=__doc__)
    parser.add_argument("dataset", help="dataset version id, id prefix, or name")
    parser.add_argument(
        "--set", dest="feature_set", default="alpha158", choices=["alpha158", "indicators", "all"]
    )
    parser.add_argument("--engine", default="ray", choices=["ray", "local", "qlib"])
    args = parser.parse_args(argv)
    try:
        from qmlops.features import materialize
        from qmlops.ray_utils import init_ray

        init_ray()

        def progress(done: int, total: int) -> None:
            print(f"features: {done}/{total} batches", flush=True)

        result = materialize(args.dataset, args.feature_set, engine=args.engine, progress=progress)
    except QmlopsError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return exc.exit_code
    print(json.dumps(result.to_dict(), default=str, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
