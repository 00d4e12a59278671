"""Evaluation of predictions on a test segment: information coefficients and a daily top-k long-short backtest.

Inputs are aligned series indexed (datetime, instrument): ``pred`` (the model's score) and ``label`` (the
realised next-period return the score predicts, e.g. LABEL0 = Ref($close,-2)/Ref($close,-1) - 1).

- IC: per day, the Pearson correlation between pred and label across instruments; IC is the mean over days,
  ICIR = mean / std (ddof=1) of the daily IC. Rank IC / Rank ICIR: the same with Spearman's correlation.
  Days with fewer than ``min_names`` instruments, or a constant pred or label, are skipped.
- MSE over all rows with both values.
- Backtest: each day, an equal-weight long portfolio of the top-k instruments by pred minus an equal-weight short
  portfolio of the bottom k; the day's return is the label's mean over the long leg minus over the short leg.
  Annualised return = mean x periods_per_year; information ratio = mean / std x sqrt(periods_per_year);
  max drawdown is the largest peak-to-trough fall of the cumulative (summed) return curve; turnover is the mean
  over days of the fraction of each leg's names replaced since the previous day (0: same names, 1: all new).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
import pandas as pd

from qmlops.exceptions import ValidationError

__all__ = ["Evaluation", "daily_ic", "evaluate_predictions", "long_short_backtest"]


@dataclass(frozen=True)
class Evaluation:
    ic: float
    icir: float
    rank_ic: float
    rank_icir: float
    mse: float
    annual_return: float
    information_ratio: float
    max_drawdown: float
    turnover: float
    n_days: int
    n_rows: int

    def to_dict(self) -> dict[str, float | int]:
        return asdict(self)


def _aligned(pred: pd.Series, label: pd.Series) -> pd.DataFrame:
    if not isinstance(pred.index, pd.MultiIndex) or "datetime" not in pred.index.names:
        raise ValidationError("pred must be indexed (datetime, instrument)", field="pred")
    frame = pd.DataFrame(
        {"pred": pred.astype("float64"), "label": label.reindex(pred.index).astype("float64")}
    )
    frame = frame[np.isfinite(frame["pred"]) & np.isfinite(frame["label"])]
    if frame.empty:
        raise ValidationError("no rows with both a prediction and a label", field="label")
    return frame


def daily_ic(pred: pd.Series, label: pd.Series, *, method: str = "pearson", min_names: int = 2) -> pd.Series:
    """The per-day cross-sectional correlation (``pearson`` or ``spearman``), indexed by date."""
    if method not in ("pearson", "spearman"):
        raise ValidationError("method must be pearson or spearman", field="method")
    frame = _aligned(pred, label)
    if method == "spearman":
        grouped = frame.groupby(level="datetime")
        frame = pd.DataFrame({"pred": grouped["pred"].rank(), "label": grouped["label"].rank()})
    g = frame.groupby(level="datetime")
    n = g["pred"].count()
    mp, ml = g["pred"].transform("mean"), g["label"].transform("mean")
    dp, dl = frame["pred"] - mp, frame["label"] - ml
    cov = (dp * dl).groupby(level="datetime").sum()
    var_p = (dp * dp).groupby(level="datetime").sum()
    var_l = (dl * dl).groupby(level="datetime").sum()
    with np.errstate(divide="ignore", invalid="ignore"):
        ic = cov / np.sqrt(var_p * var_l)
    ic = ic[(n >= min_names) & (var_p > 0) & (var_l > 0)]
    return ic.astype("float64")


def long_short_backtest(pred: pd.Series, label: pd.Series, *, k: int = 20) -> tuple[pd.Series, pd.Series]:
    """(daily long-short return, daily turnover) for the top-k minus bottom-k portfolio."""
    if k < 1:
        raise ValidationError("k must be at least 1", field="k")
    frame = _aligned(pred, label)
    returns: dict[pd.Timestamp, float] = {}
    turnover: dict[pd.Timestamp, float] = {}
    prev_long: set[str] = set()
    prev_short: set[str] = set()
    for day, day_frame in frame.groupby(level="datetime", sort=True):
        if len(day_frame) < 2 * k:
            continue
        ranked = day_frame.sort_values("pred", kind="mergesort")
        names = ranked.index.get_level_values("instrument")
        short, long_ = ranked.iloc[:k], ranked.iloc[-k:]
        returns[day] = float(long_["label"].mean() - short["label"].mean())
        long_names, short_names = set(names[-k:]), set(names[:k])
        if prev_long:
            turnover[day] = (len(long_names - prev_long) + len(short_names - prev_short)) / (2 * k)
        prev_long, prev_short = long_names, short_names
    return pd.Series(returns, dtype="float64"), pd.Series(turnover, dtype="float64")


def _max_drawdown(cumulative: np.ndarray) -> float:
    if cumulative.size == 0:
        return float("nan")
    peak = np.maximum.accumulate(np.concatenate([[0.0], cumulative]))[1:]
    return float(np.max(peak - cumulative))


def evaluate_predictions(
    pred: pd.Series, label: pd.Series, *, k: int = 20, periods_per_year: int = 252, min_names: int = 2
) -> Evaluation:
    """IC, ICIR, Rank IC, Rank ICIR, MSE and the top-k long-short backtest figures (see module docstring)."""
    frame = _aligned(pred, label)
    ic = daily_ic(frame["pred"], frame["label"], method="pearson", min_names=min_names)
    ric = daily_ic(frame["pred"], frame["label"], method="spearman", min_names=min_names)
    rets, turns = long_short_backtest(frame["pred"], frame["label"], k=k)

    def ir(series: pd.Series) -> float:
        return (
            float(series.mean() / series.std(ddof=1))
            if len(series) > 1 and series.std(ddof=1) > 0
            else float("nan")
        )

    ann = float(rets.mean() * periods_per_year) if len(rets) else float("nan")
    info = ir(rets) * float(np.sqrt(periods_per_year)) if len(rets) > 1 else float("nan")
    return Evaluation(
        ic=float(ic.mean()) if len(ic) else float("nan"),
        icir=ir(ic),
        rank_ic=float(ric.mean()) if len(ric) else float("nan"),
        rank_icir=ir(ric),
        mse=float(np.mean((frame["pred"] - frame["label"]) ** 2)),
        annual_return=ann,
        information_ratio=info,
        max_drawdown=_max_drawdown(np.cumsum(rets.to_numpy())),
        turnover=float(turns.mean()) if len(turns) else float("nan"),
        n_days=int(frame.index.get_level_values("datetime").nunique()),
        n_rows=len(frame),
    )
