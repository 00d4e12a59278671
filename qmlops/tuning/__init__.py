"""Hyperparameter and algorithm search on Ray Tune over the training engine, and the model-type recommender."""

from qmlops.tuning._recommend import Recommendation, meta_features, recommend
from qmlops.tuning._tuner import (
    SCHEDULERS,
    SEARCHERS,
    TuneConfig,
    TuneResult,
    resume_tuning,
    seed_points,
    tune_models,
)

__all__ = ["Recommendation", "SCHEDULERS", "SEARCHERS", "TuneConfig", "TuneResult", "meta_features", "recommend",
           "resume_tuning", "seed_points", "tune_models"]  # fmt: skip
