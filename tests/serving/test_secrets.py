"""No secret in a runtime env, the Serve config or the dashboard; the admin token survives re-applies and a
gateway replica's restart. Read back from the real cluster (dashboard HTTP API, Jobs API)."""

from __future__ import annotations

import hashlib
import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import httpx
import pytest
import ray

from qmlops.serving import ServeService

from ..monitoring.receivers import wait_for
from .conftest import Served

TOKEN = "s3cret-token"  # what the package's conftest configures
ROOT = Path(__file__).resolve().parents[2]


def _dashboard() -> str:
    url = (
        ray.get_runtime_context().dashboard_url
        if hasattr(ray.get_runtime_context(), "dashboard_url")
        else None
    )
    url = url or ray._private.worker.global_worker.node.address_info["webui_url"]
    return url if url.startswith("http") else f"http://{url}"


def _admin(served: Served, token: str) -> int:
    """An admin call that reaches its handler only with the right token (then 404: no such alert)."""
    r = served.client.post(
        "/v1/alerts/no-such-alert/ack", json={"by": "t"}, headers={"authorization": f"Bearer {token}"}
    )
    return r.status_code


def test_no_secret_in_serve_config_or_dashboard(served: Served) -> None:
    with httpx.Client(base_url=_dashboard(), timeout=30) as dash:
        config = dash.get("/api/serve/applications/")
        assert config.status_code == 200
        text = config.text
    assert "admin_token_hash" in text and "pbkdf2_sha256$" in text  # what travels is a salted slow hash
    assert TOKEN not in text and hashlib.sha256(TOKEN.encode()).hexdigest() not in text
    # the deployments' runtime envs are in that same config: none carries a QMLOPS_ secret
    assert "QMLOPS_ADMIN_TOKEN" not in text


def test_no_qmlops_secret_in_a_jobs_runtime_env(served: Served) -> None:
    """A driver started with secrets in its environment connects the qmlops way; the Jobs API shows its
    runtime env without them."""
    marker = uuid.uuid4().hex
    address = ray.get_runtime_context().gcs_address
    env = {**os.environ, "PYTHONPATH": str(ROOT), "QMLOPS_ADMIN_TOKEN": "driver-admin-" + marker,
           "QMLOPS_SMTP_PASSWORD": "driver-pw-" + marker, "QMLOPS_JOB_MARKER": marker}  # fmt: skip
    code = f"from qmlops.ray_utils import init_ray; init_ray({address!r}); import ray; ray.shutdown()"
    subprocess.run([sys.executable, "-c", code], env=env, check=True, timeout=120, cwd=str(ROOT))
    with httpx.Client(base_url=_dashboard(), timeout=30) as dash:
        jobs = dash.get("/api/jobs/")
        assert jobs.status_code == 200
    text = jobs.text
    assert marker in text  # the driver's job and its (non-secret) runtime env are listed
    assert "driver-admin-" not in text and "driver-pw-" not in text


@pytest.mark.timeout(300)
def test_admin_token_survives_a_reapply_without_it_and_a_replica_restart(
    served: Served, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert _admin(served, TOKEN) == 404 and _admin(served, "wrong") == 401
    # a re-apply from a process whose environment lacks the token (as the rollout controller's does)
    monkeypatch.delenv("QMLOPS_ADMIN_TOKEN")
    ServeService().apply()
    assert _admin(served, TOKEN) == 404 and _admin(served, "wrong") == 401
    # the gateway replica dies; the one Serve starts instead reads the hash from the config
    pid = served.client.get("/v1/metrics/models", params={"window_s": 1}).json()["replica"]["log"]["pid"]
    os.kill(pid, signal.SIGKILL)
    assert wait_for(lambda: _healthy_new(served, pid), 120, 0.5)
    assert _admin(served, TOKEN) == 404 and _admin(served, "wrong") == 401


def _healthy_new(served: Served, old_pid: int) -> bool:
    try:
        r = served.client.get("/v1/metrics/models", params={"window_s": 1})
    except httpx.HTTPError:
        return False
    if r.status_code != 200 or served.client.get("/readyz").status_code != 200:
        return False
    time.sleep(0.1)
    return r.json()["replica"]["log"]["pid"] != old_pid
