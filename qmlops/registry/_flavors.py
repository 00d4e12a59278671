"""Flavors: how each kind of model is turned into bytes and back into a predictor.

Plug-ins behind one small base class and a name registry. Every flavor but ``pickle`` uses a format that
cannot run code on load: LightGBM's model text, XGBoost's JSON, plain JSON coefficients for linear models, and
TorchScript for torch modules. ``pickle`` exists for objects nothing else can store; its bytes are unpickled
only after the artifact store verified their checksum, and never from outside the store.
"""

from __future__ import annotations

import io
import json
import pickle
from abc import ABC, abstractmethod
from collections.abc import Callable
from typing import Any, ClassVar

import numpy as np
import pandas as pd

from qmlops.exceptions import NotFoundError, ValidationError
from qmlops.registry._signature import Signature

__all__ = ["Flavor", "FLAVORS", "flavor_for", "get_flavor", "Predictor"]

Score = Callable[[np.ndarray], np.ndarray]


class Predictor:
    """``predict(frame) -> ndarray``: columns picked by name in signature order; missing ones are refused."""

    def __init__(self, signature: Signature, score: Score, flavor: str, model_id: str | None = None) -> None:
        self.signature = signature
        self._score = score
        self.flavor = flavor
        self.model_id = model_id

    def predict(self, frame: pd.DataFrame) -> np.ndarray:
        names = self.signature.feature_names
        missing = [n for n in names if n not in frame.columns]
        if missing:
            raise ValidationError(
                f"missing {len(missing)} feature(s): {', '.join(missing[:10])}{' ...' if len(missing) > 10 else ''}",
                field=missing[0],
                details={"missing": missing},
            )
        x = frame[names].to_numpy(dtype=np.float64)
        out = np.asarray(self._score(x), dtype=np.float64).reshape(-1)
        if out.shape[0] != len(frame):
            raise ValidationError(
                f"model returned {out.shape[0]} values for {len(frame)} rows", field="output"
            )
        return out

    def predict_array(self, x: np.ndarray) -> np.ndarray:
        """Score rows already in signature order (the serving hot path: no DataFrame)."""
        x = np.asarray(x, dtype=np.float64)
        if x.ndim != 2 or x.shape[1] != len(self.signature.feature_names):
            raise ValidationError(
                f"expected rows of {len(self.signature.feature_names)} features, got shape {list(x.shape)}",
                field="features",
            )
        out = np.asarray(self._score(x), dtype=np.float64).reshape(-1)
        if out.shape[0] != x.shape[0]:
            raise ValidationError(
                f"model returned {out.shape[0]} values for {x.shape[0]} rows", field="output"
            )
        return out


class Flavor(ABC):
    name: ClassVar[str]

    @abstractmethod
    def handles(self, model: Any) -> bool: ...

    @abstractmethod
    def dump(self, model: Any, signature: Signature) -> bytes: ...

    @abstractmethod
    def load(self, data: bytes, signature: Signature) -> Score: ...


def _booster_of(model: Any, cls: type) -> Any:
    if isinstance(model, cls):
        return model
    for attr in ("booster_", "model"):  # sklearn wrappers; Qlib's LGBModel / XGBModel keep it in .model
        inner = getattr(model, attr, None)
        if isinstance(inner, cls):
            return inner
    getter = getattr(model, "get_booster", None)
    if callable(getter):
        inner = getter()
        if isinstance(inner, cls):
            return inner
    return None


class LightGBMFlavor(Flavor):
    name = "lightgbm"

    def handles(self, model: Any) -> bool:
        import lightgbm as lgb

        return _booster_of(model, lgb.Booster) is not None

    def dump(self, model: Any, signature: Signature) -> bytes:
        import lightgbm as lgb

        booster = _booster_of(model, lgb.Booster)
        best = booster.best_iteration if booster.best_iteration and booster.best_iteration > 0 else None
        return booster.model_to_string(num_iteration=best).encode("utf-8")

    def load(self, data: bytes, signature: Signature) -> Score:
        import lightgbm as lgb

        booster = lgb.Booster(model_str=data.decode("utf-8"))
        return lambda x: np.asarray(booster.predict(x))


class XGBoostFlavor(Flavor):
    name = "xgboost"

    def handles(self, model: Any) -> bool:
        import xgboost as xgb

        return _booster_of(model, xgb.Booster) is not None

    def dump(self, model: Any, signature: Signature) -> bytes:
        import xgboost as xgb

        return bytes(_booster_of(model, xgb.Booster).save_raw(raw_format="json"))

    def load(self, data: bytes, signature: Signature) -> Score:
        import xgboost as xgb

        booster = xgb.Booster()
        booster.load_model(bytearray(data))
        return lambda x: booster.predict(xgb.DMatrix(x))


