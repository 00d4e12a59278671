"""The demo's loop stage on its own (the full demo test is slow): a replay of the daily loop over a small planted
market whose reversal turns into momentum; the production model decays, a retrained model is shadowed and
promoted, and the loop's HTML report is written with the IC timeline."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
from rich.console import Console

from qmlops.demo import DemoResult, _loop_stage
from qmlops.loop._report import _regime_changes
from qmlops.metadata import get_store


def test_loop_stage_replays_a_regime_change_retrains_and_promotes(tmp_home: Path) -> None:
    console = Console(record=True, width=200)
    out = DemoResult("ds-none", 0, 0, False)
    _loop_stage(console, out)
    text = console.export_text()
    assert "3c. loop" in text and "report:" in text
    loop = out.stages["loop"]
    store = get_store()
    decisions = [d for d in store.loops.decisions(loop["id"]) if d["kind"] in ("retrain", "promote")]
    change = pd.Timestamp(loop["change_day"])
    # the first model goes to production; after the change a retrained model is promoted
    assert any(d["kind"] == "retrain" and pd.Timestamp(d["day"]) > change for d in decisions)
    assert any(d["kind"] == "promote" and pd.Timestamp(d["day"]) > change for d in decisions)
    assert 0.2 < loop["oracle_mean_ic"] < 0.4  # the planted strength 0.3 in both regimes
    page = Path(out.stages["loop_report"]).read_text()
    assert "IC timeline" in page and "data:image/png;base64," in page and "promote" in page
    assert _regime_changes(store, loop["id"]) == [change]  # marked on the timeline plot
    store.close()
