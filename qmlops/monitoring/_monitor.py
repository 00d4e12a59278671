"""Drift verdicts over many features: per-feature tests, a multiple-testing correction and a drift share.

:func:`evaluate_drift` is the pure core: references + a :class:`WindowSketch` (or raw windows) in, a
:class:`DriftReport` out. :class:`DriftMonitor` wraps a sketch of the features and one of the prediction
with the request-path ``update`` / ``update_batch`` and the off-path ``evaluate``.

Verdicts: a feature's hypothesis test (KS for continuous, chi-square for categorical) gives a p-value;
``drifted`` is ``p < alpha``; ``drifted_corrected`` uses the adjusted p-value across all features with a
p-value (``"bh"`` by default, Benjamini & Hochberg 1995, or ``"bonferroni"``). The drift share is the fraction
of tested features drifted after correction. PSI levels are reported alongside: ``ok`` below ``psi_warn``
(0.1), ``warn`` below ``psi_alert`` (0.25), else ``alert``. The prediction is tested on its own, outside the
feature family.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from qmlops.exceptions import ValidationError
from qmlops.monitoring._drift import DriftTest, FeatureReference, adjust_p_values, get_drift_test
from qmlops.monitoring._sketch import WindowSketch

__all__ = ["FeatureDrift", "DriftReport", "DriftMonitor", "evaluate_drift", "evaluate_windows"]

DEFAULT_TESTS = ("ks", "chi2", "psi", "js")


@dataclass(frozen=True)
class FeatureDrift:
    """Drift of one feature over the current window."""

    feature: str
    n: int
    test: str | None
    statistic: float | None
    p_value: float | None
    adjusted_p_value: float | None
    psi: float | None
    psi_level: str | None
    js: float | None
    drifted: bool
    drifted_corrected: bool
    details: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class DriftReport:
    """Verdict over all features (and the prediction, when monitored)."""

    features: list[FeatureDrift]
    alpha: float
    correction: str
    drift_share: float
    n_drifted: int
    n_tested: int
    prediction: FeatureDrift | None = None

    @property
    def drifted_features(self) -> list[str]:
        return [f.feature for f in self.features if f.drifted_corrected]

    def to_dict(self) -> dict[str, Any]:
        return {
            "alpha": self.alpha,
            "correction": self.correction,
            "drift_share": self.drift_share,
            "n_drifted": self.n_drifted,
            "n_tested": self.n_tested,
            "drifted_features": self.drifted_features,
            "features": [f.to_dict() for f in self.features],
            "prediction": self.prediction.to_dict() if self.prediction is not None else None,
        }


def _psi_level(value: float | None, warn: float, alert: float) -> str | None:
    if value is None or not np.isfinite(value):
        return None
    return "ok" if value < warn else ("warn" if value < alert else "alert")


def _feature_outcomes(reference: FeatureReference, counts: np.ndarray, values: np.ndarray | None,
                      tests: Sequence[DriftTest]) -> dict[str, Any]:  # fmt: skip
    out: dict[str, Any] = {
        "test": None,
        "statistic": None,
        "p_value": None,
        "psi": None,
        "js": None,
        "details": {},
    }
    if counts.sum() == 0:
        return out
    for test in tests:
        if reference.kind not in test.applies_to:
            continue
        outcome = test.run(reference, counts, values)
        if test.hypothesis and out["test"] is None:
            out.update(test=outcome.test, statistic=outcome.statistic, p_value=outcome.p_value)
            out["details"].update(outcome.details)
        elif test.name in ("psi", "js"):
            out[test.name] = outcome.statistic
        else:
            out["details"][test.name] = outcome.statistic
    return out


def _drift(reference: FeatureReference, n: int, o: dict[str, Any], adjusted: float | None, alpha: float,
           psi_warn: float, psi_alert: float) -> FeatureDrift:  # fmt: skip
    p = o["p_value"]
    p_ok = p is not None and np.isfinite(p)
    adj = float(adjusted) if adjusted is not None and np.isfinite(adjusted) else None
    return FeatureDrift(
        feature=reference.name, n=n, test=o["test"], statistic=o["statistic"], p_value=p,
        adjusted_p_value=adj, psi=o["psi"],
        psi_level=_psi_level(o["psi"], psi_warn, psi_alert), js=o["js"],
        drifted=bool(p_ok and p < alpha), drifted_corrected=adj is not None and adj < alpha,
        details=o["details"],
    )  # fmt: skip


def evaluate_drift(
    sketch: WindowSketch,
    *,
    alpha: float = 0.05,
    correction: str = "bh",
    tests: Sequence[str] = DEFAULT_TESTS,
    psi_warn: float = 0.1,
    psi_alert: float = 0.25,
    prediction: WindowSketch | None = None,
) -> DriftReport:
    """Run the named tests on every feature of ``sketch`` and combine them into a :class:`DriftReport`."""
    if not 0.0 < alpha < 1.0:
        raise ValidationError("alpha must lie in (0, 1)", field="alpha")
    plugins = [get_drift_test(t) for t in tests]
    adjust_p_values([], correction)  # validates the name before any work
    outcomes, ns = [], []
    for j, ref in enumerate(sketch.references):
        counts = sketch.counts(j)
        ns.append(int(counts.sum()))
        outcomes.append(_feature_outcomes(ref, counts, sketch.values(j), plugins))
    p = np.array([o["p_value"] if o["p_value"] is not None else np.nan for o in outcomes], dtype=np.float64)
    adjusted = adjust_p_values(p, correction)
    features = [_drift(ref, n, o, a, alpha, psi_warn, psi_alert)
                for ref, n, o, a in zip(sketch.references, ns, outcomes, adjusted, strict=True)]  # fmt: skip
    n_tested = int(np.isfinite(p).sum())
    n_drifted = sum(f.drifted_corrected for f in features)
    pred = None
    if prediction is not None:
        counts = prediction.counts(0)
        o = _feature_outcomes(prediction.references[0], counts, prediction.values(0), plugins)
        pred = _drift(
            prediction.references[0], int(counts.sum()), o, o["p_value"], alpha, psi_warn, psi_alert
        )
    return DriftReport(features, alpha, correction, n_drifted / n_tested if n_tested else 0.0, n_drifted,
                       n_tested, pred)  # fmt: skip


def evaluate_windows(
    references: Sequence[FeatureReference], window: np.ndarray, **kwargs: Any
) -> DriftReport:
    """Convenience: a report for a whole window (rows x features) at once, without a long-lived monitor."""
    arr = np.asarray(window, dtype=np.float64)
    sketch = WindowSketch(references, capacity=max(arr.shape[0], 1))
    sketch.update_batch(arr)
    return evaluate_drift(sketch, **kwargs)


class DriftMonitor:
    """Features (and optionally the prediction) of recent requests against their training references.

    ``update``/``update_batch`` are O(F B) per row and run inline; ``evaluate`` runs the tests (call it off the
    request path, when :func:`qmlops.monitoring.should_run` says so).
    """

    def __init__(self, references: Sequence[FeatureReference], *, window: int = 10_000,
                 prediction_reference: FeatureReference | None = None, alpha: float = 0.05,
                 correction: str = "bh", tests: Sequence[str] = DEFAULT_TESTS, psi_warn: float = 0.1,
                 psi_alert: float = 0.25) -> None:  # fmt: skip
        self.sketch = WindowSketch(references, capacity=window)
        self.prediction = WindowSketch([prediction_reference], window) if prediction_reference else None
        self.options: dict[str, Any] = {"alpha": alpha, "correction": correction, "tests": tuple(tests),
                                        "psi_warn": psi_warn, "psi_alert": psi_alert}  # fmt: skip
        for name in tests:
            get_drift_test(name)
        adjust_p_values([], correction)
        self.rows_since_evaluation = 0

    def update(self, row: np.ndarray, prediction: float | None = None) -> None:
        self.sketch.update(row)
        if self.prediction is not None and prediction is not None:
            self.prediction.update(np.array([prediction], dtype=np.float64))
        self.rows_since_evaluation += 1

    def update_batch(self, rows: np.ndarray, predictions: np.ndarray | None = None) -> None:
        arr = np.asarray(rows, dtype=np.float64)
        self.sketch.update_batch(arr)
        if self.prediction is not None and predictions is not None:
            self.prediction.update_batch(np.asarray(predictions, dtype=np.float64).reshape(-1, 1))
        self.rows_since_evaluation += arr.shape[0] if arr.ndim == 2 else 1

    def evaluate(self) -> DriftReport:
        report = evaluate_drift(self.sketch, prediction=self.prediction, **self.options)
        self.rows_since_evaluation = 0
        return report
