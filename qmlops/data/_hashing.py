"""Content hashes of canonical tables: independent of row order, stable across runs and machines."""

from __future__ import annotations

import hashlib

import numpy as np
import pandas as pd

from qmlops.data._canonical import canonical_order

__all__ = ["content_hash"]

_HASH_FORMAT = b"qmlops-ohlcv-v1"
_CANONICAL_NAN = np.array([np.nan], dtype="<f8").view("<u8")[0]


def _float_bytes(values: pd.Series) -> bytes:
    arr = values.to_numpy(dtype="<f8", na_value=np.nan).copy()
    arr[arr == 0.0] = 0.0  # folds -0.0 into +0.0
    bits = arr.view("<u8")
    bits[np.isnan(arr)] = _CANONICAL_NAN  # one NaN bit pattern whatever produced it
    return bits.tobytes()


def content_hash(frame: pd.DataFrame) -> str:
    """sha256 (hex) of a canonical OHLCV table.

    The table is put in canonical order first (so row order does not matter); each column contributes its name
    and a fixed byte form: dates as little-endian int64 days since 1970-01-01, instruments as length-prefixed
    UTF-8, numbers as little-endian float64 with -0.0 folded into 0.0 and one NaN pattern.
    """
    table = canonical_order(frame)
    h = hashlib.sha256(_HASH_FORMAT)
    h.update(len(table).to_bytes(8, "little"))
    for col in table.columns:
        h.update(b"\x00col:" + col.encode())
        values = table[col]
        if col == "date":
            days = values.to_numpy(dtype="datetime64[D]").astype("<i8")
            h.update(days.tobytes())
        elif col == "instrument":
            for text in values.astype(str):
                data = text.encode("utf-8")
                h.update(len(data).to_bytes(4, "little") + data)
        else:
            h.update(_float_bytes(values))
    return h.hexdigest()
