"""A job admission queue over the Ray Jobs API.

Users submit training or tuning entry points with the CPUs, GPUs and memory they need and a priority. The queue
(rows in ``job_queue``) admits them when they fit, highest priority first, oldest first within a priority, and
strictly in that order: a big job at the head is not overtaken by smaller ones behind it (no starvation).
Admission is ``JobSubmissionClient.submit_job`` with the same ``entrypoint_num_cpus/gpus/memory``, so the job
shows in the Ray dashboard and Ray, not the queue, places it.

Fit: a job fits when its request is within what Ray reports available, minus what admitted jobs of this queue
have not claimed yet (Ray sees their resources only once their driver runs), and, when the queue has a cap
(``max_cpus``, ``max_gpus``, ``max_memory``), within the cap minus every admitted or running job's request.

``tick()`` does one round (refresh states, admit); :func:`queue_handle` runs it every second in a detached
actor (``<metadata actor>-jobqueue``) so the queue works with no user process attached.
"""

from __future__ import annotations

import math
import threading
import uuid
from typing import Any

from qmlops.config import Settings, get_settings
from qmlops.exceptions import NotFoundError, ValidationError

__all__ = ["JobQueue", "queue_handle", "ACTIVE_STATES"]

ACTIVE_STATES = ("admitted", "running")
_RAY_TO_QUEUE = {"PENDING": "admitted", "RUNNING": "running", "SUCCEEDED": "succeeded", "FAILED": "failed",
                 "STOPPED": "stopped"}  # fmt: skip


class JobQueue:
    def __init__(self, store: Any = None, *, address: str | None = None, max_cpus: float | None = None,
                 max_gpus: float | None = None, max_memory: int | None = None,
                 settings: Settings | None = None) -> None:  # fmt: skip
        from qmlops.metadata import get_store

        self.settings = settings or get_settings()
        self.store = store or get_store(self.settings)
        self.address = address
        self.cap = {"CPU": max_cpus, "GPU": max_gpus, "memory": max_memory}
        self._client: Any = None

    @property
    def client(self) -> Any:
        if self._client is None:
            from ray.job_submission import JobSubmissionClient

            self._client = JobSubmissionClient(self.address or _dashboard_address())
        return self._client

    # -- user operations ----------------------------------------------------------------------------------
    def submit(self, entrypoint: str, *, name: str | None = None, num_cpus: float = 1.0, num_gpus: float = 0.0,
               memory: int = 0, priority: int = 0, runtime_env: dict[str, Any] | None = None) -> dict[str, Any]:  # fmt: skip
        if not isinstance(entrypoint, str) or not entrypoint.strip():
            raise ValidationError("entrypoint must be a non-empty command", field="entrypoint")
        for key, value in (("num_cpus", num_cpus), ("num_gpus", num_gpus), ("memory", memory)):
            if (
                isinstance(value, bool)
                or not isinstance(value, int | float)
                or not math.isfinite(value)
                or value < 0
            ):
                raise ValidationError(f"{key} must be a finite number >= 0", field=key)
        if isinstance(priority, bool) or not isinstance(priority, int):
            raise ValidationError("priority must be an integer (higher runs first)", field="priority")
        if runtime_env is not None and not isinstance(runtime_env, dict):
            raise ValidationError("runtime_env must be a mapping", field="runtime_env")
        total = _cluster_total()
        need = {"CPU": num_cpus, "GPU": num_gpus, "memory": memory}
        for key, value in need.items():
            limit = min(x for x in (total.get(key, 0.0), self.cap[key]) if x is not None)
            if value > limit + 1e-9:
                raise ValidationError(f"the job needs {key}={value:g} but the cluster (or queue cap) has {limit:g}: "
                                      "it could never be admitted", field={"CPU": "num_cpus", "GPU": "num_gpus",
                                                                           "memory": "memory"}[key])  # fmt: skip
        job_id = "qj-" + uuid.uuid4().hex[:12]
        return self.store.monitoring.enqueue_job({"id": job_id, "name": name or entrypoint.split()[0][:60],
                                                  "entrypoint": entrypoint, "num_cpus": num_cpus, "num_gpus": num_gpus,
                                                  "memory": int(memory), "priority": priority,
                                                  "runtime_env": runtime_env})  # fmt: skip

    def cancel(self, job_id: str) -> dict[str, Any]:
        job = self.store.monitoring.get_job(job_id)
        if job["state"] == "queued":
            return self.store.monitoring.update_job(job_id, state="cancelled", ended_at="now",
                                                    message="cancelled before admission")  # fmt: skip
        if job["state"] in ACTIVE_STATES:
            self.client.stop_job(job_id)
            return self.store.monitoring.update_job(
                job_id, state="stopped", ended_at="now", message="stopped by user"
            )
        raise ValidationError(f"job {job_id} already ended ({job['state']})", field="job_id")

    def logs(self, job_id: str) -> str:
        job = self.store.monitoring.get_job(job_id)
        if job["state"] in ("queued", "cancelled"):
            return ""
        return str(self.client.get_job_logs(job_id))

    def list_jobs(self, states: list[str] | None = None) -> list[dict[str, Any]]:
        return list(self.store.monitoring.jobs(states=states))

    def get(self, job_id: str) -> dict[str, Any]:
        return dict(self.store.monitoring.get_job(job_id))

    # -- the admission round ------------------------------------------------------------------------------
    def refresh(self) -> list[dict[str, Any]]:
        """Bring admitted/running jobs' states up to date from Ray; returns the active ones."""
        active = []
        for job in self.store.monitoring.jobs(states=list(ACTIVE_STATES)):
            try:
                status = str(self.client.get_job_status(job["id"]).value)
            except Exception:  # a job Ray no longer knows (cluster restarted): it is gone
                self.store.monitoring.update_job(
                    job["id"], state="failed", ended_at="now", message="unknown to Ray"
                )
                continue
            state = _RAY_TO_QUEUE.get(status, job["state"])
            if state != job["state"]:
                changes: dict[str, Any] = {"state": state}
                if state not in ACTIVE_STATES:
                    changes["ended_at"] = "now"
                job = self.store.monitoring.update_job(job["id"], **changes)
            if job["state"] in ACTIVE_STATES:
                active.append(job)
        return active

    def tick(self) -> list[dict[str, Any]]:
        """One round: refresh, then admit from the head of the queue while the head fits. The admitted jobs."""
        import ray

        active = self.refresh()
        available = {
            k: float(v) for k, v in ray.available_resources().items() if k in ("CPU", "GPU", "memory")
        }
        pending = [j for j in active if j["state"] == "admitted"]
        free = {
            k: available.get(k, 0.0) - sum(_need(j)[k] for j in pending) for k in ("CPU", "GPU", "memory")
        }
        for key, cap in self.cap.items():
            if cap is not None:
                free[key] = min(free[key], cap - sum(_need(j)[key] for j in active))
        admitted = []
        queued = sorted(
            self.store.monitoring.jobs(states=["queued"]), key=lambda j: (-j["priority"], j["submitted_at"])
        )
        for job in queued:
            need = _need(job)
            if any(need[k] > free[k] + 1e-9 for k in need):
                break  # strict priority order: nothing overtakes the head
            self.client.submit_job(entrypoint=job["entrypoint"], submission_id=job["id"],
                                   runtime_env=job["runtime_env"] or None, metadata={"qmlops_queue": "1",
                                                                                     "name": job["name"]},
                                   entrypoint_num_cpus=job["num_cpus"], entrypoint_num_gpus=job["num_gpus"] or None,
                                   entrypoint_memory=job["memory"] or None)  # fmt: skip
            admitted.append(self.store.monitoring.update_job(job["id"], state="admitted", admitted_at="now"))
            for k in free:
                free[k] -= need[k]
        return admitted


