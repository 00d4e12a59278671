"""The model catalogue: every model type the engine trains, with its family, defaults and search space.

A type names a Qlib model class (``qlib.contrib.model``; Informer is ours), how its data is shaped (``flat``: one
row per (day, instrument); ``ts``: a ``TSDatasetH`` window of ``step_len`` days), which parameter carries the
feature count, the defaults qmlops trains with (small enough for a CPU; Qlib's benchmark values for the tree
models), and the search space tuning samples from. Types that cannot run here say why when listed and when
asked to train, before any data is read.

Search spaces are plain data: ``{"param": {"type": "float"|"int"|"categorical", "low", "high", "log", "choices"}}``.
"""

from __future__ import annotations

import importlib
import importlib.util
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from qmlops.exceptions import NotFoundError, ValidationError

__all__ = ["ModelType", "CATALOGUE", "get_model_type", "list_model_types", "FAMILIES", "check_space"]

FAMILIES = ("tree", "linear", "nn", "sequence")


@dataclass(frozen=True)
class ModelType:
    name: str
    family: str
    model_class: str  # dotted path, relative to qlib.contrib.model unless it starts with "qmlops."
    description: str
    defaults: Mapping[str, Any] = field(default_factory=dict)
    search_space: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    data: str = "flat"  # flat | ts
    feature_param: str | None = None  # parameter that takes the number of features
    step_budget_param: str | None = None  # epochs / rounds parameter
    gpu: str = "no"  # no | optional (CUDA when present, CPU otherwise)
    requires: tuple[str, ...] = ()  # importable modules it needs
    unavailable_reason: str | None = None  # set for types qmlops lists but cannot train
    preprocessing: str = "normalize"  # raw (trees: NaN kept, no feature scaling) | normalize

    @property
    def available(self) -> bool:
        return self.reason_unavailable() is None

    def reason_unavailable(self) -> str | None:
        if self.unavailable_reason:
            return self.unavailable_reason
        for module in self.requires:
            if importlib.util.find_spec(module) is None:
                return f"needs the Python package {module!r}, which is not installed (pip install {module})"
        return None

    def resolve_class(self) -> type:
        from qmlops.training._compat import compat_model_class

        return compat_model_class(self.model_class)

    def params_for(self, n_features: int, overrides: Mapping[str, Any] | None = None) -> dict[str, Any]:
        """Defaults, then the feature count, then the caller's overrides (unknown names are refused)."""
        params = dict(self.defaults)
        if self.feature_param == "pt_model_kwargs":
            params["pt_model_kwargs"] = {**params.get("pt_model_kwargs", {}), "input_dim": n_features}
        elif self.feature_param:
            params[self.feature_param] = n_features
        for key, value in (overrides or {}).items():
            if key not in params and key not in self.accepted_params():
                raise ValidationError(
                    f"{self.name} has no parameter {key!r}; known: {', '.join(sorted(self.accepted_params()))}",
                    field=f"params.{key}",
                )
            params[key] = value
        return params

    def accepted_params(self) -> set[str]:
        import inspect

        names = set(self.defaults)
        try:
            cls = self.resolve_class()
        except Exception:
            return names
        for klass in cls.__mro__:
            init = klass.__dict__.get("__init__")
            if init is None:
                continue
            params = inspect.signature(init).parameters
            names |= {
                n
                for n, p in params.items()
                if n != "self" and p.kind not in (p.VAR_KEYWORD, p.VAR_POSITIONAL)
            }
            if not any(p.kind is p.VAR_KEYWORD for p in params.values()):
                break
        if self.family == "tree":  # LightGBM/XGBoost/CatBoost take their booster parameters as **kwargs
            names |= set(self.search_space)
        return names

    def to_dict(self) -> dict[str, Any]:
        reason = self.reason_unavailable()
        return {
            "name": self.name,
            "family": self.family,
            "model_class": self.model_class,
            "description": self.description,
            "data": self.data,
            "gpu": self.gpu,
            "available": reason is None,
            "reason": reason,
            "defaults": dict(self.defaults),
            "search_space": {k: dict(v) for k, v in self.search_space.items()},
        }


def _f(low: float, high: float, log: bool = False) -> dict[str, Any]:
    return {"type": "float", "low": low, "high": high, "log": log}


def _i(low: int, high: int, log: bool = False) -> dict[str, Any]:
    return {"type": "int", "low": low, "high": high, "log": log}


