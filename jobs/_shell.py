"""What every job entry point shares: run one library call, print its result as JSON, map errors to exits."""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from typing import Any

from qmlops.exceptions import QmlopsError


def run_job(call: Callable[[], Any]) -> int:
    """Run ``call``; print ``result.to_dict()`` as JSON (exit 0) or the error as one line (its exit code)."""
    try:
        result = call()
    except QmlopsError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return exc.exit_code
    if result is not None:
        data = result.to_dict() if hasattr(result, "to_dict") else result
        print(json.dumps(data, default=str, indent=2))
    return 0
