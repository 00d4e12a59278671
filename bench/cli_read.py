"""CLI read latency beside a running cluster (through the metadata actor's loopback endpoint) against the same
commands on the same store opened directly (no cluster), and against what a Ray driver connection alone costs
(the design the endpoint avoids).

Starts its own ``ray start --head --block`` (own ports, own temp dir; stopped at the end, nothing else), submits
``jobs.ingest sp500`` through ``ray job submit`` so the metadata actor owns the store, then times each command
as a fresh process (what a user waits for), median of 5.

    PYTHONPATH=$PWD .venv/bin/python bench/cli_read.py
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
COMMANDS = [["data", "versions"], ["data", "show", "sp500"], ["models", "list"], ["train", "runs"],
            ["deploy", "list"], ["monitor", "predictions"], ["alerts", "list"], ["experiments", "list"]]  # fmt: skip
REPEATS = 5


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _env(home: str, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("QMLOPS_", "RAY_ADDRESS"))}
    env.update(QMLOPS_HOME=home, PYTHONPATH=str(REPO), PATH=f"{BIN}{os.pathsep}{env.get('PATH', '')}",
               RAY_AUTH_MODE="disabled", RAY_USAGE_STATS_ENABLED="0", **extra)  # fmt: skip
    return env


def _time(cmd: list[str], env: dict[str, str]) -> float:
    runs = []
    for _ in range(REPEATS):
        t0 = time.perf_counter()
        done = subprocess.run(cmd, env=env, capture_output=True, text=True, cwd=REPO)
        runs.append(time.perf_counter() - t0)
        if done.returncode != 0:
            raise SystemExit(f"{cmd} failed: {done.stderr[-2000:]}")
    return statistics.median(runs)


def main() -> None:
    work = tempfile.mkdtemp(prefix="qmlops-bench-cli-")
    home, direct = f"{work}/home", f"{work}/direct"
    temp_dir = tempfile.mkdtemp(prefix="qb", dir="/tmp")
    gcs, dash = _port(), _port()
    cmd = [str(BIN / "ray"), "start", "--head", "--block", "--num-cpus", "1", "--temp-dir", temp_dir,
           "--port", str(gcs), "--dashboard-port", str(dash), "--dashboard-host", "127.0.0.1",
           "--include-dashboard", "true", "--ray-client-server-port", str(_port()),
           "--node-manager-port", str(_port()), "--object-manager-port", str(_port()),
           "--metrics-export-port", str(_port()), "--dashboard-agent-listen-port", str(_port()),
           "--dashboard-agent-grpc-port", str(_port()), "--runtime-env-agent-port", str(_port()),
           "--min-worker-port", "31000", "--max-worker-port", "31099"]  # fmt: skip
    head = subprocess.Popen(cmd, env=_env(home), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)  # fmt: skip
    try:
        for _ in range(120):
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{dash}/api/version", timeout=2)
                break
            except OSError:
                time.sleep(1)
        for _ in range(30):  # the dashboard answers before its job agent is ready
            job = subprocess.run([str(BIN / "ray"), "job", "submit", "--address", f"http://127.0.0.1:{dash}",
                                  "--runtime-env-json", json.dumps({"env_vars": {"QMLOPS_HOME": home}}), "--",
                                  "python", "-m", "jobs.ingest", "sp500", "--no-features"],
                                 env=_env(home), capture_output=True, text=True, cwd=REPO)  # fmt: skip
            if "No available agent" not in job.stderr:
                break
            time.sleep(2)
        if job.returncode != 0:
            raise SystemExit(job.stderr[-3000:])
        # The reference: the same store, copied by the actor (admin backup), opened directly with no cluster.
        subprocess.run([str(BIN / "qmlops"), "admin", "backup", f"{work}/copy.duckdb"], env=_env(home), check=True,
                       capture_output=True)  # fmt: skip
        subprocess.run([str(BIN / "qmlops"), "admin", "restore", f"{work}/copy.duckdb"], env=_env(direct),
                       check=True, capture_output=True)  # fmt: skip
        driver = _time([sys.executable, "-c", f"import ray; ray.init(address='127.0.0.1:{gcs}', "
                        "log_to_driver=False, logging_level='ERROR')"], _env(home))  # fmt: skip
        print(f"{'command':28} {'beside cluster (s)':>19} {'direct file (s)':>16}")
        worst = 0.0
        for args in COMMANDS:
            beside = _time([str(BIN / "qmlops"), *args], _env(home))
            local = _time([str(BIN / "qmlops"), *args], _env(direct, QMLOPS_METADATA_MODE="local"))
            worst = max(worst, beside)
            print(f"{' '.join(args):28} {beside:19.2f} {local:16.2f}")
        print(
            f"slowest read beside the cluster: {worst:.2f} s (median of {REPEATS}); "
            f"a Ray driver connection alone (the alternative): {driver:.2f} s"
        )
    finally:
        head.send_signal(signal.SIGTERM)
        head.wait(timeout=60)
        shutil.rmtree(temp_dir, ignore_errors=True)
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