def _c(*choices: Any) -> dict[str, Any]:
    return {"type": "categorical", "choices": list(choices)}


_NN_COMMON = {"lr": _f(1e-4, 1e-2, log=True), "batch_size": _c(256, 512, 1024, 2048)}
_RNN_SPACE = {**_NN_COMMON, "hidden_size": _c(16, 32, 64), "num_layers": _i(1, 2), "dropout": _f(0.0, 0.5)}
_FORMER_SPACE = {**_NN_COMMON, "d_model": _c(16, 32, 64), "nhead": _c(2, 4), "num_layers": _i(1, 2),
                 "dropout": _f(0.0, 0.5)}  # fmt: skip
_TS = {"n_epochs": 20, "early_stop": 20, "lr": 1e-3, "batch_size": 1024, "seed": 0, "n_jobs": 0}
_RNN = {**_TS, "hidden_size": 32, "num_layers": 1, "dropout": 0.0}


def _sequence(name: str, model_class: str, description: str, *, defaults: Mapping[str, Any],
              search_space: Mapping[str, Mapping[str, Any]]) -> ModelType:  # fmt: skip
    """A day-window (``TSDatasetH``) torch model: feature count in ``d_feat``, budget in ``n_epochs``, CUDA optional."""
    return ModelType(name, "sequence", model_class, description, defaults=defaults, search_space=search_space,
                     data="ts", feature_param="d_feat", step_budget_param="n_epochs", gpu="optional")  # fmt: skip


