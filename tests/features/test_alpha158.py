"""Alpha158 parity with Qlib's own handler on the real S&P 500 data (exported to Qlib's binary format).

The bar (issue 3): same (datetime, instrument) rows, identical NaN positions, and on at least 99.9% of the cells
of every column a deviation within 1e-4 relative or 1e-6 absolute; the same for the label.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from qmlops.data import Sp500Source, export_qlib, resolve_source
from qmlops.data._versions import _canonical
from qmlops.exceptions import ValidationError
from qmlops.features import alpha158_feature_names, compute_alpha158, compute_alpha158_label, feature_family

SUBSET = 30


def _sp500() -> pd.DataFrame:
    frame, _, _ = _canonical(resolve_source(Sp500Source.name), "fail")
    return frame


def _qlib_alpha158(frame: pd.DataFrame, target: Path, kernels: int = 1) -> pd.DataFrame:
    import qlib
    from qlib.contrib.data.handler import Alpha158

    export_qlib(frame, target)
    qlib.init(provider_uri=str(target), region="us", kernels=kernels)
    start, end = frame["date"].min().strftime("%Y-%m-%d"), frame["date"].max().strftime("%Y-%m-%d")
    handler = Alpha158(instruments="all", start_time=start, end_time=end, fit_start_time=start, fit_end_time=end,
                       infer_processors=[], learn_processors=[])  # fmt: skip
    return handler.fetch(col_set=["feature", "label"])


def assert_parity(ours: pd.DataFrame, theirs: pd.DataFrame) -> dict[str, float]:
    """Per column: identical NaN positions and >= 99.9% of cells within 1e-4 rel / 1e-6 abs. Returns shares."""
    assert ours.index.equals(theirs.index), "row sets (datetime, instrument) differ"
    assert list(ours.columns) == list(theirs.columns)
    shares = {}
    for col in ours.columns:
        a, b = ours[col].to_numpy(np.float64), theirs[col].to_numpy(np.float64)
        nan_a, nan_b = np.isnan(a), np.isnan(b)
        assert (nan_a == nan_b).all(), f"{col}: NaN positions differ in {(nan_a != nan_b).sum()} rows"
        both = ~nan_a
        dev = np.abs(a[both] - b[both])
        ok = (dev <= 1e-6) | (dev <= 1e-4 * np.abs(b[both]))
        shares[col] = float(ok.mean()) if ok.size else 1.0
        assert shares[col] >= 0.999, (
            f"{col}: only {shares[col]:.5f} of cells within tolerance, max dev {dev.max()}"
        )
    return shares


@pytest.fixture(scope="module")
def sp500() -> pd.DataFrame:
    return _sp500()


@pytest.fixture(scope="module")
def subset_reference(
    sp500: pd.DataFrame, tmp_path_factory: pytest.TempPathFactory
) -> tuple[pd.DataFrame, ...]:
    instruments = sorted(sp500["instrument"].unique())
    # Every 17th instrument: a spread of names, including ones with gaps and late starts.
    chosen = instruments[::17][:SUBSET]
    frame = sp500[sp500["instrument"].isin(chosen)]
    return frame, _qlib_alpha158(frame, tmp_path_factory.mktemp("qlib-subset"))


def test_names_and_order_match_qlib() -> None:
    from qlib.contrib.data.loader import Alpha158DL

    _, names = Alpha158DL.get_feature_config({"kbar": {}, "price": {"windows": [0], "feature": ["OPEN", "HIGH",
                                               "LOW", "VWAP"]}, "rolling": {}})  # fmt: skip
    assert alpha158_feature_names() == list(names)
    assert len(names) == 158 and len(set(names)) == 158


def test_parity_on_a_subset_of_instruments(subset_reference: tuple[pd.DataFrame, pd.DataFrame]) -> None:
    frame, reference = subset_reference
    ours = compute_alpha158(frame)
    shares = assert_parity(ours, reference["feature"])
    assert len(shares) == 158
    label = compute_alpha158_label(frame)
    assert_parity(label, reference["label"])


def test_a_subset_of_instruments_with_the_full_calendar_gives_the_same_rows(sp500: pd.DataFrame) -> None:
    # What the Ray pipeline does: compute a batch of instruments against the dataset's calendar.
    calendar = pd.DatetimeIndex(np.unique(sp500["date"]))
    whole = compute_alpha158(sp500)
    names = sorted(sp500["instrument"].unique())[100:140]
    part = compute_alpha158(sp500[sp500["instrument"].isin(names)], calendar=calendar)
    expected = whole[whole.index.get_level_values("instrument").isin(names)]
    pd.testing.assert_frame_equal(part, expected)


def test_bad_input_is_refused_with_the_field_named(sp500: pd.DataFrame) -> None:
    with pytest.raises(ValidationError) as info:
        compute_alpha158(sp500.drop(columns=["volume"]))
    assert info.value.field == "volume"
    bad = sp500.head(100).copy()
    bad.loc[bad.index[5], "close"] = np.inf
    with pytest.raises(ValidationError, match="inf"):
        compute_alpha158(bad)


def test_every_feature_has_a_family() -> None:
    families = {feature_family(n) for n in alpha158_feature_names()}
    assert "OTHER" not in families
    assert {"KBAR", "PRICE", "ROC", "MA", "STD", "CORR", "VMA", "RSV"} <= families


@pytest.mark.slow
def test_full_parity_on_all_instruments(sp500: pd.DataFrame, tmp_path: Path) -> None:
    reference = _qlib_alpha158(sp500, tmp_path / "qlib", kernels=2)
    ours = compute_alpha158(sp500)
    shares = assert_parity(ours, reference["feature"])
    assert min(shares.values()) >= 0.999
    assert_parity(compute_alpha158_label(sp500), reference["label"])
