"""Run as a script (the logical-GPU test starts it in its own process): a local cluster of a CPU-only head and a
worker node that declares 2 logical GPUs (``ray.cluster_utils.Cluster``), then

- a GRU search at 0.5 GPU per trial (four trials at once on the two GPUs),
- a combined LightGBM + GRU search (GPUs asked for the GRU trials only),
- training as Ray tasks with a GPU share (``device auto`` falls back to the CPU with the reason on the run; ``device
  cuda`` is refused before any work),
- the Serve application with model-server replicas at 0.5 GPU serving those GRU versions over HTTP, a blue-green
  rollout between them, and the gateway's statistics,
- the resource monitor on both nodes (NVML absent: "no GPU", not an error);

prints one JSON line with what each part saw. Nothing here is mocked: Ray assigns the logical GPUs and sets
``CUDA_VISIBLE_DEVICES``; torch (a CPU build, no driver) sees no CUDA device, which is what the fallback is for.
"""

from __future__ import annotations

import json
import os
import socket
import sys
import tempfile
import time
from typing import Any

# Qlib's sequence loaders drop the last partial batch, so batches stay smaller than the small valid segment
SMALL_GRU = {"hidden_size": {"type": "categorical", "choices": [8, 16]},
             "num_layers": {"type": "categorical", "choices": [1]}, "batch_size": {"type": "categorical", "choices": [64]}}  # fmt: skip
GRU_FIXED = {"n_epochs": 2, "batch_size": 64}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _trials(result: Any) -> list[dict[str, Any]]:
    keys = ("model_type", "gpus", "gpu_ids", "cuda_visible_devices", "device", "device_reason", "node_id",
            "started_at", "ended_at", "error")  # fmt: skip
    return [{k: t.get(k) for k in keys} for t in result.trials]


