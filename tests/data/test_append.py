"""Appending days to a dataset: chained hashes, lineage, quarantine of bad bars, the CLI's --append."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest
from typer.testing import CliRunner

from qmlops.cli import app
from qmlops.data import (
    FrameSource,
    append_bars,
    chain_hash,
    content_hash,
    generate_synthetic,
    ingest,
    load_dataset,
)
from qmlops.data._canonical import canonical_order
from qmlops.exceptions import NotFoundError, ValidationError
from qmlops.metadata import get_store


def _market() -> pd.DataFrame:
    frame = generate_synthetic(8, 40, seed=3)
    frame["date"] = frame["date"].astype("datetime64[ns]")
    return frame


def _split(frame: pd.DataFrame, n_first: int) -> tuple[pd.DataFrame, list[pd.DataFrame]]:
    days = sorted(frame["date"].unique())
    head = frame[frame["date"] < days[n_first]]
    return head, [frame[frame["date"] == d].drop(columns=["factor"], errors="ignore") for d in days[n_first:]]


def test_append_chains_hashes_and_equals_a_full_ingest(tmp_home: Path, tmp_path: Path) -> None:
    market = _market()
    head, days = _split(market, 30)
    head.to_parquet(tmp_path / "head.parquet")
    first = ingest(str(tmp_path / "head.parquet"), name="mkt").record
    parent, table = first, load_dataset(first.id)
    for day in days[:5]:
        result, table = append_bars("mkt", day, parent_frame=table)
        rec = result.record
        assert result.created and rec.parent_id == parent.id
        rows = canonical_order(day.assign(factor=1.0, date=day["date"].astype("datetime64[ns]")))
        assert rec.content_hash == chain_hash(parent.content_hash, rows)
        assert (
            rec.diff is not None
            and rec.diff["rows_added"] == len(day)
            and rec.diff["missing_instruments"] == []
        )
        parent = rec
    # The snapshot equals the market's first 35 days, row for row, and its lineage chains back to the ingest.
    expected = market[market["date"] <= days[4]["date"].iloc[0]]
    assert content_hash(load_dataset(parent.id)) == content_hash(expected)
    upstream = [n.id for n in get_store().lineage.upstream(parent.id)]
    assert first.id in upstream and len(upstream) == 5
    # A day at or before the last stored one is refused: an append never rewrites history.
    with pytest.raises(ValidationError) as err:
        append_bars("mkt", days[4])
    assert err.value.field == "date"
    with pytest.raises(NotFoundError):
        append_bars("nothing", days[5])


def test_bad_bars_are_quarantined_and_missing_instruments_reported(tmp_home: Path, tmp_path: Path) -> None:
    market = _market()
    head, days = _split(market, 30)
    ingest(FrameSource(head, label="test"), name="mkt")
    day = days[0].copy()
    dropped = day["instrument"].iloc[0]
    day = day.iloc[1:].reset_index(drop=True)
    day.loc[0, "close"] = 0.0  # a zero price
    zero = day.loc[0, "instrument"]
    day = pd.concat([day, day.iloc[[1]]], ignore_index=True)  # a duplicate row
    result, table = append_bars("mkt", day)
    rec = result.record
    assert (
        rec.n_quarantined == 2
        and rec.diff is not None
        and rec.diff["missing_instruments"] == sorted([dropped, zero])
    )
    quarantined = pd.read_parquet(rec.quarantine_uri)
    assert sorted(r.split(":")[0] for r in quarantined["reason"]) == ["duplicate", "non_positive"]
    assert len(table) == len(head) + len(day) - 2
    with pytest.raises(ValidationError) as err:
        append_bars("mkt", days[1], on_error="nonsense")  # type: ignore[arg-type]
    assert err.value.field == "on_error"


def test_cli_append(tmp_home: Path, tmp_path: Path) -> None:
    market = _market()
    head, days = _split(market, 30)
    head.to_parquet(tmp_path / "head.parquet")
    days[0].to_csv(tmp_path / "day.csv", index=False)
    runner = CliRunner()
    assert runner.invoke(app, ["data", "ingest", str(tmp_path / "head.parquet"), "--name", "mkt",
                               "--no-features"]).exit_code == 0  # fmt: skip
    out = runner.invoke(app, ["data", "ingest", str(tmp_path / "day.csv"), "--append", "--name", "mkt", "--json",
                              "--no-features"])  # fmt: skip
    assert out.exit_code == 0, out.output
    rec = json.loads(out.output)
    assert rec["created"] and rec["diff"]["rows_added"] == 8 and rec["parent_id"]
    out = runner.invoke(app, ["data", "ingest", str(tmp_path / "day.csv"), "--append"])
    assert out.exit_code == 2 and "--name" in out.output and "Traceback" not in out.output
