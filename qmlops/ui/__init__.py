"""The web page for people (``/ui`` on the gateway) and the JSON views it reads."""

from __future__ import annotations

from functools import cache
from importlib import resources

from qmlops.ui._live import (
    align,
    assignment_view,
    cumulative,
    drift_history_view,
    heatmap,
    infrastructure_view,
    job_timeline,
    traffic_view,
)
from qmlops.ui._views import (
    catalogue_view,
    clean,
    jobs_view,
    loops_view,
    models_view,
    report_html,
    rollouts_view,
    run_stage,
    run_view,
    runs_view,
)

__all__ = [
    "align",
    "assignment_view",
    "cumulative",
    "drift_history_view",
    "heatmap",
    "infrastructure_view",
    "job_timeline",
    "traffic_view",
    "catalogue_view",
    "clean",
    "jobs_view",
    "loops_view",
    "models_view",
    "report_html",
    "rollouts_view",
    "run_stage",
    "run_view",
    "runs_view",
    "static_file",
    "STATIC_TYPES",
]

# the page's own files and the vendored chart library (uPlot, MIT; static/VENDOR.md says where it came from)
STATIC_TYPES = {"index.html": "text/html", "app.js": "text/javascript", "charts.js": "text/javascript",
                "style.css": "text/css", "uplot-1.6.32.min.js": "text/javascript",
                "uplot-1.6.32.min.css": "text/css", "uplot-LICENSE.txt": "text/plain"}  # fmt: skip


@cache  # a few small files, read once per process
def static_file(name: str) -> bytes:
    """One of the page's files (``STATIC_TYPES`` lists them; anything else is refused by the caller)."""
    return resources.files("qmlops.ui").joinpath("static", name).read_bytes()
