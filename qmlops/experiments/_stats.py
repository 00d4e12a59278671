"""Fixed-horizon A/B statistics: tests, confidence intervals, SRM, Holm, power and sample size.

All functions are pure and vectorised along the last axis where that helps simulations (``welch_t_test``,
``two_proportion_z_test``). Formulas:

- Welch's t-test: ``t = (mean_b - mean_a) / sqrt(s_a^2/n_a + s_b^2/n_b)``, Welch-Satterthwaite degrees of freedom
  ``df = (v_a + v_b)^2 / (v_a^2/(n_a-1) + v_b^2/(n_b-1))`` with ``v = s^2/n`` (Welch 1947).
- Two-proportion z-test with pooled ``p = (x_a + x_b)/(n_a + n_b)``: ``z = (p_b - p_a)/sqrt(p(1-p)(1/n_a+1/n_b))``;
  its square is the Pearson chi-square of the 2 x 2 table without Yates' correction.
- Mann-Whitney U with the normal approximation, tie correction and continuity correction (Mann & Whitney 1947).
- Ratio metrics ``R = sum(y)/sum(x)``: delta-method variance ``Var(R) ~ (s_y^2 - 2 R s_xy + R^2 s_x^2)/(n xbar^2)``
  (Deng, Knoblich & Lu 2018, "Applying the Delta Method in Metric Analytics").
- Relative lift ``(m_b - m_a)/m_a`` with delta-method variance ``v_b/m_a^2 + m_b^2 v_a/m_a^4``.
- Holm's step-down adjustment ``max_{j<=i} min(1, (m - j + 1) p_(j))`` (Holm 1979).
- Power, two-sided, normal approximation: means ``n = 2 (z_{1-a/2} + z_{1-b})^2 / d^2`` per arm (d = Cohen's d);
  proportions ``n = (z_{1-a/2} sqrt(2 pbar qbar) + z_{1-b} sqrt(p1 q1 + p2 q2))^2 / (p1 - p2)^2`` (Fleiss, Levin &
  Paik, *Statistical Methods for Rates and Proportions*, 3rd ed., eq. 4.14, without continuity correction).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy import stats

from qmlops.exceptions import ValidationError

__all__ = [
    "TestResult",
    "SRMResult",
    "welch_t_test",
    "two_proportion_z_test",
    "chi_square_2x2",
    "mann_whitney_u",
    "ratio_and_variance",
    "ratio_delta_test",
    "relative_lift_ci",
    "bootstrap_ci",
    "srm_check",
    "holm_adjust",
    "power_means",
    "sample_size_means",
    "power_proportions",
    "sample_size_proportions",
]


@dataclass(frozen=True)
class TestResult:
    """A two-sample comparison of variant (b) against control (a): difference b - a, its CI and p-value."""

    test: str
    statistic: float
    p_value: float
    mean_a: float
    mean_b: float
    difference: float
    std_error: float
    ci: tuple[float, float]


def _sample(x: Sequence[float] | np.ndarray, name: str, minimum: int = 2) -> np.ndarray:
    arr = np.asarray(x, dtype=np.float64)
    arr = arr[np.isfinite(arr)]
    if arr.size < minimum:
        raise ValidationError(
            f"{name} needs at least {minimum} finite observations, got {arr.size}", field=name
        )
    return arr


def welch_t_test(a: np.ndarray, b: np.ndarray, axis: int = -1) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Welch's unequal-variance t-test of mean(b) - mean(a), vectorised along ``axis``: (t, df, p two-sided)."""
    na, nb = np.shape(a)[axis], np.shape(b)[axis]
    va = np.var(a, axis=axis, ddof=1) / na
    vb = np.var(b, axis=axis, ddof=1) / nb
    t = (np.mean(b, axis=axis) - np.mean(a, axis=axis)) / np.sqrt(va + vb)
    df = (va + vb) ** 2 / (va**2 / (na - 1) + vb**2 / (nb - 1))
    return t, df, 2.0 * stats.t.sf(np.abs(t), df)


