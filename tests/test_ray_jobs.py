"""A driver under ``ray job submit`` whose runtime env sets QMLOPS_* variables (as the README tells users to give
the job a stable ``QMLOPS_HOME``): ``init_ray`` must join the job instead of failing Ray's runtime-env merge, and
the job's value must reach its workers."""

from __future__ import annotations

import sys
import textwrap
import time
import uuid
from pathlib import Path

DRIVER = textwrap.dedent(
    """
    import os
    import ray
    from qmlops.ray_utils import init_ray

    init_ray()
    print("WORKER_HOME", ray.get(ray.remote(lambda: os.environ["QMLOPS_HOME"]).remote()))
    """
)


def test_job_driver_with_qmlops_env_in_its_runtime_env(ray_cluster: object, tmp_path: Path) -> None:
    from ray.job_submission import JobStatus, JobSubmissionClient

    from qmlops.monitoring._queue import _dashboard_address

    home = tmp_path / f"job-home-{uuid.uuid4().hex[:6]}"
    script = tmp_path / "driver.py"
    script.write_text(DRIVER)
    client = JobSubmissionClient(_dashboard_address())
    job = client.submit_job(
        entrypoint=f"{sys.executable} {script}",
        runtime_env={"env_vars": {"QMLOPS_HOME": str(home), "QMLOPS_METADATA_MODE": "local"}},
    )
    deadline = time.monotonic() + 180
    while client.get_job_status(job) not in {JobStatus.SUCCEEDED, JobStatus.FAILED, JobStatus.STOPPED}:
        assert time.monotonic() < deadline, client.get_job_logs(job)[-3000:]
        time.sleep(1)
    logs = client.get_job_logs(job)
    assert client.get_job_status(job) == JobStatus.SUCCEEDED, logs[-3000:]
    assert f"WORKER_HOME {home}" in logs
