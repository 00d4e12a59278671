"""The README's CLI beside a running cluster: ``ray start --head`` (ports and temp dir of its own), a job through
``ray job submit`` that leaves the metadata actor owning the DuckDB file, then the CLI's read commands as a user
types them. They must answer through the actor's loopback endpoint (the file is locked), bad input must still get
its one-line error, and an operational error (the file opened directly) one line naming what to do.

Only the cluster this module started is stopped afterwards (``ray start --block`` tears down what it started
when it gets SIGTERM).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.conftest import _free_port

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent


def _env(home: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("QMLOPS_", "RAY_ADDRESS"))}
    env.update(
        QMLOPS_HOME=str(home),
        PYTHONPATH=str(REPO),
        PATH=f"{BIN}{os.pathsep}{env.get('PATH', '')}",
        RAY_AUTH_MODE="disabled",
        RAY_USAGE_STATS_ENABLED="0",
        **extra,
    )
    return env


@pytest.fixture(scope="module")
def started_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, object]]:
    home = tmp_path_factory.mktemp("cli-beside") / "home"
    temp_dir = tempfile.mkdtemp(prefix="qr", dir="/tmp")  # short: Ray's socket paths must fit 107 bytes
    gcs, dashboard = _free_port(), _free_port()
    ports = {
        "--port": gcs,
        "--dashboard-port": dashboard,
        "--ray-client-server-port": _free_port(),
        "--node-manager-port": _free_port(),
        "--object-manager-port": _free_port(),
        "--metrics-export-port": _free_port(),
        "--dashboard-agent-listen-port": _free_port(),
        "--dashboard-agent-grpc-port": _free_port(),
        "--runtime-env-agent-port": _free_port(),
    }
    low = 20000 + (os.getpid() % 200) * 100
    cmd = [str(BIN / "ray"), "start", "--head", "--block", "--num-cpus", "1", "--temp-dir", temp_dir,
           "--dashboard-host", "127.0.0.1", "--include-dashboard", "true",
           "--min-worker-port", str(low), "--max-worker-port", str(low + 99)]  # fmt: skip
    for flag, port in ports.items():
        cmd += [flag, str(port)]
    log = open(Path(temp_dir) / "ray-start.log", "w")  # noqa: SIM115 - closed below
    proc = subprocess.Popen(cmd, env=_env(home), stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    url = f"http://127.0.0.1:{dashboard}"
    try:
        deadline = time.monotonic() + 120
        while True:
            assert proc.poll() is None, (Path(temp_dir) / "ray-start.log").read_text()[-3000:]
            try:
                if httpx.get(f"{url}/api/version", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert time.monotonic() < deadline, "ray start --head did not come up"
            time.sleep(1)
        yield {"home": home, "dashboard": url, "gcs": f"127.0.0.1:{gcs}", "temp_dir": temp_dir}
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        log.close()
        shutil.rmtree(temp_dir, ignore_errors=True)


def _qmlops(home: Path, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(BIN / "qmlops"), *args], env=_env(home, **env), capture_output=True, text=True,
                          timeout=120, cwd=REPO)  # fmt: skip


# The README's read commands (its "Command line" section), as typed there.
READS = [
    ["data", "sources"],
    ["data", "versions"],
    ["data", "versions", "--name", "bokeh5", "--json"],
    ["data", "show", "bokeh5", "--json"],
    ["data", "lineage", "bokeh5"],
    ["features", "list"],
    ["models", "list"],
    ["models", "types"],
    ["train", "runs"],
    ["deploy", "list"],
    ["deploy", "checks"],
    ["serve", "routes"],
    ["monitor", "models"],
    ["monitor", "drift"],
    ["monitor", "predictions"],
    ["monitor", "losses"],
    ["alerts", "list"],
    ["alerts", "rules"],
    ["alerts", "channels"],
    ["resources"],
    ["jobs", "list"],
    ["experiments", "list"],
]


@pytest.mark.slow
def test_cli_reads_beside_a_ray_job_submit_cluster(started_cluster: dict[str, object]) -> None:
    home = Path(str(started_cluster["home"]))
    for _ in range(40):  # the dashboard answers before its job agent is ready (and a loaded machine is slow)
        submit = subprocess.run(
            [str(BIN / "ray"), "job", "submit", "--address", str(started_cluster["dashboard"]),
             "--runtime-env-json", json.dumps({"env_vars": {"QMLOPS_HOME": str(home)}}),
             "--", "python", "-m", "jobs.ingest", "bokeh5", "--no-features"],
            env=_env(home), capture_output=True, text=True, timeout=600, cwd=REPO,
        )  # fmt: skip
        if submit.returncode == 0 or not any(
            m in submit.stderr for m in ("No available agent", "Connection refused")
        ):
            break
        time.sleep(3)
    logs = Path(str(started_cluster["temp_dir"])) / "session_latest" / "logs"
    dashboard_log = (logs / "dashboard.log").read_text()[-2000:] if (logs / "dashboard.log").exists() else ""
    assert submit.returncode == 0, submit.stdout[-2000:] + submit.stderr[-2000:] + dashboard_log
    endpoint = home / "run" / "metadata-endpoint.json"
    assert endpoint.exists() and (endpoint.stat().st_mode & 0o777) == 0o600

    # The cluster's actor owns the file: opening it directly is an operational error in one line.
    direct = _qmlops(home, "data", "versions", QMLOPS_METADATA_MODE="local")
    assert direct.returncode == 8, direct.stderr
    assert (
        "locked" in direct.stderr
        and "Traceback" not in direct.stderr
        and len(direct.stderr.splitlines()) == 1
    )

    for i, args in enumerate(READS):
        # RAY_ADDRESS set (as after `ray start`) changes nothing for a read: still the endpoint, no driver.
        env = {"RAY_ADDRESS": str(started_cluster["gcs"])} if i % 4 == 0 else {}
        result = _qmlops(home, *args, **env)
        assert result.returncode == 0, (args, env, result.stderr[-2000:])
        assert "Traceback" not in result.stderr, (args, result.stderr[-2000:])
    versions = json.loads(_qmlops(home, "data", "versions", "--json").stdout)
    assert [v["name"] for v in versions] == ["bokeh5"]

    # Bad input reaches its one-line error through the endpoint too (not found: exit 3).
    for args in (
        ["data", "show", "no-such-set"],
        ["models", "show", "no-such-model"],
        ["train", "show", "run-x"],
    ):
        result = _qmlops(home, *args)
        assert result.returncode == 3, (args, result.stderr)
        assert "Traceback" not in result.stderr and len(result.stderr.strip().splitlines()) == 1, (
            result.stderr
        )

    # A write goes through the single writer as well.
    tagged = _qmlops(home, "alerts", "rules", "--defaults")
    assert tagged.returncode == 0, tagged.stderr

    # An unreachable cluster address: one line naming RAY_ADDRESS, no traceback, quickly.
    down = _qmlops(home, "experiments", "start", "ex-x", RAY_ADDRESS=f"127.0.0.1:{_free_port()}")
    assert down.returncode == 8 and "RAY_ADDRESS" in down.stderr and "Traceback" not in down.stderr
    flag = _qmlops(home, "--address", f"127.0.0.1:{_free_port()}", "experiments", "start", "ex-x")
    assert flag.returncode == 8 and "no Ray cluster answers" in flag.stderr


def test_mode_ray_without_a_cluster_names_what_to_do(tmp_path: Path) -> None:
    result = _qmlops(tmp_path / "empty-home", "data", "versions", QMLOPS_METADATA_MODE="ray")
    assert result.returncode == 8 and "QMLOPS_METADATA_MODE" in result.stderr
    assert "Traceback" not in result.stderr


def test_stale_endpoint_file_falls_back_to_the_file(tmp_path: Path) -> None:
    home = tmp_path / "stale-home"
    (home / "run").mkdir(parents=True)
    (home / "run" / "metadata-endpoint.json").write_text(
        json.dumps({"url": f"http://127.0.0.1:{_free_port()}", "token": "x", "pid": 1})
    )
    result = _qmlops(home, "data", "versions", "--json")
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == []
