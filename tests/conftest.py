"""Shared fixtures: one real local Ray cluster per test session, temporary QMLOPS_HOME directories."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

# Local test clusters run without token authentication (Ray 2.60 otherwise writes ~/.ray/auth_token on a
# local init and later connections need it); set before ray is imported anywhere.
os.environ.setdefault("RAY_AUTH_MODE", "disabled")
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")

RAY_NUM_CPUS = 2
RAY_OBJECT_STORE_BYTES = 400 * 1024 * 1024


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def tmp_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A fresh QMLOPS_HOME with the metadata store opened locally in this process."""
    home = tmp_path / "qmlops-home"
    monkeypatch.setenv("QMLOPS_HOME", str(home))
    monkeypatch.setenv("QMLOPS_METADATA_MODE", "local")
    for var in ("QMLOPS_METADATA_PATH", "QMLOPS_DATA_URI", "QMLOPS_ARTIFACTS_URI", "QMLOPS_FEATURES_URI"):
        monkeypatch.delenv(var, raising=False)
    return home


@pytest.fixture(scope="session")
def ray_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[object]:
    """The session's one local Ray cluster (2 CPUs, small object store), shut down at the end."""
    import ray

    from qmlops.ray_utils import init_ray

    session_home = tmp_path_factory.mktemp("ray-session-home")
    os.environ["QMLOPS_HOME"] = str(session_home)
    # The dashboard serves the Jobs API (the job queue submits through it) and the metrics endpoint.
    # "local": a new cluster of the session's own, even when a `ray start` cluster runs on this machine.
    ctx = init_ray(
        "local",
        num_cpus=RAY_NUM_CPUS,
        object_store_memory=RAY_OBJECT_STORE_BYTES,
        include_dashboard=True,
        dashboard_host="127.0.0.1",
        dashboard_port=_free_port(),
        log_to_driver=False,
    )
    yield ctx
    ray.shutdown()


@pytest.fixture
def ray_home(ray_cluster: object, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A fresh QMLOPS_HOME served by its own metadata actor on the session cluster."""
    from qmlops.metadata import shutdown_remote

    home = tmp_path / "qmlops-home"
    monkeypatch.setenv("QMLOPS_HOME", str(home))
    monkeypatch.setenv("QMLOPS_METADATA_MODE", "ray")
    monkeypatch.setenv("QMLOPS_METADATA_ACTOR", f"qmlops-metadata-test-{uuid.uuid4().hex[:8]}")
    yield home
    shutdown_remote()
