"""The loop's decisions as pure functions of plain values: daily metrics, IC decay, retrain, shadow verdicts."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
from scipy import stats

from qmlops.loop._policy import LoopPolicy, ShadowPolicy, TriggerPolicy

__all__ = [
    "DayMetrics",
    "change_point",
    "day_metrics",
    "ic_decay",
    "retrain_decision",
    "ShadowVerdict",
    "shadow_verdict",
]


@dataclass(frozen=True)
class DayMetrics:
    """One day's cross-section: Pearson IC, Spearman rank IC, and the top-k minus bottom-k mean return."""

    ic: float | None
    rank_ic: float | None
    long_short: float | None
    n: int

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def day_metrics(scores: np.ndarray, returns: np.ndarray, k: int) -> DayMetrics:
    """Metrics over the instruments with both a finite score and a finite return (None below 3 of them)."""
    ok = np.isfinite(scores) & np.isfinite(returns)
    s, r = scores[ok].astype(np.float64), returns[ok].astype(np.float64)
    n = int(ok.sum())
    # A constant score (to rounding: a model that learnt nothing scores ~1e-9 +- 1e-24) has no correlation.
    if n < 3 or np.std(s) <= 1e-9 * np.abs(s).max() or np.std(r) == 0:
        return DayMetrics(None, None, None, n)
    ic = float(np.corrcoef(s, r)[0, 1])
    rank_ic = float(stats.spearmanr(s, r).statistic)
    kk = max(1, min(k, n // 2))
    order = np.argsort(s, kind="mergesort")
    long_short = float(r[order[-kk:]].mean() - r[order[:kk]].mean())
    return DayMetrics(ic, rank_ic, long_short, n)


def change_point(x: np.ndarray, delta: float) -> tuple[int, float]:
    """Page-Hinkley for a fall in the mean of ``x`` (oldest first): ``m_t = sum_{i<=t} (x_i - mean(x_0..x_i) + delta)``,
    the statistic is ``max_t m_t - m_T``; the change point is the index after the one where ``m`` peaked (the
    first value of the fall). Returns (change index, statistic)."""
    running = np.cumsum(x) / np.arange(1, x.size + 1)
    m = np.cumsum(x - running + delta)
    peak = int(np.argmax(m))
    return min(peak + 1, x.size - 1), float(m[peak] - m[-1])


def ic_decay(ics: Sequence[float | None], trigger: TriggerPolicy) -> tuple[bool, dict[str, Any]]:
    """IC decay of the production model's daily online IC (oldest first), by ``trigger.method``.

    ``rolling_mean``: decay when the mean of the last ``ic_window`` ICs was under ``ic_floor`` on each of the last
    ``ic_days`` days (the rolling means ending at each of those days). ``page_hinkley``: decay when the
    Page-Hinkley statistic of :func:`change_point` exceeds ``ph_threshold`` (after at least ``ic_window`` ICs).
    Days without an IC are skipped; ``change_index`` in the details counts the ICs kept.
    """
    if trigger.ic_floor is None:
        return False, {"reason": "IC trigger off"}
    x = np.array([v for v in ics if v is not None and math.isfinite(v)], dtype=np.float64)
    if trigger.method == "page_hinkley":
        if x.size < trigger.ic_window:
            return False, {"matured_days": int(x.size), "needed": trigger.ic_window}
        index, statistic = change_point(x, trigger.ph_delta)
        return statistic > trigger.ph_threshold, {
            "method": "page_hinkley", "statistic": statistic, "threshold": trigger.ph_threshold,
            "change_index": index, "mean_ic_since_change": float(x[index:].mean()),
        }  # fmt: skip
    need = trigger.ic_window + trigger.ic_days - 1
    if x.size < need:
        return False, {"matured_days": int(x.size), "needed": need}
    means = np.convolve(x, np.ones(trigger.ic_window) / trigger.ic_window, mode="valid")[-trigger.ic_days :]
    decayed = bool((means < trigger.ic_floor).all())
    return decayed, {
        "rolling_mean_ic": float(means[-1]),
        "floor": trigger.ic_floor,
        "days_under": int(
            np.flatnonzero(means[::-1] >= trigger.ic_floor)[0]
            if (means >= trigger.ic_floor).any()
            else len(means)
        ),
        "change_index": change_point(x, trigger.ph_delta)[0],
    }


def retrain_decision(
    *,
    day_index: int,
    has_production: bool,
    last_retrain_index: int | None,
    production_ics: Sequence[float | None],
    drift_share: float | None,
    shadow_pending: bool,
    policy: LoopPolicy,
) -> tuple[bool, str, dict[str, Any]]:
    """Whether to train a model on this day (``day_index`` counts market days of data), and why.

    Order: the first model once ``min_history_days`` of data exist; no retrain while a candidate is in shadow;
    the schedule (every ``retrain_every`` days since the last retrain); then the triggers (IC decay, drift),
    which respect ``cooldown_days`` since the last retrain.
    """
    if not has_production:
        if last_retrain_index is None and day_index + 1 >= policy.min_history_days:
            return True, "initial", {}
        return False, "", {}
    if shadow_pending:
        return False, "", {}
    since = day_index - (last_retrain_index if last_retrain_index is not None else -(10**9))
    if policy.retrain_every and since >= policy.retrain_every:
        return True, "schedule", {"days_since_retrain": since}
    if since < policy.trigger.cooldown_days:
        return False, "", {}
    decayed, details = ic_decay(production_ics, policy.trigger)
    if decayed:
        return True, "ic_decay", details
    if (
        policy.trigger.drift_share is not None
        and drift_share is not None
        and drift_share >= policy.trigger.drift_share
    ):
        return True, "drift", {"drift_share": drift_share}
    return False, "", details


@dataclass(frozen=True)
class ShadowVerdict:
    verdict: str  # promote | archive | wait
    reason: str
    days: int
    mean_diff: float | None = None
    t: float | None = None
    p_value: float | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def shadow_verdict(
    candidate: Sequence[float], production: Sequence[float], policy: ShadowPolicy
) -> ShadowVerdict:
    """Paired one-sided t-test on daily IC differences ``d = candidate - production - margin`` (H1: mean > 0).

    ``candidate`` and ``production`` are aligned daily ICs of the same matured days. Waits below ``min_days``;
    promotes when mean(d) > 0 and p < ``alpha``; archives when mean(d) <= 0 after ``min_days``, or when
    ``max_days`` passed without significance.
    """
    c, p = np.asarray(candidate, dtype=np.float64), np.asarray(production, dtype=np.float64)
    ok = np.isfinite(c) & np.isfinite(p)
    diff = c[ok] - p[ok]
    n = int(diff.size)
    if n < policy.min_days:
        return ShadowVerdict("wait", f"{n} of {policy.min_days} matured days", n)
    mean = float(diff.mean())
    d = diff - policy.margin
    if np.std(d, ddof=1) <= 1e-12:  # identical differences: the t statistic is infinite
        t_stat, p_value = (math.inf if d.mean() > 0 else -math.inf), (0.0 if d.mean() > 0 else 1.0)
    else:
        res = stats.ttest_1samp(d, 0.0, alternative="greater")
        t_stat, p_value = float(res.statistic), float(res.pvalue)
    text = f"mean daily IC difference {mean:+.4f} over {n} days (margin {policy.margin:g}), t={t_stat:.2f}, p={p_value:.3f}"
    if d.mean() > 0 and p_value < policy.alpha:
        return ShadowVerdict("promote", "better than production: " + text, n, mean, t_stat, p_value)
    if d.mean() <= 0:
        return ShadowVerdict("archive", "not better than production: " + text, n, mean, t_stat, p_value)
    if n >= policy.max_days:
        return ShadowVerdict("archive", f"not significant after {n} days: " + text, n, mean, t_stat, p_value)
    return ShadowVerdict("wait", "not yet significant: " + text, n, mean, t_stat, p_value)
