"""Resource monitor: one actor per Ray node samples CPU, memory, disk, network (psutil) and GPUs (NVML).

Each node gets a detached actor pinned to it (``NodeAffinitySchedulingStrategy``, not soft) named
``<metadata actor>-resources-<node id prefix>``. Every ``interval_s`` it takes a sample, stores it
(``resource_samples``) and evaluates the resource alert rules for that node. GPUs are read through NVML
(``pynvml`` from nvidia-ml-py); a node without a GPU or driver reports ``gpus: []`` and a ``gpu_note`` saying why, never an error.
"""

from __future__ import annotations

import logging
import os
import shutil
import socket
import threading
from datetime import UTC, datetime
from typing import Any

import psutil

from qmlops.config import Settings, get_settings

__all__ = [
    "sample",
    "gpu_stats",
    "gpu_status",
    "start_resource_monitors",
    "stop_resource_monitors",
    "sample_all_nodes",
]

log = logging.getLogger("qmlops.resources")


def gpu_status() -> tuple[list[dict[str, Any]], str | None]:
    """Per GPU: index, name, utilisation %, memory used/total bytes, temperature C; and, when there is none, why
    (``"no GPU: ..."``: NVML's library or driver missing, or no device). Never raises."""
    try:
        import pynvml
    except ImportError:
        return [], "no GPU: nvidia-ml-py (pynvml) is not installed"
    try:
        pynvml.nvmlInit()
    except Exception as exc:  # NVMLError_LibraryNotFound / DriverNotLoaded: no NVIDIA driver on this node
        return [], f"no GPU: NVML unavailable ({exc or type(exc).__name__})"
    out = []
    try:
        for i in range(pynvml.nvmlDeviceGetCount()):
            h = pynvml.nvmlDeviceGetHandleByIndex(i)
            util = pynvml.nvmlDeviceGetUtilizationRates(h)
            mem = pynvml.nvmlDeviceGetMemoryInfo(h)
            name = pynvml.nvmlDeviceGetName(h)
            out.append({"index": i, "name": name.decode() if isinstance(name, bytes) else str(name),
                        "utilization": float(util.gpu), "memory_used": int(mem.used), "memory_total": int(mem.total),
                        "temperature": float(pynvml.nvmlDeviceGetTemperature(h, pynvml.NVML_TEMPERATURE_GPU))})  # fmt: skip
    except Exception as exc:  # a device that stops answering mid-read: report what was read and why
        return out, f"NVML error after {len(out)} GPU(s): {exc or type(exc).__name__}"
    finally:
        pynvml.nvmlShutdown()
    return out, None if out else "no GPU: NVML sees no device"


def gpu_stats() -> list[dict[str, Any]]:
    """The GPUs of :func:`gpu_status` (``[]`` without NVML or a GPU)."""
    return gpu_status()[0]


def sample(node_id: str, path: str = "/") -> dict[str, Any]:
    """One sample of this machine's resources, tagged with ``node_id``."""
    mem = psutil.virtual_memory()
    net = psutil.net_io_counters()
    disk = shutil.disk_usage(path if os.path.exists(path) else "/")
    gpus, note = gpu_status()
    return {"ts": datetime.now(UTC).replace(tzinfo=None).isoformat(), "node_id": node_id,
            "hostname": socket.gethostname(), "cpu_percent": float(psutil.cpu_percent(interval=None)),
            "memory_percent": float(mem.percent), "memory_used": int(mem.total - mem.available),
            "disk_percent": 100.0 * disk.used / disk.total if disk.total else None,
            "net_sent": int(net.bytes_sent) if net else None, "net_recv": int(net.bytes_recv) if net else None,
            "gpus": gpus, "gpu_note": note}  # fmt: skip


def _metrics_of(s: dict[str, Any]) -> dict[str, float | None]:
    gpus = s.get("gpus") or []
    return {"cpu_percent": s["cpu_percent"], "memory_percent": s["memory_percent"], "disk_percent": s["disk_percent"],
            "gpu_utilization": max((g["utilization"] for g in gpus), default=None),
            "gpu_temperature": max((g["temperature"] for g in gpus), default=None)}  # fmt: skip


class _ResourceMonitor:
    """The per-node actor: samples on a thread, writes in small batches, evaluates resource rules."""

    def __init__(self, store: Any, node_id: str, interval_s: float, home: str) -> None:
        from qmlops.monitoring._alerts import AlertManager

        self.store, self.node_id, self.interval_s, self.home = store, node_id, float(interval_s), home
        self.alerts = AlertManager(store, refresh_s=30.0)
        self.samples = 0
        self.errors = 0
        self._stop = threading.Event()
        psutil.cpu_percent(interval=None)  # prime: the first call compares against nothing
        self._thread = threading.Thread(target=self._loop, name="qmlops-resources", daemon=True)
        self._thread.start()

    def _loop(self) -> None:
        while not self._stop.wait(self.interval_s):
            try:
                self.sample_now()
            except Exception:
                self.errors += 1
                log.exception("resource sample failed")

    def sample_now(self) -> dict[str, Any]:
        s = sample(self.node_id, self.home)
        self.store.monitoring.add_samples([s])
        self.samples += 1
        self.alerts.evaluate("resources", self.node_id, _metrics_of(s), {"hostname": s["hostname"]})
        return s

    def status(self) -> dict[str, Any]:
        return {"node_id": self.node_id, "samples": self.samples, "errors": self.errors, "pid": os.getpid(),
                "interval_s": self.interval_s}  # fmt: skip

    def stop(self) -> None:
        self._stop.set()


def _name(settings: Settings, node_id: str) -> str:
    return f"{settings.metadata_actor_name}-resources-{node_id[:12]}"


def start_resource_monitors(
    *, interval_s: float = 5.0, settings: Settings | None = None, store: Any = None
) -> dict[str, Any]:
    """A monitor on every alive node (existing ones are kept); returns {node_id: actor handle}."""
    import ray
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    from qmlops.metadata import get_store

    settings = settings or get_settings()
    store = store or get_store(settings)
    handles: dict[str, Any] = {}
    for node in ray.nodes():
        if not node.get("Alive"):
            continue
        node_id = node["NodeID"]
        handles[node_id] = (
            ray.remote(_ResourceMonitor)
            .options(
                name=_name(settings, node_id),
                namespace=settings.metadata_namespace,
                lifetime="detached",
                get_if_exists=True,
                num_cpus=0,
                max_concurrency=4,
                scheduling_strategy=NodeAffinitySchedulingStrategy(node_id, soft=False),
            )  # fmt: skip
            .remote(store, node_id, interval_s, settings.home)
        )
    ray.get([h.status.remote() for h in handles.values()])
    return handles


def sample_all_nodes(settings: Settings | None = None) -> list[dict[str, Any]]:
    """A sample from every node's monitor now (starting monitors where missing)."""
    import ray

    handles = start_resource_monitors(settings=settings)
    return list(ray.get([h.sample_now.remote() for h in handles.values()]))


def stop_resource_monitors(settings: Settings | None = None) -> int:
    """Stop and remove every node's monitor; returns how many were running."""
    import ray

    settings = settings or get_settings()
    stopped = 0
    for node in ray.nodes():
        try:
            handle = ray.get_actor(_name(settings, node["NodeID"]), namespace=settings.metadata_namespace)
        except ValueError:
            continue
        try:
            ray.get(handle.stop.remote(), timeout=10)
        except Exception:
            pass
        ray.kill(handle)
        stopped += 1
    return stopped
