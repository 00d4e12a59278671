"""Qlib's expression operators on (dates x instruments) arrays, vectorised across instruments.

Semantics follow ``qlib/data/ops.py`` (0.9.7) exactly, including its quirks:

- Rolling operators use ``min_periods=1``: warm-up rows have values, computed from the rows so far, and NaN
  inside a window is skipped (pandas ``rolling``). ``Std`` is the sample standard deviation (ddof=1), so a
  window with one valid value gives NaN.
- ``Slope``/``Rsquare``/``Resi`` regress on the position in the window (1..N, newest = N) over the valid
  values only (Qlib's Cython ``rolling_slope`` etc.); ``Rsquare`` is NaN where the rolling std of the input is
  within 2e-5 of 0, ``Corr`` where either input's rolling std is.
- ``IdxMax``/``IdxMin`` are ``argmax + 1`` over the raw window (1-based from the window start, which is the
  series start during warm-up); NaN inside the window wins (numpy's argmax returns the first NaN).
- ``Rank`` is pandas' rolling ``rank(pct=True)`` (average ties), ``Quantile`` pandas' linear interpolation.
- Element-wise arithmetic stays in float32 when both sides are float32 (Qlib loads float32 data); rolling
  results are float64 (pandas); the final feature is cast to float32 as Qlib's expression provider does.

Before an instrument's first date the panel holds NaN; every operator here treats those rows as "not yet in
the series" (rolling ops skip NaN; the window-position ops count them as outside the window).

Window sums are anchored, so a row's value depends on its window's values only: rows are grouped in blocks of
``_BLOCK`` market days at absolute calendar positions (the panel's first row sits at position ``origin``, see
:func:`anchored`), a window is the tail of one block plus the head of the next, and each part is summed within
its block. The same day therefore gets the same bits from a full history and from a short tail of it (the
incremental features rely on this); a running sum over the whole history would round differently for each
starting row. Sums are of the raw values (no shift by a column statistic, which would depend on the whole
column); windows are at most two blocks long, so the sums stay small and keep their digits.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar

import numpy as np
import pandas as pd
from numpy.lib.stride_tricks import sliding_window_view

__all__ = [
    "ref", "mean", "total", "std", "rmax", "rmin", "quantile", "rank", "corr", "slope", "rsquare", "resi",
    "idxmax", "idxmin", "regression_sums", "quantiles", "anchored",
]  # fmt: skip

_STD_ATOL = 2e-05
_BLOCK = 64  # window sums are taken within blocks of this many market days (>= every Alpha158 window)
_ORIGIN: ContextVar[int] = ContextVar("qmlops_ops_origin", default=0)


@contextmanager
def anchored(origin: int) -> Iterator[None]:
    """Operators inside this block treat the first row of their input as calendar position ``origin``."""
    token = _ORIGIN.set(int(origin))
    try:
        yield
    finally:
        _ORIGIN.reset(token)


def ref(x: np.ndarray, n: int) -> np.ndarray:
    """``Ref(x, n)``: the value n rows earlier (n < 0: later), NaN where there is none."""
    out = np.full_like(x, np.nan)
    if n > 0:
        out[n:] = x[:-n]
    elif n < 0:
        out[:n] = x[-n:]
    else:
        out[:] = x
    return out


def _rolling(x: np.ndarray, n: int) -> pd.core.window.rolling.Rolling:
    return pd.DataFrame(x, copy=False).rolling(n, min_periods=1)


def _valid_sums(x: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(count of valid values in each trailing window, the values with NaN as 0, a zero shift per column)."""
    x64 = x.astype(np.float64)
    valid = ~np.isnan(x64)
    xv = np.where(valid, x64, 0.0)
    return _wsum(valid.astype(np.float64), n), xv, np.zeros(x.shape[1:], dtype=np.float64)


def mean(x: np.ndarray, n: int) -> np.ndarray:
    """Rolling mean over valid values (min_periods=1)."""
    cnt, xv, x0 = _valid_sums(x, n)
    with np.errstate(divide="ignore", invalid="ignore"):
        out = _wsum(xv, n) / cnt + x0
    out[cnt == 0] = np.nan
    return _with_inf_columns(x, out, n, "mean")


