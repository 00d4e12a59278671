"""The metadata store: one object with a repository per table family, local or behind a Ray actor.

Local mode opens the DuckDB file in this process. On a Ray cluster the file has exactly one writer, a named,
detached actor; every process (tasks, actors, Serve replicas, jobs) gets a :class:`RemoteMetadataStore` whose
repositories have the same methods, each call forwarded to the actor.
"""

from __future__ import annotations

import re
import sys
import threading
import time
from typing import Any, cast

import duckdb

from qmlops.config import Settings, get_settings
from qmlops.exceptions import IntegrityError, UnavailableError, ValidationError
from qmlops.metadata._admin import AdminRepository
from qmlops.metadata._datasets import DatasetRepository
from qmlops.metadata._db import Database
from qmlops.metadata._endpoint import HttpMetadataStore, read_endpoint
from qmlops.metadata._experiments import ExperimentRepository
from qmlops.metadata._features import FeatureRepository
from qmlops.metadata._lineage import LineageRepository
from qmlops.metadata._loop import LoopRepository
from qmlops.metadata._models import ModelRepository
from qmlops.metadata._monitoring import MonitoringRepository
from qmlops.metadata._predictions import PredictionRepository
from qmlops.metadata._runs import RunRepository
from qmlops.metadata._serving import ServingRepository

__all__ = [
    "MetadataStore",
    "RemoteMetadataStore",
    "HttpMetadataStore",
    "get_store",
    "open_local",
    "REPOSITORIES",
]

# Name of the attribute on the store -> repository class. Later table families add themselves here.
REPOSITORIES: dict[str, type] = {
    "datasets": DatasetRepository,
    "lineage": LineageRepository,
    "predictions": PredictionRepository,
    "features": FeatureRepository,
    "models": ModelRepository,
    "runs": RunRepository,
    "serving": ServingRepository,
    "monitoring": MonitoringRepository,
    "experiments": ExperimentRepository,
    "admin": AdminRepository,
    "loops": LoopRepository,
}


class MetadataStore:
    """Local store over one DuckDB file. Use :func:`get_store` rather than constructing it directly."""

    datasets: DatasetRepository
    lineage: LineageRepository
    predictions: PredictionRepository
    features: FeatureRepository
    models: ModelRepository
    runs: RunRepository
    serving: ServingRepository
    monitoring: MonitoringRepository
    experiments: ExperimentRepository
    admin: AdminRepository
    loops: LoopRepository

    def __init__(self, path: str) -> None:
        self.db = Database(path)
        self.path = path
        for attr, cls in REPOSITORIES.items():
            setattr(self, attr, cls(self.db))

    @property
    def is_remote(self) -> bool:
        return False

    def schema_version(self) -> int:
        return self.db.schema_version()

    def close(self) -> None:
        self.db.close()
        _LOCAL.pop(self.path, None)


_RESTART_WAIT_S = 120.0


class _RemoteRepository:
    """Forwards ``repo.method(*args, **kwargs)`` to the metadata actor and re-raises its errors here.

    A call that meets a dead or restarting actor is sent again once the actor is back (it restarts on its own;
    every commit is on disk): writers keep going through a restart instead of failing their run. Writes are
    safe to repeat: appends are keyed (``predictions``: replica + sequence), runs and metrics are upserts by id.
    """

    def __init__(self, actor: Any, name: str, actor_name: str | None = None) -> None:
        self._actor = actor
        self._name = name
        self._actor_name = actor_name

    def _still_registered(self) -> bool:
        import ray

        if self._actor_name is None:
            return False
        try:
            ray.get_actor(self._actor_name, namespace=get_settings().metadata_namespace)
        except ValueError:
            return False  # killed for good (shutdown_remote): nothing will come back
        return True

    def __getattr__(self, method: str) -> Any:
        if method.startswith("_"):
            raise AttributeError(method)

        def call(*args: Any, **kwargs: Any) -> Any:
            import ray
            from ray.exceptions import RayActorError

            deadline, delay = time.monotonic() + _RESTART_WAIT_S, 0.2
            while True:
                try:
                    status, value = ray.get(self._actor.call.remote(self._name, method, args, kwargs))
                    break
                except RayActorError as exc:
                    if time.monotonic() > deadline or not self._still_registered():
                        raise UnavailableError(
                            f"the metadata actor is gone ({type(exc).__name__}) and did not come back; check the "
                            "cluster with `ray status` and the actor in the dashboard",
                            field="metadata",
                        ) from None
                    time.sleep(delay)
                    delay = min(2 * delay, 2.0)
            if status == "err":
                raise value
            return value

        call.__name__ = method
        return call


