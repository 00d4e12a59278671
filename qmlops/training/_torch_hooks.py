"""Device selection and per-epoch hooks around the ``fit`` of any Qlib torch model.

Every supported torch model of ``qlib.contrib.model`` (and :class:`qmlops.training._informer.InformerModel`) ends
each epoch (DNN: each evaluation every ``eval_steps`` steps) with ``evals_result["valid"].append(score)``
(``ADD`` and ``TCTS`` do not, and are not supported). :func:`fit_with_hooks`
hands ``fit`` an ``evals_result`` whose "valid" list reports that append, so one mechanism observes every model
without touching its loop. At each epoch end it

1. predicts the validation segment through the model's own ``predict`` and scores it: ``valid_loss`` is the MSE
   and ``valid_ic`` the mean daily Pearson IC over labelled rows; ``train_loss`` is the loss the model's own
   ``test_epoch`` reported on the training data (DNN: its averaged training-step loss);
2. asks the stopper (``update(step, train_loss, valid_loss, valid_metric)`` returning a decision with ``stop``,
   ``reason`` and ``best_step``; without one, the best epoch is the lowest ``valid_loss`` and nothing stops early),
   and keeps a copy of every ``torch.nn.Module`` attribute's ``state_dict`` at the best epoch;
3. calls ``on_epoch(step, metrics)``; and, if the stopper said stop, raises a private exception that ends ``fit``
   cleanly from inside Qlib's loop.

Afterwards the best weights are loaded back, whether our stopper, Qlib's own ``early_stop`` or the epoch budget
ended training, and the outcome (per-epoch metrics, best step, stop reason) is returned.
"""

from __future__ import annotations

import copy
import inspect
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np
import pandas as pd
import torch

from qmlops.exceptions import ValidationError
from qmlops.training._compat import compat_model_class, mean_daily_ic, predict_segment, qlib_fit_context

__all__ = [
    "EpochMetrics",
    "EpochStopper",
    "FitOutcome",
    "create_model",
    "device_kwargs",
    "fit_with_hooks",
    "select_device",
]


# ------------------------------------------------------------------------------------------------ devices
def select_device(prefer: str | None = None) -> str:
    """``"cuda:0"`` when torch sees a GPU, else ``"cpu"``; ``prefer`` ("cpu", "cuda", "cuda:N") overrides.

    Raises ``ValidationError`` for an unknown device or a CUDA device this process cannot see.
    """
    if prefer is None or prefer == "auto":
        return "cuda:0" if torch.cuda.is_available() else "cpu"
    if prefer == "cpu":
        return "cpu"
    if prefer == "cuda" or prefer.startswith("cuda:"):
        index = 0 if prefer == "cuda" else prefer.split(":", 1)[1]
        if not str(index).isdigit():
            raise ValidationError(f"bad CUDA device {prefer!r}", field="device")
        if not torch.cuda.is_available() or int(index) >= torch.cuda.device_count():
            raise ValidationError(f"{prefer!r} requested but torch sees no such GPU", field="device")
        return f"cuda:{int(index)}"
    raise ValidationError(f"unknown device {prefer!r}; use 'cpu', 'cuda' or 'cuda:N'", field="device")


def device_kwargs(device: str) -> dict[str, int]:
    """Qlib's torch models choose their device from ``GPU=<int>``: ``cuda:GPU`` if CUDA is available and
    ``GPU >= 0``, else CPU (``GPU=0`` silently means CPU on a machine without a GPU). Pass ``GPU=-1`` for CPU so the
    choice is explicit. Checked for every supported model; ``DNNModelPytorch`` also accepts a device string.
    (``TabnetModel`` keeps its device as a string, so its ``use_gpu`` is always true; harmless on CPU.)
    """
    if device == "cpu":
        return {"GPU": -1}
    return {"GPU": int(device.split(":", 1)[1]) if ":" in device else 0}


def _accepts(cls: type, name: str) -> bool:
    for klass in cls.__mro__:
        init = klass.__dict__.get("__init__")
        if init is not None and name in inspect.signature(init).parameters:
            return True
    return False