def two_proportion_z_test(x_a: np.ndarray | float, n_a: np.ndarray | float, x_b: np.ndarray | float,
                          n_b: np.ndarray | float) -> tuple[np.ndarray, np.ndarray]:  # fmt: skip
    """Pooled two-proportion z-test of p_b - p_a (successes x out of n); vectorised: (z, p two-sided)."""
    xa, na, xb, nb = (np.asarray(v, dtype=np.float64) for v in (x_a, n_a, x_b, n_b))
    pooled = (xa + xb) / (na + nb)
    se = np.sqrt(pooled * (1.0 - pooled) * (1.0 / na + 1.0 / nb))
    with np.errstate(divide="ignore", invalid="ignore"):
        z = np.where(se > 0, (xb / nb - xa / na) / np.where(se > 0, se, 1.0), 0.0)
    return z, 2.0 * stats.norm.sf(np.abs(z))


def chi_square_2x2(x_a: float, n_a: float, x_b: float, n_b: float) -> tuple[float, float]:
    """Pearson chi-square (no Yates) of successes/failures by arm: (statistic, p); equals the z-test squared."""
    table = np.array([[x_a, n_a - x_a], [x_b, n_b - x_b]], dtype=np.float64)
    expected = table.sum(1, keepdims=True) * table.sum(0, keepdims=True) / table.sum()
    statistic = float(((table - expected) ** 2 / expected).sum())
    return statistic, float(stats.chi2.sf(statistic, 1))


def mann_whitney_u(a: np.ndarray, b: np.ndarray) -> tuple[float, float]:
    """Mann-Whitney U of ``a`` (scipy's convention: U of the first sample) with the tie-corrected normal
    approximation and continuity correction: (U, p two-sided). For skewed metrics such as returns."""
    a, b = _sample(a, "control", 1), _sample(b, "variant", 1)
    n1, n2 = a.size, b.size
    ranks = stats.rankdata(np.concatenate([a, b]))
    u1 = ranks[:n1].sum() - n1 * (n1 + 1) / 2.0
    _, tie_counts = np.unique(ranks, return_counts=True)
    n = n1 + n2
    sigma = np.sqrt(n1 * n2 / 12.0 * ((n + 1) - (tie_counts**3 - tie_counts).sum() / (n * (n - 1))))
    if sigma == 0:
        return float(u1), 1.0
    z = (abs(u1 - n1 * n2 / 2.0) - 0.5) / sigma
    return float(u1), float(min(1.0, 2.0 * stats.norm.sf(max(z, 0.0))))


def _normal_result(test: str, mean_a: float, mean_b: float, se: float, level: float) -> TestResult:
    diff = mean_b - mean_a
    z = diff / se if se > 0 else 0.0
    half = stats.norm.ppf(0.5 + level / 2.0) * se
    return TestResult(test, float(z), float(2.0 * stats.norm.sf(abs(z))), mean_a, mean_b, diff, se,
                      (diff - half, diff + half))  # fmt: skip


def ratio_and_variance(num: np.ndarray, den: np.ndarray, name: str = "ratio") -> tuple[float, float]:
    """``R = sum(num)/sum(den)`` and its delta-method variance (per-user numerator/denominator pairs)."""
    y, x = np.asarray(num, dtype=np.float64), np.asarray(den, dtype=np.float64)
    if y.shape != x.shape or y.ndim != 1 or y.size < 2:
        raise ValidationError(f"{name}: numerator and denominator need equal lengths >= 2", field=name)
    if x.sum() == 0:
        raise ValidationError(f"{name}: the denominator sums to zero", field=name)
    r = y.sum() / x.sum()
    cov = np.cov(y, x, ddof=1)
    var = (cov[0, 0] - 2 * r * cov[0, 1] + r**2 * cov[1, 1]) / (y.size * x.mean() ** 2)
    return float(r), float(var)


