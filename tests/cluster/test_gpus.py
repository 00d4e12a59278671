"""Placement on logical GPUs, proven without a GPU: a CPU-only head and a node declaring 2 GPUs
(``gpu_check.py``, in its own process and cluster, apart from the session's). Ray assigns the GPU ids and sets
``CUDA_VISIBLE_DEVICES``; torch here has no CUDA, so ``device auto`` falls back to the CPU and says why."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from ..features.test_store import _subset_csv

FALLBACK = "CPU fallback: Ray assigned GPU ["
pytestmark = pytest.mark.slow  # one ~4 min cluster run shared by the module's tests


@pytest.fixture(scope="module")
def gpu_run(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    csv = _subset_csv(tmp_path_factory.mktemp("gpu-data"), n=8)
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in ("RAY_ADDRESS", "QMLOPS_HOME", "QMLOPS_METADATA_ACTOR")
    }
    proc = subprocess.run([sys.executable, "-m", "tests.cluster.gpu_check", str(csv)], capture_output=True, text=True,
                          timeout=1200, env=env, cwd=Path(__file__).resolve().parents[2])  # fmt: skip
    lines = [line for line in proc.stdout.splitlines() if line.startswith("RESULT ")]
    assert proc.returncode == 0 and lines, proc.stderr[-4000:]
    return dict(json.loads(lines[-1].removeprefix("RESULT ")))


def _visible_matches(trial: dict[str, Any]) -> bool:
    return trial["cuda_visible_devices"] == ",".join(trial["gpu_ids"])


def test_half_gpu_trials_run_four_at_once_on_two_gpus(gpu_run: dict[str, Any]) -> None:
    trials = gpu_run["gru_search"]
    assert gpu_run["cluster_gpus"] == 2 and len(trials) == 4 and all(t["error"] is None for t in trials)
    assert all(t["node_id"] == gpu_run["gpu_node"] for t in trials)  # never on the CPU-only head
    assert all(len(t["gpu_ids"]) == 1 and _visible_matches(t) for t in trials), trials
    sharing = Counter(t["gpu_ids"][0] for t in trials)
    assert set(sharing) == {"0", "1"} and max(sharing.values()) == 2  # two trials per GPU, never more
    assert max(t["started_at"] for t in trials) < min(t["ended_at"] for t in trials)  # all four ran at once
    assert all(t["device"] == "cpu" and t["device_reason"].startswith(FALLBACK) for t in trials)


def test_a_combined_search_asks_gpus_for_neural_trials_only(gpu_run: dict[str, Any]) -> None:
    trials = gpu_run["combined_search"]
    assert {t["model_type"] for t in trials} == {"lightgbm", "gru"} and all(
        t["error"] is None for t in trials
    )
    for t in trials:
        if t["model_type"] == "gru":
            assert t["gpus"] == 0.5 and len(t["gpu_ids"]) == 1 and _visible_matches(t)
            assert t["node_id"] == gpu_run["gpu_node"] and t["device_reason"].startswith(FALLBACK)
        else:
            assert t["gpus"] == 0.0 and t["gpu_ids"] == [] and t["device"] == "cpu"
            assert t["device_reason"] == "Ray assigned no GPU to this task"
            assert t["node_id"] in (gpu_run["gpu_node"], gpu_run["cpu_node"])


def test_training_tasks_record_the_device_and_why(gpu_run: dict[str, Any]) -> None:
    for run in gpu_run["train_tasks"]:
        choice = run["device_choice"]
        assert (
            run["summary_device"] == choice["device"] == "cpu" and run["summary_reason"] == choice["reason"]
        )
        assert choice["reason"].startswith(FALLBACK) and choice["requested"] == "auto"
        assert len(choice["ray_gpu_ids"]) == 1 and choice["cuda_visible_devices"] == choice["ray_gpu_ids"][0]
        assert choice["torch_cuda_devices"] == 0 and run["model_version"]["flavor"] == "torch"
    refused = gpu_run["cuda_refused"]
    assert refused is not None and refused["type"] == "ValidationError" and refused["field"] == "device"
    assert (
        "cuda requested but Ray assigned GPU [" in refused["message"]
        and "torch sees no CUDA device" in (refused["message"])
    )
    assert gpu_run["cuda_run_recorded"] is False  # refused before the run started
    assert gpu_run["cuda_without_gpus"]["field"] == "num_gpus"


def test_gpu_share_replicas_serve_and_roll_out_a_torch_model(gpu_run: dict[str, Any]) -> None:
    v1, v2 = gpu_run["predict_v1"], gpu_run["predict_v2"]
    assert v1["status"] == 200 and v1["body"]["version"] == 1 and len(v1["body"]["predictions"]) == 3
    assert gpu_run["rollout"]["state"] == "succeeded", gpu_run["rollout"]
    assert v2["status"] == 200 and v2["body"]["version"] == 2
    assert v1["body"]["predictions"] != v2["body"]["predictions"]  # another version answered
    stats = gpu_run["gateway_stats"]
    assert stats[v2["body"]["model_version"]]["requests"] >= 1 and all(
        s["errors"] == 0 for s in stats.values()
    )
    placements = gpu_run["placements"]
    assert len(placements) == 2  # both model-server replicas answered
    for p in placements:
        choice = p["device_choice"]
        assert p["node_id"] == gpu_run["gpu_node"] and len(choice["ray_gpu_ids"]) == 1
        assert choice["cuda_visible_devices"] == choice["ray_gpu_ids"][0]
        assert choice["device"] == "cpu" and choice["reason"].startswith(FALLBACK)


def test_nodes_without_nvml_report_no_gpu_and_why(gpu_run: dict[str, Any]) -> None:
    samples = {s["node_id"]: s for s in gpu_run["resources"]}
    assert set(samples) == {gpu_run["gpu_node"], gpu_run["cpu_node"]}
    for s in samples.values():  # the logical GPUs are Ray's bookkeeping: NVML finds no device on either node
        assert s["gpus"] == [] and s["gpu_note"].startswith("no GPU: NVML unavailable"), s