def create_model(model_class: str | type, *, device: str | None = None, **params: Any) -> Any:
    """Instantiate a Qlib torch model (through its compatibility shim) on ``select_device(device)``.

    Adds ``GPU`` from the device and ``n_jobs=0`` (in-process data loading) when the class takes them and the
    caller did not set them.
    """
    cls = compat_model_class(model_class)
    kwargs = dict(params)
    if _accepts(cls, "GPU") and "GPU" not in kwargs:
        kwargs.update(device_kwargs(select_device(device)))
    if _accepts(cls, "n_jobs") and "n_jobs" not in kwargs:
        kwargs["n_jobs"] = 0
    return cls(**kwargs)


# ---------------------------------------------------------------------------------------------- the hooks
class StopDecision(Protocol):
    stop: bool
    reason: str | None
    best_step: int | None


class EpochStopper(Protocol):
    """What :func:`fit_with_hooks` needs from an early stopper (the training core's ``EarlyStopper``)."""

    def update(self, step: int, train_loss: float, valid_loss: float, valid_metric: float) -> Any: ...


@dataclass(frozen=True)
class EpochMetrics:
    step: int
    train_loss: float
    valid_loss: float
    valid_ic: float
    seconds: float

    def as_dict(self) -> dict[str, float]:
        return {
            "train_loss": self.train_loss,
            "valid_loss": self.valid_loss,
            "valid_ic": self.valid_ic,
            "seconds": self.seconds,
        }


@dataclass
class FitOutcome:
    """What happened in one ``fit``: per-epoch metrics, the restored best epoch and why training ended."""

    epochs: list[EpochMetrics] = field(default_factory=list)
    best_step: int | None = None
    stop_reason: str = ""
    stopped_by: str = ""  # "stopper" | "qlib_early_stop" | "max_epochs" | "no_validation"
    evals_result: dict[str, list[float]] = field(default_factory=dict)


class _StopTraining(Exception):
    """Raised from inside Qlib's epoch loop to end ``fit`` when the stopper says so."""


class _ValidLog(list):
    def __init__(self, items: list[Any], on_append: Callable[[], None]) -> None:
        super().__init__(items)
        self._on_append = on_append

    def append(self, item: Any) -> None:
        super().append(item)
        self._on_append()


class _ObservedEvals(dict):
    """An ``evals_result`` whose "valid" list calls back on every append (one append per epoch in every model)."""

    def __init__(self, on_valid: Callable[[], None]) -> None:
        super().__init__()
        self._on_valid = on_valid

    def __setitem__(self, key: str, value: Any) -> None:
        if key == "valid" and isinstance(value, list) and not isinstance(value, _ValidLog):
            value = _ValidLog(value, self._on_valid)
        super().__setitem__(key, value)


def _modules(model: Any) -> dict[str, torch.nn.Module]:
    return {name: value for name, value in vars(model).items() if isinstance(value, torch.nn.Module)}


def _snapshot(model: Any) -> dict[str, dict[str, torch.Tensor]]:
    return {name: copy.deepcopy(module.state_dict()) for name, module in _modules(model).items()}


def _restore(model: Any, snapshot: dict[str, dict[str, torch.Tensor]]) -> None:
    modules = _modules(model)
    for name, state in snapshot.items():
        if name in modules:
            modules[name].load_state_dict(state)


def _max_epochs(model: Any) -> int | None:
    if hasattr(model, "n_epochs"):
        return int(model.n_epochs)
    if hasattr(model, "max_steps") and hasattr(model, "eval_steps"):
        return math.ceil(int(model.max_steps) / int(model.eval_steps))
    return None


def _loss_of(result: Any) -> float:
    """The loss in what a ``test_epoch`` returned: ``(loss, score)``, a metrics dict, or a bare loss."""
    value = result[0] if isinstance(result, tuple) and result else result
    if isinstance(value, dict):
        value = value.get("loss", float("nan"))
    try:
        return float(value)
    except (TypeError, ValueError):
        return float("nan")


