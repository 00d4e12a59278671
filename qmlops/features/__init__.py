"""Features: Alpha158 (exact Qlib parity) and technical indicators, computed natively and vectorised.

``compute_alpha158(ohlcv)`` and ``compute_indicators(ohlcv)`` are pure functions over the canonical long OHLCV
table; the Ray Data pipeline and the feature store apply the same code per batch of instruments.
"""

from qmlops.features._alpha158 import (
    ALPHA158_WINDOWS,
    LABEL_NAME,
    alpha158_feature_names,
    compute_alpha158,
    compute_alpha158_label,
)
from qmlops.features._engine import ENGINES, compute_batch, compute_features
from qmlops.features._families import FAMILIES, feature_family
from qmlops.features._incremental import ALPHA158_LOOKBACK, compute_tail_features, tail_window
from qmlops.features._indicators import (
    IndicatorParams,
    compute_indicators,
    indicator_feature_names,
    indicators_min_history,
)
from qmlops.features._processors import (
    CSRankNorm,
    DropnaLabel,
    Fillna,
    Processor,
    RobustZScoreNorm,
    apply_processors,
    default_processors,
)
from qmlops.features._sets import BUILTIN_SETS, FEATURE_CODE_VERSION, FeatureSetDefinition, builtin_set
from qmlops.features._store import (
    Materialization,
    default_feature_sets,
    disable_auto_materialize,
    enable_auto_materialize,
    get_feature_windows,
    get_features,
    load_features,
    materialize,
    reference_stats,
)

__all__ = [
    "ALPHA158_LOOKBACK",
    "compute_tail_features",
    "tail_window",
    "ALPHA158_WINDOWS",
    "BUILTIN_SETS",
    "ENGINES",
    "FEATURE_CODE_VERSION",
    "CSRankNorm",
    "DropnaLabel",
    "FeatureSetDefinition",
    "Fillna",
    "Materialization",
    "Processor",
    "RobustZScoreNorm",
    "apply_processors",
    "builtin_set",
    "compute_batch",
    "compute_features",
    "default_feature_sets",
    "default_processors",
    "disable_auto_materialize",
    "enable_auto_materialize",
    "get_feature_windows",
    "get_features",
    "load_features",
    "materialize",
    "reference_stats",
    "FAMILIES",
    "LABEL_NAME",
    "IndicatorParams",
    "alpha158_feature_names",
    "compute_alpha158",
    "compute_alpha158_label",
    "compute_indicators",
    "feature_family",
    "indicator_feature_names",
    "indicators_min_history",
    "min_history",
]


def min_history(feature_set: str) -> int:
    """Fewest trading days an instrument needs for the set's longest window (alpha158: 60)."""
    if feature_set == "alpha158":
        return max(ALPHA158_WINDOWS)
    if feature_set == "indicators":
        return indicators_min_history()
    if feature_set == "all":
        return max(max(ALPHA158_WINDOWS), indicators_min_history())
    from qmlops.exceptions import NotFoundError

    raise NotFoundError(
        f"unknown feature set {feature_set!r}; use alpha158, indicators or all", field="feature_set"
    )
