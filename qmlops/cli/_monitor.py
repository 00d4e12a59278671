"""``qmlops resources``, ``qmlops alerts ...``, ``qmlops jobs ...`` and ``qmlops monitor ...``."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import typer

from qmlops.cli._common import JSON_OPTION, console, handle_errors, print_record, print_records
from qmlops.exceptions import ValidationError, reject_unknown

alerts_app = typer.Typer(no_args_is_help=True)
jobs_app = typer.Typer(no_args_is_help=True)
monitor_app = typer.Typer(no_args_is_help=True)


def _store() -> Any:
    from qmlops.metadata import get_store

    return get_store()


def _cluster_store() -> Any:
    from qmlops.cli._common import init_cluster

    init_cluster()
    return _store()


@handle_errors
def resources_command(
    start: bool = typer.Option(False, "--start", help="start a monitor on every node first (kept running)"),
    interval: float = typer.Option(5.0, "--interval", help="seconds between samples of a started monitor"),
    sample: bool = typer.Option(False, "--sample", help="take a sample on every node now"),
    stop: bool = typer.Option(False, "--stop", help="stop every node's monitor"),
    node: str | None = typer.Option(
        None, "--node", help="history of one node id instead of the latest per node"
    ),
    as_json: bool = JSON_OPTION,
) -> None:
    """CPU, memory, disk, network and GPU per Ray node (latest sample, or one node's history)."""
    from qmlops.monitoring._resources import sample_all_nodes, start_resource_monitors, stop_resource_monitors

    if interval <= 0:
        raise ValidationError("--interval must be > 0", field="interval")
    store = _cluster_store() if (start or sample or stop) else _store()
    if start:
        start_resource_monitors(interval_s=interval)
    if sample:
        sample_all_nodes()
    if stop:
        console.print(f"stopped {stop_resource_monitors()} monitor(s)")
        return
    rows = store.monitoring.samples(node_id=node) if node else store.monitoring.latest_samples()
    for r in rows:
        if not as_json:  # a count of GPUs, or why the node has none
            r["gpus"] = len(r["gpus"]) if r["gpus"] else (r.get("gpu_note") or 0)
    print_records(rows, as_json=as_json, columns=["ts", "node_id", "hostname", "cpu_percent", "memory_percent",
                                                  "disk_percent", "net_sent", "net_recv", "gpus"])  # fmt: skip


# -- alerts --------------------------------------------------------------------------------------------------
@alerts_app.command("list")
@handle_errors
def alerts_list(
    source: str | None = typer.Option(None, "--source"),
    open_only: bool = typer.Option(False, "--open", help="only unacknowledged alerts"),
    limit: int = typer.Option(50, "--limit"),
    as_json: bool = JSON_OPTION,
) -> None:
    """Alert history, newest first."""
    rows = _store().monitoring.alerts(source=source, unacknowledged=open_only, limit=limit)
    print_records(rows, as_json=as_json, columns=["id", "ts", "severity", "source", "subject", "rule", "repeats",
                                                  "acknowledged_by", "message"])  # fmt: skip


@alerts_app.command("ack")
@handle_errors
def alerts_ack(alert_id: str, by: str = typer.Option("cli", "--by"), as_json: bool = JSON_OPTION) -> None:
    """Acknowledge an alert (ends its deduplication: the next breach is a new alert)."""
    print_record(_store().monitoring.acknowledge(alert_id, by), as_json=as_json)


@alerts_app.command("rules")
@handle_errors
def alerts_rules(
    add: Path | None = typer.Option(None, "--set", help="JSON/YAML file with one rule or a list of rules"),
    delete: str | None = typer.Option(None, "--delete", help="rule name to remove"),
    defaults: bool = typer.Option(False, "--defaults", help="store the default rules that are missing"),
    as_json: bool = JSON_OPTION,
) -> None:
    """List the alert rules; add or replace them from a file; delete one; install the defaults."""
    from qmlops.monitoring import AlertRule, install_defaults

    store = _store()
    if defaults:
        install_defaults(store)
    if add is not None:
        for item in _load(add):
            store.monitoring.put_rule(AlertRule.from_dict(item).to_dict())
    if delete:
        store.monitoring.delete_rule(delete)
    print_records(store.monitoring.rules(), as_json=as_json)


@alerts_app.command("channels")
@handle_errors
def alerts_channels(
    add: Path | None = typer.Option(
        None, "--set", help="JSON/YAML file with one channel or a list of channels"
    ),
    delete: str | None = typer.Option(None, "--delete"),
    as_json: bool = JSON_OPTION,
) -> None:
    """List alert channels (webhook, email, websocket, log); add or replace from a file; delete one."""
    from qmlops.monitoring import AlertChannel

    store = _store()
    if add is not None:
        for item in _load(add):
            reject_unknown(item, AlertChannel.__dataclass_fields__, "channel field")
            if "name" not in item or "kind" not in item:
                raise ValidationError("a channel needs a name and a kind", field="name")
            store.monitoring.put_channel(AlertChannel(**{"config": {}, **item}).validate().to_dict())
    if delete:
        store.monitoring.delete_channel(delete)
    rows = store.monitoring.channels()
    for r in rows:  # never print secrets
        if "password" in r["config"]:
            r["config"] = {**r["config"], "password": "***"}
    print_records(rows, as_json=as_json)


def _load(path: Path) -> list[dict[str, Any]]:
    import yaml

    if not path.exists():
        raise ValidationError(f"{path} does not exist", field="file")
    try:
        data = (
            yaml.safe_load(path.read_text())
            if path.suffix in (".yaml", ".yml")
            else json.loads(path.read_text())
        )
    except (ValueError, yaml.YAMLError) as exc:
        raise ValidationError(
            f"{path} is not valid {path.suffix.lstrip('.') or 'JSON'}: {exc}", field="file"
        ) from None
    items = data if isinstance(data, list) else [data]
    if not all(isinstance(i, dict) for i in items):
        raise ValidationError("each entry must be an object", field="file")
    return items


# -- jobs ----------------------------------------------------------------------------------------------------
@jobs_app.command("submit")
@handle_errors
def jobs_submit(
    entrypoint: str = typer.Argument(..., help="the command, e.g. 'python -m jobs.train --model lightgbm'"),
    name: str | None = typer.Option(None, "--name"),
    cpus: float = typer.Option(1.0, "--cpus"),
    gpus: float = typer.Option(0.0, "--gpus"),
    memory: int = typer.Option(0, "--memory", help="bytes"),
    priority: int = typer.Option(0, "--priority", help="higher is admitted first"),
    working_dir: str | None = typer.Option(None, "--working-dir", help="runtime_env working_dir"),
    max_cpus: float | None = typer.Option(None, "--max-cpus", help="cap of the queue's admission actor"),
    as_json: bool = JSON_OPTION,
) -> None:
    """Queue a job; the admission actor submits it to Ray Jobs when its resources fit."""
    from qmlops.monitoring._queue import JobQueue, queue_handle

    store = _cluster_store()
    env = {"working_dir": working_dir} if working_dir else None
    job = JobQueue(store).submit(entrypoint, name=name, num_cpus=cpus, num_gpus=gpus, memory=memory,
                                 priority=priority, runtime_env=env)  # fmt: skip
    queue_handle(max_cpus=max_cpus)
    print_record(job, as_json=as_json)


@jobs_app.command("list")
@handle_errors
def jobs_list(state: list[str] = typer.Option([], "--state"), as_json: bool = JSON_OPTION) -> None:
    """Queued, admitted, running and finished jobs."""
    rows = _store().monitoring.jobs(states=state or None)
    print_records(rows, as_json=as_json, columns=["id", "name", "state", "priority", "num_cpus", "num_gpus",
                                                  "submitted_at", "admitted_at", "ended_at"])  # fmt: skip


@jobs_app.command("cancel")
@handle_errors
def jobs_cancel(job_id: str, as_json: bool = JSON_OPTION) -> None:
    """Cancel a queued job, or stop an admitted/running one."""
    from qmlops.monitoring._queue import JobQueue

    print_record(JobQueue(_cluster_store()).cancel(job_id), as_json=as_json)


@jobs_app.command("logs")
@handle_errors
def jobs_logs(job_id: str) -> None:
    """The job's driver log (from Ray Jobs)."""
    from qmlops.monitoring._queue import JobQueue

    typer.echo(JobQueue(_cluster_store()).logs(job_id))


# -- monitor -------------------------------------------------------------------------------------------------
@monitor_app.command("models")
@handle_errors
def monitor_models(
    window: float = typer.Option(300.0, "--window", help="seconds"),
    model: str | None = typer.Option(None, "--model"),
    as_json: bool = JSON_OPTION,
) -> None:
    """Throughput, errors, latency and online accuracy per model version and variant, from the prediction log."""
    if window <= 0:
        raise ValidationError("--window must be > 0", field="window")
    rows = _store().predictions.window_stats(window_s=window, model_name=model)
    print_records(rows, as_json=as_json, columns=["model_name", "model_version", "variant", "requests", "error_rate",
                                                  "p50_ms", "p99_ms", "labelled", "ic", "rank_ic", "hit_rate"])  # fmt: skip


@monitor_app.command("drift")
@handle_errors
def monitor_drift(
    model: str | None = typer.Option(None, "--model"), limit: int = typer.Option(10, "--limit"),
    as_json: bool = JSON_OPTION,
) -> None:  # fmt: skip
    """Recent drift reports (drift share, drifted features)."""
    rows = _store().monitoring.drift(model_name=model, limit=limit)
    print_records(rows, as_json=as_json, columns=["id", "ts", "model_name", "model_version", "n_rows", "drift_share",
                                                  "drifted"])  # fmt: skip


@monitor_app.command("predictions")
@handle_errors
def monitor_predictions(
    model: str | None = typer.Option(None, "--model"), request_id: str | None = typer.Option(None, "--request-id"),
    limit: int = typer.Option(20, "--limit"), as_json: bool = JSON_OPTION,
) -> None:  # fmt: skip
    """The prediction log, newest first."""
    rows = _store().predictions.query(model_name=model, request_id=request_id, limit=limit)
    print_records(rows, as_json=as_json, columns=["ts", "request_id", "model_name", "model_version", "variant",
                                                  "output", "latency_ms", "status"])  # fmt: skip


@monitor_app.command("losses")
@handle_errors
def monitor_losses(as_json: bool = JSON_OPTION) -> None:
    """Prediction-log rows lost by gateway replicas that were killed (answered minus flushed)."""
    print_records(_store().monitoring.losses(), as_json=as_json)
