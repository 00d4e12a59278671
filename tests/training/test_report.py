"""The HTML training report: embedded PNG plots, formatted metrics, escaping, truncation, writing to URIs."""

from __future__ import annotations

import base64
import re
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pandas as pd

from qmlops.training._report import render_training_report, training_plots, write_training_report


class _Images(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.sources: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "img":
            self.sources.append(dict(attrs).get("src") or "")


def _inputs(n_epochs: int = 30) -> dict:
    rng = np.random.default_rng(3)
    days = pd.bdate_range("2010-06-01", periods=40)
    epochs = [{"step": i, "train_loss": 1 - i / 100, "valid_loss": 1 + (i - 10) ** 2 / 1000,
               "valid_ic": float(rng.normal(0.02, 0.01))} for i in range(n_epochs)]  # fmt: skip
    epochs[3]["valid_ic"] = float("nan")
    return {
        "run": {
            "run_id": "run-1",
            "model_type": "lightgbm",
            "params": {"num_leaves": 31},
            "stop_reason": "patience: valid_loss did not improve",
            "best_step": 10,
            "segments": {"test": ["2010-06-01", "2010-07-26"]},
        },  # fmt: skip
        "epochs": epochs,
        "evaluation": {"ic": 0.0123456, "icir": float("nan"), "n_days": 40},
        "daily_ic": pd.Series(rng.normal(0.01, 0.1, len(days)), index=days),
        "daily_returns": pd.Series(rng.normal(0.0, 0.01, len(days)), index=days),
    }


def _pngs(text: str) -> list[bytes]:
    parser = _Images()
    parser.feed(text)
    prefix = "data:image/png;base64,"
    assert all(src.startswith(prefix) for src in parser.sources)
    return [base64.b64decode(src[len(prefix) :]) for src in parser.sources]


def test_report_has_plots_metrics_and_reason() -> None:
    inputs = _inputs()
    text = render_training_report(title="lightgbm <script>x</script>", **inputs,
                                  feature_importance=pd.Series({"KMID": 3.0, "ROC5": 1.0, "STD20": 2.0}))  # fmt: skip
    images = _pngs(text)
    assert len(images) == 4 and all(i.startswith(b"\x89PNG") and len(i) > 1000 for i in images)
    assert "<script>x</script>" not in text and "&lt;script&gt;" in text
    assert "0.01235" in text and "n/a" in text  # 4 significant digits; NaN shown as n/a
    assert "patience: valid_loss did not improve" in text and "KMID" not in text.split("<h2>Plots")[0]
    assert len(re.findall(r"<tr><td>\d+</td>", text)) == 30


def test_without_importance_or_epochs_and_long_runs_truncate() -> None:
    inputs = _inputs()
    assert len(_pngs(render_training_report(title="t", **inputs))) == 3
    assert set(training_plots(epochs=[], daily_ic=inputs["daily_ic"], daily_returns=inputs["daily_returns"])) == {
        "curves", "daily_ic", "cumulative_return"}  # fmt: skip
    empty = render_training_report(title="t", **{**inputs, "epochs": []})
    assert len(_pngs(empty)) == 3
    long = render_training_report(title="t", **_inputs(450))
    assert "250 steps not shown" in long and len(re.findall(r"<tr><td>\d+</td>", long)) == 200


def test_write_to_path_and_file_uri(tmp_path: Path) -> None:
    text = render_training_report(title="t", **_inputs(5))
    local = write_training_report(str(tmp_path / "a" / "report.html"), text)
    assert Path(local).read_text() == text
    uri = write_training_report(f"file://{tmp_path}/b/report.html", text)
    assert uri.startswith("file://") and (tmp_path / "b" / "report.html").read_text() == text
