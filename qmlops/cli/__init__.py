"""``qmlops`` command line: a thin shell over the library, one Typer sub-app per area."""

from __future__ import annotations

import typer

from qmlops.cli._data import app as data_app
from qmlops.cli._features import app as features_app
from qmlops.cli._models import app as models_app

__all__ = ["app", "main"]

app = typer.Typer(
    name="qmlops",
    help="MLOps for stock prediction on Ray: data, features, models, tuning, serving, monitoring.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
app.add_typer(data_app, name="data", help="Ingest, version, inspect and export OHLCV data.")
app.add_typer(
    features_app, name="features", help="Materialise and inspect feature sets (Alpha158, indicators)."
)
app.add_typer(models_app, name="models", help="Model registry: versions, lifecycle, aliases, tags, search.")


def main() -> None:
    app()
