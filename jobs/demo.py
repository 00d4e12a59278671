"""``python -m jobs.demo`` (``make demo``, or ``ray job submit --working-dir . -- python -m jobs.demo``).

``--no-keep-serving`` shuts the Serve application down at the end (for RayJobs that tear their cluster down).
"""

from __future__ import annotations

import argparse
import sys

from jobs._shell import run_job
from qmlops.demo import run_demo


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="jobs.demo", description=__doc__)
    parser.add_argument(
        "--no-keep-serving", action="store_true", help="stop the Serve app when the demo ends"
    )
    args = parser.parse_args(argv)

    def call() -> None:
        run_demo(keep_serving=not args.no_keep_serving)  # prints its own progress and summary

    return run_job(call)


if __name__ == "__main__":
    sys.exit(main())