def main(csv: str) -> None:
    os.environ.update(QMLOPS_HOME=tempfile.mkdtemp(prefix="qmlops-gpus-"), QMLOPS_METADATA_MODE="ray",
                      RAY_AUTH_MODE="disabled", RAY_USAGE_STATS_ENABLED="0", MLFLOW_ALLOW_FILE_STORE="true")  # fmt: skip
    import httpx
    import ray
    from ray.cluster_utils import Cluster

    small = 150 * 1024 * 1024
    cluster = Cluster(
        initialize_head=True, head_node_args={"num_cpus": 2, "num_gpus": 0, "object_store_memory": small}
    )
    gpu_node = cluster.add_node(num_cpus=4, num_gpus=2, object_store_memory=small)
    cluster.wait_for_nodes()
    out: dict[str, Any] = {}
    try:
        from qmlops.ray_utils import init_ray

        init_ray(address=cluster.address)
        alive = [n for n in ray.nodes() if n["Alive"]]
        out["gpu_node"] = next(n["NodeID"] for n in alive if n["Resources"].get("GPU"))
        out["cpu_node"] = next(n["NodeID"] for n in alive if not n["Resources"].get("GPU"))
        out["cluster_gpus"] = ray.cluster_resources().get("GPU")

        from qmlops.data import ingest
        from qmlops.features import materialize
        from qmlops.metadata import get_store

        ds = ingest(csv, name="gpus").record
        materialize(ds.id, "alpha158", engine="local")

        # 1. four GRU trials at 0.5 GPU each, all at once on the two logical GPUs
        from qmlops.tuning import TuneConfig, seed_points, tune_models

        common = dict(dataset=ds.id, searcher="random", scheduler="fifo", cpus_per_trial=1.0, register_as="",
                      early_stopping="none", step_len=5, space_overrides={"gru": SMALL_GRU})  # fmt: skip
        gru = tune_models(TuneConfig(model_types=["gru"], num_samples=4, max_concurrent=4, gpus_per_trial=0.5,
                                     fixed_params={"gru": GRU_FIXED}, **common))  # type: ignore[arg-type]  # fmt: skip
        out["gru_search"] = _trials(gru)

        # 2. a combined search: GPUs for the GRU trials only; both types evaluated first (seed points)
        combined_config = TuneConfig(model_types=["lightgbm", "gru"], num_samples=4, max_concurrent=4,
                                     gpus_per_trial=0.5, fixed_params={"gru": GRU_FIXED, "lightgbm": {
                                         "num_boost_round": 20, "num_threads": 1}}, **common)  # type: ignore[arg-type]  # fmt: skip
        combined_config.points_to_evaluate = seed_points(combined_config, ["lightgbm", "gru"])
        out["combined_search"] = _trials(tune_models(combined_config))

        # 3. training as Ray tasks with a GPU share: two GRU versions, device auto -> CPU fallback with the reason
        from qmlops.training import TrainConfig, train_remote

        store = get_store()
        refs = []
        for seed in (0, 1):
            config = TrainConfig("gru", dataset=ds.id, params={**GRU_FIXED, "hidden_size": 8}, step_len=5,
                                 early_stopping="none", register_as="gru-gpu", report=False, seed=seed)  # fmt: skip
            refs.append(train_remote(config, num_cpus=1, num_gpus=0.5))
        runs = []
        for run_id, ref in refs:
            summary = ray.get(ref)
            runs.append({"summary_device": summary["device"], "summary_reason": summary["device_reason"],
                         "device_choice": store.runs.get(run_id).config["device_choice"],
                         "model_version": summary["model_version"]})  # fmt: skip
        out["train_tasks"] = runs
        cuda = TrainConfig("gru", dataset=ds.id, params=GRU_FIXED, step_len=5, device="cuda", report=False)
        run_id, ref = train_remote(cuda, num_cpus=1, num_gpus=1)
        try:
            ray.get(ref)
            out["cuda_refused"] = None
        except Exception as exc:  # the worker's ValidationError, wrapped by Ray
            cause = getattr(exc, "cause", exc)
            out["cuda_refused"] = {"type": type(cause).__name__, "field": getattr(cause, "field", None),
                                   "message": str(cause)}  # fmt: skip
        try:
            store.runs.get(run_id)
            out["cuda_run_recorded"] = True
        except Exception:
            out["cuda_run_recorded"] = False
        try:
            train_remote(cuda, num_cpus=1, num_gpus=0)
            out["cuda_without_gpus"] = None
        except Exception as exc:
            out["cuda_without_gpus"] = {"field": getattr(exc, "field", None), "message": str(exc)}

        # 4. serving: model-server replicas with a GPU share, a GRU version over HTTP, a blue-green rollout
        from qmlops.deploy import RolloutController
        from qmlops.serving import ServeOptions, ServeService

        port = _free_port()
        service = ServeService()
        service.start(ServeOptions(port=port, server_gpus=0.5, server_replicas=2, server_cpus=0.25,
                                   gateway_cpus=0.25))  # fmt: skip
        service.deploy_model("gru-gpu", 1)
        url = f"http://127.0.0.1:{port}"
        deadline = time.time() + 120
        while httpx.get(f"{url}/readyz", timeout=30).status_code != 200 and time.time() < deadline:
            time.sleep(0.3)
        from qmlops.features import load_features

        frame = load_features(ds.id, "alpha158")
        day = str(frame.index.get_level_values("datetime").max().date())
        instruments = sorted({str(i) for i in frame.index.get_level_values("instrument")})[:3]
        body = {"model": "gru-gpu", "instruments": instruments, "date": day}
        first = httpx.post(f"{url}/v1/predict", json=body, timeout=60)
        out["predict_v1"] = {"status": first.status_code, "body": first.json()}
        controller = RolloutController()
        rollout = controller.start("gru-gpu", 2, "blue_green", {"perf_requests": 20, "perf_concurrency": 2,
                                                                "max_p99_ms": 10_000.0})  # fmt: skip
        done = controller.run(rollout["id"], timeout=300)
        out["rollout"] = {"state": done["state"], "reason": done.get("reason")}
        second = httpx.post(f"{url}/v1/predict", json=body, timeout=60)
        out["predict_v2"] = {"status": second.status_code, "body": second.json()}
        out["gateway_stats"] = service.stats()
        out["placements"] = service.placements(calls=16)
        from ray import serve

        serve.shutdown()

        # 5. the resource monitor on both nodes: no NVML here, so "no GPU" with the reason
        from qmlops.monitoring._resources import sample_all_nodes, stop_resource_monitors

        out["resources"] = [{"node_id": s["node_id"], "gpus": s["gpus"], "gpu_note": s["gpu_note"]}
                            for s in sample_all_nodes()]  # fmt: skip
        stop_resource_monitors()
    finally:
        ray.shutdown()
        cluster.remove_node(gpu_node)
        cluster.shutdown()
    print("RESULT " + json.dumps(out, default=str))


if __name__ == "__main__":
    main(sys.argv[1])
