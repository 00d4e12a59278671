"""The planted market: valid bars, reproducible by seed, an oracle whose IC matches the requested strength, regimes
that move the signal between Alpha158 features, and the ``planted`` source through ingest and the CLI."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from qmlops.cli import app
from qmlops.data import (
    SIGNAL_TERMS,
    PlantedSpec,
    Regime,
    SignalSpec,
    content_hash,
    generate_planted,
    ingest,
    load_dataset,
    load_oracle,
    oracle_daily_ic,
    oracle_summary,
    validate_ohlcv,
)
from qmlops.exceptions import NotFoundError, ValidationError
from qmlops.features import compute_alpha158
from qmlops.features._alpha158 import compute_alpha158_label

from .conftest import GOOD_ROWS, write_csv

runner = CliRunner()

signals = st.builds(
    SignalSpec,
    weights=st.dictionaries(
        st.sampled_from(sorted(SIGNAL_TERMS)), st.floats(-2, 2).filter(lambda w: abs(w) > 0.05), min_size=1
    ),
    strength=st.floats(0.0, 0.6),
)


@st.composite
def specs(draw: st.DrawFn) -> PlantedSpec:
    n_days = draw(st.integers(3, 60))
    starts = draw(st.lists(st.integers(1, n_days - 1), max_size=2, unique=True))
    low = draw(st.floats(0.002, 0.06))
    return PlantedSpec(
        n_instruments=draw(st.integers(2, 25)),
        n_days=n_days,
        seed=draw(st.integers(0, 2**32 - 1)),
        signal=draw(signals),
        regimes=tuple(Regime(d, draw(signals)) for d in starts),
        market_vol=draw(st.floats(0.0, 0.05)),
        noise_vol=(low, low * draw(st.floats(1.0, 3.0))),
    )


@settings(max_examples=60, deadline=None)
@given(spec=specs())
def test_bars_are_valid_ohlcv(spec: PlantedSpec) -> None:
    bars = generate_planted(spec).bars
    assert len(bars) == spec.n_instruments * spec.n_days
    o, h, lo, c, v = (bars[k].to_numpy() for k in ("open", "high", "low", "close", "volume"))
    assert np.all(np.isfinite(np.stack([o, h, lo, c, v])))
    assert np.all(h >= np.maximum(o, c)) and np.all(np.minimum(o, c) >= lo) and np.all(lo > 0)
    assert np.all(v > 0)
    _, report = validate_ohlcv(bars)
    assert report.ok and not report.warnings, report.counts()


@settings(max_examples=15, deadline=None)
@given(spec=specs())
def test_same_spec_same_content_hash_other_seed_other_hash(spec: PlantedSpec) -> None:
    first = generate_planted(spec)
    again = generate_planted(PlantedSpec.from_dict(spec.to_dict()))  # through the dict form a version stores
    assert content_hash(first.bars) == content_hash(again.bars)
    pd.testing.assert_frame_equal(first.oracle, again.oracle)
    other = PlantedSpec.from_dict({**spec.to_dict(), "seed": (spec.seed + 1) % 2**32})
    assert content_hash(generate_planted(other).bars) != content_hash(first.bars)


def test_oracle_label_is_qlib_label0_of_the_bars() -> None:
    market = generate_planted(n_instruments=30, n_days=80, seed=4)
    label = compute_alpha158_label(market.bars)["LABEL0"].rename_axis(["date", "instrument"])
    oracle = market.oracle.set_index(["date", "instrument"])["label"]
    joined = pd.concat([oracle, label.reindex(oracle.index)], axis=1).dropna()
    assert len(joined) == 30 * 78  # the last two days have no label
    np.testing.assert_allclose(joined.iloc[:, 0], joined.iloc[:, 1], atol=1e-6)  # Alpha158 runs in float32


def test_oracle_ic_matches_the_requested_strength_per_regime() -> None:
    spec = PlantedSpec(
        n_instruments=300,
        n_days=400,
        seed=11,
        signal=SignalSpec({"reversal_5": 1.0, "volume_shock_5": -0.5}, 0.1),
        regimes=(Regime(200, SignalSpec({"momentum_20": 1.0}, 0.04)),),
    )
    summary = oracle_summary(generate_planted(spec).oracle, spec)
    assert [r["regime"] for r in summary] == [0, 1]
    assert [r["days"] for r in summary] == [200, 198]
    for row, target in zip(summary, (0.1, 0.04), strict=True):
        # sampling error of a mean of daily ICs: about 1/sqrt(names * days) ~ 0.004; allow 4 of them
        assert abs(row["oracle_ic"] - target) < 4 * row["oracle_ic_se"], row
        assert row["oracle_ic_se"] < 0.006
        assert row["strength"] == target


def test_strength_zero_plants_nothing() -> None:
    without = generate_planted(n_instruments=200, n_days=250, seed=5, signal={"strength": 0.0})
    daily = oracle_daily_ic(without.oracle)
    se = daily["ic"].std(ddof=1) / np.sqrt(len(daily))
    assert abs(daily["ic"].mean()) < 4 * se


def _feature_ic(features: pd.DataFrame, label: pd.Series, name: str, dates: pd.Index) -> float:
    frame = pd.concat([features[name], label], axis=1).dropna()
    frame = frame[frame.index.get_level_values("datetime").isin(dates)]
    return float(frame.groupby(level="datetime").apply(lambda g: g.iloc[:, 0].corr(g.iloc[:, 1])).mean())


def test_regime_changes_move_the_signal_between_alpha158_features() -> None:
    spec = PlantedSpec(
        n_instruments=150,
        n_days=330,
        seed=2,
        signal=SignalSpec({"volume_shock_5": 1.0}, 0.25),
        regimes=(
            Regime(110, SignalSpec({"reversal_5": 1.0}, 0.25)),
            Regime(220, SignalSpec({"momentum_20": 1.0}, 0.25)),
        ),
    )
    market = generate_planted(spec)
    features = compute_alpha158(market.bars)
    label = compute_alpha158_label(market.bars)["LABEL0"]
    dates = pd.Index(sorted(market.bars["date"].unique()))
    volume, reversal, momentum = dates[10:108], dates[130:218], dates[240:328]
    assert [SIGNAL_TERMS[t].feature for t in ("volume_shock_5", "reversal_5", "momentum_20")] == [
        "VMA5", "ROC5", "ROC20"
    ]  # fmt: skip
    # VMA5 = Mean($volume, 5) / $volume falls as today's volume shock rises: it carries regime 0 only
    assert _feature_ic(features, label, "VMA5", volume) < -0.12
    assert abs(_feature_ic(features, label, "VMA5", reversal)) < 0.06
    # ROC5 = Ref($close, 5) / $close is high after a fall: it carries the reversal, not the volume shock
    assert abs(_feature_ic(features, label, "ROC5", volume)) < 0.06
    assert _feature_ic(features, label, "ROC5", reversal) > 0.12
    # reversal turns into momentum: the sign of ROC20's (and ROC5's) IC flips
    assert _feature_ic(features, label, "ROC20", momentum) < -0.12
    assert _feature_ic(features, label, "ROC5", momentum) < -0.05
    assert _feature_ic(features, label, "ROC20", reversal) > 0.0


@pytest.mark.parametrize(
    ("options", "field"),
    [
        ({"n_instruments": 1}, "n_instruments"),
        ({"n_days": 2}, "n_days"),
        ({"signal": {"weights": {"carry": 1.0}}}, "signal.weights"),
        ({"signal": {"strength": 1.5}}, "signal.strength"),
        ({"signal": {"weights": {"reversal_5": 0.0}}}, "signal.weights"),
        ({"regimes": [{"start_day": 400, "signal": {}}]}, "regimes"),
        ({"regimes": [{"day": 3}]}, "regimes"),
        ({"noise_vol": [0.03, 0.01]}, "noise_vol"),
        ({"market_vol": "x"}, "market_vol"),
        ({"n_stocks": 5}, "spec"),
    ],
)
def test_bad_specs_name_the_field(options: dict[str, object], field: str) -> None:
    with pytest.raises(ValidationError) as info:
        PlantedSpec.from_dict({"n_instruments": 5, "n_days": 30, **options})
    assert info.value.field == field


def test_ingest_planted_stores_a_version_and_its_oracle(tmp_home: Path, tmp_path: Path) -> None:
    spec = {"n_instruments": 20, "n_days": 60, "seed": 3, "regimes": [{"start_day": 30, "signal": {}}]}
    first = ingest("planted", **spec)
    assert first.created and first.record.source == "planted"
    again = ingest("planted", **spec)
    assert not again.created and again.record.id == first.record.id
    other = ingest("planted", **{**spec, "seed": 4})
    assert other.created and other.record.id != first.record.id

    market = generate_planted(PlantedSpec.from_dict(spec))
    assert first.record.content_hash == content_hash(market.bars)
    stored = load_dataset(first.record.id)
    assert len(stored) == 20 * 60
    oracle = load_oracle(first.record.id)
    pd.testing.assert_frame_equal(oracle, market.oracle, check_dtype=False)
    pd.testing.assert_frame_equal(load_oracle(PlantedSpec.from_dict(spec)), market.oracle)
    config = first.record.config
    assert config["spec"] == PlantedSpec.from_dict(spec).to_dict()
    assert [r["regime"] for r in config["oracle"]] == [0, 1]
    assert config["oracle"] == json.loads(json.dumps(oracle_summary(market.oracle, market.spec)))

    csv = ingest(str(write_csv(tmp_path / "toy.csv", GOOD_ROWS)), name="toy")
    with pytest.raises(NotFoundError) as info:
        load_oracle(csv.record.id)
    assert info.value.field == "dataset" and "not a planted market" in str(info.value)
    with pytest.raises(ValidationError) as bad:
        ingest("planted", n_instruments=20, n_days=60, flavour="x")
    assert bad.value.field == "spec"


def test_cli_ingest_planted_with_signal_and_regime_then_show(tmp_home: Path, tmp_path: Path) -> None:
    signal_file = tmp_path / "signal.yaml"
    signal_file.write_text("weights: {reversal_5: 1.0}\nstrength: 0.2\n")
    args = ["data", "ingest", "planted", "--instruments", "30", "--days", "80", "--seed", "7", "--no-features",
            "--signal", str(signal_file), "--regime", "40:momentum_20=1,strength=0.1"]  # fmt: skip
    out = runner.invoke(app, args)
    assert out.exit_code == 0, out.output
    assert "new version" in out.output and "2,400 rows" in out.output
    assert "oracle regime 0" in out.output and "oracle regime 1" in out.output
    assert "reversal_5=1" in out.output and "momentum_20=1" in out.output
    again = runner.invoke(app, args)
    assert "already stored" in again.output
    shown = runner.invoke(app, ["data", "show", "planted"])
    assert shown.exit_code == 0 and "target 0.2" in shown.output and "target 0.1" in shown.output
    record = json.loads(runner.invoke(app, ["data", "show", "planted", "--json"]).output)
    assert record["config"]["spec"]["regimes"][0]["start_day"] == 40

    strength_only = runner.invoke(app, [*args[:9], "--strength", "0"])
    assert strength_only.exit_code == 0, strength_only.output
    assert "target 0" in strength_only.output


@pytest.mark.parametrize(
    ("extra", "needle"),
    [
        (["--regime", "forty:reversal_5=1"], "--regime"),
        (["--regime", "500:reversal_5=1"], "regimes"),
        (["--signal", "reversal_5"], "--signal"),
        (["--signal", "carry=1"], "signal.weights"),
        (["--signal", "missing.yaml"], "--signal"),
        (["--strength", "1.2"], "signal.strength"),
    ],
)
def test_cli_bad_planted_options_are_one_line(tmp_home: Path, extra: list[str], needle: str) -> None:
    out = runner.invoke(app, ["data", "ingest", "planted", "--days", "60", "--no-features", *extra])
    assert out.exit_code == 2, out.output
    assert needle in out.output and "Traceback" not in out.output


def test_cli_planted_options_belong_to_planted(tmp_home: Path) -> None:
    out = runner.invoke(app, ["data", "ingest", "synthetic", "--strength", "0.1", "--no-features"])
    assert out.exit_code == 2 and "planted" in out.output
