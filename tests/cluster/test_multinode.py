"""Multi-node proof on one machine: a head and 2 worker nodes (``ray.cluster_utils.Cluster``) run the feature
pipeline and a tuning run across nodes; the metadata actor answers clients on every node; the resource monitor
reports each node. The cluster lives in its own process (``multinode_check.py``), apart from the session's."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from ..features.test_store import _subset_csv


def test_pipeline_spreads_over_three_nodes(tmp_path: Path) -> None:
    csv = _subset_csv(tmp_path, n=12)
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in ("RAY_ADDRESS", "QMLOPS_HOME", "QMLOPS_METADATA_ACTOR")
    }
    proc = subprocess.run([sys.executable, "-m", "tests.cluster.multinode_check", str(csv)], capture_output=True,
                          text=True, timeout=900, env=env, cwd=Path(__file__).resolve().parents[2])  # fmt: skip
    lines = [line for line in proc.stdout.splitlines() if line.startswith("RESULT ")]
    assert proc.returncode == 0 and lines, proc.stderr[-3000:]
    out = json.loads(lines[-1].removeprefix("RESULT "))
    print(json.dumps(out, indent=1))  # shown with -s: which nodes ran what
    nodes = out["nodes"]
    assert len(nodes) == 3
    assert out["metadata_nodes"] == nodes and out["metadata_reads_ok"] and out["metadata_writes"] == 3
    assert out["feature_rows"] > 0 and len(out["feature_task_nodes"]) >= 2, out["feature_task_nodes"]
    assert out["trials_ok"] and len(out["trial_nodes"]) >= 2, out["trial_nodes"]
    assert out["resource_nodes"] == nodes and out["resource_rows_nodes"] == nodes
