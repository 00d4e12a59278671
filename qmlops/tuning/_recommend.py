"""Algorithm selection: rank model types for a dataset from its meta-features, each with a one-line reason.

Meta-features (``meta_features``): rows, instruments, trading days, feature count, missing ratio, a label-noise
estimate (1 - the largest absolute mean daily rank IC of any single feature on the train part: near 1 means
no single feature explains much of the cross-section) and whether a GPU is present. The rules encode common
practice for daily cross-sectional equity data: boosted trees are the strong default on tabular factors
(LightGBM/XGBoost handle missing values natively); a regularised linear model is the right baseline when the
label is mostly noise; MLPs want many rows; sequence models want long histories and, at this size, a GPU;
cross-sectional attention (GATs) wants many instruments per day.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import pandas as pd

from qmlops.training import list_model_types

__all__ = ["Recommendation", "meta_features", "recommend"]


@dataclass(frozen=True)
class Recommendation:
    model_type: str
    score: float
    reason: str

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def meta_features(frame: pd.DataFrame, *, gpu: bool | None = None) -> dict[str, Any]:
    """Meta-features of a feature-store frame (columns ("feature", name) and ("label", LABEL0))."""
    import torch

    features = frame["feature"]
    label = frame["label"].iloc[:, 0]
    days = frame.index.get_level_values("datetime")
    cut = np.sort(days.unique())[int(len(days.unique()) * 0.6)]
    train = frame[days <= cut]
    ranks = train["feature"].groupby(level="datetime").rank(pct=True)
    lab = train["label"].iloc[:, 0].groupby(level="datetime").rank(pct=True)
    sample = ranks.columns[:: max(1, len(ranks.columns) // 40)]
    ics = []
    for col in sample:
        pair = pd.DataFrame({"f": ranks[col], "y": lab}).dropna()
        daily = pair.groupby(level="datetime").apply(lambda d: d["f"].corr(d["y"]) if len(d) > 2 else np.nan)
        ics.append(abs(float(daily.mean())) if len(daily.dropna()) else 0.0)
    return {
        "rows": int(len(frame)),
        "instruments": int(frame.index.get_level_values("instrument").nunique()),
        "days": int(days.nunique()),
        "features": int(features.shape[1]),
        "missing_ratio": float(features.isna().to_numpy().mean()),
        "label_noise": float(1.0 - max(ics) if ics else 1.0),
        "label_std": float(label.std()),
        "gpu": bool(torch.cuda.is_available()) if gpu is None else bool(gpu),
    }


def recommend(meta: dict[str, Any], *, top: int | None = None) -> list[Recommendation]:
    """Available model types ranked for these meta-features (highest score first)."""
    rows, days, inst = meta["rows"], meta["days"], meta["instruments"]
    noisy, missing, gpu = meta["label_noise"] > 0.9, meta["missing_ratio"] > 0.01, meta["gpu"]
    out: list[Recommendation] = []
    for t in list_model_types(available_only=True):
        score, why = 0.5, []
        if t.name in ("lightgbm", "xgboost"):
            score = 0.85 + (0.05 if missing else 0.0) + (0.03 if t.name == "lightgbm" else 0.0)
            why.append("boosted trees are the strong default on tabular factors")
            if missing:
                why.append(f"{meta['missing_ratio']:.1%} missing values are handled natively")
        elif t.name == "catboost":
            score = 0.78
            why.append("ordered boosting resists overfitting on small, noisy samples")
        elif t.name == "linear":
            score = 0.7 + (0.15 if noisy else 0.0)
            why.append("regularised linear baseline" + (f"; label noise {meta['label_noise']:.2f} favours low variance"
                                                       if noisy else ""))  # fmt: skip
        elif t.family == "nn":
            score = (
                0.55
                + (0.15 if rows > 200_000 else 0.0)
                + (0.05 if gpu else -0.1 if t.name == "tabnet" else 0.0)
            )
            why.append(
                f"{rows:,} rows"
                + (" is enough for a network" if rows > 200_000 else " is small for a network")
            )
        elif t.family == "sequence":
            long_history = days >= 500
            score = 0.4 + (0.15 if long_history else 0.0) + (0.15 if gpu else 0.0)
            if t.name in ("transformer", "localformer", "informer") and not gpu:
                score -= 0.1
            if t.name == "gats":
                score += 0.05 if inst >= 200 else -0.1
            why.append(f"{days} days of history" + ("" if long_history else " is short for sequence models")
                       + ("; GPU present" if gpu else "; CPU only"))  # fmt: skip
        out.append(Recommendation(t.name, round(score, 3), "; ".join(why)))
    out.sort(key=lambda r: (-r.score, r.model_type))
    return out[:top] if top else out
