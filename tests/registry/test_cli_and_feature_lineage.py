"""The registry CLI, and a version trained on a real feature materialisation validated through its lineage."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from typer.testing import CliRunner

from qmlops.cli import app
from qmlops.data import ingest
from qmlops.features import load_features, materialize
from qmlops.metadata import get_store
from qmlops.registry import ModelRegistry

from ..features.test_store import _subset_csv
from .conftest import Trained

runner = CliRunner()


def test_models_cli(tmp_home: Path, trained: Trained) -> None:
    reg = ModelRegistry()
    reg.register("alpha", trained.models["lightgbm"], signature=trained.x_train, metrics={"test_ic": 0.02})
    reg.register("alpha", trained.models["linear"], signature=trained.x_train, metrics={"test_ic": 0.04})
    listing = json.loads(runner.invoke(app, ["models", "list", "alpha", "--json"]).output)
    assert [r["version"] for r in listing] == [2, 1]
    found = json.loads(runner.invoke(app, ["models", "search", "metrics.test_ic > 0.03", "--json"]).output)
    assert [r["version"] for r in found] == [2]
    out = runner.invoke(app, ["models", "transition", "alpha", "1", "production", "--skip-validation", "cli"])
    assert out.exit_code == 4 and "allowed from registered: staging, failed, archived" in out.output
    assert (
        runner.invoke(
            app, ["models", "transition", "alpha", "1", "staging", "--skip-validation", "cli"]
        ).exit_code
        == 0
    )
    assert runner.invoke(app, ["models", "alias", "alpha", "champion", "1"]).exit_code == 0
    assert (
        json.loads(runner.invoke(app, ["models", "show", "alpha", "champion", "--json"]).output)["version"]
        == 1
    )
    assert (
        runner.invoke(app, ["models", "tag", "alpha", "2", "team=quant", "--description", "ridge"]).exit_code
        == 0
    )
    shown = json.loads(runner.invoke(app, ["models", "show", "alpha", "2", "--json"]).output)
    assert shown["tags"] == {"team": "quant"} and shown["description"] == "ridge"
    hist = json.loads(runner.invoke(app, ["models", "history", "alpha", "1", "--json"]).output)
    assert [(h["from_state"], h["to_state"]) for h in hist] == [
        (None, "registered"),
        ("registered", "staging"),
    ]
    bad = runner.invoke(app, ["models", "search", "name = 'x'; DROP TABLE model_versions"])
    assert bad.exit_code == 2 and "filter" in bad.output
    val = runner.invoke(app, ["models", "validate", "alpha", "1"])
    assert val.exit_code == 5 and "no serving feature list" in val.output  # no lineage, no sample: says so
    assert runner.invoke(app, ["models", "show", "nope"]).exit_code == 3


def test_validation_through_feature_lineage(tmp_home: Path, tmp_path: Path) -> None:
    import lightgbm as lgb

    ds = ingest(str(_subset_csv(tmp_path, n=8)), name="sub").record
    mat = materialize(ds.id, "alpha158", engine="local").record
    frame = load_features(materialization=mat.id).dropna(subset=[("label", "LABEL0")])
    x, y = frame["feature"], frame["label"]["LABEL0"].to_numpy()
    booster = lgb.train({"objective": "regression", "verbose": -1, "num_leaves": 7}, lgb.Dataset(x, y), 20)
    reg = ModelRegistry()
    rec = reg.register(
        "lgb158", booster, signature=x, lineage_parents=[mat.id], metrics={"train_rows": len(x)}
    )
    report = reg.validate("lgb158")  # features and sample rows come from the materialisation
    assert report.ok, report.errors
    assert report.checks["signature"] == {
        "missing": [],
        "extra": [],
        "reordered": False,
        "dtype_mismatch": [],
    }
    assert report.checks["smoke"]["rows"] == 64
    np.testing.assert_allclose(
        reg.load_predictor("lgb158", "latest").predict(x.tail(5)), booster.predict(x.tail(5))
    )
    promoted = reg.transition("lgb158", rec.version, "staging")
    assert promoted.state == "staging"
    impact = get_store().lineage.impact(ds.id)
    assert [n.id for n in impact["feature_set"]] == [mat.id]
    assert [n.id for n in impact["model_version"]] == [rec.id]
