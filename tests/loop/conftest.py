"""A small market with a known cross-sectional signal and one regime change, for the loop's tests.

Each instrument's idiosyncratic return two days ahead is ``-a`` times today's (a reversal a model can read from
``KMID``: opens sit at the previous close); after ``flip_day`` the weight changes sign (reversal turns into
momentum), so a model trained before the change loses its IC after it.
"""

from __future__ import annotations

import numpy as np
import pandas as pd


def regime_market(n_instruments: int = 60, n_days: int = 240, *, flip_day: int | None = 150, weight: float = 0.35,
                  seed: int = 0) -> pd.DataFrame:  # fmt: skip
    rng = np.random.default_rng(seed)
    idio = np.zeros((n_days, n_instruments))
    noise = rng.normal(0.0, 0.015, size=(n_days, n_instruments))
    for t in range(n_days):
        a = weight if flip_day is None or t < flip_day else -weight
        idio[t] = noise[t] - (a * idio[t - 2] if t >= 2 else 0.0)
    market = rng.normal(0.0003, 0.008, size=(n_days, 1))
    ret = market + idio
    close = 50.0 * np.exp(np.cumsum(ret, axis=0))
    prev = np.vstack([close[:1] / np.exp(ret[:1]), close[:-1]])
    open_ = prev
    spread = np.abs(rng.normal(0.0, 0.004, size=(n_days, n_instruments)))
    high = np.maximum(open_, close) * (1 + spread)
    low = np.minimum(open_, close) * (1 - spread)
    volume = rng.lognormal(13.0, 0.3, size=(n_days, n_instruments))
    days = pd.bdate_range("2020-01-02", periods=n_days)
    names = [f"P{i:03d}" for i in range(n_instruments)]
    frame = pd.DataFrame({
        "date": np.repeat(days, n_instruments), "instrument": np.tile(names, n_days),
        "open": open_.ravel(), "high": high.ravel(), "low": low.ravel(), "close": close.ravel(),
        "volume": volume.ravel(),
    })  # fmt: skip
    return frame
