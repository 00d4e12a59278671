"""Evaluation figures against an independent computation (scipy, plain loops) on real S&P 500 data."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from qmlops.data import Sp500Source, resolve_source
from qmlops.data._versions import _canonical
from qmlops.exceptions import ValidationError
from qmlops.features import compute_alpha158, compute_alpha158_label
from qmlops.training._evaluate import daily_ic, evaluate_predictions, long_short_backtest


@pytest.fixture(scope="module")
def data() -> tuple[pd.Series, pd.Series]:
    raw, _, _ = _canonical(resolve_source(Sp500Source.name), "fail")
    raw = raw[raw["instrument"].isin(sorted(raw["instrument"].unique())[:80])]
    feats = compute_alpha158(raw)
    label = compute_alpha158_label(raw)["LABEL0"].astype("float64")
    pred = -feats["ROC5"].astype("float64")  # a real signal: short-term reversal
    return pred, label


def test_daily_ic_matches_scipy(data: tuple[pd.Series, pd.Series]) -> None:
    pred, label = data
    ours = daily_ic(pred, label)
    ours_rank = daily_ic(pred, label, method="spearman")
    frame = pd.DataFrame({"p": pred, "l": label}).dropna()
    checked = 0
    for day, g in frame.groupby(level="datetime"):
        if len(g) < 2 or g["p"].std() == 0 or g["l"].std() == 0:
            assert day not in ours.index
            continue
        assert ours[day] == pytest.approx(stats.pearsonr(g["p"], g["l"]).statistic, abs=1e-10)
        assert ours_rank[day] == pytest.approx(stats.spearmanr(g["p"], g["l"]).statistic, abs=1e-10)
        checked += 1
    assert checked > 200


def test_backtest_and_summary_match_a_plain_loop(data: tuple[pd.Series, pd.Series]) -> None:
    pred, label = data
    k = 10
    rets, turns = long_short_backtest(pred, label, k=k)
    frame = pd.DataFrame({"p": pred, "l": label}).dropna()
    expected, prev = {}, None
    expected_turn = {}
    for day, g in frame.groupby(level="datetime"):
        if len(g) < 2 * k:
            continue
        order = np.argsort(g["p"].to_numpy(), kind="stable")
        names = g.index.get_level_values("instrument").to_numpy()
        lo, hi = set(names[order[:k]]), set(names[order[-k:]])
        expected[day] = g["l"].to_numpy()[order[-k:]].mean() - g["l"].to_numpy()[order[:k]].mean()
        if prev is not None:
            expected_turn[day] = (len(hi - prev[1]) + len(lo - prev[0])) / (2 * k)
        prev = (lo, hi)
    np.testing.assert_allclose(rets.to_numpy(), pd.Series(expected).to_numpy())
    np.testing.assert_allclose(turns.to_numpy(), pd.Series(expected_turn).to_numpy())

    ev = evaluate_predictions(pred, label, k=k)
    ic = daily_ic(pred, label)
    assert ev.ic == pytest.approx(ic.mean()) and ev.icir == pytest.approx(ic.mean() / ic.std(ddof=1))
    assert ev.annual_return == pytest.approx(rets.mean() * 252)
    assert ev.information_ratio == pytest.approx(rets.mean() / rets.std(ddof=1) * np.sqrt(252))
    both = frame
    assert ev.mse == pytest.approx(np.mean((both["p"] - both["l"]) ** 2))
    curve = np.cumsum(rets.to_numpy())
    worst = max(max(curve[: i + 1].max(), 0.0) - curve[i] for i in range(len(curve)))
    assert ev.max_drawdown == pytest.approx(worst)
    assert 0.0 <= ev.turnover <= 1.0 and ev.n_rows == len(both)


def test_hand_made_cases_and_bad_input() -> None:
    idx = pd.MultiIndex.from_product([pd.to_datetime(["2020-01-02", "2020-01-03"]), list("ABCD")],
                                     names=["datetime", "instrument"])  # fmt: skip
    pred = pd.Series([1, 2, 3, 4, 4, 3, 2, 1], index=idx, dtype="float64")
    label = pd.Series([0.0, 0.0, 0.1, 0.2, -0.1, 0.0, 0.0, 0.3], index=idx)
    rets, turns = long_short_backtest(pred, label, k=1)
    assert rets.tolist() == pytest.approx([0.2 - 0.0, -0.1 - 0.3])
    assert turns.tolist() == [1.0]  # both legs swapped their name
    ev = evaluate_predictions(pred, label, k=1)
    assert ev.max_drawdown == pytest.approx(0.4) and ev.n_days == 2
    with pytest.raises(ValidationError):
        long_short_backtest(pred, label, k=0)
    with pytest.raises(ValidationError, match="indexed"):
        evaluate_predictions(pd.Series([1.0]), pd.Series([1.0]))
