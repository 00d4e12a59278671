"""Early-stopping strategies, selectable per run and combinable, for boosting rounds and epochs alike.

The engine calls :meth:`EarlyStopper.update` once per evaluation (a boosting round or an epoch) with the train
loss, the valid loss and the valid metric (the mean daily IC, higher is better). A :class:`BestTracker` follows
the monitored value (``valid_loss``, minimised, or ``valid_metric``, maximised): an evaluation improves on the
best when it beats it by more than ``min_delta``; non-finite values never improve. Every strategy sees every
evaluation (so its state stays current for progress display); the first strategy to give a reason stops the run.

- :class:`Patience` (``patience``, ``min_delta``): stop after ``patience`` evaluations without an improvement of
  more than ``min_delta`` (LightGBM's ``early_stopping(patience)`` is ``Patience(patience, 0)`` on the valid loss).
- :class:`Overfitting` (``k``, ``gap_ratio``): stop when, ``k`` evaluations in a row, the valid loss rose while the
  train loss fell (each against the previous evaluation); or, with ``gap_ratio``, as soon as
  ``valid_loss / train_loss`` exceeds it (checked only when the train loss is positive and finite).
- :class:`AdaptivePatience` (``initial``, ``grow``, ``shrink``, ``min_patience``, ``max_patience``): patience
  starts at ``initial``; each improving evaluation adds ``grow`` (capped at ``max_patience``), each stalled one
  subtracts ``shrink`` (floored at ``min_patience``); stop when evaluations since the best reach the patience.
  Long productive runs earn slack; a run that stalls is cut sooner than a fixed patience would.
- :class:`WallTime` (``seconds``): stop once the run has used its time budget.

The best step is the evaluation with the best monitored value (the first evaluation until a finite one is seen);
the engine restores that step's weights (or cuts the booster back to it) after training ends.
"""

from __future__ import annotations

import math
import time
from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar

from qmlops.exceptions import ValidationError

__all__ = [
    "AdaptivePatience",
    "BestTracker",
    "EarlyStopper",
    "Evaluation",
    "Overfitting",
    "Patience",
    "STRATEGIES",
    "StopDecision",
    "Strategy",
    "WallTime",
    "parse_early_stopping",
]

MONITORS = {"valid_loss": "valid_loss", "valid_metric": "valid_metric", "valid_ic": "valid_metric"}


@dataclass(frozen=True)
class StopDecision:
    stop: bool
    reason: str | None
    best_step: int | None
    state: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Evaluation:
    step: int
    train_loss: float
    valid_loss: float
    valid_metric: float
    elapsed: float


def _finite(x: float) -> bool:
    return x is not None and math.isfinite(x)


class BestTracker:
    """The best monitored value so far, where it was, and how long ago."""

    def __init__(self, monitor: str = "valid_loss", min_delta: float = 0.0) -> None:
        self.monitor = MONITORS[monitor]
        self.mode = "min" if self.monitor == "valid_loss" else "max"
        self.min_delta = float(min_delta)
        self.best_value = math.nan
        self.best_step: int | None = None
        self.since_best = 0
        self.improved = False

    def value(self, ev: Evaluation) -> float:
        return float(getattr(ev, self.monitor))

    def beats(self, value: float, best: float, min_delta: float) -> bool:
        if not _finite(value):
            return False
        if not _finite(best):
            return True
        return value < best - min_delta if self.mode == "min" else value > best + min_delta

    def update(self, ev: Evaluation) -> None:
        value = self.value(ev)
        self.improved = self.beats(value, self.best_value, self.min_delta)
        if self.improved:
            self.best_value, self.best_step, self.since_best = value, ev.step, 0
        elif self.best_step is None:  # nothing finite yet: the first evaluation stands as the best
            self.best_step, self.since_best = ev.step, 0
        else:
            self.since_best += 1


class Strategy(ABC):
    name: ClassVar[str]

    @abstractmethod
    def update(self, ev: Evaluation, tracker: BestTracker) -> str | None: ...

    @abstractmethod
    def state(self) -> dict[str, Any]: ...

    @abstractmethod
    def params(self) -> dict[str, Any]: ...


def _positive_int(value: Any, field_name: str, minimum: int = 1) -> int:
    try:
        number = int(value)
    except (TypeError, ValueError):
        raise ValidationError(f"{field_name.rsplit('.', 1)[-1]} must be an integer, got {value!r}",
                              field=field_name) from None  # fmt: skip
    if number < minimum or number != float(value):
        raise ValidationError(f"{field_name.rsplit('.', 1)[-1]} must be an integer >= {minimum}, got {value!r}",
                              field=field_name)  # fmt: skip
    return number


