"""``qmlops train ...``: run (with a live progress bar), runs, show, metrics; ``qmlops models types``."""

from __future__ import annotations

import json
import math
import time
from pathlib import Path
from typing import Any

import typer
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

from qmlops.cli._common import JSON_OPTION, console, err_console, handle_errors, print_record, print_records
from qmlops.exceptions import ValidationError

app = typer.Typer(no_args_is_help=True)

_RUN_COLUMNS = ["id", "kind", "model_type", "status", "best_step", "stopped_by", "started_at", "duration_seconds",
                "model_version"]  # fmt: skip


def parse_params(items: list[str], params_file: Path | None) -> dict[str, Any]:
    """``--param k=v`` (v parsed as JSON when it is JSON, else kept as text) over an optional JSON/YAML file."""
    params: dict[str, Any] = {}
    if params_file is not None:
        if not params_file.exists():
            raise ValidationError(f"no such file: {params_file}", field="params_file")
        text = params_file.read_text()
        try:
            import yaml

            loaded = yaml.safe_load(text) if params_file.suffix in (".yaml", ".yml") else json.loads(text)
        except Exception as exc:
            raise ValidationError(f"cannot parse {params_file}: {exc}", field="params_file") from None
        if not isinstance(loaded, dict):
            raise ValidationError("the parameter file must hold a mapping", field="params_file")
        params.update(loaded)
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise ValidationError(f"expected NAME=VALUE, got {item!r}", field="param")
        try:
            params[key.strip()] = json.loads(value)
        except json.JSONDecodeError:
            params[key.strip()] = value
    return params


def parse_split(text: str) -> tuple[float, float, float]:
    try:
        parts = tuple(float(p) for p in text.split(","))
    except ValueError:
        raise ValidationError(
            f"expected three fractions like 0.6,0.2,0.2; got {text!r}", field="split"
        ) from None
    if len(parts) != 3:
        raise ValidationError(f"expected three fractions like 0.6,0.2,0.2; got {text!r}", field="split")
    return parts[0], parts[1], parts[2]


def parse_segments(text: str | None) -> dict[str, tuple[str, str]] | None:
    """``train=2009-11-01:2010-03-31,valid=...:...,test=...:...``"""
    if not text:
        return None
    out: dict[str, tuple[str, str]] = {}
    for item in text.split(","):
        name, sep, span = item.partition("=")
        start, sep2, end = span.partition(":")
        if not sep or not sep2:
            raise ValidationError(f"expected NAME=START:END, got {item!r}", field="segments")
        out[name.strip()] = (start.strip(), end.strip())
    return out


def _fmt(value: Any, digits: int = 4) -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "n/a"
    return f"{value:.{digits}f}" if isinstance(value, float) else str(value)


class ProgressView:
    """A rich progress bar: step / budget, ETA, the latest metrics and the early stopper's state."""

    def __init__(self, label: str, total: int | None) -> None:
        self.bar = Progress(
            TextColumn("[bold]train[/] {task.description}"), BarColumn(), MofNCompleteColumn(),
            TimeElapsedColumn(), TextColumn("eta"), TimeRemainingColumn(), TextColumn("{task.fields[metrics]}"),
            console=err_console, transient=False,
        )  # fmt: skip
        self.task = self.bar.add_task(label, total=total, metrics="")

    def __enter__(self) -> ProgressView:
        self.bar.__enter__()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.bar.__exit__(*exc)

    def update(self, step: int, row: dict[str, Any]) -> None:
        state = row.get("early_stop") or {}
        wait = ""
        if "since_best" in state:
            wait = f" wait {state.get('since_best')}/{state.get('patience', '?')}"
        text = (f"train {_fmt(row.get('train_loss'))} valid {_fmt(row.get('valid_loss'))} "
                f"IC {_fmt(row.get('valid_ic'))} best@{row.get('best_step')}{wait}")  # fmt: skip
        self.bar.update(self.task, completed=step + 1, metrics=text)


