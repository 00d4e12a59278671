"""SHAP on real models of the bundled data: additivity for a tree (LightGBM), a linear (scikit-learn Ridge,
LinearExplainer) and a torch model (the engine's MLP, permutation explainer); the indicator impact report."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from qmlops.exceptions import ValidationError
from qmlops.explain import ModelExplainer, explain_global
from qmlops.features import load_features
from qmlops.metadata import get_store
from qmlops.registry import ModelRegistry
from qmlops.training import TrainConfig, train

from ..features.test_store import _subset_csv


@pytest.fixture
def trained(tmp_home: Path, tmp_path: Path) -> dict[str, object]:
    from qmlops.data import ingest
    from qmlops.features import materialize

    ds = ingest(str(_subset_csv(tmp_path, n=10)), name="sub").record
    mat = materialize(ds.id, "alpha158", engine="local")
    lgb = train(TrainConfig("lightgbm", dataset="sub", params={"num_leaves": 15, "lambda_l1": 1.0, "lambda_l2": 1.0},
                            register_as="tree", report=False))  # fmt: skip
    mlp = train(TrainConfig("mlp", dataset="sub", params={"max_steps": 40, "eval_steps": 20}, register_as="net",
                            report=False))  # fmt: skip
    from sklearn.linear_model import Ridge

    frame = load_features("sub", "alpha158")
    x = frame["feature"].fillna(0.0)
    y = frame["label"].iloc[:, 0].fillna(0.0)
    ridge = Ridge(alpha=10.0).fit(x.to_numpy(), y.to_numpy())
    registry = ModelRegistry(get_store())
    lin = registry.register("ridge", ridge, signature=x.head(50), model_type="ridge",
                            lineage_parents=[mat.record.id], tags={"test_segment": lgb.segments["test"][0] + ".."})  # fmt: skip
    return {"registry": registry, "frame": frame, "lgb": lgb, "mlp": mlp, "lin": lin}


def test_shap_additivity_tree_linear_and_torch(trained: dict) -> None:
    registry, frame = trained["registry"], trained["frame"]
    rows = frame["feature"].dropna().tail(12)
    for name, method, tol in [
        ("tree", "tree", 1e-6),
        ("ridge", "linear", 1e-8),
        ("net", "permutation", 1e-4),
    ]:
        explainer = ModelExplainer(registry, name)
        assert explainer.method == method
        e = explainer.explain(rows)
        assert e.values.shape == (12, 158) and np.all(np.isfinite(e.values))
        # base value + contributions == the model's own prediction, row by row
        np.testing.assert_allclose(
            e.predictions, registry.load_predictor(name, "latest").predict(rows), rtol=1e-9
        )
        assert e.additivity_error() < tol * max(1.0, float(np.abs(e.predictions).max())), (
            name,
            e.additivity_error(),
        )
        assert np.abs(e.values).sum() > 0  # something is attributed
    # the linear explainer's attributions are exactly coef * (x - background mean)
    ridge = ModelExplainer(registry, "ridge")
    e = ridge.explain(rows)
    expected = ridge.coef * (np.nan_to_num(rows.to_numpy()) - np.nan_to_num(ridge.background).mean(axis=0))
    np.testing.assert_allclose(e.values, expected, rtol=1e-7, atol=1e-12)
    with pytest.raises(ValidationError) as err:
        ridge.explain(rows.iloc[:, :5].to_numpy())
    assert err.value.field == "rows"


def test_global_importance_and_indicator_report(trained: dict) -> None:
    report, uri = explain_global("tree", rows=600, shap_rows=120)
    store = get_store()
    record = trained["registry"].get("tree", "latest")
    stored = store.experiments.get_explanation(record.id)
    assert (
        stored["method"] == "tree"
        and stored["report_uri"] == uri
        and Path(uri.removeprefix("file://")).exists()
    )
    importance = stored["importance"]
    assert len(importance) == 158 and list(importance.values()) == sorted(importance.values(), reverse=True)
    fam = report.families
    assert {"KBAR", "ROC", "MA", "STD", "CORR"} <= set(fam.index) and fam["features"].sum() == 158
    assert abs(report.features["shap_share"].sum() - 1.0) < 1e-9 and list(fam["rank"]) == list(
        range(1, len(fam) + 1)
    )
    # the measures are what they say: Pearson of one feature against the label, recomputed here
    feat = report.features.index[0]
    assert -1 <= report.features.loc[feat, "pearson"] <= 1 and report.features["mutual_info"].min() >= 0
    assert set(report.plots) == {"summary_bar", "beeswarm", "family_ranking"}
    assert all(png[:8] == b"\x89PNG\r\n\x1a\n" for png in report.plots.values())
    html = Path(uri.removeprefix("file://")).read_text()
    assert "Families" in html and html.count("data:image/png;base64") == 3


def test_engine_linear_model_gets_exact_additive_shap(trained: dict) -> None:
    """The engine's linear model (normalisation + linear map, TorchScript) is explained exactly: the
    attributions equal SHAP's permutation explainer with the full background (exact for additive models)."""
    import shap

    train(TrainConfig("linear", dataset="sub", register_as="lin", report=False))
    registry, frame = trained["registry"], trained["frame"]
    rows = frame["feature"].dropna().tail(5).to_numpy()
    explainer = ModelExplainer(registry, "lin")
    assert explainer.method == "additive"
    e = explainer.explain(rows)
    assert e.additivity_error() < 1e-4 * max(1.0, float(np.abs(e.predictions).max()))
    masker = shap.maskers.Independent(explainer.background, max_samples=len(explainer.background))
    reference = shap.PermutationExplainer(explainer.predictor.predict_array, masker)(
        rows, max_evals=2 * rows.shape[1] + 1, silent=True
    )
    scale = float(np.abs(reference.values).max())
    np.testing.assert_allclose(e.values, reference.values, atol=1e-4 * scale)
