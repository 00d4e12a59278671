"""Incremental Alpha158: each day's rows from its look-back tail match a full recompute of the history so far."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from qmlops.data import generate_synthetic
from qmlops.exceptions import ValidationError
from qmlops.features import compute_alpha158
from qmlops.features._incremental import ALPHA158_LOOKBACK, compute_tail_features, tail_window


def _market() -> pd.DataFrame:
    frame = generate_synthetic(40, 160, seed=7)
    frame["date"] = frame["date"].astype("datetime64[ns]")
    # Calendar gaps: one instrument misses a stretch that lies inside the 60-day windows of the checked days,
    # another starts late (its first rows fall inside the tail): the window-position operators must see both
    # exactly as the full computation does.
    days = sorted(frame["date"].unique())
    gap = (frame["instrument"] == "SYN0003") & frame["date"].between(days[95], days[104])
    late = (frame["instrument"] == "SYN0005") & (frame["date"] < days[110])
    return frame[~gap & ~late].reset_index(drop=True)


def test_every_day_of_a_30_day_stretch_equals_a_full_recompute_bit_for_bit() -> None:
    market = _market()
    calendar = pd.DatetimeIndex(sorted(market["date"].unique()))
    first = market.groupby("instrument")["date"].min()
    for day in calendar[-30:]:
        history = market[market["date"] <= day]
        full = compute_alpha158(history).xs(day, level="datetime", drop_level=False)
        window, origin = tail_window(calendar, day)
        assert len(window) == ALPHA158_LOOKBACK
        tail = history[history["date"] >= window[0]]
        inc = compute_tail_features(
            tail, pd.DatetimeIndex([day]), first_dates=first, calendar=window, origin=origin
        )
        assert inc.index.equals(full.index) and list(inc.columns) == list(full.columns)
        a, b = full.to_numpy(), inc.to_numpy()
        assert np.array_equal(np.isnan(a), np.isnan(b)), f"NaN pattern differs on {day.date()}"
        same = (a == b) | (np.isnan(a) & np.isnan(b))
        assert same.all(), (
            f"{(~same).sum()} values differ on {day.date()}, e.g. {full.columns[np.nonzero(~same)[1][0]]}"
        )


def test_tail_too_short_and_other_sets_are_refused() -> None:
    market = _market()
    calendar = pd.DatetimeIndex(sorted(market["date"].unique()))
    first = market.groupby("instrument")["date"].min()
    day = calendar[100]
    short = calendar[80:101]
    with pytest.raises(ValidationError) as err:
        compute_tail_features(market[market["date"].isin(short)], pd.DatetimeIndex([day]), first_dates=first,
                              calendar=short, origin=80)  # fmt: skip
    assert err.value.field == "tail"
    with pytest.raises(ValidationError) as err:
        compute_tail_features(market, pd.DatetimeIndex([day]), first_dates=first, calendar=calendar, origin=0,
                              feature_set="indicators")  # fmt: skip
    assert err.value.field == "feature_set"
    with pytest.raises(ValidationError):
        tail_window(calendar, pd.Timestamp("1999-01-01"))