class RemoteMetadataStore:
    """Same interface as :class:`MetadataStore`, served by the named metadata actor."""

    datasets: DatasetRepository
    lineage: LineageRepository
    predictions: PredictionRepository
    features: FeatureRepository
    models: ModelRepository
    runs: RunRepository
    serving: ServingRepository
    monitoring: MonitoringRepository
    experiments: ExperimentRepository
    admin: AdminRepository
    loops: LoopRepository

    def __init__(self, actor: Any, name: str) -> None:
        self.actor = actor
        self.actor_name = name
        for attr in REPOSITORIES:
            setattr(self, attr, cast(Any, _RemoteRepository(actor, attr, name)))
        import ray

        self.path = ray.get(actor.describe.remote())["path"]

    @property
    def is_remote(self) -> bool:
        return True

    def schema_version(self) -> int:
        import ray

        return int(ray.get(self.actor.describe.remote())["schema_version"])

    def close(self) -> None:  # the actor outlives its clients
        _REMOTE.pop(self.actor_name, None)

    def __reduce__(self) -> tuple[Any, ...]:
        # A client travels to tasks and actors as its actor handle; it reattaches on the other side.
        return (RemoteMetadataStore, (self.actor, self.actor_name))


class _MetadataActor:
    """Owns the DuckDB connection on a cluster. Calls run one at a time, whether they come from Ray or from the
    loopback endpoint it serves for processes outside Ray (``_endpoint``), whose address it writes under
    ``home/run``."""

    def __init__(self, path: str, home: str | None = None) -> None:
        self._store = MetadataStore(path)
        self._serial = threading.Lock()
        self._endpoint: Any = None
        if home is not None:
            from qmlops.metadata._endpoint import EndpointServer

            self._endpoint = EndpointServer(self.call, self.describe, home)

    def describe(self) -> dict[str, Any]:
        return {"path": self._store.path, "schema_version": self._store.schema_version()}

    def call(self, repo: str, method: str, args: tuple[Any, ...], kwargs: dict[str, Any]) -> tuple[str, Any]:
        if repo not in REPOSITORIES or method.startswith("_"):
            return "err", ValidationError(f"unknown metadata call {repo}.{method}", field="method")
        with self._serial:
            try:
                return "ok", getattr(getattr(self._store, repo), method)(*args, **kwargs)
            except Exception as exc:  # returned, not raised: the client re-raises the original type
                return "err", exc

    def __ray_shutdown__(self) -> None:
        if self._endpoint is not None:
            self._endpoint.close()


_LOCAL: dict[str, MetadataStore] = {}
_REMOTE: dict[str, RemoteMetadataStore] = {}
_HTTP: dict[str, HttpMetadataStore] = {}
_GUARD = threading.Lock()


def open_local(path: str) -> MetadataStore:
    """The process's one store for ``path`` (DuckDB allows one writing process per file).

    A file another process holds (a cluster's metadata actor, another command) raises
    :class:`UnavailableError` naming the holder and what to do, not DuckDB's lock error.
    """
    with _GUARD:
        store = _LOCAL.get(path)
        if store is None:
            try:
                store = _LOCAL[path] = MetadataStore(path)
            except duckdb.IOException as exc:
                if "lock" not in str(exc).lower():
                    raise IntegrityError(
                        f"{path} cannot be read as a metadata store ({str(exc).splitlines()[0][:200]}); it was left "
                        "as it is: restore a backup into a fresh home with `qmlops admin restore SRC`",
                        field="metadata",
                    ) from None
                holder = re.search(r"PID (\d+)", str(exc))
                raise UnavailableError(
                    f"{path} is locked by another process{f' (PID {holder.group(1)})' if holder else ''}, "
                    "usually a Ray cluster's metadata actor; this command reaches it through the endpoint file in "
                    "QMLOPS_HOME/run, which is missing or stale: check QMLOPS_HOME matches the cluster's home "
                    "and that the cluster runs (`ray status`), or stop the other process",
                    field="metadata",
                ) from None
        return store


