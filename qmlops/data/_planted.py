"""A market with a known answer: seeded OHLCV whose returns carry a planted cross-sectional signal, and its oracle.

The model (see :class:`~qmlops.data.PlantedSpec`): every day each instrument's log return is a market factor
times its beta, plus ``a * s`` where ``s`` is the planted signal computed two days earlier from the instrument's
own past bars only, plus idiosyncratic noise. With Qlib's label LABEL0 of day t = ``close[t+2]/close[t+1] - 1``,
the signal of day t drives exactly the label of day t, so a model with features of day t can learn it.

``s`` is a cross-sectional z-score (unit variance across instruments every day), so the expected Pearson IC of
``s`` with the label is ``a / sqrt(a^2 + V)``, V = the cross-sectional variance of the rest of the return
(``mean(sigma_i^2) + var(beta_i) * market_vol^2``); ``a`` is set from the requested strength by inverting that.

The **oracle** is ``s`` itself: per (date, instrument) the score no model can beat in expectation, with the
realised label, so ``oracle_daily_ic`` gives the ceiling of a model's IC on any set of days.

All random draws are made up front in a fixed order from ``numpy.random.default_rng(seed)``: the same seed and
sizes give the same noise whatever the signal, so a market with strength 0 is the same market without the
signal.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from qmlops.data._planted_spec import MAX_LOOKBACK, SIGNAL_TERMS, PlantedSpec, SignalSpec
from qmlops.exceptions import ValidationError

__all__ = ["PlantedMarket", "generate_planted", "oracle_daily_ic", "oracle_summary", "ORACLE_COLUMNS"]

ORACLE_COLUMNS = ("date", "instrument", "regime", "score", "label")
_BURN_IN = MAX_LOOKBACK + 10  # days simulated before the first output day, so every output day has a signal


@dataclass(frozen=True)
class PlantedMarket:
    """A generated market: canonical ``bars`` and the ``oracle`` (date, instrument, regime, score, label)."""

    spec: PlantedSpec
    bars: pd.DataFrame
    oracle: pd.DataFrame

    def daily_ic(self) -> pd.DataFrame:
        return oracle_daily_ic(self.oracle)

    def summary(self) -> list[dict[str, Any]]:
        return oracle_summary(self.oracle, self.spec)


def _zscore(x: np.ndarray) -> np.ndarray:
    sd = x.std()
    return (x - x.mean()) / sd if sd > 0 else np.zeros_like(x)


def _amplitude(strength: float, noise_var: float) -> float:
    return float(strength * np.sqrt(noise_var / (1.0 - strength * strength)))


def _signal(sig: SignalSpec, log_close: np.ndarray, volume: np.ndarray) -> np.ndarray:
    raw = np.zeros(log_close.shape[1])
    for name, weight in sig.weights.items():
        if weight != 0:
            raw += weight * _zscore(SIGNAL_TERMS[name].compute(log_close, volume))
    return _zscore(raw)


def generate_planted(spec: PlantedSpec | None = None, **options: Any) -> PlantedMarket:
    """Generate the market of ``spec`` (or of ``PlantedSpec(**options)``); deterministic for a spec.

    Bars: close from the simulated log returns; open gaps from the previous close (partly in the day's
    direction); high/low extend beyond max/min(open, close) by a positive random range, so
    high >= max(open, close) >= min(open, close) >= low > 0; volume is a persistent log-normal process that rises
    with the size of the day's surprise, rounded, at least 1. Instruments are ``PLT0000`` ..., business days from
    ``spec.start``.
    """
    if spec is None:
        spec = PlantedSpec.from_dict(options)
    elif options:
        raise ValidationError("pass a spec or options, not both", field="spec")
    n, total = spec.n_instruments, spec.n_days + _BURN_IN
    rng = np.random.default_rng(spec.seed)
    sigma = rng.uniform(spec.noise_vol[0], spec.noise_vol[1], n)
    beta = rng.uniform(0.8, 1.2, n)
    start_px = rng.uniform(10.0, 200.0, n)
    log_volume_mean = rng.uniform(11.0, 15.0, n)
    market = spec.market_vol * rng.standard_normal(total)
    eps = rng.standard_normal((total, n))
    volume_innov = rng.standard_normal((total, n))
    gap_noise = rng.standard_normal((total, n))
    span = np.abs(rng.standard_normal((total, n)))
    low_share = rng.uniform(0.2, 1.0, (total, n))

    noise_var = float(np.mean(sigma**2) + np.var(beta) * spec.market_vol**2)
    signals = spec.signals
    amplitudes = [_amplitude(s.strength, noise_var) for s in signals]
    regime_of_t = spec.regime_of(np.maximum(np.arange(total) - _BURN_IN, 0))

    log_close = np.empty((total + 1, n))
    log_close[0] = np.log(start_px)
    volume = np.empty((total, n))
    score = np.zeros((total, n))
    amp = np.zeros(total)
    state = np.zeros(n)
    for t in range(total):
        r = beta * market[t] + sigma * eps[t]
        if t >= 2:
            r = r + amp[t - 2] * score[t - 2]
        log_close[t + 1] = log_close[t] + r
        state = 0.8 * state + 0.35 * volume_innov[t]
        volume[t] = np.maximum(1.0, np.round(np.exp(log_volume_mean + state + 0.3 * np.abs(eps[t]))))
        if t >= MAX_LOOKBACK:
            k = int(regime_of_t[t])
            score[t] = _signal(signals[k], log_close[: t + 2], volume[: t + 1])
            amp[t] = amplitudes[k]

    returns = np.diff(log_close, axis=0)
    close = np.exp(log_close[1:])
    open_ = np.exp(log_close[:-1] + 0.4 * returns + 0.25 * sigma * gap_noise)
    reach = np.minimum(0.5 * sigma * span, 0.5)
    high = np.maximum(open_, close) * (1.0 + reach)
    low = np.minimum(open_, close) * (1.0 - reach * low_share)
    label = np.full((total, n), np.nan)
    label[:-2] = close[2:] / close[1:-1] - 1.0

    out = slice(_BURN_IN, total)
    dates = pd.bdate_range(start=spec.start, periods=spec.n_days)
    names = np.array([f"PLT{i:04d}" for i in range(n)])
    date_col = np.tile(dates.values, n)
    inst_col = np.repeat(names, spec.n_days)

    def long(a: np.ndarray) -> np.ndarray:
        return a[out].T.ravel()

    bars = pd.DataFrame(
        {
            "date": date_col,
            "instrument": inst_col,
            "open": long(open_),
            "high": long(high),
            "low": long(low),
            "close": long(close),
            "volume": long(volume),
            "factor": 1.0,
        }
    )
    bars["instrument"] = bars["instrument"].astype("string")
    oracle = pd.DataFrame(
        {
            "date": date_col,
            "instrument": inst_col,
            "regime": np.repeat(spec.regime_of(np.arange(spec.n_days))[None, :], n, axis=0).ravel(),
            "score": long(score),
            "label": long(label),
        }
    )
    oracle["regime"] = oracle["regime"].astype("int64")
    return PlantedMarket(spec, bars, oracle)


def _row_corr(a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-row Pearson correlation over the columns where both are finite; (corr, count)."""
    ok = np.isfinite(a) & np.isfinite(b)
    count = ok.sum(axis=1)
    a0, b0 = np.where(ok, a, 0.0), np.where(ok, b, 0.0)
    with np.errstate(divide="ignore", invalid="ignore"):
        ma, mb = a0.sum(axis=1) / count, b0.sum(axis=1) / count
        da, db = np.where(ok, a0 - ma[:, None], 0.0), np.where(ok, b0 - mb[:, None], 0.0)
        cov, va, vb = (da * db).sum(axis=1), (da * da).sum(axis=1), (db * db).sum(axis=1)
        corr = cov / np.sqrt(va * vb)
    corr[(count < 2) | ~(va > 0) | ~(vb > 0)] = np.nan
    return corr, count