def total(x: np.ndarray, n: int) -> np.ndarray:
    """Rolling sum over valid values (min_periods=1: NaN only when the window has no valid value)."""
    cnt, xv, x0 = _valid_sums(x, n)
    out = _wsum(xv, n) + cnt * x0
    out[cnt == 0] = np.nan
    return _with_inf_columns(x, out, n, "sum")


def _with_inf_columns(x: np.ndarray, out: np.ndarray, n: int, method: str) -> np.ndarray:
    """Recompute the columns holding +/-inf with pandas (cumulative sums cannot carry an inf)."""
    inf_cols = np.flatnonzero(np.isinf(x).any(axis=0))
    if inf_cols.size:
        frame = pd.DataFrame(x[:, inf_cols].astype(np.float64)).rolling(n, min_periods=1)
        out[:, inf_cols] = getattr(frame, method)().to_numpy()
    return out


def std(x: np.ndarray, n: int) -> np.ndarray:
    """Rolling sample standard deviation (ddof=1) over valid values; NaN with fewer than 2."""
    return _with_inf_columns(x, _std(x, n), n, "std")


def _std(x: np.ndarray, n: int) -> np.ndarray:
    cnt, xv, _ = _valid_sums(x, n)
    s1 = _wsum(xv, n)
    s2 = _wsum(xv * xv, n)
    with np.errstate(divide="ignore", invalid="ignore"):
        var = (s2 - s1 * s1 / cnt) / (cnt - 1)
    var[cnt < 2] = np.nan
    return np.sqrt(np.maximum(var, 0.0))


def rmax(x: np.ndarray, n: int) -> np.ndarray:
    """Rolling max over valid values (NaN only when the window has none)."""
    with np.errstate(invalid="ignore"):
        return np.fmax.reduce(_windows(x, n, np.nan), axis=-1)


def rmin(x: np.ndarray, n: int) -> np.ndarray:
    with np.errstate(invalid="ignore"):
        return np.fmin.reduce(_windows(x, n, np.nan), axis=-1)


def quantile(x: np.ndarray, n: int, q: float) -> np.ndarray:
    return quantiles(x, n, (q,))[0]


def quantiles(x: np.ndarray, n: int, qs: tuple[float, ...]) -> list[np.ndarray]:
    """Rolling quantiles over valid values with linear interpolation (pandas' default), one sort for all qs."""
    w = np.sort(_windows(x, n, np.nan), axis=-1)  # NaN sorts last
    k = (~np.isnan(w)).sum(axis=-1)
    rows, cols = np.indices(k.shape)
    out = []
    for q in qs:
        pos = q * np.maximum(k - 1, 0)
        lo = np.floor(pos).astype(np.int64)
        hi = np.minimum(lo + 1, np.maximum(k - 1, 0))
        frac = pos - lo
        a, b = w[rows, cols, lo].astype(np.float64), w[rows, cols, hi].astype(np.float64)
        res = a + (b - a) * frac
        res[k == 0] = np.nan
        out.append(res)
    return out


def rank(x: np.ndarray, n: int) -> np.ndarray:
    """Percentile rank of the newest value in its window (pandas ``rank(pct=True)``, average ties)."""
    w = _windows(x, n, np.nan)
    last = x.astype(w.dtype, copy=False)[:, :, None]
    less = (w < last).sum(axis=-1)
    equal = (w == last).sum(axis=-1)
    count = (~np.isnan(w)).sum(axis=-1)
    with np.errstate(divide="ignore", invalid="ignore"):
        out = (less + (equal + 1) / 2.0) / count
    out[np.isnan(x)] = np.nan
    return out