@app.command("run")
@handle_errors
def run_command(
    model_type: str = typer.Argument(..., help="a model type from `qmlops models types`"),
    dataset: str = typer.Option("sp500", "--dataset", help="dataset version id, id prefix, or name"),
    feature_set: str = typer.Option("alpha158", "--feature-set", help="alpha158, indicators or all"),
    param: list[str] = typer.Option([], "--param", "-p", help="NAME=VALUE (JSON values), repeatable"),
    params_file: Path | None = typer.Option(None, "--params-file", help="JSON or YAML mapping of parameters"),
    early_stop: str | None = typer.Option(
        None,
        "--early-stop",
        help="e.g. 'patience=10,min_delta=0.0001,overfit=5,gap=1.5,adaptive,walltime=300,"
        "monitor=valid_ic' or 'none' (default: the type's own patience)",
    ),
    split: str = typer.Option(
        "0.6,0.2,0.2", "--split", help="train,valid,test fractions of the trading days"
    ),
    segments: str | None = typer.Option(
        None, "--segments", help="train=START:END,valid=START:END,test=START:END"
    ),
    instruments: str | None = typer.Option(None, "--instruments", help="comma-separated subset"),
    step_len: int = typer.Option(20, "--step-len", help="window of days for sequence models"),
    device: str = typer.Option(
        "auto", "--device", help="auto (CUDA when Ray assigned a GPU and torch sees one), cpu or cuda"
    ),
    name: str | None = typer.Option(None, "--name", help="register as this model name"),
    no_register: bool = typer.Option(False, "--no-register", help="evaluate only, do not register"),
    no_report: bool = typer.Option(False, "--no-report", help="skip the HTML report"),
    on_ray: bool = typer.Option(False, "--ray", help="run as a Ray task with --num-cpus/--num-gpus"),
    num_cpus: float = typer.Option(1, "--num-cpus"),
    num_gpus: float = typer.Option(0, "--num-gpus"),
    as_json: bool = JSON_OPTION,
) -> None:
    """Train one model on a materialised feature set: progress bar, test evaluation, report, registration."""
    from qmlops.training import TrainConfig, get_model_type

    config = TrainConfig(
        model_type=model_type, dataset=dataset, feature_set=feature_set, params=parse_params(param, params_file),
        early_stopping=early_stop, split=parse_split(split), segments=parse_segments(segments),
        instruments=[i.strip() for i in instruments.split(",")] if instruments else None, step_len=step_len,
        device=device, register_as="" if no_register else name, report=not no_report,
    ).validate()  # fmt: skip
    mtype = get_model_type(model_type)
    if on_ray:
        summary = _run_on_ray(config, num_cpus, num_gpus)
    else:
        summary = _run_here(config, mtype.name)
    if as_json:
        print_record(summary, as_json=True)
        return
    _print_summary(summary)


def _run_here(config: Any, label: str) -> dict[str, Any]:
    from qmlops.training import train

    view: ProgressView | None = None

    def on_progress(run_id: str, step: int, row: dict[str, Any]) -> None:
        nonlocal view
        if view is None:
            from qmlops.metadata import get_store

            total = get_store().runs.get(run_id).total_steps
            view = ProgressView(f"{label} {run_id}", total).__enter__()
        view.update(step, row)

    try:
        result = train(config, on_progress=on_progress)
    finally:
        if view is not None:
            view.__exit__(None, None, None)
    return result.summary()


def _run_on_ray(config: Any, num_cpus: float, num_gpus: float) -> dict[str, Any]:
    import ray

    from qmlops.cli._common import init_cluster
    from qmlops.metadata import get_store
    from qmlops.training import train_remote

    init_cluster()
    run_id, ref = train_remote(config, num_cpus=num_cpus, num_gpus=num_gpus)
    err_console.print(f"submitted run [bold cyan]{run_id}[/] as a Ray task ({num_cpus} CPU, {num_gpus} GPU)")
    follow(get_store(), run_id, until=lambda: bool(ray.wait([ref], timeout=0)[0]))
    return dict(ray.get(ref))


def follow(store: Any, run_id: str, *, until: Any = None, poll: float = 0.5) -> None:
    """Draw a run's progress from its metric rows until it ends (or ``until()`` is true)."""
    view: ProgressView | None = None
    last = -1
    try:
        while True:
            try:
                run = store.runs.get(run_id)
            except Exception:  # not started yet (queued task)
                run = None
            if run is not None:
                if view is None:
                    view = ProgressView(f"{run.model_type} {run_id}", run.total_steps).__enter__()
                for row in store.runs.metrics(run_id, after_step=last):
                    view.update(row.step, row.to_dict())
                    last = row.step
                if run.status != "running":
                    return
            if until is not None and until():
                return
            time.sleep(poll)
    finally:
        if view is not None:
            view.__exit__(None, None, None)