def ratio_delta_test(num_a: np.ndarray, den_a: np.ndarray, num_b: np.ndarray, den_b: np.ndarray,
                     level: float = 0.95) -> TestResult:  # fmt: skip
    """z-test of the difference of ratio metrics sum(num)/sum(den) per arm with delta-method variances."""
    ra, va = ratio_and_variance(num_a, den_a, "control")
    rb, vb = ratio_and_variance(num_b, den_b, "variant")
    return _normal_result("delta_z", ra, rb, float(np.sqrt(va + vb)), level)


def relative_lift_ci(mean_a: float, var_mean_a: float, mean_b: float, var_mean_b: float,
                     level: float = 0.95) -> tuple[float, tuple[float, float]]:  # fmt: skip
    """Relative lift (b - a)/a and its delta-method CI from the arms' means and variances of the means."""
    if mean_a == 0:
        return float("nan"), (float("nan"), float("nan"))
    lift = (mean_b - mean_a) / mean_a
    se = np.sqrt(var_mean_b / mean_a**2 + mean_b**2 * var_mean_a / mean_a**4)
    half = float(stats.norm.ppf(0.5 + level / 2.0) * se)
    return float(lift), (lift - half, lift + half)


def relative_lift_fieller(mean_a: float, var_mean_a: float, mean_b: float, var_mean_b: float,
                          critical: float) -> tuple[float, tuple[float, float]]:  # fmt: skip
    """Relative lift (b - a)/a and its Fieller interval (Fieller 1954) for independent arms.

    The interval is every lift L whose ``(mean_b - (1 + L) mean_a) / sqrt(var_b + (1 + L)^2 var_a)`` is within
    ``critical``; at L = 0 that is the unpooled two-sample statistic, so with the test's own critical value (the
    Welch t quantile, or z) the interval excludes 0 exactly when the test rejects. When the control mean is not
    itself distinguishable from 0 the set is unbounded: (-inf, inf).
    """
    if mean_a == 0:
        return float("nan"), (float("nan"), float("nan"))
    lift = (mean_b - mean_a) / mean_a
    c2 = critical**2
    qa = mean_a**2 - c2 * var_mean_a
    qb = -2.0 * mean_a * mean_b
    qc = mean_b**2 - c2 * var_mean_b
    disc = qb**2 - 4 * qa * qc
    if qa <= 0 or disc < 0:
        return float(lift), (float("-inf"), float("inf"))
    root = float(np.sqrt(disc))
    r1, r2 = sorted(((-qb - root) / (2 * qa), (-qb + root) / (2 * qa)))
    return float(lift), (r1 - 1.0, r2 - 1.0)


def bootstrap_ci(a: np.ndarray, b: np.ndarray, *, statistic: str = "difference", n_resamples: int = 2000,
                 level: float = 0.95, seed: int = 0, chunk: int = 200) -> tuple[float, float]:  # fmt: skip
    """Percentile bootstrap CI (Efron & Tibshirani 1993) of mean(b) - mean(a) (``"difference"``) or
    (mean(b) - mean(a))/mean(a) (``"relative"``); arms resampled independently, seeded, vectorised in chunks."""
    a, b = _sample(a, "control", 1), _sample(b, "variant", 1)
    if statistic not in ("difference", "relative"):
        raise ValidationError("statistic must be 'difference' or 'relative'", field="statistic")
    rng = np.random.default_rng(seed)
    out = np.empty(n_resamples)
    for start in range(0, n_resamples, chunk):
        k = min(chunk, n_resamples - start)
        ma = a[rng.integers(0, a.size, (k, a.size))].mean(axis=1)
        mb = b[rng.integers(0, b.size, (k, b.size))].mean(axis=1)
        out[start : start + k] = mb - ma if statistic == "difference" else (mb - ma) / ma
    lo, hi = np.quantile(out, [(1 - level) / 2, (1 + level) / 2])
    return float(lo), float(hi)


@dataclass(frozen=True)
class SRMResult:
    """Sample ratio mismatch: chi-square goodness of fit of the arm counts against the planned weights."""

    statistic: float
    p_value: float
    mismatch: bool
    observed: list[int]
    expected: list[float]


