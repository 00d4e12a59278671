"""A/B statistics against scipy on fixed (real) data, against textbook values, and by vectorised simulation.

Simulation bounds are binomial quantiles at 0.1 % / 99.9 % around the nominal rate, not recorded results.
"""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats

from qmlops.exceptions import ValidationError
from qmlops.experiments import (
    always_valid_p_value,
    analyze_experiment,
    analyze_metric,
    bootstrap_ci,
    chi_square_2x2,
    holm_adjust,
    mann_whitney_u,
    msprt_p_values,
    power_means,
    power_proportions,
    ratio_and_variance,
    sample_size_means,
    sample_size_proportions,
    srm_check,
    two_proportion_z_test,
    welch_t_test,
)


def _bounds(rate: float, n: int, level: float = 0.999) -> tuple[float, float]:
    return float(stats.binom.ppf(1 - level, n, rate)) / n, float(stats.binom.ppf(level, n, rate)) / n


@pytest.fixture(scope="module")
def returns() -> dict[str, np.ndarray]:
    """Daily simple returns of the bundled bokeh sample stocks (real, skewed, heavy-tailed)."""
    from bokeh_sampledata.stocks import AAPL, IBM, MSFT

    return {name: np.diff(np.asarray(d["adj_close"], dtype=float)) / np.asarray(d["adj_close"], dtype=float)[:-1]
            for name, d in (("AAPL", AAPL), ("MSFT", MSFT), ("IBM", IBM))}  # fmt: skip


def test_welch_matches_scipy(returns: dict[str, np.ndarray]) -> None:
    a, b = returns["MSFT"], returns["AAPL"]
    t, df, p = welch_t_test(a, b)
    expected = stats.ttest_ind(b, a, equal_var=False)
    assert float(t) == pytest.approx(expected.statistic) and float(p) == pytest.approx(expected.pvalue)
    assert float(df) == pytest.approx(expected.df)
    result = analyze_metric("return", "mean", a, b)
    ci = expected.confidence_interval(0.95)
    assert result.absolute_ci == pytest.approx((ci.low, ci.high))
    assert result.p_value == pytest.approx(expected.pvalue) and result.test == "welch"


def test_mann_whitney_matches_scipy_with_ties(returns: dict[str, np.ndarray]) -> None:
    a, b = np.round(returns["IBM"][:800], 3), np.round(returns["MSFT"][:700], 3)
    u, p = mann_whitney_u(a, b)
    expected = stats.mannwhitneyu(a, b, method="asymptotic", use_continuity=True)
    assert u == pytest.approx(expected.statistic) and p == pytest.approx(expected.pvalue)


def test_proportion_tests_match_scipy_contingency() -> None:
    x_a, n_a, x_b, n_b = 120, 1000, 151, 1020
    z, p = two_proportion_z_test(x_a, n_a, x_b, n_b)
    table = np.array([[x_a, n_a - x_a], [x_b, n_b - x_b]])
    expected = stats.chi2_contingency(table, correction=False)
    assert float(p) == pytest.approx(expected.pvalue) and float(z) ** 2 == pytest.approx(expected.statistic)
    statistic, p2 = chi_square_2x2(x_a, n_a, x_b, n_b)
    assert statistic == pytest.approx(expected.statistic) and p2 == pytest.approx(expected.pvalue)
    outcomes_a = np.r_[np.ones(x_a), np.zeros(n_a - x_a)]
    outcomes_b = np.r_[np.ones(x_b), np.zeros(n_b - x_b)]
    result = analyze_metric("conversion", "proportion", outcomes_a, outcomes_b)
    assert result.p_value == pytest.approx(expected.pvalue)
    assert result.absolute_lift == pytest.approx(x_b / n_b - x_a / n_a)
    assert result.relative_lift == pytest.approx((x_b / n_b) / (x_a / n_a) - 1)


def test_srm_matches_scipy_chisquare() -> None:
    counts, weights = [5000, 5230, 2480], [0.4, 0.4, 0.2]
    res = srm_check(counts, weights)
    expected = stats.chisquare(counts, np.array(weights) * sum(counts))
    assert res.statistic == pytest.approx(expected.statistic) and res.p_value == pytest.approx(
        expected.pvalue
    )
    assert not srm_check([5000, 5050], [0.5, 0.5]).mismatch
    assert srm_check([5000, 5600], [0.5, 0.5]).mismatch


def test_holm_by_hand() -> None:
    # sorted 0.01, 0.02, 0.03, 0.2 with m = 4 -> 0.04, 0.06, 0.06 (monotone), 0.2
    np.testing.assert_allclose(holm_adjust([0.03, 0.01, 0.2, 0.02]), [0.06, 0.04, 0.2, 0.06])