def corr(a: np.ndarray, b: np.ndarray, n: int) -> np.ndarray:
    """Rolling Pearson correlation over pairwise-valid rows; NaN where either rolling std is ~0 (Qlib).

    Columns holding +/-inf (e.g. log volume ratios after a zero-volume day) go through pandas, whose
    rolling correlation defines what inf does to a window; the rest use shifted cumulative sums.
    """
    a64, b64 = a.astype(np.float64), b.astype(np.float64)
    both = ~np.isnan(a64) & ~np.isnan(b64)
    a_c = np.where(both, a64, np.nan)
    b_c = np.where(both, b64, np.nan)
    cnt, av, _ = _valid_sums(a_c, n)
    _, bv, _ = _valid_sums(b_c, n)
    with np.errstate(divide="ignore", invalid="ignore"):
        sa, sb = _wsum(av, n), _wsum(bv, n)
        cov = _wsum(av * bv, n) - sa * sb / cnt
        var_a = _wsum(av * av, n) - sa * sa / cnt
        var_b = _wsum(bv * bv, n) - sb * sb / cnt
        out = cov / np.sqrt(np.maximum(var_a, 0.0) * np.maximum(var_b, 0.0))
    out[cnt < 2] = np.nan
    out = np.clip(out, -1.0, 1.0)
    inf_cols = np.flatnonzero(np.isinf(a64).any(axis=0) | np.isinf(b64).any(axis=0))
    if inf_cols.size:
        left = pd.DataFrame(a64[:, inf_cols])
        right = pd.DataFrame(b64[:, inf_cols])
        out[:, inf_cols] = left.rolling(n, min_periods=1).corr(right).to_numpy()
    flat = np.isclose(std(a, n), 0, atol=_STD_ATOL) | np.isclose(std(b, n), 0, atol=_STD_ATOL)
    out[flat] = np.nan
    return out


def _windows(x: np.ndarray, n: int, fill: float) -> np.ndarray:
    """(T, N, n) sliding windows, padded with ``fill`` before the first row, in x's own dtype.

    Order statistics (max, min, rank, quantile positions) of float32 data are exact in float32, and
    half the bytes to move and sort; sums are never taken over these windows.
    """
    dtype = x.dtype if x.dtype in (np.float32, np.float64) else np.float64
    padded = np.concatenate(
        [np.full((n - 1, x.shape[1]), fill, dtype=dtype), x.astype(dtype, copy=False)], axis=0
    )
    return sliding_window_view(padded, n, axis=0)


