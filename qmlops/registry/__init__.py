"""Model registry: versions, checksummed artifacts, lifecycle with history, aliases, tags, search, validation.

``ModelRegistry().register(name, model, signature=X_train, metrics=...)`` stores a version; ``transition`` /
``promote`` move it through the state machine (see :mod:`qmlops.registry._lifecycle`), running the
compatibility validator before it may serve; ``load_predictor(name, ref)`` returns an object with
``predict(frame) -> ndarray`` for every flavor (LightGBM, XGBoost, linear, torch, and pickled objects).
"""

from qmlops.registry._artifacts import ArtifactStore
from qmlops.registry._flavors import FLAVORS, Flavor, Predictor, flavor_for, get_flavor
from qmlops.registry._lifecycle import GATED_STATES, STATES, TRANSITIONS, check_transition
from qmlops.registry._registry import ModelRegistry
from qmlops.registry._search import parse_filter
from qmlops.registry._signature import Signature
from qmlops.registry._validate import ValidationReport, environment

__all__ = [
    "ArtifactStore",
    "FLAVORS",
    "Flavor",
    "GATED_STATES",
    "ModelRegistry",
    "Predictor",
    "STATES",
    "Signature",
    "TRANSITIONS",
    "ValidationReport",
    "check_transition",
    "environment",
    "flavor_for",
    "get_flavor",
    "parse_filter",
]