def test_sample_size_matches_textbook_and_power_is_consistent() -> None:
    assert sample_size_means(0.2) == 393  # Cohen (1988), d = 0.2, alpha .05 two-sided, power .8
    assert sample_size_means(0.5, power=0.9) == 85  # normal approximation, 2 (1.960 + 1.282)^2 / 0.25
    assert power_means(393, 0.2) == pytest.approx(0.8, abs=0.005)
    n = sample_size_proportions(0.10, 0.12)
    assert power_proportions(n, 0.10, 0.12) == pytest.approx(0.8, abs=0.002)
    assert power_proportions(n - 50, 0.10, 0.12) < 0.8
    with pytest.raises(ValidationError):
        sample_size_means(0.0)


def test_power_matches_simulation() -> None:
    rng = np.random.default_rng(11)
    reps = 2000
    a = rng.normal(size=(reps, 393))
    b = rng.normal(0.2, 1.0, size=(reps, 393))
    rate = float((welch_t_test(a, b)[2] < 0.05).mean())
    lo, hi = _bounds(power_means(393, 0.2), reps)
    assert lo <= rate <= hi
    n = sample_size_proportions(0.10, 0.12)
    xa, xb = rng.binomial(n, 0.10, 20000), rng.binomial(n, 0.12, 20000)
    rate_p = float((two_proportion_z_test(xa, n, xb, n)[1] < 0.05).mean())
    lo, hi = _bounds(power_proportions(n, 0.10, 0.12), 20000)
    assert lo <= rate_p <= hi


def test_aa_false_positive_rate_near_alpha() -> None:
    rng = np.random.default_rng(12)
    reps = 4000
    a = rng.lognormal(0.0, 1.0, size=(reps, 200))
    b = rng.lognormal(0.0, 1.0, size=(reps, 200))
    rate = float((welch_t_test(a, b)[2] < 0.05).mean())
    lo, hi = _bounds(0.05, reps)
    assert lo <= rate <= hi


def _naive_peeking_rate(a: np.ndarray, b: np.ndarray, looks: np.ndarray, alpha: float) -> float:
    n = np.arange(1, a.shape[1] + 1)
    rejected = np.zeros(a.shape[0], dtype=bool)
    ca, cb, qa, qb = (np.cumsum(x, axis=1) for x in (a, b, a * a, b * b))
    for k in looks:
        i = k - 1
        ma, mb = ca[:, i] / n[i], cb[:, i] / n[i]
        va = (qa[:, i] - n[i] * ma**2) / (n[i] - 1) / n[i]
        vb = (qb[:, i] - n[i] * mb**2) / (n[i] - 1) / n[i]
        t = (mb - ma) / np.sqrt(va + vb)
        rejected |= 2 * stats.norm.sf(np.abs(t)) < alpha
    return float(rejected.mean())


def test_sequential_peeking_keeps_alpha_while_naive_peeking_inflates_it() -> None:
    """A/A, 1000 pairs, a look every 20 pairs (50 looks): the mSPRT's always-valid p-value crosses 0.05 at
    any look at most about 5 % of the time; the naive t-test at every look rejects far more often."""
    rng = np.random.default_rng(13)
    reps, n = 1000, 1000
    a, b = rng.normal(size=(reps, n)), rng.normal(size=(reps, n))
    looks = np.arange(20, n + 1, 20)
    p_seq = msprt_p_values(a, b)
    assert np.all(np.diff(p_seq, axis=1) <= 0)
    seq_rate = float((p_seq[:, looks - 1] < 0.05).any(axis=1).mean())
    naive_rate = _naive_peeking_rate(a, b, looks, 0.05)
    assert seq_rate <= _bounds(0.05, reps)[1]
    assert naive_rate > _bounds(0.05, reps)[1]
    # The planted effect (d = 0.2) is detected by the sequential test in most runs within 1000 pairs,
    # where a fixed-horizon test at n = 1000 has power ~0.99.
    b_eff = rng.normal(0.2, 1.0, size=(reps, n))
    power_seq = float((msprt_p_values(a, b_eff)[:, -1] < 0.05).mean())
    assert power_seq >= 0.7


def test_ratio_delta_method_variance_matches_simulation() -> None:
    rng = np.random.default_rng(14)
    reps, users = 3000, 400
    sessions = rng.poisson(3.0, size=(reps, users)) + 1
    clicks = rng.binomial(sessions, 0.3)
    ratios = clicks.sum(axis=1) / sessions.sum(axis=1)
    empirical = ratios.var(ddof=1)
    delta = np.mean([ratio_and_variance(clicks[i], sessions[i])[1] for i in range(200)])
    assert delta == pytest.approx(empirical, rel=0.15)
    # A/A with the delta-method z-test: false positive rate near alpha.
    p = np.array([analyze_metric("ctr", "ratio", (clicks[i], sessions[i]), (clicks[i + 1], sessions[i + 1])).p_value
                  for i in range(0, 2000, 2)])  # fmt: skip
    lo, hi = _bounds(0.05, p.size)
    assert lo <= float((p < 0.05).mean()) <= hi


