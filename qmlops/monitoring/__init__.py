"""Monitoring: the prediction log, drift of features and predictions, metrics, alerts, resources, job queue.

Cores: reference statistics (:class:`FeatureReference`), drift test plug-ins (KS, PSI, chi-square,
Jensen-Shannon) behind :class:`DriftTest` and the :data:`DRIFT_TESTS` registry, multiple-testing corrections,
bounded window sketches updated inline (:class:`WindowSketch`, :class:`DriftMonitor`) and the schedule
(:func:`should_run`) on which the tests run off the request path. Runtime: :class:`GatewayMonitor` (inside
each gateway replica: :class:`PredictionLog`, drift windows, alert evaluation), :class:`AlertManager` with
its rules and channels.
"""

from qmlops.monitoring._alerts import (
    CHANNEL_KINDS,
    DEFAULT_RULES,
    METRICS,
    AlertChannel,
    AlertManager,
    AlertRule,
    deliver,
    install_defaults,
)
from qmlops.monitoring._drift import (
    DRIFT_TESTS,
    PSI_EPSILON,
    DriftTest,
    FeatureReference,
    TestOutcome,
    adjust_p_values,
    bin_counts,
    chi2_homogeneity,
    get_drift_test,
    js_distance,
    ks_binned,
    psi,
    register_drift_test,
)
from qmlops.monitoring._gateway import GatewayMonitor, references_for
from qmlops.monitoring._monitor import (
    DriftMonitor,
    DriftReport,
    FeatureDrift,
    evaluate_drift,
    evaluate_windows,
)
from qmlops.monitoring._predlog import LogOptions, PredictionLog, reconcile_losses
from qmlops.monitoring._sketch import WindowSketch, should_run

__all__ = [
    "CHANNEL_KINDS",
    "DEFAULT_RULES",
    "METRICS",
    "AlertChannel",
    "AlertManager",
    "AlertRule",
    "GatewayMonitor",
    "LogOptions",
    "PredictionLog",
    "deliver",
    "install_defaults",
    "reconcile_losses",
    "references_for",
    "DRIFT_TESTS",
    "PSI_EPSILON",
    "DriftMonitor",
    "DriftReport",
    "DriftTest",
    "FeatureDrift",
    "FeatureReference",
    "TestOutcome",
    "WindowSketch",
    "adjust_p_values",
    "bin_counts",
    "chi2_homogeneity",
    "evaluate_drift",
    "evaluate_windows",
    "get_drift_test",
    "js_distance",
    "ks_binned",
    "psi",
    "register_drift_test",
    "should_run",
]