def _non_negative(value: Any, field_name: str) -> float:
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise ValidationError(f"{field_name.rsplit('.', 1)[-1]} must be a number, got {value!r}",
                              field=field_name) from None  # fmt: skip
    if not math.isfinite(number) or number < 0:
        raise ValidationError(
            f"{field_name.rsplit('.', 1)[-1]} must be >= 0, got {value!r}", field=field_name
        )
    return number


class Patience(Strategy):
    name = "patience"

    def __init__(self, patience: int = 10, min_delta: float = 0.0) -> None:
        self.patience = _positive_int(patience, "early_stopping.patience")
        self.min_delta = _non_negative(min_delta, "early_stopping.min_delta")
        self._since = 0
        self._best = math.nan

    def update(self, ev: Evaluation, tracker: BestTracker) -> str | None:
        value = tracker.value(ev)
        if tracker.beats(value, self._best, self.min_delta):
            self._best, self._since = value, 0
        else:
            self._since += 1
        if self._since >= self.patience:
            return (f"patience: {tracker.monitor} did not improve by more than {self.min_delta:g} for "
                    f"{self._since} evaluations (best {tracker.best_value:.6g} at step {tracker.best_step})")  # fmt: skip
        return None

    def state(self) -> dict[str, Any]:
        return {"since_best": self._since, "patience": self.patience}

    def params(self) -> dict[str, Any]:
        return {"patience": self.patience, "min_delta": self.min_delta}


class Overfitting(Strategy):
    name = "overfitting"

    def __init__(self, k: int = 5, gap_ratio: float | None = None) -> None:
        self.k = _positive_int(k, "early_stopping.overfitting.k")
        if gap_ratio is not None:
            gap_ratio = _non_negative(gap_ratio, "early_stopping.overfitting.gap_ratio")
            if gap_ratio <= 1.0:
                raise ValidationError(
                    f"gap_ratio must be > 1, got {gap_ratio:g}", field="early_stopping.overfitting.gap_ratio"
                )
        self.gap_ratio = gap_ratio
        self._run = 0
        self._prev: Evaluation | None = None
        self._ratio = math.nan

    def update(self, ev: Evaluation, tracker: BestTracker) -> str | None:
        prev, self._prev = self._prev, ev
        if prev is not None and all(
            _finite(x) for x in (ev.train_loss, ev.valid_loss, prev.train_loss, prev.valid_loss)
        ):
            diverging = ev.valid_loss > prev.valid_loss and ev.train_loss < prev.train_loss
            self._run = self._run + 1 if diverging else 0
        if self._run >= self.k:
            return (
                f"overfitting: valid_loss rose while train_loss fell for {self._run} consecutive evaluations"
            )
        if (
            self.gap_ratio is not None
            and _finite(ev.train_loss)
            and ev.train_loss > 0
            and _finite(ev.valid_loss)
        ):
            self._ratio = ev.valid_loss / ev.train_loss
            if self._ratio > self.gap_ratio:
                return f"overfitting: valid_loss/train_loss = {self._ratio:.3f} > {self.gap_ratio:g}"
        return None

    def state(self) -> dict[str, Any]:
        out: dict[str, Any] = {"diverging_run": self._run, "k": self.k}
        if self.gap_ratio is not None:
            out.update(
                gap=None if not _finite(self._ratio) else round(self._ratio, 4), gap_ratio=self.gap_ratio
            )
        return out

    def params(self) -> dict[str, Any]:
        return {"k": self.k, "gap_ratio": self.gap_ratio}


