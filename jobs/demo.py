"""``python -m jobs.demo`` (``make demo``, or ``ray job submit --working-dir . -- python -m jobs.demo``)."""

from __future__ import annotations

import sys

from qmlops.demo import run_demo
from qmlops.exceptions import QmlopsError


def main() -> int:
    try:
        run_demo()
    except QmlopsError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return exc.exit_code
    return 0


if __name__ == "__main__":
    sys.exit(main())
