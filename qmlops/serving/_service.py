"""Running the Serve application: start, apply routing tables, stop.

The application ``qmlops`` is the gateway (FastAPI ingress) bound to the model server. Its shape (replicas,
resources, batch size, preloaded versions, HTTP host and port) is kept in ``QMLOPS_HOME/serve.json`` so every
process that changes routes (the CLI, the rollout controller actor) rebuilds the same application; the routing
tables themselves live in the metadata store and reach the gateway replicas as ``user_config``. Re-running the
application with only a new ``user_config`` is a lightweight update: replicas stay up and call ``reconfigure``.
A change of the model server's ``preload`` is a code-level change for Serve, which replaces its replicas in a
rolling update, each new replica passing ``check_health`` before the old one goes.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

from qmlops.config import Settings, get_settings
from qmlops.exceptions import NotFoundError, ValidationError
from qmlops.metadata import MetadataStore, RemoteMetadataStore, get_store
from qmlops.serving._routing import RoutingTable

__all__ = ["ServeOptions", "ServeService", "APP_NAME", "build_app", "deploy_config"]

APP_NAME = "qmlops"
Store = MetadataStore | RemoteMetadataStore


@dataclass(frozen=True)
class ServeOptions:
    host: str = "127.0.0.1"
    port: int = 8000
    gateway_replicas: int = 1
    gateway_cpus: float = 0.5
    server_replicas: int = 1
    server_cpus: float = 0.5
    server_gpus: float = 0.0  # a GPU share per model-server replica (torch versions score on it when usable)
    max_batch_size: int = 16
    batch_wait_timeout_s: float = 0.002
    max_ongoing_requests: int = 64
    preload: tuple[str, ...] = field(default_factory=tuple)
    # the gateway's inline monitoring (see qmlops.monitoring.GatewayMonitor): log, drift, metrics options
    monitoring: dict[str, Any] = field(default_factory=dict)

    def validate(self) -> ServeOptions:
        if not 1 <= self.port <= 65535:
            raise ValidationError(f"port must be 1..65535, got {self.port}", field="port")
        for name in ("gateway_replicas", "server_replicas", "max_batch_size", "max_ongoing_requests"):
            if int(getattr(self, name)) < 1:
                raise ValidationError(f"{name} must be >= 1", field=name)
        for name in ("gateway_cpus", "server_cpus", "batch_wait_timeout_s"):
            if float(getattr(self, name)) < 0:
                raise ValidationError(f"{name} must be >= 0", field=name)
        gpus = float(self.server_gpus)
        if not 0 <= gpus < float("inf") or (gpus > 1 and not gpus.is_integer()):
            raise ValidationError(f"server_gpus must be 0, a fraction of one GPU or whole GPUs; got {self.server_gpus}",
                                  field="server_gpus")  # fmt: skip
        if not isinstance(self.monitoring, dict):
            raise ValidationError("monitoring must be a mapping of options", field="monitoring")
        from qmlops.monitoring import GatewayMonitor

        GatewayMonitor.check_options(self.monitoring)
        if self.max_ongoing_requests < self.max_batch_size:
            raise ValidationError("max_ongoing_requests must be at least max_batch_size (or batches never fill)",
                                  field="max_ongoing_requests")  # fmt: skip
        return self


# Our prediction log records every request, so Serve's per-request access log line is dropped (it cost about 3% of
# the gateway's CPU). User code runs on the replica's own event loop instead of a second thread's: one thread
# hand-off less per request (both deployments keep blocking work off the loop: store calls and scoring run in
# executors).
REPLICA_LOGGING: dict[str, Any] = {"enable_access_log": False}
REPLICA_RUNTIME_ENV: dict[str, Any] = {"env_vars": {"RAY_SERVE_RUN_USER_CODE_IN_SEPARATE_THREAD": "0"}}


def deploy_config(settings: Settings, options: ServeOptions, user_config: dict[str, Any]) -> dict[str, Any]:
    """The Serve config (the ``serve deploy`` schema) for the application with these options and routes."""
    return {
        "http_options": {"host": options.host, "port": options.port},
        "applications": [{
            "name": APP_NAME,
            "route_prefix": "/",
            "import_path": "serve_apps.app:build",
            "args": {"settings": asdict(settings), "preload": list(options.preload),
                     "max_batch_size": options.max_batch_size, "batch_wait_timeout_s": options.batch_wait_timeout_s},
            "deployments": [
                {"name": "Gateway", "num_replicas": options.gateway_replicas,
                 "max_ongoing_requests": options.max_ongoing_requests, "user_config": user_config,
                 "logging_config": REPLICA_LOGGING,
                 "ray_actor_options": {"num_cpus": options.gateway_cpus, "runtime_env": REPLICA_RUNTIME_ENV}},
                {"name": "ModelServer", "num_replicas": options.server_replicas,
                 "max_ongoing_requests": options.max_ongoing_requests, "logging_config": REPLICA_LOGGING,
                 "ray_actor_options": _server_actor_options(options)},
            ],
        }],
    }  # fmt: skip


def _server_actor_options(options: ServeOptions) -> dict[str, Any]:
    """The model server's replica resources: CPUs, and a GPU share only when one is asked for (Ray places
    replicas with ``num_gpus`` on GPU nodes and sets their ``CUDA_VISIBLE_DEVICES``)."""
    out: dict[str, Any] = {"num_cpus": options.server_cpus, "runtime_env": REPLICA_RUNTIME_ENV}
    if options.server_gpus:
        out["num_gpus"] = float(options.server_gpus)
    return out


def build_app(settings: Settings, options: ServeOptions, user_config: dict[str, Any]) -> Any:
    """The application object (for ``serve.run`` in scripts and notebooks)."""
    from serve_apps.app import build

    return build({"settings": asdict(settings), "preload": list(options.preload),
                  "max_batch_size": options.max_batch_size, "batch_wait_timeout_s": options.batch_wait_timeout_s})  # fmt: skip


class ServeService:
    """Start the application, change routing tables, read the gateway's statistics, stop."""

    def __init__(self, settings: Settings | None = None, store: Store | None = None) -> None:
        self.settings = settings or get_settings()
        self.store = store or get_store(self.settings)
        self._revision = 0

    # -- options ------------------------------------------------------------------------------------------
    @property
    def options_path(self) -> Path:
        return Path(self.settings.home) / "serve.json"

    def options(self) -> ServeOptions:
        if not self.options_path.exists():
            return ServeOptions()
        data = json.loads(self.options_path.read_text())
        data["preload"] = tuple(data.get("preload", ()))
        return ServeOptions(**data)

    def _save(self, options: ServeOptions) -> None:
        self.options_path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.options_path.with_suffix(".tmp")
        tmp.write_text(json.dumps(asdict(options), indent=2))
        os.replace(tmp, self.options_path)

    # -- lifecycle ----------------------------------------------------------------------------------------
    def start(self, options: ServeOptions | None = None, *, wait: bool = True) -> ServeOptions:
        """Start Serve's HTTP proxy on ``host:port`` (127.0.0.1 by default) and deploy the application."""
        from ray import serve

        options = (options or self.options()).validate()
        from qmlops.monitoring import install_defaults

        serve.start(http_options={"host": options.host, "port": options.port})
        install_defaults(self.store)  # drift, latency, error-rate, accuracy and resource rules
        self._save(options)
        self.apply(options, wait=wait)
        return options

    def user_config(self, options: ServeOptions | None = None) -> dict[str, Any]:
        from qmlops.experiments import gateway_experiments

        tables = self.store.serving.list_tables()
        monitoring = (options or self.options()).monitoring
        self._revision = time.time_ns() // 1_000_000  # each apply is a new revision the gateway reports back
        return {"routes": tables, "revision": self._revision,
                # only a salted slow hash of the admin token travels in the (dashboard-visible) user_config;
                # the hash is kept under QMLOPS_HOME so an apply from a process without the token keeps it
                "admin_token_hash": self.admin_token_hash(),
                "admin_dev": os.environ.get("QMLOPS_ADMIN_DEV", "") == "1", "monitoring": monitoring,
                "experiments": gateway_experiments(self.store)}  # fmt: skip

    def admin_token_hash(self) -> str:
        """The configured admin token's encoded hash (see :mod:`qmlops.serving._tokens`); "" when none."""
        from qmlops.serving._tokens import stored_hash

        return stored_hash(
            Path(self.settings.home) / "run" / "serve" / "admin_token.hash",
            os.environ.get("QMLOPS_ADMIN_TOKEN"),
        )

    def apply(self, options: ServeOptions | None = None, *, wait: bool = True) -> None:
        """(Re)deploy from a Serve config (what ``serve deploy`` does) with the stored routing tables.

        Serve versions a config-deployed application by its import path, args and runtime environment, so when
        only the gateway's ``user_config`` changed the update is lightweight: the replicas stay and reconfigure.
        """
        from ray.serve.context import _get_global_client
        from ray.serve.schema import ServeDeploySchema

        options = options or self.options()
        config = deploy_config(self.settings, options, self.user_config(options))
        client = _get_global_client()
        if client is None:
            raise ValidationError("Serve is not running: start it with `qmlops serve start`", field="serve")
        client.deploy_apps(ServeDeploySchema.model_validate(config))
        if wait:
            self.wait_running()

    def set_preload(self, preload: list[str], *, wait: bool = True) -> None:
        """Change the model server's preloaded versions: Serve replaces its replicas in a rolling update."""
        from ray import serve

        options = replace(self.options(), preload=tuple(preload))
        self._save(options)
        self.apply(options, wait=False)
        if wait:  # the update starts asynchronously: see it begin, then finish
            deadline = time.time() + 10
            while time.time() < deadline:
                app = serve.status().applications.get(APP_NAME)
                if app is None or app.status != "RUNNING":
                    break
                time.sleep(0.1)
            self.wait_running()
            self.wait_revision()

    def wait_running(self, timeout: float = 120.0) -> None:
        from ray import serve

        deadline = time.time() + timeout
        status = None
        while time.time() < deadline:
            app = serve.status().applications.get(APP_NAME)
            status = app.status if app is not None else None
            if status == "RUNNING":
                return
            if status == "DEPLOY_FAILED":
                raise ValidationError(f"the Serve application failed to deploy: {app.message if app else ''}",
                                      field="deployment")  # fmt: skip
            time.sleep(0.25)
        raise TimeoutError(f"the Serve application is not running after {timeout:.0f} s (status {status})")

    def stop(self) -> None:
        from ray import serve

        serve.delete(APP_NAME)

    def status(self) -> dict[str, Any]:
        from ray import serve

        app = serve.status().applications.get(APP_NAME)
        options = self.options()
        return {
            "url": f"http://{options.host}:{options.port}",
            "status": app.status if app else "NOT_STARTED",
            "deployments": {k: {"status": v.status, "replicas": v.replica_states} for k, v in app.deployments.items()}
            if app else {},
            "routes": self.store.serving.list_tables(),
            "options": asdict(options),
        }  # fmt: skip

    # -- routing ------------------------------------------------------------------------------------------
    def table(self, model: str) -> RoutingTable:
        return RoutingTable.from_dict(self.store.serving.get_table(model))

    def set_table(
        self, table: RoutingTable, *, expected_revision: int | None = None, apply: bool = True
    ) -> RoutingTable:
        self.store.serving.put_table(table.to_dict(), expected_revision=expected_revision)
        if apply:
            self.apply()
            self.wait_revision()
        return table

    def remove_model(self, model: str) -> None:
        self.store.serving.get_table(model)
        self.store.serving.delete_table(model)
        self.apply()

    def gateway(self) -> Any:
        from ray import serve

        return serve.get_deployment_handle("Gateway", app_name=APP_NAME)

    def wait_revision(self, timeout: float = 30.0) -> None:
        """Until the gateway replica has the stored tables' revision (reconfigure ran)."""
        wanted = self._revision
        deadline = time.time() + timeout
        while time.time() < deadline:
            if self.gateway().routing_revision.remote().result() == wanted:
                return
            time.sleep(0.1)
        raise TimeoutError(f"the gateway did not reach routing revision {wanted} in {timeout:.0f} s")

    def stats(self, since: float = 0.0) -> dict[str, dict[str, Any]]:
        return dict(self.gateway().stats.remote(since).result())

    def placements(self, calls: int = 8) -> list[dict[str, Any]]:
        """Where the model-server replicas run: node, Ray's GPU ids, ``CUDA_VISIBLE_DEVICES`` and the device torch
        versions score on (with its reason), one entry per replica that answered ``calls`` requests."""
        from ray import serve

        handle = serve.get_deployment_handle("ModelServer", app_name=APP_NAME)
        seen: dict[str, dict[str, Any]] = {}
        for response in [handle.placement.remote() for _ in range(max(1, calls))]:
            placement = dict(response.result())
            seen[placement["replica_id"]] = placement
        return [seen[k] for k in sorted(seen)]

    def deploy_model(self, name: str, ref: int | str = "latest") -> RoutingTable:
        """Serve one version of ``name`` at 100% right away (no rollout; first deployments, demos, tests)."""
        from qmlops.registry import ModelRegistry

        record = ModelRegistry(self.store, self.settings).get(name, ref)
        table = RoutingTable.single(name, record.id, record.version)
        try:
            current = self.table(name)  # keep the salt: users stay in their buckets
            table = RoutingTable(
                name, table.entries, current.salt, current.sticky_field, current.revision + 1
            )
        except NotFoundError:
            pass
        return self.set_table(table)