class LinearFlavor(Flavor):
    """Any model with ``coef_`` and ``intercept_`` (scikit-learn linear models, Qlib's LinearModel)."""

    name = "linear"

    def handles(self, model: Any) -> bool:
        coef = getattr(model, "coef_", None)
        return coef is not None and np.asarray(coef).ndim <= 2 and hasattr(model, "intercept_")

    def dump(self, model: Any, signature: Signature) -> bytes:
        coef = np.asarray(model.coef_, dtype=np.float64).reshape(-1)
        if coef.shape[0] != len(signature.feature_names):
            raise ValidationError(f"{coef.shape[0]} coefficients for {len(signature.feature_names)} features",
                                  field="signature")  # fmt: skip
        return json.dumps({"coef": coef.tolist(), "intercept": float(np.asarray(model.intercept_).reshape(-1)[0])
                           if np.asarray(model.intercept_).size else 0.0}).encode()  # fmt: skip

    def load(self, data: bytes, signature: Signature) -> Score:
        spec = json.loads(data)
        coef, intercept = np.asarray(spec["coef"]), float(spec["intercept"])
        return lambda x: np.nan_to_num(x) @ coef + intercept


class TorchFlavor(Flavor):
    """A ``torch.nn.Module`` mapping (n, features) float32 to (n,) or (n, 1), stored as TorchScript."""

    name = "torch"

    def handles(self, model: Any) -> bool:
        try:
            import torch
        except ImportError:  # pragma: no cover - torch is a dependency
            return False
        return isinstance(model, torch.nn.Module)

    def dump(self, model: Any, signature: Signature) -> bytes:
        import torch

        model = model.to("cpu").eval()
        example = torch.zeros((2, len(signature.feature_names)), dtype=torch.float32)
        try:
            scripted = torch.jit.script(model)
        except Exception:  # modules with Python-only constructs: trace them on an example batch
            scripted = torch.jit.trace(model, example)
        buffer = io.BytesIO()
        torch.jit.save(scripted, buffer)
        return buffer.getvalue()

    def load(self, data: bytes, signature: Signature) -> Score:
        import torch

        from qmlops.devices import choose_device

        # a replica that Ray gave a GPU share scores on CUDA when torch sees it; elsewhere on the CPU
        device = choose_device("auto").device
        module = torch.jit.load(io.BytesIO(data), map_location=device).eval()
        # Modules that normalise their own inputs (the training engine's) declare it: NaN must reach them as NaN
        passthrough = bool(signature.output.get("handles_nan"))

        def score(x: np.ndarray) -> np.ndarray:
            with torch.no_grad():
                arr = x if passthrough else np.nan_to_num(x)
                out = module(torch.as_tensor(np.array(arr, dtype=np.float32), device=device))
            return out.detach().to("cpu").numpy().reshape(len(x), -1)[:, 0]

        return score


class PickleFlavor(Flavor):
    """Objects with ``predict(DataFrame)`` that no safer flavor can store (loaded only from the verified store)."""

    name = "pickle"

    def handles(self, model: Any) -> bool:
        return callable(getattr(model, "predict", None))

    def dump(self, model: Any, signature: Signature) -> bytes:
        return pickle.dumps(model, protocol=pickle.HIGHEST_PROTOCOL)

    def load(self, data: bytes, signature: Signature) -> Score:
        model = pickle.loads(data)  # noqa: S301 - bytes verified against their sha256 by the artifact store
        names = signature.feature_names
        return lambda x: np.asarray(model.predict(pd.DataFrame(x, columns=names)))


FLAVORS: dict[str, Flavor] = {f.name: f for f in (LightGBMFlavor(), XGBoostFlavor(), LinearFlavor(), TorchFlavor(),
                                                   PickleFlavor())}  # fmt: skip


def get_flavor(name: str) -> Flavor:
    try:
        return FLAVORS[name]
    except KeyError:
        raise NotFoundError(f"unknown flavor {name!r}; known: {', '.join(FLAVORS)}", field="flavor") from None


def flavor_for(model: Any) -> Flavor:
    """The first flavor that can store ``model`` (safe formats before pickle)."""
    for flavor in FLAVORS.values():
        if flavor.handles(model):
            return flavor
    raise ValidationError(f"cannot store a {type(model).__name__}: no flavor handles it", field="model")
