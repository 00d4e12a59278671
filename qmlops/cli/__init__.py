"""``qmlops`` command line: a thin shell over the library, one Typer sub-app per area."""

from __future__ import annotations

import os

import typer

from qmlops.cli._admin import app as admin_app
from qmlops.cli._common import handle_errors
from qmlops.cli._data import app as data_app
from qmlops.cli._experiments import experiments_app, explain_command
from qmlops.cli._features import app as features_app
from qmlops.cli._loop import app as loop_app
from qmlops.cli._models import app as models_app
from qmlops.cli._monitor import alerts_app, jobs_app, monitor_app, resources_command
from qmlops.cli._serve import deploy_app, serve_app
from qmlops.cli._train import app as train_app
from qmlops.cli._train import types_command
from qmlops.cli._tune import app as tune_app

__all__ = ["app", "main"]

app = typer.Typer(
    name="qmlops",
    help="MLOps for stock prediction on Ray: data, features, models, tuning, serving, monitoring.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)


@app.callback()
def _cluster_address(
    address: str | None = typer.Option(
        None,
        "--address",
        help="the Ray cluster to join, as `ray` takes it (default: RAY_ADDRESS, else the "
        "local `ray start` cluster); store reads do not need it",
    ),
) -> None:
    if address:
        os.environ["RAY_ADDRESS"] = address


app.add_typer(data_app, name="data", help="Ingest, version, inspect and export OHLCV data.")
app.add_typer(
    features_app, name="features", help="Materialise and inspect feature sets (Alpha158, indicators)."
)
models_app.command("types")(handle_errors(types_command))
app.add_typer(models_app, name="models", help="Model registry: versions, lifecycle, aliases, tags, search.")
app.add_typer(train_app, name="train", help="Train any model type; follow runs and their live metrics.")
app.add_typer(tune_app, name="tune", help="Hyperparameter and model-type search on Ray Tune (ASHA, Optuna).")
app.add_typer(serve_app, name="serve", help="Run the Serve gateway and model servers; routing tables.")
app.add_typer(
    deploy_app,
    name="deploy",
    help="Rollouts: immediate, blue-green, canary, rolling, shadow; gates and rollback.",
)
app.add_typer(
    monitor_app, name="monitor", help="Prediction log, per-version metrics, drift reports, log losses."
)
app.add_typer(alerts_app, name="alerts", help="Alert history and acknowledgement; rules and channels.")
app.add_typer(jobs_app, name="jobs", help="Job queue over Ray Jobs: submit with resources and priority.")
app.command("resources")(resources_command)
app.add_typer(
    experiments_app, name="experiments", help="A/B experiments over served versions: create, start, results."
)
app.command("explain")(explain_command)
app.add_typer(admin_app, name="admin", help="The metadata store: backup, restore, check.")
app.add_typer(
    loop_app, name="loop", help="The daily loop: replay or run; status, stop, shadow a version, report."
)


@app.command("demo")
@handle_errors
def demo_command(
    keep_serving: bool = typer.Option(
        True, "--keep-serving/--no-keep-serving", help="leave the Serve app (and /ui) running at the end"
    ),
) -> None:
    """The whole pipeline on the bundled S&P 500 data: ingest, features, training, tuning, rollouts with a
    rollback, drift and alerts, an A/B experiment, SHAP; one HTML report over every stage (same as make demo)."""
    from qmlops.demo import run_demo

    run_demo(keep_serving=keep_serving)


def main() -> None:
    app()
