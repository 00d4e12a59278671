"""Indicator impact analysis: which feature families and single indicators matter, by five measures.

Per feature on a sample of the version's test-segment rows (the label is the feature set's forward return):

- ``pearson`` / ``spearman``: correlation with the label (rank correlation is robust to the fat tails of returns);
- ``mutual_info``: scikit-learn's k-NN mutual-information estimate with the label (any dependence, not only linear);
- ``permutation``: the model's MSE increase when the feature's column is shuffled (the model's reliance on it);
- ``shap_share``: the feature's share of total mean |SHAP| (global explanation).

Families (:func:`qmlops.features.feature_family`: RSI, MACD, Bollinger, and Alpha158 groups KBAR, PRICE, ROC,
MA, STD, CORR, volume rolling groups, ...) aggregate them: the sum of SHAP share and permutation importance, the
largest |correlation| and mutual information of a member. The report is a table plus PNG plots (SHAP summary
bar, beeswarm, family ranking) in one HTML page.
"""

from __future__ import annotations

import html
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from qmlops.exceptions import ValidationError
from qmlops.explain._shap import Explanation, ModelExplainer
from qmlops.features import feature_family
from qmlops.reporting import img_tag, png_bytes

__all__ = ["ImpactReport", "impact_analysis", "render_report"]


@dataclass
class ImpactReport:
    model: str
    version: int
    features: (
        pd.DataFrame
    )  # index feature; columns family, pearson, spearman, mutual_info, permutation, shap_share
    families: pd.DataFrame  # index family; aggregated columns and rank
    explanation: Explanation
    rows: int
    plots: dict[str, bytes] = field(default_factory=dict)

    def to_dict(self, top: int = 30) -> dict[str, Any]:
        return {"model": self.model, "version": self.version, "rows": self.rows,
                "families": self.families.reset_index().to_dict(orient="records"),
                "features": self.features.head(top).reset_index().to_dict(orient="records")}  # fmt: skip


def _test_frame(registry: Any, record: Any, n: int, seed: int) -> tuple[pd.DataFrame, pd.Series]:
    from qmlops.features import load_features

    parents = [x for x in registry.store.lineage.upstream(record.id) if x.kind == "feature_set"]
    if not parents:
        raise ValidationError(
            f"{record.name} v{record.version} has no feature set in its lineage", field="model"
        )
    frame = load_features(materialization=parents[0].id, store=registry.store)
    start = (record.tags.get("test_segment") or "").split("..")[0]
    if start:
        frame = frame[frame.index.get_level_values("datetime") >= pd.Timestamp(start)]
    label = frame["label"].iloc[:, 0]
    frame = frame[label.notna().to_numpy()]
    if len(frame) > n:
        frame = frame.iloc[np.sort(np.random.default_rng(seed).choice(len(frame), n, replace=False))]
    return frame["feature"], frame["label"].iloc[:, 0]


