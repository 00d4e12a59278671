"""GPU smoke test: the GPU paths end to end in a few minutes, each figure next to its CPU reference.

1. trains a GRU and a Transformer with ``device cuda`` and ``device cpu`` (seconds per epoch, both);
2. runs a 4-trial GRU search at 0.25 GPU per trial on Ray Tune (wall time; GPU utilisation and memory sampled
   through NVML during the search; where each trial ran and on which device);
3. serves the trained GRU from a model-server replica with a 0.25 GPU share, then from a CPU-only replica
   (p50 latency of single-row requests through the gateway over HTTP, and of 500-row batches scored by the model
   server through its Serve handle: 500 windows of 20 days x 158 features are ~50 MB of JSON, over the gateway's
   1 MB body limit);

and prints one JSON summary. Without CUDA it says so, skips the CUDA trainings (``null``), declares one *logical*
GPU to its local Ray cluster so the placement paths still run (trials and replicas get GPU ids and
``CUDA_VISIBLE_DEVICES``, then fall back to the CPU with the reason), prints the CPU figures and exits 0.

    python bench/gpu_smoke.py [--instruments 20] [--epochs 3] [--trials 4] [--gpu-share 0.25]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import threading
import time
from dataclasses import replace
from typing import Any


def _epoch_seconds(model_type: str, dataset: str, device: str, epochs: int) -> dict[str, Any]:
    from qmlops.training import TrainConfig, train

    params: dict[str, Any] = {"n_epochs": epochs, "batch_size": 256}
    if model_type == "gru":
        params["hidden_size"] = 32
    t0 = time.perf_counter()
    result = train(TrainConfig(model_type, dataset=dataset, params=params, device=device, early_stopping="none",
                               register_as=f"smoke-{model_type}-{device}", report=False))  # fmt: skip
    seconds = [float(s["seconds"]) for s in result.steps if s.get("seconds") is not None]
    if not seconds:  # steps read back from the store carry no timing: fall back to the run's wall time
        seconds = [(time.perf_counter() - t0) / max(1, len(result.steps))]
    return {"device": result.device["device"], "reason": result.device["reason"], "epochs": len(result.steps),
            "seconds_per_epoch": round(statistics.median(seconds), 3), "test_ic": result.evaluation.ic,
            "model_version": (result.model_version or {}).get("id")}  # fmt: skip


class _NvmlSampler:
    """Polls NVML every ``interval_s`` on a thread: peak and mean utilisation, peak memory, or why there is none."""

    def __init__(self, interval_s: float = 0.5) -> None:
        self.interval_s, self.util, self.memory, self.note = interval_s, [], [], None  # type: ignore[var-annotated]
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def _loop(self) -> None:
        from qmlops.monitoring._resources import gpu_status

        while not self._stop.wait(self.interval_s):
            gpus, note = gpu_status()
            self.note = note
            if gpus:
                self.util.append(max(g["utilization"] for g in gpus))
                self.memory.append(sum(g["memory_used"] for g in gpus))

    def __enter__(self) -> _NvmlSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._stop.set()
        self._thread.join()

    def summary(self) -> dict[str, Any]:
        return {"samples": len(self.util), "gpu_util_peak_pct": max(self.util, default=None),
                "gpu_util_mean_pct": round(statistics.fmean(self.util), 1) if self.util else None,
                "gpu_memory_peak_mib": round(max(self.memory) / 2**20, 1) if self.memory else None,
                "note": self.note}  # fmt: skip


def _search(dataset: str, trials: int, share: float, cpus: float, epochs: int) -> dict[str, Any]:
    from qmlops.tuning import TuneConfig, tune_models

    space = {"batch_size": {"type": "categorical", "choices": [256]}}
    config = TuneConfig(model_types=["gru"], dataset=dataset, num_samples=trials, max_concurrent=trials,
                        searcher="random", scheduler="fifo", cpus_per_trial=cpus, gpus_per_trial=share,
                        register_as="", early_stopping="none", space_overrides={"gru": space},
                        fixed_params={"gru": {"n_epochs": epochs}})  # fmt: skip
    t0 = time.perf_counter()
    with _NvmlSampler() as nvml:
        result = tune_models(config)
    wall = time.perf_counter() - t0
    return {"trials": len(result.trials), "gpu_per_trial": share, "wall_seconds": round(wall, 2),
            "errors": sum(1 for t in result.trials if t["error"]), "nvml": nvml.summary(),
            "placements": [{"gpu_ids": t["gpu_ids"], "cuda_visible_devices": t["cuda_visible_devices"],
                            "device": t["device"], "reason": t["device_reason"]} for t in result.trials]}  # fmt: skip


def _windows(dataset: str, names: list[str], step_len: int, n: int) -> list[dict[str, float]]:
    """``n`` request rows for a sequence model: per instrument, sliding ``step_len``-day windows of its features
    flattened time-major, under the version's signature ``names``."""
    import numpy as np

    from qmlops.features import load_features

    frame = load_features(dataset, "alpha158")["feature"]
    rows: list[dict[str, float]] = []
    for _, block in frame.groupby(level="instrument"):
        values = np.nan_to_num(block.to_numpy(dtype=np.float64))
        for end in range(len(values), step_len - 1, -1):
            rows.append(dict(zip(names, values[end - step_len : end].reshape(-1).tolist(), strict=True)))
            if len(rows) >= n:
                return rows
    return (rows * (n // max(1, len(rows)) + 1))[:n]


def _http_latency(url: str, model: str, rows: list[dict[str, float]], repeats: int) -> float:
    """p50 ms of single-row predictions through the gateway (the first call warms the model on its replica)."""
    import httpx

    times = []
    with httpx.Client(base_url=url, timeout=120) as client:
        for i in range(repeats + 1):
            t0 = time.perf_counter()
            response = client.post("/v1/predict", json={"model": model, "features": rows[i % len(rows)]})
            if response.status_code != 200:
                raise RuntimeError(f"predict answered {response.status_code}: {response.text[:300]}")
            if i:
                times.append((time.perf_counter() - t0) * 1000)
    return round(statistics.median(times), 2)


def _handle_latency(model_id: str, x: Any, repeats: int) -> float:
    """p50 ms of a ``len(x)``-row batch scored by the model server (its Serve handle: a 500-row window batch of a
    sequence model is ~50 MB of JSON, over the gateway's 1 MB body limit)."""
    from ray import serve

    handle = serve.get_deployment_handle("ModelServer", app_name="qmlops").options(
        multiplexed_model_id=model_id
    )
    times = []
    for i in range(repeats + 1):
        t0 = time.perf_counter()
        scores = handle.predict.remote(x).result()
        assert len(scores) == len(x)
        if i:
            times.append((time.perf_counter() - t0) * 1000)
    return round(statistics.median(times), 2)


def _serve(model: str, dataset: str, share: float) -> dict[str, Any]:
    import socket

    import httpx
    import numpy as np

    from qmlops.metadata import get_store
    from qmlops.serving import ServeOptions, ServeService

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = int(s.getsockname()[1])
    record = get_store().models.latest(model)
    names = list(record.signature["feature_names"])
    step_len = int(record.tags.get("step_len", "1"))
    rows = _windows(dataset, names, step_len, 500)
    batch = np.array([[row[n] for n in names] for row in rows], dtype=np.float64)
    service = ServeService()
    options = ServeOptions(port=port, server_gpus=share, server_cpus=0.5, gateway_cpus=0.5)
    service.start(options)
    service.deploy_model(model)
    url = f"http://127.0.0.1:{port}"
    out: dict[str, Any] = {}
    for label, opts in (("gpu_replica", options), ("cpu_replica", replace(options, server_gpus=0.0))):
        if label == "cpu_replica":  # a new replica shape: Serve replaces the model-server replicas
            service.start(opts)
        deadline = time.time() + 120
        while httpx.get(f"{url}/readyz", timeout=30).status_code != 200 and time.time() < deadline:
            time.sleep(0.3)
        placement = service.placements(calls=4)[0]["device_choice"]
        out[label] = {"server_gpus": opts.server_gpus, "device": placement["device"], "reason": placement["reason"],
                      "ray_gpu_ids": placement["ray_gpu_ids"], "p50_ms_1_row_http": _http_latency(url, model, rows, 30),
                      "p50_ms_500_rows_handle": _handle_latency(record.id, batch, 5)}  # fmt: skip
    from ray import serve

    serve.shutdown()
    return out


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--instruments", type=int, default=20)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--trials", type=int, default=4)
    parser.add_argument("--gpu-share", type=float, default=0.25)
    parser.add_argument("--cpus-per-trial", type=float, default=0.5)
    args = parser.parse_args()
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    from _setup import bench_home

    home = bench_home("gpu")
    os.environ.update(QMLOPS_METADATA_MODE="ray", MLFLOW_ALLOW_FILE_STORE="true")
    import torch

    from qmlops.devices import choose_device
    from qmlops.monitoring._resources import gpu_status
    from qmlops.ray_utils import init_ray

    cuda = torch.cuda.is_available()
    nvml_gpus, nvml_note = gpu_status()
    host = choose_device("auto")
    print(
        f"CUDA: {'yes' if cuda else 'no'} ({host.reason}); NVML: {len(nvml_gpus)} GPU(s) {nvml_note or ''}".strip()
    )
    if not cuda:
        print("no CUDA here: CUDA trainings are skipped; one logical GPU is declared so placement still runs")
    gpus = torch.cuda.device_count() if cuda else 1  # without CUDA: a logical GPU, Ray's bookkeeping only
    cpus = max(4, os.cpu_count() or 1)
    init_ray("local", num_cpus=cpus, num_gpus=gpus, object_store_memory=400 * 1024 * 1024,
             include_dashboard=False, log_to_driver=False)  # fmt: skip

    from qmlops.data import ingest, load_dataset
    from qmlops.features import materialize

    frame = load_dataset(ingest("sp500").record.id)
    names = sorted(frame["instrument"].unique())[:: max(1, frame["instrument"].nunique() // args.instruments)]
    csv = os.path.join(home, "smoke.csv")
    frame[frame["instrument"].isin(names[: args.instruments])].rename(columns={"date": "Date", "instrument": "Symbol"})[
        ["Date", "Symbol", "open", "high", "low", "close", "volume"]].to_csv(csv, index=False)  # fmt: skip
    dataset = str(ingest(csv, name="smoke").record.id)
    materialize(dataset, "alpha158", engine="local")

    summary: dict[str, Any] = {"cuda": cuda, "host_device": host.to_dict(), "nvml_gpus": len(nvml_gpus),
                               "nvml_note": nvml_note, "ray_gpus": gpus, "instruments": args.instruments,
                               "epochs": args.epochs, "training": {}}  # fmt: skip
    for model_type in ("gru", "transformer"):
        cpu = _epoch_seconds(model_type, dataset, "cpu", args.epochs)
        gpu = _epoch_seconds(model_type, dataset, "cuda", args.epochs) if cuda else None
        summary["training"][model_type] = {
            "cpu": cpu, "cuda": gpu,
            "speedup": round(cpu["seconds_per_epoch"] / gpu["seconds_per_epoch"], 2) if gpu else None,
        }  # fmt: skip
        print(f"{model_type}: {cpu['seconds_per_epoch']} s/epoch on CPU, "
              f"{gpu['seconds_per_epoch'] if gpu else 'n/a'} s/epoch on CUDA", flush=True)  # fmt: skip
    summary["tune"] = _search(dataset, args.trials, args.gpu_share, args.cpus_per_trial, args.epochs)
    print(
        f"tune: {args.trials} trials at {args.gpu_share} GPU in {summary['tune']['wall_seconds']} s",
        flush=True,
    )
    model = "smoke-gru-cuda" if cuda else "smoke-gru-cpu"
    summary["serving"] = _serve(model, dataset, args.gpu_share)
    print(json.dumps(summary, indent=1, default=str))


if __name__ == "__main__":
    main()
