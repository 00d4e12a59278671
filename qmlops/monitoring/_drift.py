"""Drift tests: pure functions of a reference (training statistics) and a window of recent values.

Each test is a plug-in behind :class:`DriftTest` and found by name in :data:`DRIFT_TESTS`. Tests see binned
counts (the sketch keeps them incrementally) and, where they need it, the raw window values.

Binning convention (the feature store's, ``qmlops.features.reference_stats``): ``B + 1`` quantile edges give
``B`` bins; a value's bin is ``searchsorted(edges[1:-1], x, side="right")``, so values below the reference
minimum land in the first bin and values above the maximum in the last.

Tests
-----
- ``ks`` (continuous): two-sample Kolmogorov-Smirnov against the reference *sample* when the reference carries
  one (``scipy.stats.ks_2samp``, asymptotic p-value: exact in the limit and cheap at window sizes of thousands).
  Without a sample the reference is known only through its quantile bins, so the statistic is computed on the
  binned CDFs, ``D_b = max_k |F_ref(e_k) - F_win(e_k)|`` over the interior edges; as ``D_b <= D`` (the supremum
  is taken over fewer points) the test is conservative - it can miss a shift that lies inside one decile, never
  raises false alarms above the nominal level. The p-value uses the Kolmogorov distribution with the effective
  size ``n m / (n + m)`` (``scipy.stats.kstwo``).
- ``psi`` (any kind): population stability index ``sum_i (a_i - e_i) ln(a_i / e_i)`` over the reference bins
  (or categories) with proportions clipped below at ``PSI_EPSILON`` = 1e-4 so an empty bin contributes a large
  but finite term. Conventional thresholds: 0.1 warn, 0.25 alert (Siddiqi, *Credit Risk Scorecards*, 2006).
  PSI has no p-value.
- ``chi2`` (categorical): Pearson chi-square test of homogeneity on the 2 x K table of
  reference and window counts (``scipy.stats.chi2_contingency`` without Yates' correction); categories empty in
  both are dropped.
- ``js`` (any kind): Jensen-Shannon distance with base-2 logarithms, ``sqrt(JSD(p, q))`` in [0, 1]
  (Lin 1991; Endres & Schindelin 2003), as ``scipy.spatial.distance.jensenshannon(p, q, base=2)``.

Multiple testing across features: Bonferroni (``p * m``) or Benjamini-Hochberg step-up adjusted p-values
(Benjamini & Hochberg 1995), selectable by name.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal

import numpy as np
from scipy import stats

from qmlops.exceptions import NotFoundError, ValidationError

__all__ = [
    "PSI_EPSILON",
    "FeatureReference",
    "TestOutcome",
    "DriftTest",
    "DRIFT_TESTS",
    "register_drift_test",
    "get_drift_test",
    "bin_counts",
    "psi",
    "js_distance",
    "ks_binned",
    "chi2_homogeneity",
    "adjust_p_values",
]

PSI_EPSILON = 1e-4
FeatureKind = Literal["continuous", "categorical"]


@dataclass(frozen=True)
class FeatureReference:
    """Training-time statistics of one feature (or of the prediction).

    Continuous: ``bin_edges`` (B + 1 increasing quantile edges) and ``bin_counts`` (B counts). Categorical:
    ``categories`` (the K codes) and ``bin_counts`` (K counts); window values are the category codes, and codes
    not in ``categories`` are counted in an extra "other" cell. ``sample`` (optional) is a reference sample for
    the two-sample KS test.
    """

    name: str
    bin_edges: np.ndarray
    bin_counts: np.ndarray
    mean: float = float("nan")
    std: float = float("nan")
    kind: FeatureKind = "continuous"
    categories: np.ndarray | None = None
    sample: np.ndarray | None = None

    def __post_init__(self) -> None:
        edges = np.asarray(self.bin_edges, dtype=np.float64)
        counts = np.asarray(self.bin_counts, dtype=np.float64)
        object.__setattr__(self, "bin_edges", edges)
        object.__setattr__(self, "bin_counts", counts)
        if self.kind not in ("continuous", "categorical"):
            raise ValidationError(
                f"kind must be 'continuous' or 'categorical', not {self.kind!r}", field="kind"
            )
        if np.any(counts < 0) or counts.sum() <= 0:
            raise ValidationError(f"{self.name}: bin counts must be non-negative with a positive total",
                                  field="bin_counts")  # fmt: skip
        if self.kind == "continuous":
            if (
                edges.ndim != 1
                or edges.size < 2
                or np.any(np.diff(edges) < 0)
                or not np.all(np.isfinite(edges))
            ):
                raise ValidationError(f"{self.name}: bin_edges must be finite, increasing, at least 2",
                                      field="bin_edges")  # fmt: skip
            if counts.size != edges.size - 1:
                raise ValidationError(f"{self.name}: {edges.size} edges need {edges.size - 1} counts, "
                                      f"got {counts.size}", field="bin_counts")  # fmt: skip
        else:
            cats = np.asarray(self.categories if self.categories is not None else [], dtype=np.float64)
            object.__setattr__(self, "categories", cats)
            if cats.size == 0 or cats.size != counts.size or np.unique(cats).size != cats.size:
                raise ValidationError(f"{self.name}: categories must be unique with one count each",
                                      field="categories")  # fmt: skip
        if self.sample is not None:
            sample = np.asarray(self.sample, dtype=np.float64)
            object.__setattr__(self, "sample", np.sort(sample[np.isfinite(sample)]))

    @property
    def n_cells(self) -> int:
        """Cells of the window histogram: B bins, or K categories plus one "other" cell."""
        return int(self.bin_counts.size + (1 if self.kind == "categorical" else 0))

    @property
    def reference_cells(self) -> np.ndarray:
        """Reference counts aligned with the window cells (the "other" cell is 0 for categorical)."""
        return self.bin_counts if self.kind == "continuous" else np.append(self.bin_counts, 0.0)

    @classmethod
    def from_values(cls, name: str, values: np.ndarray, *, n_bins: int = 10, kind: FeatureKind = "continuous",
                    keep_sample: bool = True) -> FeatureReference:  # fmt: skip
        """Reference from raw training values: quantile edges and counts (the feature store's convention)."""
        x = np.asarray(values, dtype=np.float64)
        x = x[np.isfinite(x)]
        if x.size == 0:
            raise ValidationError(f"{name}: no finite reference values", field="values")
        if kind == "categorical":
            cats, counts = np.unique(x, return_counts=True)
            return cls(name, np.empty(0), counts, float(x.mean()), float(x.std()), "categorical", cats,
                       x if keep_sample else None)  # fmt: skip
        edges = np.quantile(x, np.linspace(0.0, 1.0, n_bins + 1))
        counts = np.bincount(np.searchsorted(edges[1:-1], x, side="right"), minlength=n_bins)
        return cls(name, edges, counts, float(x.mean()), float(x.std(ddof=1)) if x.size > 1 else 0.0,
                   "continuous", None, x if keep_sample else None)  # fmt: skip

    @classmethod
    def from_stat(cls, stat: Any, sample: np.ndarray | None = None) -> FeatureReference:
        """From a feature-store ``FeatureStat`` (fields feature, bin_edges, bin_counts, mean, std)."""
        return cls(stat.feature, np.asarray(stat.bin_edges), np.asarray(stat.bin_counts),
                   float(stat.mean) if stat.mean is not None else float("nan"),
                   float(stat.std) if stat.std is not None else float("nan"), "continuous", None, sample)  # fmt: skip


def bin_counts(reference: FeatureReference, values: np.ndarray) -> np.ndarray:
    """Histogram of finite ``values`` over the reference's cells (see the module's binning convention)."""
    x = np.asarray(values, dtype=np.float64)
    x = x[np.isfinite(x)]
    return np.bincount(cell_index(reference, x), minlength=reference.n_cells).astype(np.float64)


def cell_index(reference: FeatureReference, x: np.ndarray) -> np.ndarray:
    """Cell of each value: its quantile bin, or its category position (K = "other")."""
    if reference.kind == "continuous":
        return np.searchsorted(reference.bin_edges[1:-1], x, side="right")
    cats = reference.categories
    assert cats is not None
    # Categories keep their stored order (counts are aligned to it), which need not be sorted: search a sorted
    # view and map back to the stored positions.
    order = np.argsort(cats, kind="stable")
    ordered = cats[order]
    pos = np.searchsorted(ordered, x).clip(0, cats.size - 1)
    return np.where(ordered[pos] == x, order[pos], cats.size)


def _proportions(counts: np.ndarray) -> np.ndarray:
    total = counts.sum()
    return counts / total if total > 0 else np.full_like(counts, 1.0 / max(counts.size, 1))


def psi(expected_counts: np.ndarray, actual_counts: np.ndarray, epsilon: float = PSI_EPSILON) -> float:
    """Population stability index ``sum (a - e) ln(a / e)`` with proportions clipped below at ``epsilon``."""
    e = np.clip(_proportions(np.asarray(expected_counts, dtype=np.float64)), epsilon, None)
    a = np.clip(_proportions(np.asarray(actual_counts, dtype=np.float64)), epsilon, None)
    return float(np.sum((a - e) * np.log(a / e)))


def js_distance(p_counts: np.ndarray, q_counts: np.ndarray) -> float:
    """Jensen-Shannon distance (base 2): ``sqrt(KL(p||m)/2 + KL(q||m)/2)``, ``m = (p + q) / 2``; in [0, 1]."""
    p = _proportions(np.asarray(p_counts, dtype=np.float64))
    q = _proportions(np.asarray(q_counts, dtype=np.float64))
    m = 0.5 * (p + q)
    with np.errstate(divide="ignore", invalid="ignore"):
        kl_p = np.where(p > 0, p * np.log2(p / m), 0.0).sum()
        kl_q = np.where(q > 0, q * np.log2(q / m), 0.0).sum()
    return float(np.sqrt(max(0.5 * (kl_p + kl_q), 0.0)))


def ks_binned(reference_counts: np.ndarray, window_counts: np.ndarray) -> tuple[float, float]:
    """KS statistic on binned CDFs (a lower bound of the sample statistic) and its Kolmogorov p-value."""
    r = np.asarray(reference_counts, dtype=np.float64)
    w = np.asarray(window_counts, dtype=np.float64)
    m, n = r.sum(), w.sum()
    if n == 0:
        return float("nan"), float("nan")
    d = float(np.max(np.abs(np.cumsum(r)[:-1] / m - np.cumsum(w)[:-1] / n), initial=0.0))
    n_eff = max(int(round(m * n / (m + n))), 1)
    if (
        n_eff > 1000
    ):  # the asymptotic Kolmogorov law: exact to ~1e-3 here, and O(1) where kstwo's exact sum is not
        return d, float(stats.kstwobign.sf(d * np.sqrt(n_eff)))
    return d, float(stats.kstwo.sf(d, n_eff))


def chi2_homogeneity(reference_counts: np.ndarray, window_counts: np.ndarray) -> tuple[float, float]:
    """Pearson chi-square of the 2 x K table (reference, window); empty columns dropped; (statistic, p)."""
    table = np.vstack([np.asarray(reference_counts, float), np.asarray(window_counts, float)])
    table = table[:, table.sum(axis=0) > 0]
    if table.shape[1] < 2 or np.any(table.sum(axis=1) == 0):
        return float("nan"), float("nan")
    expected = table.sum(axis=1, keepdims=True) * table.sum(axis=0, keepdims=True) / table.sum()
    statistic = float(((table - expected) ** 2 / expected).sum())
    return statistic, float(stats.chi2.sf(statistic, table.shape[1] - 1))


@dataclass(frozen=True)
class TestOutcome:
    """One test on one feature: a statistic and, for hypothesis tests, a p-value."""

    test: str
    statistic: float
    p_value: float | None = None
    details: dict[str, Any] = field(default_factory=dict)


class DriftTest(ABC):
    """A drift test plug-in. ``applies_to`` lists the feature kinds it handles; ``hypothesis`` says whether
    it yields a p-value (and so takes part in the verdict and the multiple-testing correction)."""

    name: ClassVar[str]
    applies_to: ClassVar[tuple[str, ...]] = ("continuous", "categorical")
    hypothesis: ClassVar[bool] = False

    @abstractmethod
    def run(
        self, reference: FeatureReference, window_counts: np.ndarray, window_values: np.ndarray | None
    ) -> TestOutcome:
        """Compare the window (its cell counts and, when kept, its finite raw values) with the reference."""


DRIFT_TESTS: dict[str, type[DriftTest]] = {}


def register_drift_test(cls: type[DriftTest]) -> type[DriftTest]:
    """Class decorator: make a drift test available by its ``name``."""
    DRIFT_TESTS[cls.name] = cls
    return cls


def get_drift_test(name: str) -> DriftTest:
    try:
        return DRIFT_TESTS[name]()
    except KeyError:
        raise NotFoundError(
            f"unknown drift test {name!r}; known: {sorted(DRIFT_TESTS)}", field="test"
        ) from None


@register_drift_test
class KSTest(DriftTest):
    name = "ks"
    applies_to = ("continuous",)
    hypothesis = True

    def run(
        self, reference: FeatureReference, window_counts: np.ndarray, window_values: np.ndarray | None
    ) -> TestOutcome:
        if (
            reference.sample is not None
            and reference.sample.size
            and window_values is not None
            and window_values.size
        ):
            res = stats.ks_2samp(reference.sample, window_values, method="asymp")
            return TestOutcome(self.name, float(res.statistic), float(res.pvalue), {"mode": "sample"})
        d, p = ks_binned(reference.bin_counts, window_counts)
        return TestOutcome(self.name, d, p, {"mode": "binned"})


@register_drift_test
class Chi2Test(DriftTest):
    name = "chi2"
    applies_to = ("categorical",)
    hypothesis = True

    def run(
        self, reference: FeatureReference, window_counts: np.ndarray, window_values: np.ndarray | None
    ) -> TestOutcome:
        statistic, p = chi2_homogeneity(reference.reference_cells, window_counts)
        return TestOutcome(self.name, statistic, p)


@register_drift_test
class PSITest(DriftTest):
    name = "psi"

    def run(
        self, reference: FeatureReference, window_counts: np.ndarray, window_values: np.ndarray | None
    ) -> TestOutcome:
        return TestOutcome(self.name, psi(reference.reference_cells, window_counts))


@register_drift_test
class JSTest(DriftTest):
    name = "js"

    def run(
        self, reference: FeatureReference, window_counts: np.ndarray, window_values: np.ndarray | None
    ) -> TestOutcome:
        return TestOutcome(self.name, js_distance(reference.reference_cells, window_counts))


def adjust_p_values(p_values: Sequence[float] | np.ndarray, method: str = "bh") -> np.ndarray:
    """Adjusted p-values across a family: ``"bonferroni"`` (min(1, m p)) or ``"bh"`` (Benjamini-Hochberg step-up,
    ``min_{j >= i} m p_(j) / j``); NaNs stay NaN and do not count towards m. Reject where adjusted < alpha."""
    p = np.asarray(p_values, dtype=np.float64)
    out = np.full(p.shape, np.nan)
    ok = np.isfinite(p)
    m = int(ok.sum())
    if m == 0:
        return out
    q = p[ok]
    if method == "bonferroni":
        out[ok] = np.minimum(q * m, 1.0)
    elif method == "bh":
        order = np.argsort(q)
        scaled = q[order] * m / np.arange(1, m + 1)
        adjusted = np.minimum.accumulate(scaled[::-1])[::-1].clip(max=1.0)
        res = np.empty(m)
        res[order] = adjusted
        out[ok] = res
    else:
        raise ValidationError(f"unknown correction {method!r}; use 'bh' or 'bonferroni'", field="correction")
    return out
