"""Where torch work runs: the CPU or a CUDA device, chosen with a reason that the run record keeps.

Ray schedules GPUs as logical resources: a task, trial or replica that asked for ``num_gpus`` gets GPU ids
(``ray.get_gpu_ids()``) and ``CUDA_VISIBLE_DEVICES`` set to them, whether or not a GPU and a CUDA build of torch
are there. So ``auto`` uses CUDA only when Ray assigned a GPU (inside a Ray worker) *and* torch sees a CUDA device,
and says which it chose and why; outside Ray, torch's view alone decides. ``cuda`` with no usable GPU is refused
with a one-line :class:`~qmlops.exceptions.ValidationError` before any work.

:func:`decide_device` is the pure rule over what was observed; :func:`choose_device` observes this process.
"""

from __future__ import annotations

import os
import sys
from dataclasses import asdict, dataclass
from typing import Any

from qmlops.exceptions import ValidationError

__all__ = ["DEVICES", "DeviceChoice", "choose_device", "decide_device", "observe_gpus"]

DEVICES = ("auto", "cpu", "cuda")


@dataclass(frozen=True)
class DeviceChoice:
    """The device chosen (``cpu`` or ``cuda:N``), why, and what was observed when choosing."""

    requested: str
    device: str
    reason: str
    ray_gpu_ids: list[str] | None  # None: not inside a Ray worker
    cuda_visible_devices: str | None
    torch_cuda_devices: int

    @property
    def is_cuda(self) -> bool:
        return self.device.startswith("cuda")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _ids(ids: list[str] | None) -> str:
    return "[" + ", ".join(ids or []) + "]"


def decide_device(
    requested: str,
    *,
    ray_gpu_ids: list[str] | None,
    torch_cuda_devices: int,
    cuda_visible_devices: str | None = None,
) -> DeviceChoice:
    """The device for ``requested`` (auto, cpu, cuda or cuda:N) given what this process sees.

    ``ray_gpu_ids`` are the GPU ids Ray assigned to the current task/actor (None outside a Ray worker);
    ``torch_cuda_devices`` is ``torch.cuda.device_count()``. Raises ``ValidationError`` (field ``device``) for an
    unknown name or a CUDA request nothing here can serve.
    """
    requested = (requested or "auto").strip().lower()
    ids = list(ray_gpu_ids) if ray_gpu_ids is not None else None

    def made(device: str, reason: str) -> DeviceChoice:
        return DeviceChoice(requested, device, reason, ids, cuda_visible_devices, int(torch_cuda_devices))

    in_ray = ray_gpu_ids is not None
    visible = f" (CUDA_VISIBLE_DEVICES={cuda_visible_devices})" if cuda_visible_devices is not None else ""
    if requested == "cpu":
        return made("cpu", "cpu requested")
    if requested == "cuda" or requested.startswith("cuda:"):
        index = requested.partition(":")[2] or "0"
        if not index.isdigit():
            raise ValidationError(f"bad CUDA device {requested!r}; use cuda or cuda:N", field="device")
        if in_ray and not ray_gpu_ids:
            raise ValidationError(f"{requested} requested but Ray assigned no GPU to this task; ask for num_gpus > 0",
                                  field="device")  # fmt: skip
        if torch_cuda_devices < 1:
            where = f"Ray assigned GPU {_ids(ray_gpu_ids)}{visible} but " if ray_gpu_ids else ""
            raise ValidationError(f"{requested} requested but {where}torch sees no CUDA device (no GPU, no driver "
                                  "or a CPU-only torch build)", field="device")  # fmt: skip
        if int(index) >= torch_cuda_devices:
            raise ValidationError(f"{requested} requested but torch sees {torch_cuda_devices} CUDA device(s)",
                                  field="device")  # fmt: skip
        return made(f"cuda:{int(index)}", "cuda requested")
    if requested != "auto":
        raise ValidationError(f"unknown device {requested!r}; use auto, cpu, cuda or cuda:N", field="device")
    if in_ray and not ray_gpu_ids:
        return made("cpu", "Ray assigned no GPU to this task")
    if in_ray and torch_cuda_devices < 1:
        return made("cpu", f"CPU fallback: Ray assigned GPU {_ids(ray_gpu_ids)}{visible} but torch sees no CUDA "
                    "device (no GPU, no driver or a CPU-only torch build)")  # fmt: skip
    if in_ray:
        return made("cuda:0", f"Ray assigned GPU {_ids(ray_gpu_ids)}{visible} and torch sees "
                    f"{torch_cuda_devices} CUDA device(s)")  # fmt: skip
    if torch_cuda_devices < 1:
        return made("cpu", "torch sees no CUDA device")
    return made("cuda:0", f"torch sees {torch_cuda_devices} CUDA device(s){visible}")


def _ray_gpu_ids() -> list[str] | None:
    """GPU ids Ray assigned to this worker's current task or actor; None in a driver or without Ray."""
    ray = sys.modules.get("ray")  # never import Ray just to learn that this process is not one of its workers
    if ray is None or not ray.is_initialized():
        return None
    try:
        if ray.get_runtime_context().worker.mode != ray.WORKER_MODE:
            return None
        return [str(i) for i in ray.get_gpu_ids()]
    except Exception:  # no worker context (e.g. a thread of a shut-down worker): treat as outside Ray
        return None


def observe_gpus() -> dict[str, Any]:
    """What this process sees: Ray's assigned GPU ids, ``CUDA_VISIBLE_DEVICES`` and torch's CUDA device count."""
    import torch

    return {"ray_gpu_ids": _ray_gpu_ids(), "cuda_visible_devices": os.environ.get("CUDA_VISIBLE_DEVICES"),
            "torch_cuda_devices": int(torch.cuda.device_count()) if torch.cuda.is_available() else 0}  # fmt: skip


def choose_device(requested: str = "auto") -> DeviceChoice:
    """:func:`decide_device` over what this process observes now."""
    return decide_device(requested, **observe_gpus())
