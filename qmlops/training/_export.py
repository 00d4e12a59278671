"""Turn a trained model into something the registry stores and Serve can score from a feature frame.

- Tree models (LightGBM, XGBoost) are stored as their boosters, trimmed to the best iteration, and see the raw
  features exactly as training did (NaN is "missing").
- Every other model becomes a :class:`ServingModule`: the feature normalisation fitted on the training segment
  (robust z-score, clip, NaN -> 0) followed by the trained network (or the linear map) in the layout it expects.
  Sequence models take a window of ``step_len`` days flattened time-major: columns ``name@t-k`` for
  ``k = step_len-1 .. 0``. The module is TorchScript-traced and stored with the ``torch`` flavor when the traced
  graph reproduces the eager outputs on a batch of another size; otherwise (shape-specialised graphs) the eager
  module is stored with the ``pickle`` flavor, which the artifact store only loads after checking its checksum.
"""

from __future__ import annotations

import copy
import warnings
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
import torch

from qmlops.registry import Signature
from qmlops.registry._signature import DEFAULT_OUTPUT

__all__ = ["Exported", "ServingModule", "export_model", "window_feature_names", "PickledModule"]

# model attribute holding the network, and the input layout its forward takes
_NETWORKS: dict[str, tuple[str, str]] = {
    "mlp": ("dnn_model", "flat"),
    "tabnet": ("tabnet_model", "tabnet"),
    "gru": ("GRU_model", "ntf"),
    "lstm": ("LSTM_model", "ntf"),
    "alstm": ("ALSTM_model", "ntf"),
    "transformer": ("model", "ntf"),
    "localformer": ("model", "ntf"),
    "tcn": ("TCN_model", "nft"),
    "gats": ("GAT_model", "ntf"),
    "informer": ("model", "ntf"),
}


def window_feature_names(names: list[str], step_len: int) -> list[str]:
    return [f"{name}@t-{k}" for k in range(step_len - 1, -1, -1) for name in names]


class ServingModule(torch.nn.Module):
    """x [N, T*F] (or [N, F]) raw features -> robust z-score (clipped) -> NaN to 0 -> network -> [N]."""

    def __init__(
        self,
        network: torch.nn.Module,
        median: np.ndarray | None,
        scale: np.ndarray | None,
        *,
        n_features: int,
        step_len: int,
        layout: str,
        clip: bool = True,
    ) -> None:
        super().__init__()
        self.network = network
        f = n_features
        self.register_buffer(
            "median", torch.as_tensor(np.zeros(f) if median is None else median, dtype=torch.float32)
        )
        self.register_buffer(
            "scale", torch.as_tensor(np.ones(f) if scale is None else scale, dtype=torch.float32)
        )
        self.n_features, self.step_len, self.layout, self.clip = f, step_len, layout, clip

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.reshape(x.shape[0], self.step_len, self.n_features).to(torch.float64)
        median, scale = self.get_buffer("median"), self.get_buffer("scale")
        x = (x - median) / scale
        if self.clip:
            x = torch.clamp(x, -3.0, 3.0)
        x = torch.nan_to_num(x, nan=0.0, posinf=0.0, neginf=0.0).to(torch.float32)
        if self.layout == "flat":
            out = self.network(x.reshape(x.shape[0], self.n_features))
        elif self.layout == "tabnet":
            flat = x.reshape(x.shape[0], self.n_features)
            out = self.network(flat, torch.ones_like(flat))
        elif self.layout == "nft":
            out = self.network(x.transpose(1, 2))
        else:
            out = self.network(x)
        return out.reshape(-1)


class PickledModule:
    """The eager :class:`ServingModule` behind ``predict(DataFrame)``, for graphs tracing cannot generalise."""

    def __init__(self, module: ServingModule, names: list[str]) -> None:
        self.module, self.names = module, names

    def predict(self, frame: pd.DataFrame) -> np.ndarray:
        x = torch.as_tensor(frame[self.names].to_numpy(dtype=np.float32))
        with torch.no_grad():
            return self.module(x).numpy()


@dataclass
class Exported:
    model: Any
    signature: Signature
    flavor: str


def _linear_network(model: Any, n_features: int) -> torch.nn.Module:
    layer = torch.nn.Linear(n_features, 1)
    with torch.no_grad():
        layer.weight.copy_(torch.as_tensor(np.asarray(model.coef_, dtype=np.float32).reshape(1, -1)))
        layer.bias.fill_(
            float(np.asarray(model.intercept_).reshape(-1)[0]) if np.size(model.intercept_) else 0.0
        )
    return layer


def export_model(
    model_type: str,
    model: Any,
    feature_names: list[str],
    *,
    median: np.ndarray | None = None,
    scale: np.ndarray | None = None,
    step_len: int = 1,
    sample: np.ndarray | None = None,
) -> Exported:
    """What to register for a trained model. ``sample`` (raw rows in the signature's layout) checks the trace."""
    if model_type in ("lightgbm", "xgboost"):
        return Exported(
            model.model, Signature(list(feature_names), ["float32"] * len(feature_names)), model_type
        )
    if model_type == "catboost":
        return Exported(_CatBoostPredictor(model.model, feature_names),
                        Signature(list(feature_names), ["float32"] * len(feature_names)), "pickle")  # fmt: skip
    n = len(feature_names)
    if model_type == "linear":
        network, layout = _linear_network(model, n), "flat"
    else:
        attr, layout = _NETWORKS[model_type]
        network = copy.deepcopy(getattr(model, attr))
        if isinstance(network, torch.nn.DataParallel):
            network = network.module
    network = network.to("cpu").eval()
    module = ServingModule(network, median, scale, n_features=n, step_len=step_len, layout=layout).eval()
    names = window_feature_names(feature_names, step_len) if step_len > 1 else list(feature_names)
    output = {**DEFAULT_OUTPUT, "handles_nan": True}  # raw features in; the module normalises and fills NaN
    signature = Signature(names, ["float32"] * len(names), output)
    traced = _trace(module, len(names), sample)
    if traced is not None:
        return Exported(traced, signature, "torch")
    return Exported(PickledModule(module, names), signature, "pickle")


def _trace(module: ServingModule, width: int, sample: np.ndarray | None) -> torch.nn.Module | None:
    rng = np.random.default_rng(0)
    data = sample if sample is not None and len(sample) >= 8 else rng.normal(size=(64, width))
    example = torch.as_tensor(np.asarray(data[:8], dtype=np.float32))
    check = torch.as_tensor(np.asarray(data[: min(len(data), 37)], dtype=np.float32))
    try:
        with warnings.catch_warnings(), torch.no_grad():
            warnings.simplefilter("ignore")
            traced = torch.jit.trace(module, example, check_trace=False)
            expected, got = module(check).numpy(), traced(check).numpy()
    except Exception:
        return None
    if expected.shape != got.shape or not np.allclose(expected, got, rtol=1e-4, atol=1e-5):
        return None
    return traced


class _CatBoostPredictor:
    def __init__(self, booster: Any, names: list[str]) -> None:
        self.booster, self.names = booster, names

    def predict(self, frame: pd.DataFrame) -> np.ndarray:
        return np.asarray(
            self.booster.predict(frame[self.names].to_numpy(dtype=np.float32)), dtype=np.float64
        )