CATALOGUE: dict[str, ModelType] = {
    t.name: t
    for t in [
        ModelType(
            "lightgbm",
            "tree",
            "gbdt.LGBModel",
            "LightGBM gradient-boosted trees (Qlib LGBModel)",
            defaults={
                "loss": "mse",
                "colsample_bytree": 0.8879,
                "learning_rate": 0.2,
                "subsample": 0.8789,
                "lambda_l1": 205.6999,
                "lambda_l2": 580.9768,
                "max_depth": 8,
                "num_leaves": 210,
                "num_threads": 2,
                "num_boost_round": 1000,
                "early_stopping_rounds": 50,
                "seed": 0,
            },
            search_space={
                "learning_rate": _f(0.01, 0.3, log=True),
                "num_leaves": _i(16, 256, log=True),
                "max_depth": _i(3, 10),
                "colsample_bytree": _f(0.5, 1.0),
                "subsample": _f(0.5, 1.0),
                "lambda_l1": _f(1e-3, 1e3, log=True),
                "lambda_l2": _f(1e-3, 1e3, log=True),
                "min_data_in_leaf": _i(10, 500, log=True),
            },
            step_budget_param="num_boost_round",
            gpu="no",
            requires=("lightgbm",),
            preprocessing="raw",
        ),
        ModelType(
            "xgboost",
            "tree",
            "xgboost.XGBModel",
            "XGBoost gradient-boosted trees (Qlib XGBModel)",
            defaults={
                "eval_metric": "rmse",
                "colsample_bytree": 0.8879,
                "eta": 0.0421,
                "max_depth": 8,
                "subsample": 0.8789,
                "nthread": 2,
                "num_boost_round": 1000,
                "early_stopping_rounds": 50,
                "seed": 0,
                "tree_method": "hist",
            },
            search_space={
                "eta": _f(0.01, 0.3, log=True),
                "max_depth": _i(3, 10),
                "colsample_bytree": _f(0.5, 1.0),
                "subsample": _f(0.5, 1.0),
                "min_child_weight": _f(1.0, 100.0, log=True),
                "lambda": _f(1e-3, 1e3, log=True),
            },
            step_budget_param="num_boost_round",
            gpu="optional",
            requires=("xgboost",),
            preprocessing="raw",
        ),
        ModelType(
            "catboost",
            "tree",
            "catboost_model.CatBoostModel",
            "CatBoost ordered boosting (Qlib CatBoostModel)",
            defaults={
                "loss": "RMSE",
                "learning_rate": 0.0421,
                "subsample": 0.8789,
                "max_depth": 6,
                "thread_count": 2,
                "bootstrap_type": "Bernoulli",
                "num_boost_round": 1000,
                "early_stopping_rounds": 50,
                "random_seed": 0,
            },
            search_space={
                "learning_rate": _f(0.01, 0.3, log=True),
                "max_depth": _i(3, 8),
                "subsample": _f(0.5, 1.0),
                "l2_leaf_reg": _f(1.0, 30.0, log=True),
            },
            step_budget_param="num_boost_round",
            gpu="optional",
            requires=("catboost",),
            preprocessing="raw",
        ),
        ModelType(
            "linear",
            "linear",
            "linear.LinearModel",
            "Linear regression: OLS, ridge, lasso or NNLS (Qlib)",
            defaults={"estimator": "ridge", "alpha": 1.0, "fit_intercept": True},
            # "ols" takes no alpha (Qlib asserts it), so the search covers the regularised estimators
            search_space={"estimator": _c("ridge", "lasso"), "alpha": _f(1e-4, 100.0, log=True)},
        ),
        ModelType(
            "mlp",
            "nn",
            "pytorch_nn.DNNModelPytorch",
            "Multi-layer perceptron (Qlib DNNModelPytorch)",
            defaults={
                "lr": 2e-3,
                "max_steps": 400,
                "eval_steps": 20,
                "batch_size": 1024,
                "early_stop_rounds": 20,
                "optimizer": "adam",
                "seed": 0,
                "weight_decay": 1e-4,
                "pt_model_kwargs": {"layers": (128,)},
            },
            search_space={
                "lr": _f(1e-4, 1e-2, log=True),
                "batch_size": _c(256, 512, 1024, 2048),
                "weight_decay": _f(1e-6, 1e-2, log=True),
                "max_steps": _i(100, 800, log=True),
            },
            feature_param="pt_model_kwargs",
            step_budget_param="max_steps",
            gpu="optional",
        ),
        ModelType(
            "tabnet",
            "nn",
            "pytorch_tabnet.TabnetModel",
            "TabNet attentive tabular network (Qlib)",
            defaults={
                "out_dim": 16,
                "final_out_dim": 1,
                "n_d": 16,
                "n_a": 16,
                "n_steps": 3,
                "vbs": 512,
                "batch_size": 2048,
                "n_epochs": 10,
                "pretrain_n_epochs": 2,
                "early_stop": 10,
                "lr": 2e-3,
                "seed": 0,
            },
            search_space={"lr": _f(1e-4, 1e-2, log=True), "n_d": _c(8, 16, 32), "n_steps": _i(2, 5)},
            feature_param="d_feat",
            step_budget_param="n_epochs",
            gpu="optional",
        ),
        _sequence(
            "gru",
            "pytorch_gru_ts.GRU",
            "GRU over a window of days (Qlib GRU, TSDatasetH)",
            defaults=_RNN,
            search_space=_RNN_SPACE,
        ),
        _sequence(
            "lstm",
            "pytorch_lstm_ts.LSTM",
            "LSTM over a window of days (Qlib LSTM, TSDatasetH)",
            defaults=_RNN,
            search_space=_RNN_SPACE,
        ),
        _sequence(
            "alstm",
            "pytorch_alstm_ts.ALSTM",
            "Attention LSTM (Qlib ALSTM, TSDatasetH)",
            defaults=_RNN,
            search_space=_RNN_SPACE,
        ),
        _sequence(
            "transformer",
            "pytorch_transformer_ts.TransformerModel",
            "Transformer encoder over a window of days (Qlib, TSDatasetH)",
            defaults={**_TS, "d_model": 32, "nhead": 2, "num_layers": 1, "dropout": 0.0},
            search_space=_FORMER_SPACE,
        ),
        _sequence(
            "localformer",
            "pytorch_localformer_ts.LocalformerModel",
            "Transformer with local convolution (Qlib Localformer, TSDatasetH)",
            defaults={**_TS, "d_model": 32, "nhead": 2, "num_layers": 1, "dropout": 0.0},
            search_space=_FORMER_SPACE,
        ),
        _sequence(
            "tcn",
            "pytorch_tcn_ts.TCN",
            "Temporal convolutional network (Qlib TCN, TSDatasetH)",
            defaults={**_TS, "n_chans": 32, "num_layers": 2, "kernel_size": 3, "dropout": 0.0},
            search_space={
                **_NN_COMMON,
                "n_chans": _c(16, 32, 64),
                "num_layers": _i(1, 3),
                "kernel_size": _i(2, 5),
            },
        ),
        _sequence(
            "gats",
            "pytorch_gats_ts.GATs",
            "Graph attention across the day's stocks over a GRU encoder (Qlib GATs, TSDatasetH; one day per batch)",
            defaults={k: v for k, v in {**_RNN, "base_model": "GRU"}.items() if k != "batch_size"},
            search_space={k: v for k, v in _RNN_SPACE.items() if k != "batch_size"},
        ),
        _sequence(
            "informer",
            "qmlops.training._informer.InformerModel",
            "Informer: ProbSparse self-attention with distilling (qmlops, Qlib Model API, TSDatasetH)",
            defaults={**_TS, "d_model": 32, "nhead": 2, "num_layers": 2, "d_ff": 64, "factor": 5},
            search_space={**_FORMER_SPACE, "factor": _i(2, 8)},
        ),
        ModelType(
            "hist",
            "sequence",
            "pytorch_hist.HIST",
            "HIST: concept-oriented shared information (Qlib)",
            unavailable_reason="needs a stock-to-concept matrix (Qlib's CSI300 concept file); the bundled data has "
            "no concepts",
        ),
        ModelType(
            "tra",
            "sequence",
            "pytorch_tra.TRA",
            "Temporal routing adaptor (Qlib)",
            unavailable_reason="needs Qlib's MTSDatasetH with memory-mode sampling, not a feature-store frame",
        ),
        ModelType(
            "tcts",
            "nn",
            "pytorch_tcts.TCTS",
            "Temporally correlated task scheduling (Qlib)",
            unavailable_reason="trains on several label horizons at once; feature sets here have one label",
        ),
        ModelType(
            "add",
            "nn",
            "pytorch_add.ADD",
            "ADD: decoupled market/stock representations (Qlib)",
            unavailable_reason="its fit reports no per-epoch validation score, so neither early stopping nor "
            "live progress can observe it",
        ),
    ]
}