def _need(job: dict[str, Any]) -> dict[str, float]:
    return {"CPU": float(job["num_cpus"]), "GPU": float(job["num_gpus"]), "memory": float(job["memory"])}


def _cluster_total() -> dict[str, float]:
    import ray

    return {k: float(v) for k, v in ray.cluster_resources().items() if k in ("CPU", "GPU", "memory")}


def _dashboard_address() -> str:
    from ray._private.worker import get_dashboard_url

    try:
        url = get_dashboard_url()
    except Exception:
        url = None
    if not url:
        raise NotFoundError("the Ray dashboard (which serves the Jobs API) is not running on this cluster; "
                            "start Ray with the dashboard or pass the Jobs API address", field="address")  # fmt: skip
    return url if url.startswith("http") else f"http://{url}"


class _QueueActor:
    """Runs :meth:`JobQueue.tick` every ``interval_s`` seconds."""

    def __init__(self, store: Any, interval_s: float, cap: dict[str, Any], address: str) -> None:
        self.queue = JobQueue(store, address=address, max_cpus=cap.get("CPU"), max_gpus=cap.get("GPU"),
                              max_memory=cap.get("memory"))  # fmt: skip
        self.interval_s = interval_s
        self.ticks = 0
        self.errors: list[str] = []
        self._stop = threading.Event()
        threading.Thread(target=self._loop, name="qmlops-jobqueue", daemon=True).start()

    def _loop(self) -> None:
        while not self._stop.wait(self.interval_s):
            try:
                self.queue.tick()
                self.ticks += 1
            except Exception as exc:
                self.errors = [*self.errors[-9:], f"{type(exc).__name__}: {exc}"]

    def status(self) -> dict[str, Any]:
        return {"ticks": self.ticks, "errors": self.errors, "cap": self.queue.cap}

    def stop(self) -> None:
        self._stop.set()


def queue_handle(
    *, interval_s: float = 1.0, max_cpus: float | None = None, max_gpus: float | None = None,
    max_memory: int | None = None, settings: Settings | None = None, store: Any = None,
) -> Any:  # fmt: skip
    """The detached admission actor (``<metadata actor>-jobqueue``), created on the head node if absent."""
    import ray

    from qmlops.metadata import get_store

    settings = settings or get_settings()
    store = store or get_store(settings)
    return ray.remote(_QueueActor).options(
        name=f"{settings.metadata_actor_name}-jobqueue", namespace=settings.metadata_namespace, lifetime="detached",
        get_if_exists=True, num_cpus=0, max_concurrency=4, resources={"node:__internal_head__": 0.001},
    ).remote(store, interval_s, {"CPU": max_cpus, "GPU": max_gpus, "memory": max_memory}, _dashboard_address())  # fmt: skip
