"""``python -m jobs.demo`` (``make demo``, or ``ray job submit --working-dir . -- python -m jobs.demo``)."""

from __future__ import annotations

import sys

from jobs._shell import run_job
from qmlops.demo import run_demo


def main() -> int:
    def call() -> None:
        run_demo()  # prints its own progress and summary

    return run_job(call)


if __name__ == "__main__":
    sys.exit(main())