def list_model_types(*, family: str | None = None, available_only: bool = False) -> list[ModelType]:
    if family is not None and family not in FAMILIES:
        raise ValidationError(f"must be one of {', '.join(FAMILIES)}; got {family!r}", field="family")
    return [t for t in CATALOGUE.values()
            if (family is None or t.family == family) and (t.available or not available_only)]  # fmt: skip


def get_model_type(name: str, *, require_available: bool = True) -> ModelType:
    try:
        mtype = CATALOGUE[name.lower()]
    except KeyError:
        raise NotFoundError(
            f"unknown model type {name!r}; known: {', '.join(CATALOGUE)}", field="model_type"
        ) from None
    reason = mtype.reason_unavailable()
    if require_available and reason:
        raise ValidationError(f"model type {name} cannot run here: {reason}", field="model_type")
    return mtype


def check_space(space: Mapping[str, Any], model_type: ModelType) -> dict[str, dict[str, Any]]:
    """Validate a search space (overrides merged by tuning) against a type; returns it normalised.

    Refused: unknown parameters, unknown kinds, empty or inverted ranges, log ranges touching zero, empty choices.
    """
    accepted = model_type.accepted_params() | set(model_type.search_space)
    out: dict[str, dict[str, Any]] = {}
    for name, spec in space.items():
        where = f"search_space.{name}"
        if name not in accepted:
            raise ValidationError(f"{model_type.name} has no parameter {name!r}", field=where)
        if not isinstance(spec, Mapping) or "type" not in spec:
            raise ValidationError("each entry needs a 'type' (float, int or categorical)", field=where)
        kind = spec["type"]
        if kind in ("float", "int"):
            try:
                low, high = float(spec["low"]), float(spec["high"])
            except (KeyError, TypeError, ValueError):
                raise ValidationError("numeric ranges need numbers 'low' and 'high'", field=where) from None
            if not low < high:
                raise ValidationError(f"empty range: low {low:g} must be below high {high:g}", field=where)
            if spec.get("log") and low <= 0:
                raise ValidationError("a log range must have low > 0", field=where)
            if kind == "int" and int(high) - int(low) < 1:
                raise ValidationError("an int range needs at least two values", field=where)
            out[name] = {"type": kind, "low": int(low) if kind == "int" else low,
                         "high": int(high) if kind == "int" else high, "log": bool(spec.get("log", False))}  # fmt: skip
        elif kind == "categorical":
            choices = spec.get("choices")
            if not isinstance(choices, list | tuple) or not choices:
                raise ValidationError("categorical entries need a non-empty 'choices' list", field=where)
            out[name] = {"type": kind, "choices": list(choices)}
        else:
            raise ValidationError(f"unknown type {kind!r}; use float, int or categorical", field=where)
    return out
