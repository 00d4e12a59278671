"""The web page for people (``/ui`` on the gateway) and the JSON views it reads."""

from __future__ import annotations

from functools import cache
from importlib import resources

from qmlops.ui._views import (
    catalogue_view,
    clean,
    jobs_view,
    loops_view,
    models_view,
    report_html,
    rollouts_view,
    run_view,
    runs_view,
)

__all__ = [
    "catalogue_view",
    "clean",
    "jobs_view",
    "loops_view",
    "models_view",
    "report_html",
    "rollouts_view",
    "run_view",
    "runs_view",
    "static_file",
    "STATIC_TYPES",
]

STATIC_TYPES = {"index.html": "text/html", "app.js": "text/javascript", "style.css": "text/css"}


@cache  # three small files, read once per process
def static_file(name: str) -> bytes:
    """One of the page's files (``STATIC_TYPES`` lists them; anything else is refused by the caller)."""
    return resources.files("qmlops.ui").joinpath("static", name).read_bytes()
