"""Data, features and artifacts behind ``pyarrow.fs`` URIs (here ``file://``), as shared storage is on a cluster."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from qmlops.data import ingest, load_dataset
from qmlops.features import get_features, load_features, materialize
from qmlops.registry import ModelRegistry

from .features.test_store import _subset_csv


def test_everything_works_through_file_uris(
    tmp_home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    shared = tmp_path / "shared"
    for var, sub in (("QMLOPS_DATA_URI", "data"), ("QMLOPS_FEATURES_URI", "features"),
                     ("QMLOPS_ARTIFACTS_URI", "artifacts")):  # fmt: skip
        monkeypatch.setenv(var, f"file://{shared / sub}")
    ds = ingest(str(_subset_csv(tmp_path, n=6)), name="sub").record
    assert ds.uri.startswith("file://") and (shared / "data" / ds.id / "data.parquet").exists()
    assert len(load_dataset(ds.id)) == ds.n_rows
    mat = materialize(ds.id, "alpha158", engine="local").record
    assert mat.uri is not None and mat.uri.startswith("file://")
    assert any((shared / "features" / mat.id).iterdir())
    frame = load_features(ds.id)
    assert len(frame) == mat.n_rows
    row = get_features(["AAPL", frame.index.get_level_values(1)[0]], "2010-06-01", dataset=ds.id)
    assert len(row) >= 1

    import lightgbm as lgb

    data = frame.dropna(subset=[("label", "LABEL0")])
    booster = lgb.train(
        {"verbose": -1, "num_leaves": 7}, lgb.Dataset(data["feature"], data["label"]["LABEL0"]), 10
    )
    reg = ModelRegistry()
    rec = reg.register("uri-model", booster, signature=data["feature"], lineage_parents=[mat.id])
    assert rec.artifact_uri.startswith("file://")
    x = data["feature"].tail(3)
    np.testing.assert_allclose(reg.load_predictor("uri-model", "latest").predict(x), booster.predict(x))