def srm_check(counts: Sequence[int], weights: Sequence[float], threshold: float = 0.001) -> SRMResult:
    """``mismatch`` when p < ``threshold`` (0.001 by convention: SRM is a data-quality alarm, Fabijan et al.
    2019, "Diagnosing Sample Ratio Mismatch in Online Controlled Experiments")."""
    obs = np.asarray(counts, dtype=np.float64)
    w = np.asarray(weights, dtype=np.float64)
    if obs.shape != w.shape or obs.size < 2 or np.any(w <= 0) or np.any(obs < 0):
        raise ValidationError("counts and positive weights must have the same length >= 2", field="weights")
    expected = w / w.sum() * obs.sum()
    statistic = float(((obs - expected) ** 2 / expected).sum())
    p = float(stats.chi2.sf(statistic, obs.size - 1))
    return SRMResult(statistic, p, p < threshold, [int(c) for c in obs], expected.tolist())


def holm_adjust(p_values: Sequence[float] | np.ndarray) -> np.ndarray:
    """Holm step-down adjusted p-values (controls the family-wise error rate); reject where adjusted < alpha."""
    p = np.asarray(p_values, dtype=np.float64)
    m = p.size
    if m == 0:
        return p
    order = np.argsort(p)
    adjusted = np.maximum.accumulate(np.minimum((m - np.arange(m)) * p[order], 1.0))
    out = np.empty(m)
    out[order] = adjusted
    return out


def _z(alpha: float, power: float | None = None) -> tuple[float, float]:
    if not 0 < alpha < 1 or (power is not None and not 0 < power < 1):
        raise ValidationError(
            "alpha and power must lie in (0, 1)", field="alpha" if not 0 < alpha < 1 else "power"
        )
    return float(stats.norm.ppf(1 - alpha / 2)), float(stats.norm.ppf(power)) if power is not None else 0.0


def power_means(n_per_arm: float, effect_size: float, alpha: float = 0.05) -> float:
    """Two-sided power of a two-sample test of means with ``n_per_arm`` per arm at Cohen's d ``effect_size``."""
    za, _ = _z(alpha)
    shift = abs(effect_size) * np.sqrt(n_per_arm / 2.0)
    return float(stats.norm.cdf(shift - za) + stats.norm.cdf(-shift - za))


def sample_size_means(effect_size: float, alpha: float = 0.05, power: float = 0.8) -> int:
    """Per-arm n for a two-sided two-sample test of means: ``ceil(2 (z_{1-a/2} + z_power)^2 / d^2)``."""
    if effect_size == 0:
        raise ValidationError("effect size must be non-zero", field="effect_size")
    za, zb = _z(alpha, power)
    return int(np.ceil(2.0 * (za + zb) ** 2 / effect_size**2))


def power_proportions(n_per_arm: float, p1: float, p2: float, alpha: float = 0.05) -> float:
    """Two-sided power of the pooled two-proportion z-test with ``n_per_arm`` per arm."""
    za, _ = _z(alpha)
    pbar = (p1 + p2) / 2.0
    se0 = np.sqrt(2.0 * pbar * (1 - pbar) / n_per_arm)
    se1 = np.sqrt((p1 * (1 - p1) + p2 * (1 - p2)) / n_per_arm)
    d = abs(p2 - p1)
    return float(stats.norm.cdf((d - za * se0) / se1) + stats.norm.cdf((-d - za * se0) / se1))


def sample_size_proportions(p1: float, p2: float, alpha: float = 0.05, power: float = 0.8) -> int:
    """Per-arm n for the two-sided two-proportion z-test (Fleiss et al., no continuity correction)."""
    if p1 == p2 or not (0 < p1 < 1 and 0 < p2 < 1):
        raise ValidationError("proportions must differ and lie in (0, 1)", field="p2")
    za, zb = _z(alpha, power)
    pbar = (p1 + p2) / 2.0
    num = za * np.sqrt(2 * pbar * (1 - pbar)) + zb * np.sqrt(p1 * (1 - p1) + p2 * (1 - p2))
    return int(np.ceil(num**2 / (p1 - p2) ** 2))
