"""Seeded synthetic OHLCV for scale tests (never a stand-in for the real bundled data)."""

from __future__ import annotations

import numpy as np
import pandas as pd

from qmlops.exceptions import ValidationError

__all__ = ["generate_synthetic"]


def generate_synthetic(
    n_instruments: int = 100, n_days: int = 250, *, seed: int = 0, start: str = "2015-01-02"
) -> pd.DataFrame:
    """N instruments x T business days of canonical OHLCV, deterministic for a seed.

    Close follows a geometric random walk (daily vol 1-3%, small drift); open gaps from the previous close;
    high/low extend beyond max/min(open, close) by a positive random range, so high >= max(open, close) >=
    min(open, close) >= low > 0; volume is log-normal and positive. Instruments are named ``SYN0000`` ...
    """
    if n_instruments < 1:
        raise ValidationError("must be at least 1", field="n_instruments")
    if n_days < 2:
        raise ValidationError("must be at least 2", field="n_days")
    rng = np.random.default_rng(seed)
    dates = pd.bdate_range(start=start, periods=n_days)
    vol = rng.uniform(0.01, 0.03, size=(1, n_instruments))
    drift = rng.normal(0.0002, 0.0003, size=(1, n_instruments))
    rets = drift + vol * rng.standard_normal((n_days, n_instruments))
    start_px = rng.uniform(10, 200, size=(1, n_instruments))
    close = start_px * np.exp(np.cumsum(rets, axis=0))
    prev = np.vstack([start_px, close[:-1]])
    open_ = prev * np.exp(vol * 0.3 * rng.standard_normal((n_days, n_instruments)))
    span = np.abs(rng.normal(0, 1, size=(n_days, n_instruments))) * vol * 0.5
    high = np.maximum(open_, close) * (1 + span)
    low = np.minimum(open_, close) * (1 - span * rng.uniform(0.2, 1.0, size=(n_days, n_instruments)))
    volume = np.round(rng.lognormal(mean=13, sigma=0.6, size=(n_days, n_instruments)))
    names = np.array([f"SYN{i:04d}" for i in range(n_instruments)])
    frame = pd.DataFrame(
        {
            "date": np.repeat(dates.values[None, :], n_instruments, axis=0).ravel(),
            "instrument": np.repeat(names, n_days),
            "open": open_.T.ravel(),
            "high": high.T.ravel(),
            "low": low.T.ravel(),
            "close": close.T.ravel(),
            "volume": volume.T.ravel(),
            "factor": 1.0,
        }
    )
    frame["instrument"] = frame["instrument"].astype("string")
    return frame