def impact_analysis(registry: Any, name: str, ref: int | str = "latest", *, rows: int = 2000, shap_rows: int = 300,
                    seed: int = 0, explainer: ModelExplainer | None = None) -> ImpactReport:  # fmt: skip
    """The five measures per feature and per family for one registry version (see the module docstring)."""
    from scipy.stats import rankdata
    from sklearn.feature_selection import mutual_info_regression

    explainer = explainer or ModelExplainer(registry, name, ref)
    record = explainer.record
    names = explainer.feature_names
    x_frame, y = _test_frame(registry, record, rows, seed)
    missing = [c for c in names if c not in x_frame.columns]
    if missing:
        raise ValidationError(f"the feature set lacks {missing[:3]}", field="model")
    x = x_frame[names].to_numpy(dtype=np.float64)
    label = y.to_numpy(dtype=np.float64)
    filled = np.where(np.isfinite(x), x, np.nanmedian(np.where(np.isfinite(x), x, np.nan), axis=0))
    filled = np.nan_to_num(filled)

    def corr(a: np.ndarray, b: np.ndarray) -> float:
        return float(np.corrcoef(a, b)[0, 1]) if np.std(a) > 0 and np.std(b) > 0 else 0.0

    pearson = [corr(filled[:, j], label) for j in range(len(names))]
    rl = rankdata(label)
    spearman = [corr(rankdata(filled[:, j]), rl) for j in range(len(names))]
    mi = mutual_info_regression(filled, label, random_state=seed, n_neighbors=3)
    base_pred = explainer.predictor.predict_array(x)
    base_mse = float(np.mean((base_pred - label) ** 2))
    rng = np.random.default_rng(seed)
    perm = []
    for j in range(len(names)):
        shuffled = x.copy()
        shuffled[:, j] = shuffled[rng.permutation(len(x)), j]
        perm.append(float(np.mean((explainer.predictor.predict_array(shuffled) - label) ** 2)) - base_mse)
    sample = x[: min(shap_rows, len(x))]
    explanation = explainer.explain(sample)
    mean_abs = np.abs(explanation.values).mean(axis=0)
    share = mean_abs / mean_abs.sum() if mean_abs.sum() > 0 else mean_abs
    features = pd.DataFrame({"family": [feature_family(n.rsplit("@t-", 1)[0]) for n in names], "pearson": pearson,
                             "spearman": spearman, "mutual_info": mi, "permutation": perm, "shap_share": share},
                            index=pd.Index(names, name="feature"))  # fmt: skip
    features = features.sort_values("shap_share", ascending=False)
    grouped = features.groupby("family")
    families = pd.DataFrame({
        "features": grouped.size(),
        "shap_share": grouped["shap_share"].sum(),
        "permutation": grouped["permutation"].sum(),
        "max_abs_pearson": grouped["pearson"].apply(lambda s: float(s.abs().max())),
        "max_abs_spearman": grouped["spearman"].apply(lambda s: float(s.abs().max())),
        "max_mutual_info": grouped["mutual_info"].max(),
    }).sort_values("shap_share", ascending=False)  # fmt: skip
    families["rank"] = np.arange(1, len(families) + 1)
    report = ImpactReport(record.name, record.version, features, families, explanation, len(x))
    report.plots = _plots(report)
    return report


def _plots(report: ImpactReport) -> dict[str, bytes]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import shap

    out = {}
    top = report.features.head(20)
    fig, ax = plt.subplots(figsize=(7, 6))
    ax.barh(top.index[::-1], top["shap_share"][::-1], color="#3b6ea5")
    ax.set_xlabel("share of mean |SHAP|")
    ax.set_title(f"{report.model} v{report.version}: top features")
    out["summary_bar"] = png_bytes(fig, dpi=110)
    e = report.explanation
    plt.figure()
    shap.summary_plot(e.values, e.rows, feature_names=e.feature_names, max_display=20, show=False)
    fig = plt.gcf()
    out["beeswarm"] = png_bytes(fig, dpi=110)
    fam = report.families.head(20)
    fig, ax = plt.subplots(figsize=(7, 5))
    ax.barh(fam.index[::-1], fam["shap_share"][::-1], color="#c0504d")
    ax.set_xlabel("share of mean |SHAP| (family total)")
    ax.set_title("indicator families")
    out["family_ranking"] = png_bytes(fig, dpi=110)
    return out


def render_report(report: ImpactReport) -> str:
    """One self-contained HTML page: family table, top features, the three plots."""

    def table(frame: pd.DataFrame) -> str:
        return frame.to_html(float_format=lambda v: f"{v:.4f}", border=0, classes="t")

    imgs = "".join(
        f"<h3>{html.escape(k.replace('_', ' '))}</h3>{img_tag(v, k)}" for k, v in report.plots.items()
    )
    return (f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(report.model)} v{report.version}"
            " explanations</title><style>body{font-family:sans-serif;margin:2em}table.t td,table.t th{padding:2px 8px;"
            "text-align:right}</style></head><body>"
            f"<h1>{html.escape(report.model)} v{report.version}: SHAP and indicator impact</h1>"
            f"<p>{report.rows} test-segment rows; SHAP by the {report.explanation.method} explainer on "
            f"{len(report.explanation.values)} of them (additivity error {report.explanation.additivity_error():.2e}).</p>"
            f"<h2>Families</h2>{table(report.families)}<h2>Top 30 features</h2>{table(report.features.head(30))}"
            f"{imgs}</body></html>")  # fmt: skip
