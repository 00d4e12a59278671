"""The demo's quality stage on its own (the full demo test is slow): real LightGBM and Linear runs on the small
planted market, each reported against the oracle's IC on the same test rows."""

from __future__ import annotations

from pathlib import Path

from rich.console import Console

from qmlops.demo import DemoResult, _quality_stage
from qmlops.metadata import get_store


def test_quality_stage_prints_model_ic_against_the_oracle(tmp_home: Path) -> None:
    console = Console(record=True, width=200)
    out = DemoResult("ds-none", 0, 0, False)
    _quality_stage(console, out, "local")
    text = console.export_text()
    assert "3b. quality" in text and "oracle mean IC" in text
    rows = {r["model_type"]: r for r in out.stages["quality"]}
    assert set(rows) == {"lightgbm", "linear"}
    for row in rows.values():
        assert f"{row['share']:.0%} of the oracle" in text
        assert 0.05 < row["oracle_ic"] < 0.15  # the planted strength 0.1, within sampling error
        assert 0.02 < row["model_ic"] < row["oracle_ic"]
        assert get_store().runs.get(row["run_id"]).status == "finished"
    get_store().close()
