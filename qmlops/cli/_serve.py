"""``qmlops serve ...`` (start, status, routes, stop) and ``qmlops deploy ...`` (rollouts)."""

from __future__ import annotations

import json
from typing import Any

import typer

from qmlops.cli._common import JSON_OPTION, console, handle_errors, print_record, print_records
from qmlops.exceptions import ValidationError

serve_app = typer.Typer(no_args_is_help=True)
deploy_app = typer.Typer(no_args_is_help=True)


def _service() -> Any:
    from qmlops.cli._common import init_cluster
    from qmlops.serving import ServeService

    init_cluster()
    return ServeService()


@serve_app.command("start")
@handle_errors
def start_command(
    host: str = typer.Option("127.0.0.1", "--host", help="bind address (127.0.0.1 by default)"),
    port: int = typer.Option(8000, "--port"),
    gateway_replicas: int = typer.Option(1, "--gateway-replicas"),
    server_replicas: int = typer.Option(1, "--server-replicas"),
    server_gpus: float = typer.Option(
        0.0, "--server-gpus", help="GPU share per model-server replica (e.g. 0.5; 0 = CPU only)"
    ),
    max_batch_size: int = typer.Option(16, "--max-batch-size"),
    model: list[str] = typer.Option([], "--model", help="NAME[:VERSION] to serve at 100% (repeatable)"),
    as_json: bool = JSON_OPTION,
) -> None:
    """Start the gateway and model server on the local Ray cluster (or RAY_ADDRESS)."""
    from qmlops.serving import ServeOptions

    service = _service()
    service.start(ServeOptions(host=host, port=port, gateway_replicas=gateway_replicas,
                               server_replicas=server_replicas, server_gpus=server_gpus,
                               max_batch_size=max_batch_size))  # fmt: skip
    for item in model:
        name, _, ref = item.partition(":")
        service.deploy_model(name, ref or "latest")
    status = service.status()
    if as_json:
        print_record(status, as_json=True)
        return
    console.print(f"serving at [bold]{status['url']}[/] ({status['status']}); docs at {status['url']}/docs")
    for table in status["routes"]:
        console.print(f"  {table['model']}: " + ", ".join(f"v{e['version']} {e['weight']:g}% {e['role']}"
                                                          for e in table["entries"]))  # fmt: skip


@serve_app.command("status")
@handle_errors
def status_command(as_json: bool = JSON_OPTION) -> None:
    """The application's state, deployments and routing tables."""
    print_record(_service().status(), as_json=as_json)


@serve_app.command("routes")
@handle_errors
def routes_command(as_json: bool = JSON_OPTION) -> None:
    """Routing tables: versions, weights, roles and their bucket ranges."""
    from qmlops.metadata import get_store
    from qmlops.serving import RoutingTable

    rows = []
    for t in get_store().serving.list_tables():
        table = RoutingTable.from_dict(t)
        for entry, lo, hi in table.ranges():
            rows.append({"model": table.model, "version": entry.version, "model_version": entry.model_version,
                         "weight": entry.weight, "role": entry.role, "buckets": f"[{lo}, {hi})"})  # fmt: skip
    print_records(rows, as_json=as_json)


@serve_app.command("stop")
@handle_errors
def stop_command() -> None:
    """Delete the Serve application (routing tables stay in the metadata store)."""
    _service().stop()
    console.print("stopped the qmlops Serve application")


def _controller() -> Any:
    from qmlops.deploy import RolloutController

    return RolloutController(service=_service())


@deploy_app.command("start")
@handle_errors
def deploy_start_command(
    model: str = typer.Argument(...),
    version: str = typer.Argument(..., help="version number, alias or mv-id"),
    strategy: str = typer.Option(
        "canary", "--strategy", help="immediate, blue_green, canary, rolling or shadow"
    ),
    option: list[str] = typer.Option([], "--option", "-o", help="NAME=VALUE (JSON values), repeatable"),
    follow: bool = typer.Option(True, "--follow/--no-follow", help="drive the rollout here until it ends"),
    as_json: bool = JSON_OPTION,
) -> None:
    """Start a rollout (validated first); by default drive it here and print each event."""
    options: dict[str, Any] = {}
    for item in option:
        key, sep, value = item.partition("=")
        if not sep:
            raise ValidationError(f"expected NAME=VALUE, got {item!r}", field="option")
        try:
            options[key] = json.loads(value)
        except json.JSONDecodeError:
            options[key] = value
    controller = _controller()
    rollout = controller.start(model, int(version) if version.isdigit() else version, strategy, options)
    if follow:
        rollout = controller.run(rollout["id"], on_event=lambda e: None if as_json else console.print(
            f"  {e['ts']} {e['kind']}: {json.dumps(e['detail'], default=str)[:160]}"))  # fmt: skip
    if as_json:
        print_record(controller.describe(rollout["id"]), as_json=True)
        return
    console.print(f"rollout [bold cyan]{rollout['id']}[/] {rollout['state']}: {rollout.get('reason') or ''}")


@deploy_app.command("status")
@handle_errors
def deploy_status_command(rollout_id: str = typer.Argument(...), as_json: bool = JSON_OPTION) -> None:
    """A rollout with its events, gate results, health checks and performance tests."""
    from qmlops.deploy import RolloutController

    print_record(RolloutController().describe(rollout_id), as_json=as_json)


@deploy_app.command("list")
@handle_errors
def deploy_list_command(
    model: str | None = typer.Option(None, "--model"), as_json: bool = JSON_OPTION
) -> None:
    """Rollouts, newest first."""
    from qmlops.metadata import get_store

    print_records(get_store().serving.list_rollouts(model), as_json=as_json,
                  columns=["id", "model", "strategy", "state", "step", "to_version", "from_version", "reason", "created_at"])  # fmt: skip


@deploy_app.command("checks")
@handle_errors
def deploy_checks_command(model_version: str | None = typer.Option(None, "--model-version"),
                          rollout: str | None = typer.Option(None, "--rollout"), as_json: bool = JSON_OPTION) -> None:  # fmt: skip
    """Post-deploy health checks and performance tests."""
    from qmlops.metadata import get_store

    rows = get_store().serving.checks(rollout_id=rollout, model_version=model_version)
    for r in rows:
        res = r["result"]
        r.update(
            requests=res.get("requests"),
            errors=res.get("errors"),
            p50_ms=res.get("p50_ms"),
            p99_ms=res.get("p99_ms"),
        )
    print_records(rows, as_json=as_json, columns=["ts", "kind", "model_version", "rollout_id", "ok", "requests", "errors",
                                                  "p50_ms", "p99_ms"])  # fmt: skip


def _action(name: str) -> Any:
    @handle_errors
    def command(rollout_id: str = typer.Argument(...), as_json: bool = JSON_OPTION) -> None:
        r = getattr(_controller(), name)(rollout_id)
        print_record(r, as_json=as_json)

    command.__doc__ = f"{name.capitalize()} a rollout."
    return command


for _name in ("pause", "resume", "promote", "rollback"):
    deploy_app.command(_name)(_action(_name))
