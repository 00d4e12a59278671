"""Real models trained on real S&P 500 features, once per test session."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
import pytest

from qmlops.data import Sp500Source, resolve_source
from qmlops.data._versions import _canonical
from qmlops.features import compute_alpha158, compute_alpha158_label

FEATURES = [
    "KMID",
    "KLEN",
    "ROC5",
    "ROC20",
    "MA5",
    "MA20",
    "STD20",
    "RSV10",
    "CORR20",
    "VMA5",
    "VSTD20",
    "RANK20",
]


@dataclass
class Trained:
    models: dict[str, Any]
    x_train: pd.DataFrame
    x_test: pd.DataFrame


class MLP:
    """Factory kept at module level so TorchScript can compile the module."""

    @staticmethod
    def build(n: int) -> Any:
        import torch

        return torch.nn.Sequential(torch.nn.Linear(n, 16), torch.nn.ReLU(), torch.nn.Linear(16, 1))


@pytest.fixture(scope="session")
def trained() -> Trained:
    import lightgbm as lgb
    import torch
    import xgboost as xgb
    from sklearn.linear_model import Ridge

    raw, _, _ = _canonical(resolve_source(Sp500Source.name), "fail")
    raw = raw[raw["instrument"].isin(sorted(raw["instrument"].unique())[:60])]
    frame = compute_alpha158(raw)[FEATURES].join(compute_alpha158_label(raw)).dropna()
    dates = frame.index.get_level_values("datetime")
    cut = dates.unique().sort_values()[int(0.8 * dates.nunique())]
    train, test = frame[dates < cut], frame[dates >= cut]
    x, y = train[FEATURES], train["LABEL0"].to_numpy()
    booster = lgb.train({"objective": "regression", "learning_rate": 0.05, "num_leaves": 15, "verbose": -1},
                        lgb.Dataset(x, y), num_boost_round=60)  # fmt: skip
    xgb_booster = xgb.train(
        {"max_depth": 3, "eta": 0.1}, xgb.DMatrix(x.to_numpy(), label=y), num_boost_round=30
    )
    ridge = Ridge(alpha=1.0).fit(x.to_numpy(), y)
    torch.manual_seed(0)
    net = MLP.build(len(FEATURES))
    opt = torch.optim.Adam(net.parameters(), lr=1e-3)
    xt = torch.as_tensor(x.to_numpy().copy(), dtype=torch.float32)
    yt = torch.as_tensor(y, dtype=torch.float32).reshape(-1, 1)
    for _ in range(30):
        opt.zero_grad()
        loss = torch.nn.functional.mse_loss(net(xt), yt)
        loss.backward()
        opt.step()
    net.eval()
    return Trained(
        {"lightgbm": booster, "xgboost": xgb_booster, "linear": ridge, "torch": net}, x, test[FEATURES]
    )


def in_memory_predict(kind: str, model: Any, x: pd.DataFrame) -> np.ndarray:
    if kind == "lightgbm":
        return np.asarray(model.predict(x.to_numpy()))
    if kind == "xgboost":
        import xgboost as xgb

        return np.asarray(model.predict(xgb.DMatrix(x.to_numpy())))
    if kind == "linear":
        return np.asarray(model.predict(x.to_numpy()))
    import torch

    with torch.no_grad():
        return model(torch.as_tensor(x.to_numpy(), dtype=torch.float32)).numpy().reshape(-1)
