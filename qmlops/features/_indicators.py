"""Classic technical indicators, vectorised across instruments.

Each instrument's indicators are computed on its own rows (its trading days), as charting tools do; days on
the market calendar where it has no row get NaN when joined with Alpha158's calendar-aligned rows. Warm-up
rows are NaN until the window is full (``min_periods`` = window), the usual convention for indicators.

Formulas (c, h, l, v: close, high, low, volume of the instrument's rows):

- ``SMA_n`` = mean(c, n). ``EMA_n``: exponential average with alpha = 2 / (n + 1), seeded with c_0
  (``ewm(span=n, adjust=False)``), NaN for the first n - 1 rows.
- ``RSI_n`` (Wilder, 1978): up = max(c_t - c_{t-1}, 0), down = max(c_{t-1} - c_t, 0); Wilder's smoothing is an
  exponential average with alpha = 1 / n; RSI = 100 - 100 / (1 + avg_up / avg_down), 100 when avg_down = 0.
- ``MACD`` (Appel) = EMA_fast(c) - EMA_slow(c) (12, 26); ``MACD_SIGNAL`` = EMA_signal(MACD) (9);
  ``MACD_HIST`` = MACD - signal.
- Bollinger bands (n = 20, k = 2): middle = SMA_n, sigma = population std over n (ddof = 0, as Bollinger
  defines it), upper/lower = middle +/- k sigma; ``BB_PCTB`` = (c - lower) / (upper - lower);
  ``BB_WIDTH`` = (upper - lower) / middle.
- ``ATR_n`` (Wilder): TR_t = max(h - l, |h - c_{t-1}|, |l - c_{t-1}|) (TR_0 = h_0 - l_0); ATR_{n-1} = mean(TR_0..TR_{n-1}),
  then ATR_t = (ATR_{t-1} (n - 1) + TR_t) / n.
- ``OBV`` (Granville): cumulative sum of sign(c_t - c_{t-1}) v_t (a flat day adds 0; the first row adds v_0).
- Stochastic oscillator (Lane; n = 14, smoothing 3): ``STOCH_K`` = 100 (c - min(l, n)) / (max(h, n) - min(l, n)),
  ``STOCH_D`` = mean(STOCH_K, 3).
- ``ROC_n`` = 100 (c_t / c_{t-n} - 1); ``MOM_n`` = c_t - c_{t-n} (n = 10).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from qmlops.exceptions import ValidationError
from qmlops.features._panel import REQUIRED_FIELDS

__all__ = ["IndicatorParams", "compute_indicators", "indicator_feature_names", "indicators_min_history"]


@dataclass(frozen=True)
class IndicatorParams:
    sma_windows: tuple[int, ...] = (5, 10, 20, 60)
    ema_windows: tuple[int, ...] = (12, 26)
    rsi_window: int = 14
    macd_fast: int = 12
    macd_slow: int = 26
    macd_signal: int = 9
    bb_window: int = 20
    bb_k: float = 2.0
    atr_window: int = 14
    stoch_window: int = 14
    stoch_smooth: int = 3
    roc_window: int = 10

    def __post_init__(self) -> None:
        for name, value in self.__dict__.items():
            values = value if isinstance(value, tuple) else (value,)
            if name != "bb_k" and any(not isinstance(x, int) or x < 1 for x in values):
                raise ValidationError(f"window must be a positive integer, got {value!r}", field=name)
        if self.macd_fast >= self.macd_slow:
            raise ValidationError("macd_fast must be shorter than macd_slow", field="macd_fast")
        if self.bb_k <= 0:
            raise ValidationError("must be positive", field="bb_k")


def indicator_feature_names(params: IndicatorParams | None = None) -> list[str]:
    p = params or IndicatorParams()
    return [
        *(f"SMA_{n}" for n in p.sma_windows),
        *(f"EMA_{n}" for n in p.ema_windows),
        f"RSI_{p.rsi_window}",
        "MACD", "MACD_SIGNAL", "MACD_HIST",
        *(f"BB_{part}_{p.bb_window}" for part in ("UPPER", "MIDDLE", "LOWER", "PCTB", "WIDTH")),
        f"ATR_{p.atr_window}",
        "OBV",
        f"STOCH_K_{p.stoch_window}", f"STOCH_D_{p.stoch_smooth}",
        f"ROC_{p.roc_window}", f"MOM_{p.roc_window}",
    ]  # fmt: skip


def indicators_min_history(params: IndicatorParams | None = None) -> int:
    p = params or IndicatorParams()
    return max(*p.sma_windows, *p.ema_windows, p.macd_slow + p.macd_signal - 1, p.bb_window, p.atr_window,
               p.stoch_window + p.stoch_smooth - 1, p.rsi_window + 1, p.roc_window + 1)  # fmt: skip


def _ema(x: pd.DataFrame, n: int) -> pd.DataFrame:
    return x.ewm(span=n, adjust=False, min_periods=n).mean()


def compute_indicators(ohlcv: pd.DataFrame, params: IndicatorParams | None = None) -> pd.DataFrame:
    """Indicators for the canonical long table, indexed (datetime, instrument), one row per input row."""
    p = params or IndicatorParams()
    missing = [c for c in REQUIRED_FIELDS if c not in ohlcv.columns]
    if missing:
        raise ValidationError(f"missing column(s) {', '.join(missing)}", field=missing[0])
    frame = ohlcv.sort_values(["instrument", "date"], kind="mergesort")
    for col in ("open", "high", "low", "close", "volume"):
        if not np.isfinite(frame[col].to_numpy(dtype="float64", na_value=np.nan)).all():
            raise ValidationError(f"non-finite or missing values in {col}", field=col)
    inst = frame["instrument"].astype(str).to_numpy()
    names, col_idx = np.unique(inst, return_inverse=True)
    row_idx = frame.groupby(inst, sort=False).cumcount().to_numpy()
    shape = (int(row_idx.max()) + 1, len(names))

    def panel(col: str) -> pd.DataFrame:
        arr = np.full(shape, np.nan)
        arr[row_idx, col_idx] = frame[col].to_numpy(dtype="float64")
        return pd.DataFrame(arr)

    c, h, lo, v = panel("close"), panel("high"), panel("low"), panel("volume")
    out: dict[str, pd.DataFrame] = {}
    for n in p.sma_windows:
        out[f"SMA_{n}"] = c.rolling(n, min_periods=n).mean()
    for n in p.ema_windows:
        out[f"EMA_{n}"] = _ema(c, n)
    diff = c.diff()
    up, down = diff.clip(lower=0), (-diff).clip(lower=0)
    alpha = 1.0 / p.rsi_window
    avg_up = up.ewm(alpha=alpha, adjust=False, min_periods=p.rsi_window).mean()
    avg_down = down.ewm(alpha=alpha, adjust=False, min_periods=p.rsi_window).mean()
    with np.errstate(divide="ignore", invalid="ignore"):
        rsi = 100 - 100 / (1 + avg_up / avg_down)
    out[f"RSI_{p.rsi_window}"] = rsi.where(~(avg_down == 0), 100.0).where(avg_down.notna())
    macd = _ema(c, p.macd_fast) - _ema(c, p.macd_slow)
    signal = _ema(macd, p.macd_signal)
    out["MACD"], out["MACD_SIGNAL"], out["MACD_HIST"] = macd, signal, macd - signal
    mid = c.rolling(p.bb_window, min_periods=p.bb_window).mean()
    sigma = c.rolling(p.bb_window, min_periods=p.bb_window).std(ddof=0)
    upper, lower = mid + p.bb_k * sigma, mid - p.bb_k * sigma
    w = p.bb_window
    out[f"BB_UPPER_{w}"], out[f"BB_MIDDLE_{w}"], out[f"BB_LOWER_{w}"] = upper, mid, lower
    out[f"BB_PCTB_{w}"] = (c - lower) / (upper - lower)
    out[f"BB_WIDTH_{w}"] = (upper - lower) / mid
    prev = c.shift(1)
    tr = np.fmax(h - lo, np.fmax((h - prev).abs(), (lo - prev).abs()))
    n = p.atr_window
    seeded = tr.copy()
    seeded.iloc[: n - 1] = np.nan
    seeded.iloc[n - 1] = tr.iloc[:n].mean() if len(tr) >= n else np.nan
    out[f"ATR_{n}"] = seeded.ewm(alpha=1.0 / n, adjust=False, min_periods=1).mean().where(tr.notna())
    out["OBV"] = (np.sign(diff.fillna(1.0)) * v).cumsum()
    low_n = lo.rolling(p.stoch_window, min_periods=p.stoch_window).min()
    high_n = h.rolling(p.stoch_window, min_periods=p.stoch_window).max()
    stoch_k = 100 * (c - low_n) / (high_n - low_n)
    out[f"STOCH_K_{p.stoch_window}"] = stoch_k
    out[f"STOCH_D_{p.stoch_smooth}"] = stoch_k.rolling(p.stoch_smooth, min_periods=p.stoch_smooth).mean()
    ref = c.shift(p.roc_window)
    out[f"ROC_{p.roc_window}"] = 100 * (c / ref - 1)
    out[f"MOM_{p.roc_window}"] = c - ref

    names_order = indicator_feature_names(p)
    data = np.column_stack([out[name].to_numpy()[row_idx, col_idx] for name in names_order]).astype(
        np.float32
    )
    index = pd.MultiIndex.from_arrays(
        [pd.DatetimeIndex(frame["date"]).normalize(), inst], names=["datetime", "instrument"]
    )
    result = pd.DataFrame(data, index=index, columns=names_order)
    return result.sort_index()
