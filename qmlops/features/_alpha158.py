"""Qlib's Alpha158 factor set, computed natively and vectorised across instruments.

The 158 features and their order are those of ``qlib.contrib.data.loader.Alpha158DL.get_feature_config()``
with the handler's default config (kbar; price OPEN/HIGH/LOW/VWAP at window 0; every rolling family for
windows 5, 10, 20, 30, 60); the label is Qlib's default ``Ref($close, -2)/Ref($close, -1) - 1`` (``LABEL0``).
Operator semantics and quirks matched: see :mod:`qmlops.features._ops`. Parity with Qlib's own handler on the
S&P 500 set is tested column by column (``tests/features/test_alpha158.py``).

Quirks matched, beyond the operators':
- Rows exist for every market-calendar day between an instrument's first and last date; on days it has no
  row its prices are NaN, yet rolling features still have values there (Qlib computes them the same way).
- $vwap without a vwap column is the typical price (high + low + close) / 3 (our export writes the same).
- ``Greater``/``Less`` are ``np.maximum``/``np.minimum`` (NaN propagates); comparisons with NaN are False, so
  ``Mean($close > Ref($close, 1), d)`` counts the first row as "not up".
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pandas as pd

from qmlops.features import _ops as op
from qmlops.features._panel import Panel, to_panel

__all__ = ["compute_alpha158", "compute_alpha158_label", "alpha158_feature_names", "ALPHA158_WINDOWS",
           "LABEL_NAME", "alpha158_from_panel", "label_from_panel"]  # fmt: skip

ALPHA158_WINDOWS = (5, 10, 20, 30, 60)
LABEL_NAME = "LABEL0"
_EPS = 1e-12
_ROLLING = (
    "ROC", "MA", "STD", "BETA", "RSQR", "RESI", "MAX", "MIN", "QTLU", "QTLD", "RANK", "RSV", "IMAX", "IMIN",
    "IMXD", "CORR", "CORD", "CNTP", "CNTN", "CNTD", "SUMP", "SUMN", "SUMD", "VMA", "VSTD", "WVMA", "VSUMP",
    "VSUMN", "VSUMD",
)  # fmt: skip
_KBAR = ("KMID", "KLEN", "KMID2", "KUP", "KUP2", "KLOW", "KLOW2", "KSFT", "KSFT2")
_PRICE = ("OPEN0", "HIGH0", "LOW0", "VWAP0")


def alpha158_feature_names() -> list[str]:
    """The 158 names in Qlib's order."""
    return [*_KBAR, *_PRICE, *(f"{family}{d}" for family in _ROLLING for d in ALPHA158_WINDOWS)]


def _kbar(p: Panel) -> dict[str, np.ndarray]:
    o, h, lo, c = p["open"], p["high"], p["low"], p["close"]
    rng = h - lo + np.float32(_EPS)
    up, down = np.maximum(o, c), np.minimum(o, c)
    return {
        "KMID": (c - o) / o,
        "KLEN": (h - lo) / o,
        "KMID2": (c - o) / rng,
        "KUP": (h - up) / o,
        "KUP2": (h - up) / rng,
        "KLOW": (down - lo) / o,
        "KLOW2": (down - lo) / rng,
        "KSFT": (2 * c - h - lo) / o,
        "KSFT2": (2 * c - h - lo) / rng,
    }