class AdaptivePatience(Strategy):
    name = "adaptive"

    def __init__(
        self,
        initial: int = 5,
        grow: int = 2,
        shrink: int = 1,
        min_patience: int = 2,
        max_patience: int = 50,
        min_delta: float = 0.0,
    ) -> None:
        f = "early_stopping.adaptive."
        self.min_patience = _positive_int(min_patience, f + "min_patience")
        self.max_patience = _positive_int(max_patience, f + "max_patience")
        if self.max_patience < self.min_patience:
            raise ValidationError("max_patience must be >= min_patience", field=f + "max_patience")
        self.initial = _positive_int(initial, f + "initial")
        if not self.min_patience <= self.initial <= self.max_patience:
            raise ValidationError(f"initial must lie in [min_patience, max_patience] = [{self.min_patience}, "
                                  f"{self.max_patience}], got {self.initial}", field=f + "initial")  # fmt: skip
        self.grow = _positive_int(grow, f + "grow", minimum=0)
        self.shrink = _positive_int(shrink, f + "shrink", minimum=0)
        self.min_delta = _non_negative(min_delta, f + "min_delta")
        self.patience = self.initial
        self.peak = self.initial
        self._since = 0
        self._best = math.nan

    def update(self, ev: Evaluation, tracker: BestTracker) -> str | None:
        value = tracker.value(ev)
        if tracker.beats(value, self._best, self.min_delta):
            self._best, self._since = value, 0
            self.patience = min(self.max_patience, self.patience + self.grow)
            self.peak = max(self.peak, self.patience)
        else:
            self._since += 1
            self.patience = max(self.min_patience, self.patience - self.shrink)
        if self._since >= self.patience:
            return (f"adaptive patience: no improvement for {self._since} evaluations (patience shrank from "
                    f"{self.peak} to {self.patience})")  # fmt: skip
        return None

    def state(self) -> dict[str, Any]:
        return {"since_best": self._since, "patience": self.patience}

    def params(self) -> dict[str, Any]:
        return {"initial": self.initial, "grow": self.grow, "shrink": self.shrink, "min_patience": self.min_patience,
                "max_patience": self.max_patience, "min_delta": self.min_delta}  # fmt: skip


class WallTime(Strategy):
    name = "walltime"

    def __init__(self, seconds: float) -> None:
        self.seconds = _non_negative(seconds, "early_stopping.walltime.seconds")
        if self.seconds == 0:
            raise ValidationError("seconds must be > 0", field="early_stopping.walltime.seconds")
        self._elapsed = 0.0

    def update(self, ev: Evaluation, tracker: BestTracker) -> str | None:
        self._elapsed = ev.elapsed
        if ev.elapsed >= self.seconds:
            return f"walltime: {ev.elapsed:.1f} s >= budget {self.seconds:g} s"
        return None

    def state(self) -> dict[str, Any]:
        return {"elapsed": round(self._elapsed, 2), "budget": self.seconds}

    def params(self) -> dict[str, Any]:
        return {"seconds": self.seconds}


STRATEGIES: dict[str, type[Strategy]] = {
    s.name: s for s in (Patience, Overfitting, AdaptivePatience, WallTime)
}


class EarlyStopper:
    """Combines strategies over one :class:`BestTracker`; ``update`` once per evaluation."""

    def __init__(
        self, strategies: Sequence[Strategy] = (), *, monitor: str = "valid_loss", min_delta: float = 0.0
    ) -> None:
        if monitor not in MONITORS:
            raise ValidationError(f"monitor must be one of {', '.join(MONITORS)}; got {monitor!r}",
                                  field="early_stopping.monitor")  # fmt: skip
        self.monitor = MONITORS[monitor]
        self.min_delta = _non_negative(min_delta, "early_stopping.min_delta")
        self.strategies = list(strategies)
        self.tracker = BestTracker(monitor, self.min_delta)
        self.history: list[Evaluation] = []
        self.stopped = False
        self.reason: str | None = None
        self.last_decision: StopDecision | None = None
        self._started = time.monotonic()

    @property
    def best_step(self) -> int | None:
        return self.tracker.best_step

    def update(
        self,
        step: int,
        train_loss: float,
        valid_loss: float,
        valid_metric: float,
        elapsed: float | None = None,
    ) -> StopDecision:
        ev = Evaluation(int(step), float(train_loss), float(valid_loss), float(valid_metric),
                        time.monotonic() - self._started if elapsed is None else float(elapsed))  # fmt: skip
        self.history.append(ev)
        self.tracker.update(ev)
        reasons = [s.update(ev, self.tracker) for s in self.strategies]
        reason = next((r for r in reasons if r), None)
        if reason and not self.stopped:
            self.stopped, self.reason = True, reason
        state: dict[str, Any] = {"monitor": self.monitor, "best": None if not _finite(self.tracker.best_value)
                                 else self.tracker.best_value, "best_step": self.tracker.best_step}  # fmt: skip
        state["strategies"] = {}
        for s in self.strategies:  # flat keys for a one-line display (first strategy wins), nested for detail
            state.update({k: v for k, v in s.state().items() if k not in state})
            state["strategies"][s.name] = s.state()
        self.last_decision = StopDecision(bool(reason), reason, self.tracker.best_step, state)
        return self.last_decision

    def describe(self) -> dict[str, Any]:
        return {"monitor": self.monitor, "min_delta": self.min_delta,
                "strategies": [{"name": s.name, **s.params()} for s in self.strategies]}  # fmt: skip

    def to_config(self) -> dict[str, Any]:
        out: dict[str, Any] = {"monitor": self.monitor, "min_delta": self.min_delta}
        if not any(isinstance(s, Patience) for s in self.strategies):
            out["patience"] = False
        for s in self.strategies:
            out[s.name] = s.params()
        return out

    @classmethod
    def from_config(cls, config: Mapping[str, Any] | None) -> EarlyStopper:
        """``{"monitor", "min_delta", "patience", "overfitting", "adaptive", "walltime"}``; None/{} -> Patience(10).

        A strategy's value is a mapping of its parameters, True (defaults) or False/None (off); ``patience`` also
        takes an int, ``walltime`` a number of seconds.
        """
        config = dict(config or {})
        monitor = config.pop("monitor", "valid_loss")
        patience_cfg = config.get("patience")
        default_delta = patience_cfg.get("min_delta", 0.0) if isinstance(patience_cfg, Mapping) else 0.0
        min_delta = config.pop(
            "min_delta", default_delta
        )  # what counts as an improvement, for the best step too
        unknown = sorted(set(config) - set(STRATEGIES))
        if unknown:
            raise ValidationError(f"unknown early-stopping option {unknown[0]!r}; known: monitor, min_delta, "
                                  f"{', '.join(STRATEGIES)}", field=f"early_stopping.{unknown[0]}")  # fmt: skip
        if "patience" not in config:
            config["patience"] = True
        strategies: list[Strategy] = []
        for name, cls_ in STRATEGIES.items():
            value = config.get(name)
            if value is None or value is False:
                continue
            if value is True:
                kwargs: dict[str, Any] = {}
            elif isinstance(value, Mapping):
                kwargs = dict(value)
            elif name == "patience" and isinstance(value, int | float):
                kwargs = {"patience": value}
            elif name == "walltime" and isinstance(value, int | float):
                kwargs = {"seconds": value}
            elif name == "overfitting" and isinstance(value, int | float):
                kwargs = {"k": value}
            else:
                raise ValidationError(f"{name} takes a mapping of parameters, true or false; got {value!r}",
                                      field=f"early_stopping.{name}")  # fmt: skip
            if name == "walltime" and "seconds" not in kwargs:
                raise ValidationError("walltime needs seconds", field="early_stopping.walltime.seconds")
            if name == "patience" and "min_delta" not in kwargs:
                kwargs["min_delta"] = min_delta
            try:
                strategies.append(cls_(**kwargs))
            except TypeError as exc:
                raise ValidationError(f"{name}: {exc}", field=f"early_stopping.{name}") from None
        return cls(strategies, monitor=monitor, min_delta=min_delta)


