"""Per-metric, per-variant analysis against control, with Holm's correction across the whole family.

Metric kinds and their default tests:

- ``proportion`` (conversion; data are 0/1 per user): pooled two-proportion z-test (``test="z"``) or the
  equivalent 2 x 2 chi-square (``test="chi2"``); CI of the difference is the unpooled Wald interval.
- ``mean`` (e.g. revenue or return per user): Welch's t-test (``test="welch"``) with the Welch-Satterthwaite
  t interval, or Mann-Whitney U for skewed metrics (``test="mann_whitney"``; its CI is the percentile
  bootstrap of the difference in means since U tests a shift in distribution, not in means).
- ``ratio`` (sum of numerator / sum of denominator; data are (numerator, denominator) per user): delta-method
  z-test (``test="delta_z"``).

``ci="bootstrap"`` replaces the analytic CI of the difference with a seeded percentile bootstrap (mean and
proportion kinds). Relative lift CIs use the delta method (see ``_stats``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, replace
from typing import Any

import numpy as np
from scipy import stats

from qmlops.exceptions import ValidationError
from qmlops.experiments._stats import (
    _sample,
    bootstrap_ci,
    chi_square_2x2,
    holm_adjust,
    mann_whitney_u,
    ratio_and_variance,
    ratio_delta_test,
    relative_lift_ci,
    relative_lift_fieller,
    two_proportion_z_test,
    welch_t_test,
)

__all__ = ["MetricResult", "analyze_metric", "analyze_experiment", "METRIC_TESTS"]

METRIC_TESTS: dict[str, tuple[str, ...]] = {
    "proportion": ("z", "chi2"),
    "mean": ("welch", "mann_whitney"),
    "ratio": ("delta_z",),
}


@dataclass(frozen=True)
class MetricResult:
    """One metric for one variant against control."""

    metric: str
    variant: str
    kind: str
    n_control: int
    n_variant: int
    control_mean: float
    variant_mean: float
    absolute_lift: float
    absolute_ci: tuple[float, float]
    relative_lift: float
    relative_ci: tuple[float, float]
    p_value: float
    adjusted_p_value: float
    test: str
    significant: bool
    alpha: float
    relative_ci_method: str = "fieller"  # matches the test (see relative_lift_fieller); "delta" when not

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["absolute_ci"] = list(self.absolute_ci)
        out["relative_ci"] = list(self.relative_ci)
        return out


Data = np.ndarray | Sequence[float] | tuple[np.ndarray, np.ndarray]


def analyze_metric(metric: str, kind: str, control: Data, variant: Data, *, variant_name: str = "treatment",
                   test: str | None = None, alpha: float = 0.05, ci: str = "analytic", n_resamples: int = 2000,
                   seed: int = 0) -> MetricResult:  # fmt: skip
    """Compare one variant with control on one metric; ``adjusted_p_value`` equals ``p_value`` until
    :func:`analyze_experiment` applies Holm across the family."""
    if kind not in METRIC_TESTS:
        raise ValidationError(f"unknown metric kind {kind!r}; known: {sorted(METRIC_TESTS)}", field="kind")
    test = test or METRIC_TESTS[kind][0]
    if test not in METRIC_TESTS[kind]:
        raise ValidationError(f"test {test!r} does not apply to {kind} metrics; use one of "
                              f"{METRIC_TESTS[kind]}", field="test")  # fmt: skip
    if not 0 < alpha < 1:
        raise ValidationError("alpha must lie in (0, 1)", field="alpha")
    if ci not in ("analytic", "bootstrap"):
        raise ValidationError("ci must be 'analytic' or 'bootstrap'", field="ci")
    z = float(stats.norm.ppf(1 - alpha / 2))
    level = 1 - alpha
    df = float("inf")
    if kind == "ratio":
        if not (isinstance(control, tuple) and isinstance(variant, tuple)):
            raise ValidationError("ratio metrics take (numerator, denominator) arrays per arm", field=metric)
        res = ratio_delta_test(control[0], control[1], variant[0], variant[1], level)
        n_a, n_b = len(control[0]), len(variant[0])
        p_value, ma, mb, diff, diff_ci = res.p_value, res.mean_a, res.mean_b, res.difference, res.ci
        var_a, var_b = ratio_and_variance(*control)[1], ratio_and_variance(*variant)[1]
    else:
        a = _sample(np.asarray(control, dtype=np.float64), "control")
        b = _sample(np.asarray(variant, dtype=np.float64), "variant")
        n_a, n_b = a.size, b.size
        ma, mb = float(a.mean()), float(b.mean())
        var_a, var_b = float(a.var(ddof=1) / n_a), float(b.var(ddof=1) / n_b)
        diff = mb - ma
        if kind == "proportion":
            if np.any((a != 0) & (a != 1)) or np.any((b != 0) & (b != 1)):
                raise ValidationError("proportion metrics take 0/1 outcomes per user", field=metric)
            if test == "z":
                p_value = float(two_proportion_z_test(a.sum(), n_a, b.sum(), n_b)[1])
            else:
                p_value = chi_square_2x2(a.sum(), n_a, b.sum(), n_b)[1]
            se = np.sqrt(ma * (1 - ma) / n_a + mb * (1 - mb) / n_b)
            diff_ci = (diff - z * se, diff + z * se)
        elif test == "welch":
            _, welch_df, p = welch_t_test(a, b)
            p_value, df = float(p), float(welch_df)
            half = float(stats.t.ppf(1 - alpha / 2, df) * np.sqrt(var_a + var_b))
            diff_ci = (diff - half, diff + half)
        else:
            p_value = mann_whitney_u(a, b)[1]
            diff_ci = bootstrap_ci(a, b, n_resamples=n_resamples, level=level, seed=seed)
        if ci == "bootstrap" and test != "mann_whitney":
            diff_ci = bootstrap_ci(a, b, n_resamples=n_resamples, level=level, seed=seed)
    # The relative interval uses Fieller's method with the test's own critical value, so that it excludes 0
    # exactly when the (Welch / z / delta) test rejects; the first-order delta interval could exclude 0 at
    # p >= alpha on small, skewed samples. Mann-Whitney tests ranks, which no interval of the means matches.
    critical = float(stats.t.ppf(1 - alpha / 2, df)) if kind == "mean" and test == "welch" else z
    lift, lift_ci = relative_lift_fieller(ma, var_a, mb, var_b, critical)
    method = "fieller"
    if test == "mann_whitney":
        lift, lift_ci = relative_lift_ci(ma, var_a, mb, var_b, level)
        method = "delta"
    return MetricResult(metric, variant_name, kind, int(n_a), int(n_b), float(ma), float(mb), float(diff),
                        (float(diff_ci[0]), float(diff_ci[1])), lift, lift_ci, float(p_value), float(p_value),
                        test, bool(p_value < alpha), alpha, method)  # fmt: skip


def analyze_experiment(metrics: Mapping[str, tuple[str, Mapping[str, Data]]], *, control: str = "control",
                       alpha: float = 0.05, tests: Mapping[str, str] | None = None,
                       **options: Any) -> list[MetricResult]:  # fmt: skip
    """All metrics x variants against ``control`` with Holm-adjusted p-values across the whole family.

    ``metrics`` maps a metric name to ``(kind, {variant: data})``; ``tests`` optionally picks a test per metric.
    ``significant`` is decided on the adjusted p-value.
    """
    results: list[MetricResult] = []
    for name, (kind, arms) in metrics.items():
        if control not in arms:
            raise ValidationError(f"metric {name!r} has no {control!r} arm", field="control")
        for variant, data in arms.items():
            if variant == control:
                continue
            results.append(analyze_metric(name, kind, arms[control], data, variant_name=variant, alpha=alpha,
                                          test=(tests or {}).get(name), **options))  # fmt: skip
    adjusted = holm_adjust([r.p_value for r in results])
    return [replace(r, adjusted_p_value=float(a), significant=bool(a < alpha))
            for r, a in zip(results, adjusted, strict=True)]  # fmt: skip
