"""What a planted market is made of: its signal terms, their weights and strength, regimes, and the market.

A :class:`PlantedSpec` is plain data (frozen dataclasses, a dict form for configs, YAML and version records);
validation happens here, once, and every error names the field. The generator is
:func:`qmlops.data.generate_planted`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from qmlops.exceptions import ValidationError

__all__ = ["SignalTerm", "SIGNAL_TERMS", "SignalSpec", "Regime", "PlantedSpec", "parse_signal"]


@dataclass(frozen=True)
class SignalTerm:
    """One ingredient of the planted signal: a function of an instrument's own past bars.

    ``compute(log_close, volume)`` gets the history up to and including day t (rows = days, columns =
    instruments; ``log_close`` has at least ``lookback + 1`` rows, ``volume`` at least ``lookback``) and returns
    the raw term for day t, one value per instrument. ``feature`` names the Alpha158 feature that expresses it.
    """

    name: str
    lookback: int
    feature: str
    description: str
    compute: Callable[[np.ndarray, np.ndarray], np.ndarray]


def _reversal_5(log_close: np.ndarray, volume: np.ndarray) -> np.ndarray:
    return -(log_close[-1] - log_close[-6])


def _momentum_20(log_close: np.ndarray, volume: np.ndarray) -> np.ndarray:
    return log_close[-1] - log_close[-21]


def _volume_shock_5(log_close: np.ndarray, volume: np.ndarray) -> np.ndarray:
    return np.log(volume[-1]) - np.log(volume[-5:].mean(axis=0))


SIGNAL_TERMS: dict[str, SignalTerm] = {
    t.name: t
    for t in (
        SignalTerm("reversal_5", 5, "ROC5", "minus the 5-day log return (losers bounce)", _reversal_5),
        SignalTerm("momentum_20", 20, "ROC20", "the 20-day log return (winners keep winning)", _momentum_20),
        SignalTerm("volume_shock_5", 5, "VMA5", "log of today's volume over its 5-day mean", _volume_shock_5),
    )
}
MAX_LOOKBACK = max(t.lookback for t in SIGNAL_TERMS.values())


@dataclass(frozen=True)
class SignalSpec:
    """The planted signal: ``z(sum_k weight_k * z(term_k))`` (``z`` = cross-sectional z-score per day), scaled so
    its expected daily Pearson IC with the label (Qlib's LABEL0) is ``strength``."""

    weights: Mapping[str, float] = field(default_factory=lambda: {"reversal_5": 1.0, "volume_shock_5": -0.5})
    strength: float = 0.1

    def __post_init__(self) -> None:
        if not self.weights:
            raise ValidationError("needs at least one term", field="signal.weights")
        for name, weight in self.weights.items():
            if name not in SIGNAL_TERMS:
                raise ValidationError(
                    f"unknown term {name!r}; known: {', '.join(SIGNAL_TERMS)}", field="signal.weights"
                )
            if not np.isfinite(weight):
                raise ValidationError(f"weight of {name} must be finite", field="signal.weights")
        if all(w == 0 for w in self.weights.values()):
            raise ValidationError("at least one weight must be non-zero", field="signal.weights")
        if not (0.0 <= self.strength < 1.0):
            raise ValidationError(f"must be in [0, 1), got {self.strength}", field="signal.strength")
        object.__setattr__(self, "weights", {k: float(v) for k, v in self.weights.items()})

    def to_dict(self) -> dict[str, Any]:
        return {"weights": dict(self.weights), "strength": self.strength}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], *, where: str = "signal") -> SignalSpec:
        if not isinstance(data, Mapping):
            raise ValidationError("expected a mapping with weights and strength", field=where)
        unknown = set(data) - {"weights", "strength"}
        if unknown:
            raise ValidationError(f"unknown key(s) {sorted(unknown)}; use weights, strength", field=where)
        weights = data.get("weights", {"reversal_5": 1.0, "volume_shock_5": -0.5})
        if not isinstance(weights, Mapping):
            raise ValidationError("weights must map term names to numbers", field=f"{where}.weights")
        try:
            return cls({str(k): float(v) for k, v in weights.items()}, float(data.get("strength", 0.1)))
        except (TypeError, ValueError) as exc:
            raise ValidationError(f"not a number: {exc}", field=where) from None


@dataclass(frozen=True)
class Regime:
    """From output day ``start_day`` (0-based) on, the signal is ``signal``."""

    start_day: int
    signal: SignalSpec

    def to_dict(self) -> dict[str, Any]:
        return {"start_day": self.start_day, "signal": self.signal.to_dict()}