_ALIASES = {"overfit": ("overfitting", "k"), "gap": ("overfitting", "gap_ratio"), "adaptive": ("adaptive", None),
            "walltime": ("walltime", "seconds"), "patience": ("patience", "patience")}  # fmt: skip


def parse_early_stopping(spec: str) -> dict[str, Any]:
    """CLI syntax -> config: ``patience=10,min_delta=0.001,overfit=5,gap=1.5,adaptive,walltime=300,monitor=valid_ic``.

    ``adaptive`` may carry parameters as ``adaptive.initial=5`` etc.; ``none`` turns early stopping off.
    """
    config: dict[str, Any] = {}
    text = spec.strip()
    if text.lower() in ("none", "off", ""):
        return {"patience": False}
    for item in text.split(","):
        key, sep, raw = item.strip().partition("=")
        key = key.strip().lower()
        value: Any = raw.strip()
        if sep:
            try:
                value = int(value)
            except ValueError:
                try:
                    value = float(value)
                except ValueError:
                    pass
        if key == "monitor":
            config["monitor"] = value
        elif key == "min_delta":
            config["min_delta"] = value
        elif key.startswith("adaptive."):
            adaptive = config.setdefault("adaptive", {})
            if not isinstance(adaptive, dict):
                adaptive = config["adaptive"] = {}
            adaptive[key.split(".", 1)[1]] = value
        elif key in _ALIASES:
            strategy, param = _ALIASES[key]
            if param is None:
                config.setdefault(strategy, {})
            else:
                if not sep:
                    raise ValidationError(
                        f"{key} needs a value, e.g. {key}=10", field=f"early_stopping.{key}"
                    )
                current = config.get(strategy)
                config[strategy] = {**(current if isinstance(current, dict) else {}), param: value}
        else:
            raise ValidationError(f"unknown early-stopping item {item.strip()!r}; use patience=, min_delta=, overfit=, "
                                  "gap=, adaptive, walltime=, monitor= or none", field=f"early_stopping.{key}")  # fmt: skip
    if "adaptive" in config and "patience" not in config:
        config["patience"] = False  # adaptive patience replaces the fixed one unless both are asked for
    return config