def _print_summary(summary: dict[str, Any]) -> None:
    m = summary["metrics"]
    console.print(f"run [bold cyan]{summary['run_id']}[/] {summary['model_type']}: stopped by {summary['stopped_by']} "
                  f"({summary['stop_reason']}), best step {summary['best_step']}")  # fmt: skip
    console.print(f"  test IC {_fmt(m['ic'])}  ICIR {_fmt(m['icir'])}  Rank IC {_fmt(m['rank_ic'])}  "
                  f"Rank ICIR {_fmt(m['rank_icir'])}  MSE {_fmt(m['mse'], 6)}")  # fmt: skip
    if summary.get("oracle"):
        o = summary["oracle"]
        console.print(f"  oracle on the same days: IC {_fmt(o['oracle_ic'])}  Rank IC {_fmt(o['oracle_rank_ic'])}  "
                      f"share of oracle IC captured {_fmt(o['share'])}")  # fmt: skip
    console.print(f"  top-k long-short: annual return {_fmt(m['annual_return'])}  IR {_fmt(m['information_ratio'])}  "
                  f"max drawdown {_fmt(m['max_drawdown'])}  turnover {_fmt(m['turnover'])}")  # fmt: skip
    if summary.get("device"):
        console.print(f"  device {summary['device']}: {summary.get('device_reason') or ''}")
    if summary.get("model_version"):
        mv = summary["model_version"]
        console.print(f"  registered {mv['name']} v{mv['version']} ({mv['id']}, flavor {mv['flavor']})")
    if summary.get("report_uri"):
        console.print(f"  report: {summary['report_uri']}")


@app.command("runs")
@handle_errors
def runs_command(
    status: str | None = typer.Option(None, "--status", help="running, finished or failed"),
    kind: str | None = typer.Option(None, "--kind", help="train, tune or trial"),
    limit: int = typer.Option(50, "--limit"),
    as_json: bool = JSON_OPTION,
) -> None:
    """List runs, newest first."""
    from qmlops.metadata import get_store

    print_records(
        get_store().runs.list(kind=kind, status=status, limit=limit), as_json=as_json, columns=_RUN_COLUMNS
    )


@app.command("show")
@handle_errors
def show_command(
    run_id: str = typer.Argument(..., help="run id or prefix"), as_json: bool = JSON_OPTION
) -> None:
    """Show one run: config, stop reason, best step, test metrics, model version, report."""
    from qmlops.metadata import get_store

    print_record(get_store().runs.get(run_id), as_json=as_json)


@app.command("metrics")
@handle_errors
def metrics_command(
    run_id: str = typer.Argument(..., help="run id or prefix"), as_json: bool = JSON_OPTION
) -> None:
    """The run's per-step metrics (boosting-round batches or epochs)."""
    from qmlops.metadata import get_store

    store = get_store()
    rows = store.runs.metrics(store.runs.get(run_id).id)
    print_records(
        rows, as_json=as_json, columns=["step", "ts", "train_loss", "valid_loss", "valid_ic", "best_step"]
    )


@app.command("follow")
@handle_errors
def follow_command(run_id: str = typer.Argument(..., help="run id or prefix")) -> None:
    """Follow a running run's progress (for example one started by a Ray job) until it ends."""
    from qmlops.metadata import get_store

    store = get_store()
    follow(store, store.runs.get(run_id).id)
    run = store.runs.get(run_id)
    console.print(f"run {run.id} {run.status}: {run.stop_reason or run.error or ''}")


def types_command(
    family: str | None = typer.Option(None, "--family", help="tree, linear, nn or sequence"),
    available: bool = typer.Option(False, "--available", help="only types that can run here"),
    as_json: bool = JSON_OPTION,
) -> None:
    """The model catalogue: every type with its family, data shape, GPU use, defaults and search space."""
    from qmlops.training import list_model_types

    rows = [t.to_dict() for t in list_model_types(family=family, available_only=available)]
    if as_json:
        print_records(rows, as_json=True)
        return
    for row in rows:
        row["search_space"] = ", ".join(row["search_space"])
        row["status"] = "ok" if row["available"] else f"unavailable: {row['reason']}"
    print_records(rows, as_json=False, columns=["name", "family", "data", "gpu", "search_space", "status"])
