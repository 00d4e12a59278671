"""Export a canonical table to Qlib's binary format, so Qlib's own data layer and handlers read it.

Layout (what ``qlib.data.storage.file_storage`` reads): ``calendars/day.txt`` (one YYYY-MM-DD per line, the
union of all dates), ``instruments/all.txt`` (``INSTRUMENT<TAB>START<TAB>END``), and
``features/<instrument lower-case>/<field>.day.bin``: little-endian float32, the first element the instrument's
start index in the calendar, then one value per calendar day from its first to its last date (NaN where it has
no row). Fields: open, high, low, close, volume, factor, vwap; without a vwap column, $vwap is the typical price
(high + low + close) / 3, the same convention the native feature engine uses.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from qmlops.data._canonical import REQUIRED_COLUMNS
from qmlops.exceptions import ValidationError

__all__ = ["export_qlib", "QLIB_FIELDS", "with_vwap"]

QLIB_FIELDS = ("open", "high", "low", "close", "volume", "factor", "vwap")


def with_vwap(frame: pd.DataFrame) -> pd.DataFrame:
    """``frame`` with a vwap column: the source's, or the typical price (high + low + close) / 3."""
    if "vwap" in frame.columns:
        return frame
    return frame.assign(vwap=(frame["high"] + frame["low"] + frame["close"]) / 3.0)


def export_qlib(frame: pd.DataFrame, target_dir: str | Path) -> Path:
    """Write ``frame`` (canonical long table) under ``target_dir`` in Qlib's format; returns the directory."""
    missing = [c for c in REQUIRED_COLUMNS if c not in frame.columns]
    if missing:
        raise ValidationError(f"missing column(s) {', '.join(missing)}", field=missing[0])
    target = Path(target_dir)
    data = with_vwap(frame if "factor" in frame.columns else frame.assign(factor=1.0))
    data = data.sort_values(["instrument", "date"], kind="mergesort")
    calendar = pd.DatetimeIndex(np.sort(data["date"].unique()))
    (target / "calendars").mkdir(parents=True, exist_ok=True)
    (target / "instruments").mkdir(parents=True, exist_ok=True)
    (target / "calendars" / "day.txt").write_text("".join(f"{d:%Y-%m-%d}\n" for d in calendar))
    day_index = pd.Series(np.arange(len(calendar)), index=calendar)
    lines = []
    for instrument, group in data.groupby("instrument", sort=True):
        positions = day_index.loc[group["date"].to_numpy()].to_numpy()
        start, end = int(positions[0]), int(positions[-1])
        lines.append(f"{instrument}\t{calendar[start]:%Y-%m-%d}\t{calendar[end]:%Y-%m-%d}\n")
        folder = target / "features" / str(instrument).lower()
        folder.mkdir(parents=True, exist_ok=True)
        for field in QLIB_FIELDS:
            values = np.full(end - start + 1, np.nan, dtype="<f4")
            values[positions - start] = group[field].to_numpy(dtype="float64")
            np.hstack([np.array([start], dtype="<f4"), values]).astype("<f4").tofile(
                folder / f"{field}.day.bin"
            )
    (target / "instruments" / "all.txt").write_text("".join(lines))
    return target
