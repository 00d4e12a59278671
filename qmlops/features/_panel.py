"""Calendar-aligned panels: the long OHLCV table as one (dates x instruments) array per field.

Qlib evaluates every expression on an instrument's series over the *market calendar* from its first to its
last date, with NaN on calendar days the instrument has no row for. Feature code here works on the same
layout, for all instruments at once, so each operator is one vectorised call instead of one per instrument.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from qmlops.exceptions import ValidationError

__all__ = ["Panel", "to_panel", "REQUIRED_FIELDS"]

REQUIRED_FIELDS = ("date", "instrument", "open", "high", "low", "close", "volume")


@dataclass
class Panel:
    """Fields as float32 arrays of shape (n_dates, n_instruments), NaN outside a row; plus the span mask."""

    dates: pd.DatetimeIndex
    instruments: np.ndarray
    fields: dict[str, np.ndarray]
    in_span: np.ndarray  # bool (n_dates, n_instruments): between the instrument's first and last date
    before_start: np.ndarray  # bool: calendar days before the instrument's first date

    def __getitem__(self, name: str) -> np.ndarray:
        return self.fields[name]

    def to_long(self, values: dict[str, np.ndarray], dtype: str = "float32") -> pd.DataFrame:
        """Rows for every in-span (date, instrument), sorted by (datetime, instrument) as Qlib's handler."""
        t_idx, i_idx = np.nonzero(self.in_span)  # row-major: sorted by date, then instrument
        index = pd.MultiIndex(
            levels=[self.dates, pd.Index(self.instruments.astype(str))],
            codes=[t_idx, i_idx],
            names=["datetime", "instrument"],
            verify_integrity=False,
        )
        # One gather per column into a (columns, rows) block: pandas keeps exactly that layout, so the frame
        # is built without another copy.
        flat = np.flatnonzero(self.in_span.ravel())
        block = np.empty((len(values), flat.size), dtype=dtype)
        for k, arr in enumerate(values.values()):
            block[k] = np.asarray(arr).ravel()[flat]
        return pd.DataFrame(block.T, index=index, columns=list(values), copy=False)


def to_panel(ohlcv: pd.DataFrame, calendar: pd.DatetimeIndex | None = None) -> Panel:
    """Pivot the canonical long table; ``calendar`` defaults to the union of its dates.

    Pass the full dataset's calendar when computing a subset of instruments, so gaps are placed exactly as
    Qlib places them (it aligns every instrument to the one market calendar). $vwap is the source's vwap when
    present, else the typical price (high + low + close) / 3, as in the Qlib export.
    """
    missing = [c for c in REQUIRED_FIELDS if c not in ohlcv.columns]
    if missing:
        raise ValidationError(f"missing column(s) {', '.join(missing)}", field=missing[0])
    if ohlcv.empty:
        raise ValidationError("no rows to compute features from", field="ohlcv")
    frame = ohlcv
    if "vwap" not in frame.columns:
        frame = frame.assign(vwap=(frame["high"] + frame["low"] + frame["close"]) / 3.0)
    for col in ("open", "high", "low", "close", "volume", "vwap"):
        values = frame[col].to_numpy(dtype="float64", na_value=np.nan)
        if np.isinf(values).any():
            raise ValidationError(f"non-finite values (inf) in {col}", field=col)
    dates = pd.DatetimeIndex(frame["date"]).normalize()
    cal = pd.DatetimeIndex(np.unique(dates)) if calendar is None else pd.DatetimeIndex(calendar)
    t = cal.get_indexer(dates)
    if (t < 0).any():
        raise ValidationError("some dates are not in the given calendar", field="calendar")
    instruments, i = np.unique(frame["instrument"].astype(str).to_numpy(), return_inverse=True)
    shape = (len(cal), len(instruments))
    if len(np.unique(t.astype(np.int64) * shape[1] + i)) != len(t):
        raise ValidationError("duplicate (instrument, date) rows", field="ohlcv")
    fields = {}
    for col in ("open", "high", "low", "close", "volume", "vwap"):
        arr = np.full(shape, np.nan, dtype=np.float32)
        arr[t, i] = frame[col].to_numpy(
            dtype="float64", na_value=np.nan
        )  # rounded to float32, as Qlib stores
        fields[col] = arr
    first = np.full(shape[1], shape[0], dtype=np.int64)
    last = np.full(shape[1], -1, dtype=np.int64)
    np.minimum.at(first, i, t)
    np.maximum.at(last, i, t)
    rows = np.arange(shape[0])[:, None]
    in_span = (rows >= first[None, :]) & (rows <= last[None, :])
    return Panel(cal, instruments, fields, in_span, rows < first[None, :])