def test_bootstrap_ci_is_seeded_and_agrees_with_welch(returns: dict[str, np.ndarray]) -> None:
    a, b = returns["MSFT"][:1500], returns["AAPL"][:1500]
    ci1 = bootstrap_ci(a, b, seed=3)
    assert ci1 == bootstrap_ci(a, b, seed=3) and ci1 != bootstrap_ci(a, b, seed=4)
    welch = stats.ttest_ind(b, a, equal_var=False).confidence_interval(0.95)
    width = welch.high - welch.low
    assert ci1[0] == pytest.approx(welch.low, abs=0.1 * width)
    assert ci1[1] == pytest.approx(welch.high, abs=0.1 * width)
    result = analyze_metric("return", "mean", a, b, ci="bootstrap", seed=3)
    assert result.absolute_ci == pytest.approx(ci1)


def test_analyze_experiment_applies_holm_and_serialises() -> None:
    rng = np.random.default_rng(15)
    n = 3000
    conv = {"control": rng.binomial(1, 0.10, n).astype(float), "b": rng.binomial(1, 0.13, n).astype(float),
            "c": rng.binomial(1, 0.10, n).astype(float)}  # fmt: skip
    revenue = {k: rng.lognormal(0, 1, n) for k in ("control", "b", "c")}
    results = analyze_experiment({"conversion": ("proportion", conv), "revenue": ("mean", revenue)},
                                 tests={"revenue": "mann_whitney"}, n_resamples=300)  # fmt: skip
    assert [(r.metric, r.variant) for r in results] == [("conversion", "b"), ("conversion", "c"),
                                                        ("revenue", "b"), ("revenue", "c")]  # fmt: skip
    np.testing.assert_allclose(
        [r.adjusted_p_value for r in results], holm_adjust([r.p_value for r in results])
    )
    by_key = {(r.metric, r.variant): r for r in results}
    assert by_key[("conversion", "b")].significant and by_key[("conversion", "b")].relative_lift > 0
    assert by_key[("revenue", "b")].test == "mann_whitney"
    d = by_key[("conversion", "b")].to_dict()
    assert d["absolute_ci"][0] < d["absolute_lift"] < d["absolute_ci"][1]
    assert d["relative_ci"][0] < d["relative_lift"] < d["relative_ci"][1]


def test_bad_input_names_the_field() -> None:
    with pytest.raises(ValidationError) as err:
        analyze_metric("m", "median", [1.0, 2.0], [1.0, 2.0])
    assert err.value.field == "kind"
    with pytest.raises(ValidationError) as err:
        analyze_metric("m", "mean", [1.0, 2.0], [1.0, 2.0], test="z")
    assert err.value.field == "test"
    with pytest.raises(ValidationError):
        analyze_metric("m", "proportion", [0.0, 2.0], [1.0, 0.0])
    with pytest.raises(ValidationError):
        srm_check([10, 20], [0.5])
    with pytest.raises(ValidationError):
        analyze_experiment({"m": ("mean", {"b": np.ones(3)})})


def test_msprt_matches_the_papers_equal_arm_formula() -> None:
    """Johari et al. (2017), equal arms with known sigma^2: Lambda_n = sqrt(2s2/(2s2 + n tau2)) *
    exp(n^2 tau2 (Ybar - Xbar)^2 / (4 s2 (2 s2 + n tau2))); the streaming update agrees at every look."""
    rng = np.random.default_rng(16)
    a, b = rng.normal(size=300), rng.normal(0.5, 1.0, size=300)
    tau = 0.5
    p_stream = msprt_p_values(a, b, tau=tau, min_n=2)
    p_prev = 1.0
    for n in range(2, 301):
        s2 = 0.5 * (a[:n].var(ddof=1) + b[:n].var(ddof=1))
        diff = b[:n].mean() - a[:n].mean()
        lam = np.sqrt(2 * s2 / (2 * s2 + n * tau**2)) * np.exp(
            n**2 * tau**2 * diff**2 / (4 * s2 * (2 * s2 + n * tau**2))
        )
        p_prev = min(p_prev, 1 / lam, 1.0)
        assert p_stream[n - 1] == pytest.approx(p_prev, rel=1e-9)
        p_av = always_valid_p_value(a[:n].mean(), a[:n].var(ddof=1), n, b[:n].mean(), b[:n].var(ddof=1), n,
                                    tau**2, previous=p_stream[n - 2] if n > 2 else 1.0)  # fmt: skip
        assert p_av == pytest.approx(p_stream[n - 1], rel=1e-9)
    assert p_stream[-1] < 0.05
