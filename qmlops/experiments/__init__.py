"""Experiments: the service (create/start/stop, gateway assignment, exposures, events, results, report) and the
A/B statistics under it as pure functions.

Fixed-horizon tests (Welch's t, two-proportion z / chi-square, Mann-Whitney U, delta-method ratio z), lift with
confidence intervals (analytic, delta method, seeded percentile bootstrap), sample ratio mismatch, Holm's
correction, power and sample size, and always-valid sequential p-values (mSPRT, Johari et al. 2017) that keep
the false positive rate at alpha under continuous peeking.
"""

from qmlops.experiments._analysis import METRIC_TESTS, MetricResult, analyze_experiment, analyze_metric
from qmlops.experiments._assignment import (
    BUCKETS,
    ExperimentSlot,
    Layer,
    allocate_buckets,
    assign_variant,
    bucket_of,
)
from qmlops.experiments._sequential import always_valid_p_value, msprt_lambda, msprt_p_values
from qmlops.experiments._service import (
    ExperimentRouter,
    ExperimentService,
    gateway_experiments,
    route_experiment,
)
from qmlops.experiments._stats import (
    SRMResult,
    TestResult,
    bootstrap_ci,
    chi_square_2x2,
    holm_adjust,
    mann_whitney_u,
    power_means,
    power_proportions,
    ratio_and_variance,
    ratio_delta_test,
    relative_lift_ci,
    relative_lift_fieller,
    sample_size_means,
    sample_size_proportions,
    srm_check,
    two_proportion_z_test,
    welch_t_test,
)

__all__ = [
    "ExperimentRouter",
    "ExperimentService",
    "gateway_experiments",
    "route_experiment",
    "BUCKETS",
    "ExperimentSlot",
    "Layer",
    "assign_variant",
    "allocate_buckets",
    "bucket_of",
    "METRIC_TESTS",
    "MetricResult",
    "SRMResult",
    "TestResult",
    "always_valid_p_value",
    "analyze_experiment",
    "analyze_metric",
    "bootstrap_ci",
    "chi_square_2x2",
    "holm_adjust",
    "mann_whitney_u",
    "msprt_lambda",
    "msprt_p_values",
    "power_means",
    "power_proportions",
    "ratio_and_variance",
    "ratio_delta_test",
    "relative_lift_ci",
    "relative_lift_fieller",
    "sample_size_means",
    "sample_size_proportions",
    "srm_check",
    "two_proportion_z_test",
    "welch_t_test",
]
