from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

GOOD_ROWS = [
    # date, symbol, open, high, low, close, volume
    ("20100104", "AAA", 10.0, 10.5, 9.8, 10.2, 1000),
    ("20100105", "AAA", 10.2, 10.6, 10.0, 10.4, 1100),
    ("20100106", "AAA", 10.4, 10.9, 10.3, 10.8, 900),
    ("20100104", "BBB", 20.0, 20.5, 19.5, 20.1, 500),
    ("20100105", "BBB", 20.1, 20.3, 19.9, 20.0, 600),
    ("20100106", "BBB", 20.0, 20.8, 19.9, 20.7, 700),
]
HEADER = ["Date", "Symbol", "Open", "High", "Low", "Close", "Volume"]


def write_csv(path: Path, rows: list[tuple[object, ...]]) -> Path:
    pd.DataFrame(rows, columns=HEADER).to_csv(path, index=False)
    return path


@pytest.fixture
def good_csv(tmp_path: Path) -> Path:
    return write_csv(tmp_path / "good.csv", GOOD_ROWS)