def _open_endpoint(settings: Settings) -> HttpMetadataStore | None:
    """The store over this home's metadata actor endpoint, if one is written and answers; else ``None``."""
    with _GUARD:
        cached = _HTTP.get(settings.home)
    if cached is not None:
        return cached
    info = read_endpoint(settings.home)
    if not info or info.get("metadata_path") not in (None, settings.metadata_path):
        return None
    try:
        store = HttpMetadataStore(
            str(info["url"]), str(info["token"]), list(REPOSITORIES), home=settings.home
        )
    except (UnavailableError, KeyError, ValueError):
        return None  # stale: the actor is gone (its file stays behind after a kill -9)
    with _GUARD:
        _HTTP[settings.home] = store
    return store


def _ray() -> Any:
    """The ray module if this process is connected to Ray, else None (without importing ray)."""
    mod: Any = sys.modules.get("ray")
    if mod is None:
        return None
    return mod if mod.is_initialized() else None


def connect_remote(settings: Settings) -> RemoteMetadataStore:
    """Attach to the metadata actor, creating it (pinned to the head node) if it does not exist yet."""
    import ray

    name = settings.metadata_actor_name
    with _GUARD:
        store = _REMOTE.get(name)
        if store is not None:
            return store
        # This process may have opened the file locally before it connected to Ray: hand it over to the actor
        # (DuckDB allows one writing process per file; every commit is already on disk).
        local = _LOCAL.pop(settings.metadata_path, None)
        if local is not None:
            local.db.close()
        actor_cls = ray.remote(_MetadataActor)
        actor = actor_cls.options(
            name=name,
            namespace=settings.metadata_namespace,
            lifetime="detached",
            get_if_exists=True,
            num_cpus=0,
            max_restarts=-1,
            # The DuckDB file lives on the head node; keep its only writer there.
            resources={"node:__internal_head__": 0.001},
        ).remote(settings.metadata_path, settings.home)
        store = _REMOTE[name] = RemoteMetadataStore(actor, name)
        return store


def get_store(settings: Settings | None = None) -> MetadataStore | RemoteMetadataStore:
    """The metadata store for this process.

    ``QMLOPS_METADATA_MODE``: ``local`` opens the file here; ``ray`` uses the actor (through Ray when this
    process is connected, else through the actor's loopback endpoint); ``auto`` (default) uses the actor when
    this process is connected to Ray or the home has a live actor endpoint (a cluster owns the store), else
    the file.
    """
    settings = settings or get_settings()
    mode = settings.metadata_mode
    if mode != "local" and _ray() is not None:
        return connect_remote(settings)
    if mode == "local" or settings.metadata_path in _LOCAL:
        return open_local(settings.metadata_path)
    endpoint = _open_endpoint(settings)
    if endpoint is not None:
        return cast(
            RemoteMetadataStore, endpoint
        )  # the same repositories, reached over the loopback endpoint
    if mode == "ray":
        raise UnavailableError(
            f"QMLOPS_METADATA_MODE=ray but no metadata actor serves {settings.home} (no live endpoint in its "
            "run/ directory): start the cluster's work (e.g. `ray job submit ... -- python -m jobs.demo`) with "
            "this QMLOPS_HOME, or unset QMLOPS_METADATA_MODE to open the file here",
            field="QMLOPS_METADATA_MODE",
        )
    return open_local(settings.metadata_path)


def shutdown_remote(settings: Settings | None = None) -> None:
    """Kill the metadata actor (it flushes on exit); the next :func:`get_store` on Ray starts a new one."""
    import ray

    settings = settings or get_settings()
    _REMOTE.pop(settings.metadata_actor_name, None)
    _HTTP.pop(settings.home, None)
    try:
        actor = ray.get_actor(settings.metadata_actor_name, namespace=settings.metadata_namespace)
    except ValueError:
        return
    ray.kill(actor, no_restart=True)
