"""Incremental Alpha158: the rows of the newest days, computed from the look-back window they need.

Every Alpha158 operator reads at most ``max(ALPHA158_WINDOWS)`` rows of its input, and the deepest inputs reach
one row further back (``Ref($close, 1)`` inside ``Corr``/``Sum`` windows); the window sums are taken within the
day's 64-day block and the previous one, so a day's row depends only on the ``ALPHA158_LOOKBACK`` (130) market
days ending at it. :func:`compute_tail_features` evaluates the same vectorised code as the full computation on that
tail, with each instrument's *true* first date (from the full history) so the window-position
operators (``IdxMax``/``IdxMin``) see calendar gaps where the full computation sees them. The cost of a day is
therefore flat in the length of history.

Equality with a full recompute is exact, bit for bit: the operators take window sums within blocks anchored at
absolute calendar positions (:mod:`qmlops.features._ops`), so a day's value is a function of its window's rows
only, whichever row the computation starts at (``tests/features/test_incremental.py``). The one exception is a
window over a series holding +/-inf (a zero volume under a log ratio), which goes through pandas' rolling
sums as in the full computation, anchored at the input's first row.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from qmlops.exceptions import ValidationError
from qmlops.features._alpha158 import ALPHA158_WINDOWS, alpha158_feature_names, alpha158_from_panel
from qmlops.features._ops import _BLOCK, anchored
from qmlops.features._panel import Panel, to_panel
from qmlops.features._sets import FeatureSetDefinition, builtin_set

__all__ = ["ALPHA158_LOOKBACK", "compute_tail_features", "tail_window"]

# Window sums are taken within blocks of _BLOCK days at absolute positions (see qmlops.features._ops): a day's
# window needs its own block from its start and the whole previous block (up to 2 * _BLOCK - 1 days back), and
# the one-day references of those rows; the longest window (60) plus its reference needs fewer.
ALPHA158_LOOKBACK = max(2 * _BLOCK, max(ALPHA158_WINDOWS)) + 2


def tail_window(
    calendar: pd.DatetimeIndex, day: pd.Timestamp, lookback: int = ALPHA158_LOOKBACK
) -> tuple[pd.DatetimeIndex, int]:
    """The ``lookback`` market days ending at ``day`` (fewer at the start of history), and the position of the
    first of them in ``calendar`` (the ``origin`` :func:`compute_tail_features` needs)."""
    pos = calendar.get_indexer([pd.Timestamp(day)])[0]
    if pos < 0:
        raise ValidationError(f"{pd.Timestamp(day).date()} is not a market day of the data", field="day")
    start = max(0, pos - lookback + 1)
    return calendar[start : pos + 1], start


def compute_tail_features(
    tail: pd.DataFrame,
    days: pd.DatetimeIndex,
    *,
    first_dates: pd.Series,
    calendar: pd.DatetimeIndex,
    origin: int,
    feature_set: str | FeatureSetDefinition = "alpha158",
) -> pd.DataFrame:
    """Alpha158 rows for ``days`` (the last days of ``tail``), indexed (datetime, instrument) like a full compute.

    ``tail`` holds the canonical OHLCV rows of at least the ``ALPHA158_LOOKBACK`` market days ending at the last
    of ``days``; ``calendar`` is the market calendar of those rows (a slice of the full one); ``first_dates``
    maps each instrument to its first date in the *full* history; ``origin`` is the position of ``calendar[0]`` in
    the full market calendar (window sums are anchored there, so the rows are the full computation's bits). Raises :class:`ValidationError` for a feature
    set other than alpha158 (indicators such as EMAs have unbounded memory) or a tail too short for ``days``.
    """
    definition = builtin_set(feature_set)
    if definition.kind != "alpha158":
        raise ValidationError(
            f"incremental features are defined for alpha158 only, not {definition.name!r}",
            field="feature_set",
        )
    calendar = pd.DatetimeIndex(calendar)
    days = pd.DatetimeIndex(days)
    first_needed = calendar.get_indexer([days.min()])[0]
    if first_needed < 0 or (first_needed < ALPHA158_LOOKBACK - 1 and calendar[0] > first_dates.min()):
        raise ValidationError(
            f"the tail needs {ALPHA158_LOOKBACK - 1} market days before {days.min().date()}", field="tail"
        )
    panel = _with_true_starts(to_panel(tail, calendar), first_dates)
    with anchored(origin):
        values = alpha158_from_panel(panel)
    keep = np.isin(panel.dates, days)
    panel.in_span = panel.in_span & keep[:, None]
    return panel.to_long(values)[alpha158_feature_names()]


def _with_true_starts(panel: Panel, first_dates: pd.Series) -> Panel:
    """Span masks from each instrument's first date in the full history, not its first row in the tail."""
    first = pd.to_datetime(first_dates.reindex(panel.instruments.astype(str))).to_numpy(
        dtype="datetime64[ns]"
    )
    if np.isnat(first).any():
        missing = panel.instruments[np.isnat(first)][:3]
        raise ValidationError(
            f"no first date for instrument(s) {list(map(str, missing))}", field="first_dates"
        )
    dates = panel.dates.to_numpy(dtype="datetime64[ns]")[:, None]
    before = dates < first[None, :]
    last_row = np.where(
        panel.in_span.any(axis=0), panel.in_span.shape[0] - 1 - np.argmax(panel.in_span[::-1], axis=0), -1
    )
    rows = np.arange(panel.in_span.shape[0])[:, None]
    panel.before_start = before
    panel.in_span = ~before & (rows <= last_row[None, :])
    return panel