def _wsum(a: np.ndarray, n: int) -> np.ndarray:
    """Sum over the trailing window of n rows (fewer during warm-up), anchored at absolute block boundaries.

    Blocks of ``B`` rows (``_BLOCK``, or a multiple of it covering ``n``) start at calendar positions divisible
    by ``B``, and running sums (``head``) restart at each block. A window inside one block is
    ``head[i] - head[i - n]``; a window that starts in the previous block is
    ``head[i] + (total of the previous block - head[i - n])``. Either way the result depends only on the rows of
    the window's two blocks, whatever row the input starts at.
    """
    t_len = a.shape[0]
    block = _BLOCK * -(-n // _BLOCK)
    pad = block + _ORIGIN.get() % block  # one zero block in front: shifted reads never leave the array
    total = -(-(pad + t_len) // block) * block
    padded = np.zeros((total, *a.shape[1:]), dtype=np.float64)
    padded[pad : pad + t_len] = a
    blocks = padded.reshape(total // block, block, -1)
    head3 = np.cumsum(blocks, axis=1)
    head = head3.reshape(padded.shape)
    ends3 = head3.copy()
    # Rows whose window reaches into the previous block (the first n of each block) add that block's total.
    ends3[1:, :n] += head3[:-1, -1:]
    return ends3.reshape(padded.shape)[pad : pad + t_len] - head[pad - n : pad + t_len - n]


def regression_sums(y: np.ndarray, n: int) -> np.ndarray:
    """Window sums for regressing y on its position x in the window (1..n, newest = n), valid rows only.

    With t the row number and k = i - n for the window ending at row i, x = t - k; the sums over x are
    expanded into sums over t (cumulative sums, exact integers in float64) so every row costs O(1).
    """
    y64 = y.astype(np.float64)
    valid = ~np.isnan(y64)
    v = valid.astype(np.float64)
    yv = np.where(valid, y64, 0.0)
    t = np.arange(_ORIGIN.get(), _ORIGIN.get() + y.shape[0], dtype=np.float64)[:, None]
    k = t - n
    cnt = _wsum(v, n)
    st = _wsum(v * t, n)
    stt = _wsum(v * t * t, n)
    sy = _wsum(yv, n)
    sty = _wsum(yv * t, n)
    syy = _wsum(yv * yv, n)
    sx = st - k * cnt
    sxx = stt - 2 * k * st + k * k * cnt
    sxy = sty - k * sy
    return np.stack([cnt, sx, sxx, sy, sxy, syy])


def slope(y: np.ndarray, n: int, sums: np.ndarray | None = None) -> np.ndarray:
    """``Slope(y, n)``; ``sums`` from :func:`regression_sums` may be passed to share them between operators."""
    cnt, sx, sxx, sy, sxy, _ = regression_sums(y, n) if sums is None else sums
    with np.errstate(divide="ignore", invalid="ignore"):
        return (cnt * sxy - sx * sy) / (cnt * sxx - sx * sx)


def rsquare(y: np.ndarray, n: int, sums: np.ndarray | None = None) -> np.ndarray:
    cnt, sx, sxx, sy, sxy, syy = regression_sums(y, n) if sums is None else sums
    with np.errstate(divide="ignore", invalid="ignore"):
        r = (cnt * sxy - sx * sy) / np.sqrt((cnt * sxx - sx * sx) * (cnt * syy - sy * sy))
    out = r * r
    out[np.isclose(std(y, n), 0, atol=_STD_ATOL)] = np.nan
    return out


def resi(y: np.ndarray, n: int, sums: np.ndarray | None = None) -> np.ndarray:
    cnt, sx, sxx, sy, sxy, _ = regression_sums(y, n) if sums is None else sums
    with np.errstate(divide="ignore", invalid="ignore"):
        b = (cnt * sxy - sx * sy) / (cnt * sxx - sx * sx)
        intercept = sy / cnt - b * sx / cnt
    return y.astype(np.float64) - (b * n + intercept)


def _idx(x: np.ndarray, n: int, before_start: np.ndarray, largest: bool) -> np.ndarray:
    """1-based position of the window's max (min) counted from the window's first row in the series.

    numpy's argmax semantics over the raw window: the first maximal value wins, and the first NaN beats every
    number. Rows before the series starts (warm-up, or an instrument that starts later) are not in the
    window. One pass per window offset, each vectorised over all rows and instruments.
    """
    t_len = x.shape[0]
    data = np.concatenate([np.full((n - 1, x.shape[1]), np.nan, dtype=x.dtype), x], axis=0)
    outside = np.concatenate([np.ones((n - 1, x.shape[1]), dtype=bool), before_start], axis=0)
    best = np.full(x.shape, np.nan, dtype=x.dtype)
    best_pos = np.full(x.shape, -1, dtype=np.int64)
    best_nan = np.zeros(x.shape, dtype=bool)
    n_out = np.zeros(x.shape, dtype=np.int64)
    for k in range(n):
        val = data[k : k + t_len]
        out_k = outside[k : k + t_len]
        n_out += out_k
        inside = ~out_k
        val_nan = np.isnan(val) & inside
        empty = best_pos < 0
        with np.errstate(invalid="ignore"):
            better = (val > best) if largest else (val < best)
        take = inside & ~best_nan & (empty | val_nan | better)
        best = np.where(take, val, best)
        best_pos = np.where(take, k, best_pos)
        best_nan |= take & val_nan
    out = (best_pos - n_out + 1).astype(np.float64)
    # A window without any valid value has no result (pandas' rolling apply with min_periods=1).
    out[(best_pos < 0) | (_wsum((~np.isnan(x)).astype(np.float64), n) == 0)] = np.nan
    return out


def idxmax(x: np.ndarray, n: int, before_start: np.ndarray) -> np.ndarray:
    return _idx(x, n, before_start, largest=True)


def idxmin(x: np.ndarray, n: int, before_start: np.ndarray) -> np.ndarray:
    return _idx(x, n, before_start, largest=False)