def _rolling_family(p: Panel, d: int) -> dict[str, Callable[[], np.ndarray]]:
    """Lazy expressions per family for window ``d`` (evaluated in Qlib's order)."""
    c, h, lo, v = p["close"], p["high"], p["low"], p["volume"]
    c1, v1 = op.ref(c, 1), op.ref(v, 1)
    eps = np.float32(_EPS)
    cache: dict[str, np.ndarray] = {}

    def once(key: str, make: Callable[[], np.ndarray]) -> np.ndarray:
        """Sub-expressions shared by several features are computed once (Qlib caches them too)."""
        if key not in cache:
            cache[key] = make()
        return cache[key]

    hmax = lambda: once("hmax", lambda: op.rmax(h, d))  # noqa: E731
    lmin = lambda: once("lmin", lambda: op.rmin(lo, d))  # noqa: E731
    imax = lambda: once("imax", lambda: op.idxmax(h, d, p.before_start))  # noqa: E731
    imin = lambda: once("imin", lambda: op.idxmin(lo, d, p.before_start))  # noqa: E731
    sums = lambda: once("regression", lambda: op.regression_sums(c, d))  # noqa: E731
    qtl = lambda: once("qtl", lambda: np.stack(op.quantiles(c, d, (0.8, 0.2))))  # noqa: E731

    def sum_ratio(x: np.ndarray, x1: np.ndarray, part: str) -> np.ndarray:
        key = "v" if x is v else "c"
        gain = once(f"{key}gain", lambda: op.total(np.maximum(x - x1, np.float32(0)), d))
        loss = once(f"{key}loss", lambda: op.total(np.maximum(x1 - x, np.float32(0)), d))
        denom = once(f"{key}denom", lambda: op.total(np.abs(x - x1), d) + _EPS)
        return {"P": gain, "N": loss, "D": gain - loss}[part] / denom

    with np.errstate(divide="ignore", invalid="ignore"):
        # A comparison with NaN is False (0), not NaN; only rows before the series starts are not in it.
        up = np.where(p.before_start, np.nan, (c > c1).astype(np.float32)).astype(np.float32)
        down = np.where(p.before_start, np.nan, (c < c1).astype(np.float32)).astype(np.float32)
    return {
        "ROC": lambda: op.ref(c, d) / c,
        "MA": lambda: op.mean(c, d) / c,
        "STD": lambda: op.std(c, d) / c,
        "BETA": lambda: op.slope(c, d, sums()) / c,
        "RSQR": lambda: op.rsquare(c, d, sums()),
        "RESI": lambda: op.resi(c, d, sums()) / c,
        "MAX": lambda: hmax() / c,
        "MIN": lambda: lmin() / c,
        "QTLU": lambda: qtl()[0] / c,
        "QTLD": lambda: qtl()[1] / c,
        "RANK": lambda: op.rank(c, d),
        "RSV": lambda: (c - lmin()) / (hmax() - lmin() + _EPS),
        "IMAX": lambda: imax() / d,
        "IMIN": lambda: imin() / d,
        "IMXD": lambda: (imax() - imin()) / d,
        "CORR": lambda: op.corr(c, np.log(v + np.float32(1)), d),
        "CORD": lambda: op.corr(c / c1, np.log(v / v1 + np.float32(1)), d),
        "CNTP": lambda: once("cntp", lambda: op.mean(up, d)),
        "CNTN": lambda: once("cntn", lambda: op.mean(down, d)),
        "CNTD": lambda: once("cntp", lambda: op.mean(up, d)) - once("cntn", lambda: op.mean(down, d)),
        "SUMP": lambda: sum_ratio(c, c1, "P"),
        "SUMN": lambda: sum_ratio(c, c1, "N"),
        "SUMD": lambda: sum_ratio(c, c1, "D"),
        "VMA": lambda: op.mean(v, d) / (v + eps),
        "VSTD": lambda: op.std(v, d) / (v + eps),
        "WVMA": lambda: (
            op.std(np.abs(c / c1 - np.float32(1)) * v, d)
            / (op.mean(np.abs(c / c1 - np.float32(1)) * v, d) + _EPS)
        ),
        "VSUMP": lambda: sum_ratio(v, v1, "P"),
        "VSUMN": lambda: sum_ratio(v, v1, "N"),
        "VSUMD": lambda: sum_ratio(v, v1, "D"),
    }


def alpha158_from_panel(p: Panel) -> dict[str, np.ndarray]:
    """name -> (dates x instruments) float32 array, in Qlib's order."""
    out: dict[str, np.ndarray] = {}
    with np.errstate(divide="ignore", invalid="ignore"):
        out.update(_kbar(p))
        for name, field in zip(_PRICE, ("open", "high", "low", "vwap"), strict=True):
            out[name] = p[field] / p["close"]
        families = {d: _rolling_family(p, d) for d in ALPHA158_WINDOWS}
        for family in _ROLLING:
            for d in ALPHA158_WINDOWS:
                out[f"{family}{d}"] = families[d][family]()
    return {k: np.asarray(v, dtype=np.float32) for k, v in out.items()}


def compute_alpha158(ohlcv: pd.DataFrame, *, calendar: pd.DatetimeIndex | None = None) -> pd.DataFrame:
    """The 158 Alpha158 features for the canonical long table (one or many instruments).

    Returns float32 columns with Qlib's names and order, indexed (datetime, instrument) and sorted like Qlib's
    handler output, one row per market-calendar day within each instrument's span. ``calendar`` defaults to
    the union of the input's dates; pass the full dataset's calendar when computing a subset of instruments.
    Raises :class:`~qmlops.exceptions.ValidationError` for missing columns or non-finite prices.
    """
    panel = to_panel(ohlcv, calendar)
    return panel.to_long(alpha158_from_panel(panel))


def compute_alpha158_label(ohlcv: pd.DataFrame, *, calendar: pd.DatetimeIndex | None = None) -> pd.DataFrame:
    """Qlib's default label ``Ref($close, -2)/Ref($close, -1) - 1`` as column ``LABEL0``, same index."""
    panel = to_panel(ohlcv, calendar)
    return panel.to_long({LABEL_NAME: label_from_panel(panel)})


def label_from_panel(p: Panel) -> np.ndarray:
    c = p["close"]
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.asarray(op.ref(c, -2) / op.ref(c, -1) - np.float32(1), dtype=np.float32)
