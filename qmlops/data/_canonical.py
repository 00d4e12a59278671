"""The canonical long OHLCV table every stage reads.

Columns, in order: ``date`` (datetime64[ns], midnight), ``instrument`` (upper-case string), ``open``, ``high``,
``low``, ``close``, ``volume``, ``factor`` (float64), and ``vwap`` when the source has it. Rows are sorted by
(instrument, date). Prices follow Qlib's adjustment convention: stored prices are *adjusted*
(raw x factor) and volume is adjusted volume (raw / factor), with ``factor`` kept alongside so raw values can
be recovered (raw = adjusted / factor).
"""

from __future__ import annotations

import pandas as pd

__all__ = ["CANONICAL_COLUMNS", "PRICE_COLUMNS", "REQUIRED_COLUMNS", "OPTIONAL_COLUMNS", "canonical_order"]

PRICE_COLUMNS = ("open", "high", "low", "close")
REQUIRED_COLUMNS = ("date", "instrument", "open", "high", "low", "close", "volume")
OPTIONAL_COLUMNS = ("factor", "vwap")
CANONICAL_COLUMNS = ("date", "instrument", "open", "high", "low", "close", "volume", "factor", "vwap")


def canonical_order(frame: pd.DataFrame) -> pd.DataFrame:
    """Columns in canonical order (vwap only if present), rows sorted by (instrument, date), fresh index."""
    cols = [c for c in CANONICAL_COLUMNS if c in frame.columns]
    out = frame.loc[:, cols].sort_values(["instrument", "date"], kind="mergesort")
    return out.reset_index(drop=True)
