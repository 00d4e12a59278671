"""Early-stopping strategies on hand-built loss sequences: exact stop steps, best steps, reasons and configs."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from qmlops.exceptions import ValidationError
from qmlops.training import (
    AdaptivePatience,
    EarlyStopper,
    Overfitting,
    Patience,
    WallTime,
    parse_early_stopping,
)


def run(stopper: EarlyStopper, valid: list[float], train: list[float] | None = None, metric: list[float] | None = None,
        elapsed: list[float] | None = None) -> int | None:  # fmt: skip
    """Feed the sequence; the step at which the stopper said stop (None if it never did)."""
    train = train or [1.0] * len(valid)
    metric = metric or [0.0] * len(valid)
    for step, v in enumerate(valid):
        d = stopper.update(
            step, train[step], v, metric[step], elapsed=None if elapsed is None else elapsed[step]
        )
        if d.stop:
            return step
    return None


def test_patience_stops_exactly_after_patience_evaluations() -> None:
    s = EarlyStopper([Patience(3)])
    assert run(s, [1.0, 0.9, 0.8, 0.85, 0.81, 0.82, 0.7]) == 5
    assert s.best_step == 2 and s.reason is not None and s.reason.startswith("patience")
    assert "best 0.8 at step 2" in s.reason and "for 3 evaluations" in s.reason


def test_min_delta_decides_what_counts_as_improvement() -> None:
    strict = EarlyStopper([Patience(2, min_delta=0.05)], min_delta=0.05)
    assert run(strict, [1.0, 0.97, 0.96, 0.5]) == 2  # 0.97 and 0.96 are not 0.05 better than 1.0
    assert strict.best_step == 0
    loose = EarlyStopper([Patience(2)])
    assert run(loose, [1.0, 0.97, 0.96, 0.5]) is None and loose.best_step == 3


def test_monitor_the_metric_maximises() -> None:
    s = EarlyStopper([Patience(2)], monitor="valid_ic")
    assert run(s, [1.0] * 6, metric=[0.01, 0.03, 0.02, 0.05, 0.04, 0.049]) == 5
    assert s.best_step == 3 and s.monitor == "valid_metric"


def test_overfitting_by_divergence_and_by_gap() -> None:
    s = EarlyStopper([Overfitting(k=3)])
    valid = [1.0, 0.9, 0.95, 0.96, 0.97, 0.98]
    train = [1.0, 0.9, 0.8, 0.7, 0.6, 0.5]
    assert run(s, valid, train) == 4
    assert s.reason == "overfitting: valid_loss rose while train_loss fell for 3 consecutive evaluations"
    assert s.best_step == 1
    broken = EarlyStopper([Overfitting(k=3)])  # a step where train also rose resets the run
    assert run(broken, [1.0, 1.1, 1.2, 1.3, 1.4, 1.5], [1.0, 0.9, 0.8, 0.85, 0.8, 0.7]) is None
    gap = EarlyStopper([Overfitting(k=100, gap_ratio=1.5)])
    assert run(gap, [1.0, 1.0, 1.0, 1.0], [0.9, 0.8, 0.6, 0.5]) == 2
    assert gap.reason == "overfitting: valid_loss/train_loss = 1.667 > 1.5"


def test_adaptive_patience_grows_then_shrinks() -> None:
    s = EarlyStopper(
        [AdaptivePatience(initial=3, grow=2, shrink=1, min_patience=2, max_patience=8)], monitor="valid_loss"
    )
    patience = []
    valid = [1.0, 0.9, 0.8, 0.7] + [0.75] * 10
    stop = None
    for step, v in enumerate(valid):
        d = s.update(step, 1.0, v, 0.0)
        patience.append(d.state["strategies"]["adaptive"]["patience"])
        if d.stop:
            stop = step
            break
    # four improvements: 3 -> 5 -> 7 -> 8 -> 8 (capped); then one less per stalled evaluation
    assert patience[:4] == [5, 7, 8, 8]
    assert patience[4:] == [7, 6, 5, 4]  # stalled evaluations 1..4 while patience shrinks 7..4: 4 >= 4
    assert stop == 7 and s.best_step == 3
    assert s.reason == "adaptive patience: no improvement for 4 evaluations (patience shrank from 8 to 4)"


def test_walltime() -> None:
    s = EarlyStopper([WallTime(10)])
    assert run(s, [1.0, 0.9, 0.8], elapsed=[3.0, 9.9, 10.2]) == 2
    assert s.reason == "walltime: 10.2 s >= budget 10 s" and s.best_step == 2


def test_combined_first_reason_wins_and_state_is_reported() -> None:
    s = EarlyStopper.from_config({"patience": 10, "overfitting": {"k": 2}, "walltime": 100})
    d = None
    for step, (tr, va) in enumerate([(1.0, 1.0), (0.9, 0.9), (0.8, 0.95), (0.7, 0.99)]):
        d = s.update(step, tr, va, 0.0, elapsed=float(step))
    assert d is not None and d.stop and d.reason is not None and d.reason.startswith("overfitting")
    assert d.state["strategies"]["patience"] == {"since_best": 2, "patience": 10}
    assert d.state["since_best"] == 2 and d.state["patience"] == 10  # flat, for one-line progress displays
    assert d.state["strategies"]["walltime"]["elapsed"] == 3.0 and d.state["best_step"] == 1


def test_non_finite_values_never_improve() -> None:
    s = EarlyStopper([Patience(2)])
    assert run(s, [math.nan, math.nan, math.nan]) == 1 and s.best_step == 0
    t = EarlyStopper([Patience(3)])
    assert run(t, [math.nan, 0.5, math.inf, math.nan, 0.6]) == 4 and t.best_step == 1


def test_configs_round_trip_and_errors_name_the_field() -> None:
    cfg = parse_early_stopping("patience=10,min_delta=0.001,overfit=5,gap=1.5,walltime=300,monitor=valid_ic")
    assert cfg == {"patience": {"patience": 10}, "min_delta": 0.001, "overfitting": {"k": 5, "gap_ratio": 1.5},
                   "walltime": {"seconds": 300}, "monitor": "valid_ic"}  # fmt: skip
    stopper = EarlyStopper.from_config(cfg)
    assert [s.name for s in stopper.strategies] == ["patience", "overfitting", "walltime"]
    again = EarlyStopper.from_config(stopper.to_config())
    assert again.describe() == stopper.describe()
    assert parse_early_stopping("adaptive,adaptive.max_patience=20") == {"adaptive": {"max_patience": 20},
                                                                          "patience": False}  # fmt: skip
    assert EarlyStopper.from_config(parse_early_stopping("none")).strategies == []
    assert [s.name for s in EarlyStopper.from_config(None).strategies] == ["patience"]
    for bad, where in [({"patiense": 3}, "early_stopping.patiense"), ({"patience": 0}, "early_stopping.patience"),
                       ({"monitor": "loss"}, "early_stopping.monitor"),
                       ({"overfitting": {"gap_ratio": 0.5}}, "early_stopping.overfitting.gap_ratio"),
                       ({"walltime": True}, "early_stopping.walltime.seconds"),
                       ({"adaptive": {"initial": 99}}, "early_stopping.adaptive.initial")]:  # fmt: skip
        with pytest.raises(ValidationError) as err:
            EarlyStopper.from_config(bad)
        assert err.value.field == where, bad
    with pytest.raises(ValidationError) as err:
        parse_early_stopping("patience=3,bogus=1")
    assert err.value.field == "early_stopping.bogus"


@settings(max_examples=60, deadline=None)
@given(st.lists(st.floats(0.0, 10.0, allow_nan=False), min_size=1, max_size=40), st.integers(1, 6))
def test_best_step_is_the_first_argmin_and_patience_never_stops_early(
    losses: list[float], patience: int
) -> None:
    s = EarlyStopper([Patience(patience)])
    for step, v in enumerate(losses):
        d = s.update(step, 1.0, v, 0.0)
        seen = np.asarray(losses[: step + 1])
        assert d.best_step == int(np.argmin(seen))
        if d.stop:
            assert step - d.best_step == patience
            break
        assert step - d.best_step < patience
