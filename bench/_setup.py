"""What the benchmarks share: a throw-away QMLOPS_HOME and the bundled S&P 500 set with Alpha158 materialised."""

from __future__ import annotations

import os
import tempfile


def bench_home(name: str) -> str:
    """A new QMLOPS_HOME for this run, metadata opened locally, Ray without token auth or usage stats."""
    home = tempfile.mkdtemp(prefix=f"qmlops-bench-{name}-")
    os.environ.update(QMLOPS_HOME=home, RAY_AUTH_MODE="disabled", RAY_USAGE_STATS_ENABLED="0",
                      QMLOPS_METADATA_MODE="local")  # fmt: skip
    return home


def sp500_alpha158() -> str:
    """Ingest the bundled S&P 500 set, materialise Alpha158 in-process; the dataset version id."""
    from qmlops.data import ingest
    from qmlops.features import materialize

    ds = ingest("sp500").record
    materialize(ds.id, "alpha158", engine="local")
    return str(ds.id)
