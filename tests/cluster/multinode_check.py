"""Run as a script (the multi-node test starts it in its own process): a local cluster of a head and 2 worker
nodes (``ray.cluster_utils.Cluster``), 1 CPU each, then the feature pipeline, a tuning run, metadata calls from
every node and the resource monitor; prints one JSON line with where things ran."""

from __future__ import annotations

import json
import os
import sys
import tempfile
import time

import numpy as np


def main(csv: str) -> None:
    os.environ.update(QMLOPS_HOME=tempfile.mkdtemp(prefix="qmlops-multinode-"), QMLOPS_METADATA_MODE="ray",
                      RAY_AUTH_MODE="disabled", RAY_USAGE_STATS_ENABLED="0")  # fmt: skip
    import ray
    from ray.cluster_utils import Cluster
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    small = 120 * 1024 * 1024
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1, "object_store_memory": small,
                                                            "include_dashboard": True, "dashboard_host": "127.0.0.1"})  # fmt: skip
    workers = [cluster.add_node(num_cpus=1, object_store_memory=small) for _ in range(2)]
    cluster.wait_for_nodes()
    out: dict[str, object] = {}
    try:
        from qmlops.ray_utils import init_ray

        init_ray(address=cluster.address)
        nodes = sorted(n["NodeID"] for n in ray.nodes() if n["Alive"])
        out["nodes"] = nodes

        # the metadata actor serves a client on every node (each call from a task pinned to that node)
        from qmlops.data import ingest
        from qmlops.metadata import get_store

        ds = ingest(csv, name="multi").record

        def read_and_write(tag: str) -> dict[str, object]:
            from qmlops.metadata import get_store

            store = get_store()
            store.lineage.add_node(f"probe-{tag}", "dataset", f"written from node {tag}")
            return {
                "node": ray.get_runtime_context().get_node_id(),
                "datasets": [d.id for d in store.datasets.list()],
            }

        probe = ray.remote(read_and_write)
        calls = [probe.options(num_cpus=0, scheduling_strategy=NodeAffinitySchedulingStrategy(n, soft=False)).remote(n[:8])
                 for n in nodes]  # fmt: skip
        answers = ray.get(calls)
        out["metadata_nodes"] = sorted(a["node"] for a in answers)
        out["metadata_reads_ok"] = all(ds.id in a["datasets"] for a in answers)
        out["metadata_writes"] = sum(1 for n in nodes if get_store().lineage.get_node(f"probe-{n[:8]}"))

        # the feature pipeline: Ray Data batches on every node
        from qmlops.features import materialize

        mat = materialize(ds.id, "alpha158", engine="ray", num_cpus=3)
        out["feature_rows"] = mat.record.n_rows
        from ray.util.state import list_tasks

        from qmlops.features._engine import plan_batches

        # Task states reach the GCS asynchronously (each node reports about once a second), so wait until every
        # batch's task is reported before reading where they ran; reading at once can miss other nodes' tasks.
        batches = len(plan_batches(np.arange(ds.n_instruments), 3))
        deadline = time.monotonic() + 60
        while True:
            tasks = [t for t in list_tasks(filters=[("state", "=", "FINISHED")], detail=True, limit=10_000,
                                           raise_on_missing_output=False) if "MapBatches" in (t.name or "")]  # fmt: skip
            if len(tasks) >= batches or time.monotonic() > deadline:
                break
            time.sleep(1)
        out["feature_batches"] = batches
        out["feature_tasks_reported"] = len(tasks)
        out["feature_task_nodes"] = sorted({t.node_id for t in tasks if t.node_id})

        # a tuning run: 3 trials of 1 CPU at a time on three 1-CPU nodes
        from qmlops.tuning import TuneConfig, tune_models

        result = tune_models(TuneConfig(model_types=["lightgbm"], dataset=ds.id, num_samples=3, scheduler="fifo",
                                        searcher="random", max_concurrent=3, cpus_per_trial=1.0, register_as="",
                                        early_stopping="none", fixed_params={"lightgbm": {"num_boost_round": 20,
                                                                                          "num_threads": 1}}))  # fmt: skip
        out["trial_nodes"] = sorted({t["node_id"] for t in result.trials if t.get("node_id")})
        out["trials_ok"] = all(t["error"] is None for t in result.trials)

        # a resource monitor on every node
        from qmlops.monitoring._resources import sample_all_nodes, stop_resource_monitors

        out["resource_nodes"] = sorted({s["node_id"] for s in sample_all_nodes()})
        out["resource_rows_nodes"] = sorted({r["node_id"] for r in get_store().monitoring.latest_samples()})
        stop_resource_monitors()
    finally:
        ray.shutdown()
        for w in workers:
            cluster.remove_node(w)
        cluster.shutdown()
    print("RESULT " + json.dumps(out))


if __name__ == "__main__":
    main(sys.argv[1])
