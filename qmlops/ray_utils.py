"""Connecting to Ray the qmlops way: settings travel to every worker, one namespace, small test clusters."""

from __future__ import annotations

import json
import os
import re
from typing import Any

from qmlops.config import get_settings
from qmlops.exceptions import UnavailableError

__all__ = ["init_ray", "is_secret", "qmlops_env_vars", "shutdown_ray"]


_SECRET = re.compile(r"TOKEN|SECRET|PASSWORD|PASSWD|CREDENTIAL|PRIVATE|_KEY$")


def is_secret(name: str) -> bool:
    """Whether an environment variable holds a secret by its name (``QMLOPS_ADMIN_TOKEN``, ``..._PASSWORD``)."""
    return bool(_SECRET.search(name.upper()))


def qmlops_env_vars() -> dict[str, str]:
    """The ``QMLOPS_*`` variables of this process, resolved, for a runtime_env (workers see the same home).

    Never a secret: a runtime env is shown in the Ray dashboard's job and actor views (readable without
    credentials when Ray's auth is off). Secrets stay in the environment of the process that needs them."""
    settings = get_settings()
    env = {k: v for k, v in os.environ.items() if k.startswith("QMLOPS_") and not is_secret(k)}
    env["QMLOPS_HOME"] = settings.home
    return env


def init_ray(
    address: str | None = None,
    *,
    num_cpus: int | None = None,
    num_gpus: int | None = None,
    object_store_memory: int | None = None,
    include_dashboard: bool | None = None,
    runtime_env: dict[str, Any] | None = None,
    **kwargs: Any,
) -> Any:
    """``ray.init`` with the qmlops namespace and the ``QMLOPS_*`` settings in the runtime environment.

    ``address=None`` connects to ``RAY_ADDRESS`` if set (as under ``ray job submit``), else starts a local
    cluster with the given resources; ``address="local"`` always starts a new local cluster (Ray itself would
    otherwise join the latest ``ray start`` cluster on this machine). Calling it when Ray is already initialised
    returns the current context.
    """
    import ray

    if ray.is_initialized():
        return ray.get_runtime_context()
    env = dict(runtime_env or {})
    env_vars = {**qmlops_env_vars(), **env.get("env_vars", {})}
    # Under `ray job submit` Ray merges the job's runtime env into this one and refuses a variable set in both
    # (even to the same value). The job's variables are already in this process's environment, and so in its
    # workers'; pass only the others.
    for key in _job_env_vars():
        env_vars.pop(key, None)
    env["env_vars"] = env_vars
    settings = get_settings()
    options: dict[str, Any] = {"namespace": settings.metadata_namespace, "runtime_env": env, **kwargs}
    if address is None:
        address = os.environ.get("RAY_ADDRESS")
    if address and address != "local":
        options["address"] = address
    else:
        if address == "local":
            options["address"] = "local"
        options.update(num_cpus=num_cpus, num_gpus=num_gpus, object_store_memory=object_store_memory)
        if include_dashboard is not None:
            options["include_dashboard"] = include_dashboard
    if address and address not in ("local", "auto") and "://" not in address:
        _probe(address)  # Ray itself retries an unreachable GCS for minutes before it says so
    try:
        return ray.init(**options)
    except ConnectionError as exc:
        raise UnavailableError(
            f"cannot reach the Ray cluster at {address or 'this machine'} ({str(exc).splitlines()[0][:200]}); "
            "start one with `ray start --head`, or fix/unset RAY_ADDRESS",
            field="RAY_ADDRESS",
        ) from None


def _probe(address: str, timeout: float = 3.0) -> None:
    """Fail fast, in one line, when nothing listens at a ``host:port`` cluster address."""
    import socket

    host, _, port = address.rpartition(":")
    if not host or not port.isdigit():
        return
    try:
        socket.create_connection((host, int(port)), timeout=timeout).close()
    except OSError as exc:
        raise UnavailableError(
            f"no Ray cluster answers at {address} ({exc.strerror or exc}); start one with `ray start --head`, "
            "or fix/unset RAY_ADDRESS",
            field="RAY_ADDRESS",
        ) from None


def _job_env_vars() -> set[str]:
    """The variables the enclosing Ray job's runtime env sets (empty outside a job driver)."""
    raw = os.environ.get("RAY_JOB_CONFIG_JSON_ENV_VAR")  # what Ray gives a job's driver
    if not raw:
        return set()
    try:
        config = json.loads(raw)
    except ValueError:
        return set()
    return set(((config.get("runtime_env") or {}).get("env_vars") or {}).keys())


def shutdown_ray() -> None:
    import ray

    if ray.is_initialized():
        ray.shutdown()
