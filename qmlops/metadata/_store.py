"""The metadata store: one object with a repository per table family, local or behind a Ray actor.

Local mode opens the DuckDB file in this process. On a Ray cluster the file has exactly one writer, a named,
detached actor; every process (tasks, actors, Serve replicas, jobs) gets a :class:`RemoteMetadataStore` whose
repositories have the same methods, each call forwarded to the actor.
"""

from __future__ import annotations

import sys
import threading
from typing import Any, cast

from qmlops.config import Settings, get_settings
from qmlops.exceptions import ValidationError
from qmlops.metadata._datasets import DatasetRepository
from qmlops.metadata._db import Database
from qmlops.metadata._experiments import ExperimentRepository
from qmlops.metadata._features import FeatureRepository
from qmlops.metadata._lineage import LineageRepository
from qmlops.metadata._loop import LoopRepository
from qmlops.metadata._models import ModelRepository
from qmlops.metadata._monitoring import MonitoringRepository
from qmlops.metadata._predictions import PredictionRepository
from qmlops.metadata._runs import RunRepository
from qmlops.metadata._serving import ServingRepository

__all__ = ["MetadataStore", "RemoteMetadataStore", "get_store", "open_local", "REPOSITORIES"]

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


class _RemoteRepository:
    """Forwards ``repo.method(*args, **kwargs)`` to the metadata actor and re-raises its errors here."""

    def __init__(self, actor: Any, name: str) -> None:
        self._actor = actor
        self._name = name

    def __getattr__(self, method: str) -> Any:
        if method.startswith("_"):
            raise AttributeError(method)

        def call(*args: Any, **kwargs: Any) -> Any:
            import ray

            status, value = ray.get(self._actor.call.remote(self._name, method, args, kwargs))
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
    loops: LoopRepository

    def __init__(self, actor: Any, name: str) -> None:
        self.actor = actor
        self.actor_name = name
        for attr in REPOSITORIES:
            setattr(self, attr, cast(Any, _RemoteRepository(actor, attr)))
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
    """Owns the DuckDB connection on a cluster. Calls run one at a time (a plain, non-async actor)."""

    def __init__(self, path: str) -> None:
        self._store = MetadataStore(path)

    def describe(self) -> dict[str, Any]:
        return {"path": self._store.path, "schema_version": self._store.schema_version()}

    def call(self, repo: str, method: str, args: tuple[Any, ...], kwargs: dict[str, Any]) -> tuple[str, Any]:
        if repo not in REPOSITORIES or method.startswith("_"):
            return "err", ValidationError(f"unknown metadata call {repo}.{method}", field="method")
        try:
            return "ok", getattr(getattr(self._store, repo), method)(*args, **kwargs)
        except Exception as exc:  # returned, not raised: the client re-raises the original type
            return "err", exc


_LOCAL: dict[str, MetadataStore] = {}
_REMOTE: dict[str, RemoteMetadataStore] = {}
_GUARD = threading.Lock()


def open_local(path: str) -> MetadataStore:
    """The process's one store for ``path`` (DuckDB allows one writing process per file)."""
    with _GUARD:
        store = _LOCAL.get(path)
        if store is None:
            store = _LOCAL[path] = MetadataStore(path)
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
        ).remote(settings.metadata_path)
        store = _REMOTE[name] = RemoteMetadataStore(actor, name)
        return store


def get_store(settings: Settings | None = None) -> MetadataStore | RemoteMetadataStore:
    """The metadata store for this process.

    ``QMLOPS_METADATA_MODE``: ``local`` opens the file here; ``ray`` uses the actor (Ray must be initialised);
    ``auto`` (default) uses the actor when this process is connected to Ray, else the file.
    """
    settings = settings or get_settings()
    mode = settings.metadata_mode
    if mode == "ray" or (mode == "auto" and _ray() is not None):
        if _ray() is None:
            raise ValidationError(
                "QMLOPS_METADATA_MODE=ray needs a connected Ray (call qmlops.ray_utils.init_ray first)",
                field="QMLOPS_METADATA_MODE",
            )
        return connect_remote(settings)
    return open_local(settings.metadata_path)


def shutdown_remote(settings: Settings | None = None) -> None:
    """Kill the metadata actor (it flushes on exit); the next :func:`get_store` on Ray starts a new one."""
    import ray

    settings = settings or get_settings()
    _REMOTE.pop(settings.metadata_actor_name, None)
    try:
        actor = ray.get_actor(settings.metadata_actor_name, namespace=settings.metadata_namespace)
    except ValueError:
        return
    ray.kill(actor, no_restart=True)