@dataclass(frozen=True)
class PlantedSpec:
    """A seeded synthetic market with a planted cross-sectional signal.

    Daily log return of instrument i on day t: ``beta_i * m_t + a_{t-2} * s_{i,t-2} + sigma_i * e_{i,t}``, where
    ``m`` is the market factor (``market_vol``), ``sigma_i`` is drawn from ``noise_vol`` (low, high), ``s`` is the
    signal of the regime in force on day t-2 (computed from bars up to t-2), and ``a`` makes its expected IC with
    ``close[t]/close[t-1] - 1`` (LABEL0 of day t-2) equal the regime's strength. Regime 0 is ``signal`` from day 0;
    each entry of ``regimes`` starts a new one.
    """

    n_instruments: int = 100
    n_days: int = 250
    seed: int = 0
    signal: SignalSpec = field(default_factory=SignalSpec)
    regimes: Sequence[Regime] = ()
    market_vol: float = 0.01
    noise_vol: tuple[float, float] = (0.01, 0.03)
    start: str = "2015-01-02"

    def __post_init__(self) -> None:
        if self.n_instruments < 2:
            raise ValidationError("must be at least 2 (a cross-section)", field="n_instruments")
        if self.n_days < 3:
            raise ValidationError("must be at least 3", field="n_days")
        if not (0.0 <= self.market_vol < 0.2):
            raise ValidationError(f"must be in [0, 0.2), got {self.market_vol}", field="market_vol")
        low, high = self.noise_vol
        if not (0.0 < low <= high < 0.2):
            raise ValidationError(f"need 0 < low <= high < 0.2, got {self.noise_vol}", field="noise_vol")
        regimes = tuple(sorted(self.regimes, key=lambda r: r.start_day))
        days = [r.start_day for r in regimes]
        if len(set(days)) != len(days):
            raise ValidationError("two regimes start on the same day", field="regimes")
        for r in regimes:
            if not (0 < r.start_day < self.n_days):
                raise ValidationError(
                    f"regime start day {r.start_day} is outside 1..{self.n_days - 1}", field="regimes"
                )
        object.__setattr__(self, "regimes", regimes)
        object.__setattr__(self, "noise_vol", (float(low), float(high)))

    @property
    def signals(self) -> list[SignalSpec]:
        """The signal of regime 0, 1, ..."""
        return [self.signal, *(r.signal for r in self.regimes)]

    def regime_starts(self) -> list[int]:
        return [0, *(r.start_day for r in self.regimes)]

    def regime_of(self, days: np.ndarray) -> np.ndarray:
        """Regime index of each output day (0-based day numbers)."""
        return np.searchsorted(np.array(self.regime_starts()), days, side="right") - 1

    def to_dict(self) -> dict[str, Any]:
        return {
            "n_instruments": self.n_instruments,
            "n_days": self.n_days,
            "seed": self.seed,
            "signal": self.signal.to_dict(),
            "regimes": [r.to_dict() for r in self.regimes],
            "market_vol": self.market_vol,
            "noise_vol": list(self.noise_vol),
            "start": self.start,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> PlantedSpec:
        known = {"n_instruments", "n_days", "seed", "signal", "regimes", "market_vol", "noise_vol", "start"}
        unknown = set(data) - known
        if unknown:
            raise ValidationError(
                f"unknown option(s) {sorted(unknown)}; known: {sorted(known)}", field="spec"
            )
        kwargs: dict[str, Any] = {k: v for k, v in data.items() if k not in ("signal", "regimes")}
        if "signal" in data:
            sig = data["signal"]
            kwargs["signal"] = sig if isinstance(sig, SignalSpec) else SignalSpec.from_dict(sig)
        regimes = []
        for i, r in enumerate(data.get("regimes", ()) or ()):
            if isinstance(r, Regime):
                regimes.append(r)
                continue
            if not isinstance(r, Mapping) or "start_day" not in r or "signal" not in r:
                raise ValidationError(f"regime {i}: expected start_day and signal", field="regimes")
            sig = r["signal"]
            regimes.append(
                Regime(
                    _int(r["start_day"], "regimes"),
                    sig if isinstance(sig, SignalSpec) else SignalSpec.from_dict(sig, where=f"regimes[{i}]"),
                )
            )
        kwargs["regimes"] = tuple(regimes)
        for name in ("n_instruments", "n_days", "seed"):
            if name in kwargs:
                kwargs[name] = _int(kwargs[name], name)
        for name in ("market_vol",):
            if name in kwargs:
                kwargs[name] = _float(kwargs[name], name)
        if "noise_vol" in kwargs:
            nv = kwargs["noise_vol"]
            if not isinstance(nv, Sequence) or isinstance(nv, str) or len(nv) != 2:
                raise ValidationError("expected [low, high]", field="noise_vol")
            kwargs["noise_vol"] = (_float(nv[0], "noise_vol"), _float(nv[1], "noise_vol"))
        if "start" in kwargs:
            kwargs["start"] = str(kwargs["start"])
        return cls(**kwargs)


def _int(value: Any, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int | np.integer | str):
        raise ValidationError(f"expected an integer, got {value!r}", field=name)
    try:
        return int(value)
    except ValueError:
        raise ValidationError(f"expected an integer, got {value!r}", field=name) from None


def _float(value: Any, name: str) -> float:
    try:
        out = float(value)
    except (TypeError, ValueError):
        raise ValidationError(f"expected a number, got {value!r}", field=name) from None
    if not np.isfinite(out):
        raise ValidationError(f"expected a finite number, got {value!r}", field=name)
    return out


def parse_signal(text: str, *, where: str = "signal") -> SignalSpec:
    """``term=weight,...[,strength=x]`` (e.g. ``momentum_20=1,strength=0.08``) as a :class:`SignalSpec`."""
    weights: dict[str, float] = {}
    strength = 0.1
    for item in (p.strip() for p in text.split(",")):
        if not item:
            continue
        key, sep, value = item.partition("=")
        if not sep:
            raise ValidationError(f"expected term=weight, got {item!r}", field=where)
        number = _float(value.strip(), where)
        if key.strip() == "strength":
            strength = number
        else:
            weights[key.strip()] = number
    if not weights:
        raise ValidationError(f"no term=weight in {text!r}", field=where)
    return SignalSpec(weights, strength)
