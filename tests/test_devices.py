"""The device rule: CUDA under ``auto`` only when Ray assigned a GPU and torch sees one; a refused ``cuda`` names
the field and says why; what this CPU-only process observes (torch sees no CUDA device)."""

from __future__ import annotations

import pytest

from qmlops.devices import choose_device, decide_device, observe_gpus
from qmlops.exceptions import ValidationError


@pytest.mark.parametrize(
    ("requested", "ray_ids", "torch_n", "device", "reason"),
    [
        ("auto", None, 0, "cpu", "torch sees no CUDA device"),
        ("auto", None, 2, "cuda:0", "torch sees 2 CUDA device(s)"),
        ("auto", [], 1, "cpu", "Ray assigned no GPU to this task"),
        (
            "auto",
            ["1"],
            0,
            "cpu",
            "CPU fallback: Ray assigned GPU [1] (CUDA_VISIBLE_DEVICES=1) but torch sees no",
        ),
        ("auto", ["1"], 1, "cuda:0", "Ray assigned GPU [1] (CUDA_VISIBLE_DEVICES=1) and torch sees 1"),
        ("cpu", ["0"], 1, "cpu", "cpu requested"),
        ("cuda", ["0"], 1, "cuda:0", "cuda requested"),
        ("cuda:1", None, 2, "cuda:1", "cuda requested"),
        ("AUTO", None, 0, "cpu", "torch sees no CUDA device"),
    ],
)
def test_auto_uses_cuda_only_with_an_assigned_and_visible_gpu(
    requested: str, ray_ids: list[str] | None, torch_n: int, device: str, reason: str
) -> None:
    visible = ",".join(ray_ids) if ray_ids else None
    choice = decide_device(
        requested, ray_gpu_ids=ray_ids, torch_cuda_devices=torch_n, cuda_visible_devices=visible
    )
    assert choice.device == device and choice.reason.startswith(reason), choice
    assert choice.is_cuda == device.startswith("cuda")
    assert choice.to_dict()["ray_gpu_ids"] == ray_ids and choice.to_dict()["torch_cuda_devices"] == torch_n


@pytest.mark.parametrize(
    ("requested", "ray_ids", "torch_n", "message"),
    [
        ("cuda", None, 0, "cuda requested but torch sees no CUDA device"),
        (
            "cuda",
            ["0"],
            0,
            "cuda requested but Ray assigned GPU [0] (CUDA_VISIBLE_DEVICES=0) but torch sees no",
        ),
        ("cuda", [], 1, "Ray assigned no GPU to this task; ask for num_gpus > 0"),
        ("cuda:3", None, 2, "torch sees 2 CUDA device(s)"),
        ("cuda:x", None, 2, "bad CUDA device 'cuda:x'"),
        ("tpu", None, 0, "unknown device 'tpu'"),
    ],
)
def test_unusable_requests_fail_naming_the_device_field(
    requested: str, ray_ids: list[str] | None, torch_n: int, message: str
) -> None:
    visible = ",".join(ray_ids) if ray_ids else None
    with pytest.raises(ValidationError) as err:
        decide_device(
            requested, ray_gpu_ids=ray_ids, torch_cuda_devices=torch_n, cuda_visible_devices=visible
        )
    assert err.value.field == "device" and message in str(err.value) and "\n" not in str(err.value)


def test_this_process_sees_no_cuda_and_falls_back_to_the_cpu() -> None:
    """This machine has no GPU: the real observation says so, and ``cuda`` is refused with the reason."""
    seen = observe_gpus()
    if seen["torch_cuda_devices"]:
        pytest.skip("a CUDA device is visible here; the GPU path is exercised by bench/gpu_smoke.py")
    assert seen["ray_gpu_ids"] is None  # the test process is a driver, not a Ray worker
    assert choose_device("auto").device == "cpu"
    with pytest.raises(ValidationError, match="torch sees no CUDA device"):
        choose_device("cuda")
