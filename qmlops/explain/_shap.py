"""SHAP explanations of registry model versions: the right explainer per flavor, global and local.

- ``lightgbm`` / ``xgboost`` boosters: ``shap.TreeExplainer`` (exact, interventional-free path-dependent SHAP on
  the raw output).
- ``linear`` (``coef_`` + ``intercept_``): ``shap.LinearExplainer`` against a background sample.
- everything else (``torch`` modules, including the engine's exported linear/MLP/sequence-free models; ``pickle``):
  the model-agnostic ``shap.PermutationExplainer`` with an independent masker over a sampled background.

Every explanation satisfies additivity: ``base_value + sum(values) == prediction`` (checked, within tolerance,
by :meth:`Explanation.additivity_error`). The background is a sample of the training rows the version was fitted
on (rows of its feature materialisation dated before its test segment), so the base value is the model's mean
output on its own training data.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from qmlops.exceptions import ValidationError

__all__ = ["Explanation", "ModelExplainer", "background_for"]

BACKGROUND_ROWS = 100


@dataclass
class Explanation:
    """SHAP values of ``rows``: ``values`` (n x features), ``base_value``, ``predictions`` (the model's own)."""

    feature_names: list[str]
    values: np.ndarray
    base_value: float
    predictions: np.ndarray
    rows: np.ndarray
    method: str

    def additivity_error(self) -> float:
        """max |base + sum(values) - prediction| over the rows."""
        return float(np.max(np.abs(self.base_value + self.values.sum(axis=1) - self.predictions)))

    def global_importance(self) -> dict[str, float]:
        """Mean |SHAP| per feature, largest first."""
        imp = np.abs(self.values).mean(axis=0)
        order = np.argsort(-imp)
        return {self.feature_names[i]: float(imp[i]) for i in order}

    def row(self, i: int, top: int = 10) -> dict[str, Any]:
        order = np.argsort(-np.abs(self.values[i]))[:top]
        return {"prediction": float(self.predictions[i]), "base_value": self.base_value,
                "contributions": {self.feature_names[j]: float(self.values[i, j]) for j in order},
                "others": float(self.values[i].sum() - self.values[i, order].sum()),
                "additivity_error": float(abs(self.base_value + self.values[i].sum() - self.predictions[i]))}  # fmt: skip


def background_for(registry: Any, record: Any, n: int = BACKGROUND_ROWS, seed: int = 0) -> np.ndarray:
    """A sample of the version's training-period rows, in signature order (NaN kept)."""
    from qmlops.features import load_features

    parents = [x for x in registry.store.lineage.upstream(record.id) if x.kind == "feature_set"]
    if not parents:
        raise ValidationError(f"{record.name} v{record.version} has no feature set in its lineage: pass a background "
                              "sample explicitly", field="background")  # fmt: skip
    frame = load_features(materialization=parents[0].id, store=registry.store)["feature"]
    test_start = (record.tags.get("test_segment") or "").split("..")[0]
    if test_start:
        frame = frame[frame.index.get_level_values("datetime") < pd.Timestamp(test_start)]
    names = list(record.signature["feature_names"])
    missing = [c for c in names if c not in frame.columns]
    if missing:
        raise ValidationError(f"the feature set lacks {missing[:3]} of the model's signature (a sequence model's "
                              "windows cannot be explained from flat rows)", field="model")  # fmt: skip
    x = frame[names].to_numpy(dtype=np.float64)
    rng = np.random.default_rng(seed)
    return x[rng.choice(len(x), size=min(n, len(x)), replace=False)]


class ModelExplainer:
    """One version's explainer, built once (the model server caches one per loaded version)."""

    def __init__(self, registry: Any, name: str, ref: int | str = "latest", background: np.ndarray | None = None,
                 max_evals: int | None = None) -> None:  # fmt: skip
        import shap

        record = registry.get(name, ref)
        self.record = record
        self.feature_names = list(record.signature["feature_names"])
        self.predictor = registry.load_predictor(record.name, record.version)
        self.background = background if background is not None else background_for(registry, record)
        data = registry.artifacts.get(record.artifact_sha256, record.artifact_uri)
        self.flavor = record.flavor
        if record.flavor == "lightgbm":
            import lightgbm as lgb

            self._tree: Any = lgb.Booster(model_str=data.decode("utf-8"))
            self.explainer: Any = shap.TreeExplainer(self._tree)
            self.method = "tree"
        elif record.flavor == "xgboost":
            import xgboost as xgb

            booster = xgb.Booster()
            booster.load_model(bytearray(data))
            self._tree = booster
            self.explainer = shap.TreeExplainer(booster)
            self.method = "tree"
        elif record.flavor == "linear":
            spec = json.loads(data)
            self.coef, self.intercept = np.asarray(spec["coef"]), float(spec["intercept"])
            self.explainer = shap.LinearExplainer((self.coef, self.intercept), np.nan_to_num(self.background))
            self.method = "linear"
        else:
            masker = shap.maskers.Independent(self.background, max_samples=len(self.background))
            self.explainer = shap.PermutationExplainer(self.predictor.predict_array, masker)
            self.method = "permutation"
            self.max_evals = max_evals or 2 * len(self.feature_names) + 1

    def explain(self, rows: np.ndarray | pd.DataFrame) -> Explanation:
        x = (
            rows[self.feature_names].to_numpy(dtype=np.float64)
            if isinstance(rows, pd.DataFrame)
            else np.asarray(rows, dtype=np.float64)
        )
        if x.ndim != 2 or x.shape[1] != len(self.feature_names):
            raise ValidationError(f"expected rows of {len(self.feature_names)} features, got {list(x.shape)}",
                                  field="rows")  # fmt: skip
        predictions = self.predictor.predict_array(x)
        if self.method == "tree":
            values = np.asarray(self.explainer.shap_values(x), dtype=np.float64)
            base = float(np.asarray(self.explainer.expected_value).reshape(-1)[0])
        elif self.method == "linear":
            values = np.asarray(self.explainer.shap_values(np.nan_to_num(x)), dtype=np.float64)
            base = float(np.asarray(self.explainer.expected_value).reshape(-1)[0])
        else:
            result = self.explainer(x, max_evals=self.max_evals, silent=True)
            values = np.asarray(result.values, dtype=np.float64)
            base = float(np.asarray(result.base_values).reshape(-1)[0])
        return Explanation(self.feature_names, values.reshape(len(x), -1), base, predictions, x, self.method)
