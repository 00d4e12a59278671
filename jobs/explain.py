"""``ray job submit --working-dir . -- python -m jobs.explain MODEL [VERSION]``: SHAP global importance and the
indicator impact report of a registry version, stored with it; prints the family ranking and the report path."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from jobs._shell import run_job


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="jobs.explain", description=__doc__)
    parser.add_argument("model", help="registered model name")
    parser.add_argument("version", nargs="?", default="latest", help="version number, alias or mv- id")
    parser.add_argument(
        "--rows", type=int, default=2000, help="test-segment rows for the correlation measures"
    )
    parser.add_argument("--shap-rows", type=int, default=300, help="rows explained for the SHAP share")
    args = parser.parse_args(argv)

    def call() -> Any:
        from qmlops.exceptions import ValidationError
        from qmlops.explain import explain_global
        from qmlops.ray_utils import init_ray

        if args.rows < 10 or args.shap_rows < 1:
            raise ValidationError("--rows must be >= 10 and --shap-rows >= 1", field="rows")
        init_ray()
        ref = int(args.version) if args.version.isdigit() else args.version
        print(
            f"explaining {args.model} {ref}: {args.rows} rows, SHAP on {args.shap_rows}",
            file=sys.stderr,
            flush=True,
        )
        report, uri = explain_global(args.model, ref, rows=args.rows, shap_rows=args.shap_rows)
        return report.to_dict(top=20) | {"report_uri": uri}

    return run_job(call)


if __name__ == "__main__":
    sys.exit(main())