def oracle_daily_ic(oracle: pd.DataFrame) -> pd.DataFrame:
    """Per date: regime, the oracle's Pearson IC and Rank IC with the realised label, and the number of names.

    Days without labels (the last two of a market) are left out. The same definitions as
    :func:`qmlops.training.daily_ic`: Pearson / Spearman across instruments, per day.
    """
    missing = [c for c in ORACLE_COLUMNS if c not in oracle.columns]
    if missing:
        raise ValidationError(f"oracle frame lacks column(s) {missing}", field="oracle")
    score = oracle.pivot(index="date", columns="instrument", values="score")
    label = oracle.pivot(index="date", columns="instrument", values="label").reindex_like(score)
    regime = oracle.groupby("date")["regime"].first().reindex(score.index)
    ic, count = _row_corr(score.to_numpy(dtype="float64"), label.to_numpy(dtype="float64"))
    masked_score = score.where(label.notna())
    rank_ic, _ = _row_corr(
        masked_score.rank(axis=1).to_numpy(dtype="float64"),
        label.where(score.notna()).rank(axis=1).to_numpy(dtype="float64"),
    )
    out = pd.DataFrame(
        {"date": score.index, "regime": regime.to_numpy(), "ic": ic, "rank_ic": rank_ic, "n": count}
    )
    return out[np.isfinite(out["ic"])].reset_index(drop=True)


def oracle_summary(oracle: pd.DataFrame, spec: PlantedSpec | None = None) -> list[dict[str, Any]]:
    """Per regime: first/last date, days, mean oracle IC (with its standard error) and Rank IC; with ``spec``,
    also the requested strength and weights."""
    daily = oracle_daily_ic(oracle)
    rows = []
    for k, g in daily.groupby("regime", sort=True):
        row: dict[str, Any] = {
            "regime": int(k),
            "first_date": pd.Timestamp(g["date"].min()).strftime("%Y-%m-%d"),
            "last_date": pd.Timestamp(g["date"].max()).strftime("%Y-%m-%d"),
            "days": len(g),
            "oracle_ic": float(g["ic"].mean()),
            "oracle_ic_se": float(g["ic"].std(ddof=1) / np.sqrt(len(g))) if len(g) > 1 else None,
            "oracle_rank_ic": float(g["rank_ic"].mean()),
        }
        if spec is not None:
            sig = spec.signals[int(k)]
            row["strength"] = sig.strength
            row["weights"] = dict(sig.weights)
        rows.append(row)
    return rows