class _EpochObserver:
    def __init__(self, model: Any, dataset: Any, on_epoch: Any, stopper: Any) -> None:
        self.model, self.dataset, self.on_epoch, self.stopper = model, dataset, on_epoch, stopper
        self.evals = _ObservedEvals(self.epoch_ended)
        self.outcome = FitOutcome()
        self.best: dict[str, dict[str, torch.Tensor]] | None = None
        self._best_loss = math.inf
        self._test_losses: list[float] = []
        self._labels: pd.Series | None = None
        self._started = time.perf_counter()

    # -- train loss from the model's own test_epoch(train) call
    def watch_test_epoch(self) -> None:
        original = getattr(self.model, "test_epoch", None)
        if original is None:
            return

        def test_epoch(*args: Any, **kwargs: Any) -> Any:
            result = original(*args, **kwargs)
            self._test_losses.append(_loss_of(result))
            return result

        self.model.test_epoch = test_epoch

    def unwatch(self) -> None:
        self.model.__dict__.pop("test_epoch", None)

    def _train_loss(self) -> float:
        if len(self._test_losses) >= 2:  # ... test_epoch(train), test_epoch(valid) just before the append
            return self._test_losses[-2]
        train = self.evals.get("train") or []
        return float(train[-1]) if train and not hasattr(self.model, "test_epoch") else float("nan")

    def _valid_labels(self) -> pd.Series:
        if self._labels is None:
            start, end = self.dataset.segments["valid"]
            # the learn-processed label (normalised per day): what the model is trained to predict
            frame = self.dataset.handler.fetch(slice(start, end), col_set="label", data_key="learn")
            self._labels = frame.iloc[:, 0]
        return self._labels

    def epoch_ended(self) -> None:
        step = len(self.evals["valid"]) - 1
        pred = predict_segment(self.model, self.dataset, "valid")
        label = self._valid_labels().reindex(pred.index)
        ok = np.isfinite(pred.to_numpy(dtype=float)) & np.isfinite(label.to_numpy(dtype=float))
        diff = pred.to_numpy(dtype=float)[ok] - label.to_numpy(dtype=float)[ok]
        valid_loss = float(np.mean(diff**2)) if ok.any() else float("nan")
        valid_ic = mean_daily_ic(pred.to_numpy(), label.to_numpy(), pred.index.get_level_values(0).to_numpy())
        now = time.perf_counter()
        metrics = EpochMetrics(step, self._train_loss(), valid_loss, valid_ic, now - self._started)
        self._started = now
        self.outcome.epochs.append(metrics)

        stop, reason = False, ""
        if self.stopper is not None:
            decision = self.stopper.update(step, metrics.train_loss, valid_loss, valid_ic)
            is_best = decision.best_step == step
            stop, reason = bool(decision.stop), str(decision.reason or "")
        else:
            is_best = valid_loss < self._best_loss
        if is_best or self.best is None:
            self.best = _snapshot(self.model)
            self.outcome.best_step = step
            self._best_loss = min(self._best_loss, valid_loss)
        if self.on_epoch is not None:
            self.on_epoch(step, metrics.as_dict() | {"best_step": self.outcome.best_step})
        if stop:
            raise _StopTraining(reason or "early stopper")


def fit_with_hooks(
    model: Any,
    dataset: Any,
    *,
    on_epoch: Callable[[int, dict[str, Any]], None] | None = None,
    stopper: EpochStopper | None = None,
) -> FitOutcome:
    """Run ``model.fit(dataset)`` observing every epoch; end with the best epoch's weights loaded.

    ``on_epoch(step, metrics)`` gets ``train_loss``, ``valid_loss``, ``valid_ic``, ``seconds`` and ``best_step``.
    ``stopper.update(...)`` decides the best epoch and when to stop (see the module docstring).
    """
    observer = _EpochObserver(model, dataset, on_epoch, stopper)
    observer.watch_test_epoch()
    try:
        with qlib_fit_context() as fit_kwargs:
            try:
                accepted = inspect.signature(model.fit).parameters
                fit_kwargs = {k: v for k, v in fit_kwargs.items() if k in accepted}
                model.fit(dataset, evals_result=observer.evals, **fit_kwargs)
            except _StopTraining as stop:
                observer.outcome.stopped_by, observer.outcome.stop_reason = "stopper", str(stop)
    finally:
        observer.unwatch()
    outcome = observer.outcome
    if observer.best is not None:
        _restore(model, observer.best)
    if not outcome.stopped_by:
        limit = _max_epochs(model)
        if not outcome.epochs:
            outcome.stopped_by, outcome.stop_reason = "no_validation", "no validation segment was scored"
        elif limit is not None and len(outcome.epochs) < limit:
            early_stop = getattr(model, "early_stop", getattr(model, "early_stop_rounds", "?"))
            outcome.stopped_by = "qlib_early_stop"
            outcome.stop_reason = f"Qlib's own early_stop: no improvement for {early_stop} evaluations"
        else:
            outcome.stopped_by, outcome.stop_reason = "max_epochs", f"epoch budget of {limit} reached"
    outcome.evals_result = {key: list(value) for key, value in observer.evals.items()}
    return outcome
