"""Qlib's own data layer reads back exactly the values we exported, on both bundled data sets."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from qmlops.data import Bokeh5Source, Sp500Source, export_qlib, ingest, load_dataset, with_vwap

FIELDS = ["$open", "$high", "$low", "$close", "$volume", "$factor", "$vwap"]


@pytest.mark.parametrize("source", [Sp500Source.name, Bokeh5Source.name])
def test_round_trip_through_qlib(tmp_home: Path, tmp_path: Path, source: str) -> None:
    import qlib
    from qlib.data import D

    frame = load_dataset(ingest(source).record.id)
    target = export_qlib(frame, tmp_path / "qlib")
    qlib.init(provider_uri=str(target), region="us", kernels=1)
    got = D.features(D.instruments("all"), FIELDS, freq="day")
    got.columns = [c[1:] for c in got.columns]
    got = got.reset_index().rename(columns={"datetime": "date"})
    expected = with_vwap(frame)
    merged = expected.merge(
        got, on=["instrument", "date"], how="outer", suffixes=("", "_qlib"), indicator=True
    )
    assert not (merged["_merge"] == "left_only").any(), "a source row is missing in Qlib's view"
    # Qlib returns every calendar day inside an instrument's span; days the source has no row for are NaN.
    gaps = merged[merged["_merge"] == "right_only"]
    assert gaps[[f"{c}_qlib" for c in ("open", "close", "volume", "factor", "vwap")]].isna().all().all()
    merged = merged[merged["_merge"] == "both"]
    assert len(merged) == len(frame)
    for col in ("open", "high", "low", "close", "volume", "factor", "vwap"):
        np.testing.assert_array_equal(
            merged[f"{col}_qlib"].to_numpy(dtype="float32"),
            merged[col].to_numpy(dtype="float64").astype("float32"),
        )
    # The calendar is the union of dates and the instruments file has each instrument's span.
    cal = (target / "calendars" / "day.txt").read_text().split()
    assert cal == sorted({d.strftime("%Y-%m-%d") for d in frame["date"]})
    spans = pd.read_csv(target / "instruments" / "all.txt", sep="\t", header=None, names=["i", "s", "e"])
    first = frame.groupby("instrument")["date"].min().dt.strftime("%Y-%m-%d")
    assert spans.set_index("i")["s"].to_dict() == first.to_dict()
