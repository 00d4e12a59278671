"""Model quality against a known answer: real Qlib models trained on small planted markets.

A market with a planted signal (strength = the oracle's target daily IC) and the same market with strength 0
(same seed: the same noise, no signal), Alpha158 materialised for both. LightGBM and a ridge model must beat zero
by a margin on the first and land below the oracle on the same test rows; on the second they must stay near zero.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pandas as pd
import pytest

from qmlops.data import ingest
from qmlops.features import materialize
from qmlops.metadata import get_store
from qmlops.training import TrainConfig, train

MARKET = {"n_instruments": 120, "n_days": 320, "seed": 21}
STRENGTH = 0.2
REGIME_DAY = 220


@pytest.fixture(scope="module")
def home(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    home = tmp_path_factory.mktemp("planted-quality-home")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("QMLOPS_HOME", str(home))
        mp.setenv("QMLOPS_METADATA_MODE", "local")
        for var in ("QMLOPS_METADATA_PATH", "QMLOPS_DATA_URI", "QMLOPS_ARTIFACTS_URI", "QMLOPS_FEATURES_URI"):
            mp.delenv(var, raising=False)
        ingest("planted", name="signal", **MARKET, signal={"strength": STRENGTH})
        ingest("planted", name="nosignal", **MARKET, signal={"strength": 0.0})
        ingest("planted", name="regime", **MARKET, signal={"weights": {"reversal_5": 1.0}, "strength": STRENGTH},
               regimes=[{"start_day": REGIME_DAY, "signal": {"weights": {"volume_shock_5": 1.0},
                                                           "strength": STRENGTH}}])  # fmt: skip
        for name in ("signal", "nosignal", "regime"):
            materialize(name, "alpha158", engine="local")
        yield home
        get_store().close()


FAST = {
    "lightgbm": {"num_boost_round": 200, "learning_rate": 0.05, "num_leaves": 15, "min_data_in_leaf": 100,
                 "lambda_l1": 1.0, "lambda_l2": 10.0, "early_stopping_rounds": 20},
    "linear": {"estimator": "ridge", "alpha": 100.0},
}  # fmt: skip


def _train(model_type: str, dataset: str) -> dict[str, object]:
    result = train(
        TrainConfig(model_type, dataset=dataset, params=FAST[model_type], register_as="", report=False)
    )
    summary = result.summary()
    run = get_store().runs.get(result.run_id)
    assert run.metrics["oracle_ic"] == pytest.approx(summary["oracle"]["oracle_ic"])  # type: ignore[index]
    return summary["oracle"]  # type: ignore[return-value]


@pytest.mark.parametrize("model_type", ["lightgbm", "linear"])
def test_a_model_beats_zero_and_stays_below_the_oracle(home: Path, model_type: str) -> None:
    oracle = _train(model_type, "signal")
    # the oracle on the test rows is the planted strength within sampling error (~0.01 here)
    assert oracle["oracle_ic"] == pytest.approx(STRENGTH, abs=0.04)
    assert oracle["model_ic"] > 0.05  # clearly above zero: about 10 standard errors of a daily-IC mean
    assert oracle["model_ic"] < oracle["oracle_ic"]
    assert 0.25 < oracle["share"] < 1.0
    assert oracle["n_days"] >= 45


def test_a_signal_free_market_gives_a_model_near_zero(home: Path) -> None:
    oracle = _train("lightgbm", "nosignal")
    assert abs(oracle["oracle_ic"]) < 0.03
    assert abs(oracle["model_ic"]) < 0.03


def test_a_model_trained_before_a_regime_change_loses_its_ic_after_it(home: Path) -> None:
    from qmlops.data import load_dataset

    days = sorted(load_dataset("regime")["date"].unique())
    day = [str(pd.Timestamp(d).date()) for d in days]
    fit = {"train": (day[60], day[160]), "valid": (day[163], day[185])}
    results = {}
    for name, test in (
        ("before", (day[188], day[REGIME_DAY - 3])),
        ("after", (day[REGIME_DAY + 5], day[-3])),
    ):
        result = train(TrainConfig("linear", dataset="regime", params=FAST["linear"], register_as="",
                                   report=False, segments={**fit, "test": test}))  # fmt: skip
        assert result.oracle is not None
        results[name] = result.oracle
    before, after = results["before"], results["after"]
    # the oracle keeps its strength across the change; the model's share of it collapses
    assert before.oracle_ic == pytest.approx(STRENGTH, abs=0.06)
    assert after.oracle_ic == pytest.approx(STRENGTH, abs=0.06)
    assert before.model_ic > 0.08 and before.share > 0.5
    assert abs(after.model_ic) < 0.05 and abs(after.share) < 0.3
