"""Training over Qlib's model zoo: one engine for every model type, with early stopping, live progress,
evaluation, reports and registration.

- :mod:`qmlops.training._engine`: ``train(TrainConfig)`` / ``train_remote`` (a Ray task with resources).
- :mod:`qmlops.training._catalogue`: the model types (``qmlops models types``), defaults and search spaces.
- :mod:`qmlops.training._early_stopping`: patience, overfitting, adaptive patience, wall time; combinable.
- :mod:`qmlops.training._gbdt`: boosting-round observation for LightGBM, XGBoost and CatBoost.
- :mod:`qmlops.training._export`: what the registry stores for each type (boosters, traced serving modules).
- :mod:`qmlops.training._report`: the HTML training report with plots.

- :mod:`qmlops.training._compat`: Qlib 0.9.7 on torch 2.13 / pandas 3 / mlflow 3.17, each fix listed with
  symptom, cause and test; ``build_qlib_dataset`` builds ``DatasetH``/``TSDatasetH`` over a static frame.
- :mod:`qmlops.training._torch_hooks`: device selection and per-epoch observation, early stopping and
  best-weight restore around any Qlib torch model's own ``fit``.
- :mod:`qmlops.training._informer`: Informer (ProbSparse attention, distilling) as a Qlib ``Model``.
- :mod:`qmlops.training._evaluate`: IC / ICIR / Rank IC / Rank ICIR, MSE and a daily top-k long-short backtest.
"""

from qmlops.training._catalogue import (
    CATALOGUE,
    FAMILIES,
    ModelType,
    check_space,
    get_model_type,
    list_model_types,
)
from qmlops.training._compat import (
    apply_compat,
    build_qlib_dataset,
    compat_model_class,
    ensure_qlib_initialised,
    mean_daily_ic,
    predict_segment,
    qlib_fit_context,
    segment_view,
)
from qmlops.training._early_stopping import (
    AdaptivePatience,
    EarlyStopper,
    Overfitting,
    Patience,
    StopDecision,
    WallTime,
    parse_early_stopping,
)
from qmlops.training._engine import (
    TrainConfig,
    TrainResult,
    label_horizon,
    plan_segments,
    subscribe_progress,
    train,
    train_remote,
    unsubscribe_progress,
)
from qmlops.training._evaluate import Evaluation, daily_ic, evaluate_predictions, long_short_backtest
from qmlops.training._informer import InformerModel
from qmlops.training._oracle import OracleComparison, compare_to_oracle
from qmlops.training._torch_hooks import (
    EpochMetrics,
    EpochStopper,
    FitOutcome,
    create_model,
    device_kwargs,
    fit_with_hooks,
    select_device,
)

__all__ = [
    "OracleComparison",
    "compare_to_oracle",
    "AdaptivePatience",
    "CATALOGUE",
    "EarlyStopper",
    "FAMILIES",
    "ModelType",
    "Overfitting",
    "Patience",
    "StopDecision",
    "TrainConfig",
    "TrainResult",
    "WallTime",
    "check_space",
    "get_model_type",
    "label_horizon",
    "list_model_types",
    "parse_early_stopping",
    "plan_segments",
    "subscribe_progress",
    "train",
    "train_remote",
    "unsubscribe_progress",
    "EpochMetrics",
    "EpochStopper",
    "Evaluation",
    "FitOutcome",
    "InformerModel",
    "apply_compat",
    "build_qlib_dataset",
    "compat_model_class",
    "create_model",
    "daily_ic",
    "device_kwargs",
    "ensure_qlib_initialised",
    "evaluate_predictions",
    "fit_with_hooks",
    "long_short_backtest",
    "mean_daily_ic",
    "predict_segment",
    "qlib_fit_context",
    "segment_view",
    "select_device",
]
