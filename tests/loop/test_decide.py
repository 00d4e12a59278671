"""The loop's pure decisions: daily metrics, IC decay, retrain order, the paired shadow test, policy checks."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats

from qmlops.exceptions import ValidationError
from qmlops.loop import (
    LoopPolicy,
    ShadowPolicy,
    TriggerPolicy,
    change_point,
    day_metrics,
    ic_decay,
    load_policy,
    retrain_decision,
)
from qmlops.loop import shadow_verdict as verdict


def test_day_metrics_match_scipy_and_a_hand_long_short() -> None:
    rng = np.random.default_rng(0)
    s, r = rng.normal(size=50), rng.normal(size=50)
    r[3] = np.nan
    m = day_metrics(s, r, k=5)
    ok = np.isfinite(r)
    assert m.n == 49
    assert m.ic == pytest.approx(stats.pearsonr(s[ok], r[ok]).statistic)
    assert m.rank_ic == pytest.approx(stats.spearmanr(s[ok], r[ok]).statistic)
    order = np.argsort(s[ok])
    assert m.long_short == pytest.approx(r[ok][order[-5:]].mean() - r[ok][order[:5]].mean())
    assert day_metrics(np.full(10, 5e-9), r[:10], k=3).ic is None  # a constant model has no IC


def test_ic_decay_needs_k_rolling_means_under_the_floor() -> None:
    trig = TriggerPolicy(ic_floor=0.0, ic_window=3, ic_days=2)
    good = [0.1] * 10
    assert ic_decay(good, trig)[0] is False
    assert ic_decay([*good, -0.5], trig)[0] is False  # one rolling mean under the floor is not enough
    decayed, details = ic_decay([*good, -0.5, -0.5], trig)
    assert decayed and details["rolling_mean_ic"] < 0
    assert ic_decay([None, -1.0, -1.0], trig)[0] is False  # too few matured days
    assert ic_decay([-1.0] * 10, TriggerPolicy(ic_floor=None))[0] is False


def test_page_hinkley_detects_a_fall_in_mean_ic_and_finds_where_it_began() -> None:
    rng = np.random.default_rng(0)
    trig = TriggerPolicy(method="page_hinkley", ph_delta=0.02, ph_threshold=0.5, ic_window=10)
    stable = list(0.07 + 0.1 * rng.standard_normal(120))
    decayed, details = ic_decay(stable, trig)
    assert not decayed and details["statistic"] <= 0.5  # 120 noisy days around a steady mean: no alarm
    fallen = stable + list(-0.07 + 0.1 * rng.standard_normal(8))
    decayed, details = ic_decay(fallen, trig)
    assert decayed and details["statistic"] > 0.5
    assert 115 <= details["change_index"] <= 122  # the fall began at index 120
    assert details["mean_ic_since_change"] < 0
    assert ic_decay(fallen[:5], trig)[0] is False  # fewer than ic_window matured days
    index, _ = change_point(np.array([0.1] * 30 + [-0.1] * 10), 0.01)
    assert index == 30
    # the rolling-mean method reports the same change-point estimate beside its own verdict
    rolling = TriggerPolicy(ic_floor=0.0, ic_window=5, ic_days=2, ph_delta=0.01)
    assert ic_decay([0.1] * 30 + [-0.1] * 10, rolling)[1]["change_index"] == 30


def test_retrain_order_first_model_schedule_triggers_cooldown() -> None:
    pol = LoopPolicy(min_history_days=100, retrain_every=20,
                     trigger=TriggerPolicy(ic_floor=0.0, ic_window=3, ic_days=1, cooldown_days=5))  # fmt: skip
    kw = {"production_ics": [], "drift_share": None, "shadow_pending": False, "policy": pol}
    assert retrain_decision(day_index=98, has_production=False, last_retrain_index=None, **kw)[0] is False
    assert retrain_decision(day_index=99, has_production=False, last_retrain_index=None, **kw)[1] == "initial"
    assert retrain_decision(day_index=130, has_production=True, last_retrain_index=110, **kw)[1] == "schedule"
    bad = {**kw, "production_ics": [-0.2] * 5}
    assert (
        retrain_decision(day_index=113, has_production=True, last_retrain_index=110, **bad)[0] is False
    )  # cooldown
    assert (
        retrain_decision(day_index=116, has_production=True, last_retrain_index=110, **bad)[1] == "ic_decay"
    )
    pending = {**bad, "shadow_pending": True}
    assert retrain_decision(day_index=140, has_production=True, last_retrain_index=110, **pending)[0] is False
    drift = LoopPolicy(
        retrain_every=0, trigger=TriggerPolicy(ic_floor=None, drift_share=0.3, cooldown_days=0)
    )
    out = retrain_decision(day_index=140, has_production=True, last_retrain_index=110, production_ics=[],
                           drift_share=0.5, shadow_pending=False, policy=drift)  # fmt: skip
    assert out[:2] == (True, "drift")


def test_shadow_verdict_is_a_one_sided_paired_t_test() -> None:
    pol = ShadowPolicy(min_days=5, max_days=12, margin=0.0, alpha=0.05)
    rng = np.random.default_rng(1)
    prod = rng.normal(0.05, 0.05, size=12)
    better = prod + 0.1 + rng.normal(0, 0.02, size=12)
    assert verdict(better[:4], prod[:4], pol).verdict == "wait"
    v = verdict(better[:8], prod[:8], pol)
    diff = better[:8] - prod[:8]
    assert v.verdict == "promote" and v.p_value == pytest.approx(
        stats.ttest_1samp(diff, 0, alternative="greater").pvalue
    )
    assert verdict(prod - 0.05, prod, pol).verdict == "archive"  # worse: archived at once
    noisy = prod + rng.normal(0.005, 0.1, size=12)
    v = verdict(noisy, prod, pol)
    assert v.verdict in ("archive", "promote")  # at max_days there is no more waiting
    assert (
        verdict(better[:8], prod[:8], ShadowPolicy(min_days=5, max_days=12, margin=0.5)).verdict == "archive"
    )


def test_bad_policies_are_refused_naming_the_field(tmp_path) -> None:  # type: ignore[no-untyped-def]
    for data, field in (({"retrain_every": -1}, "policy.retrain_every"), ({"trigger": {"ic_window": 1}}, "policy.trigger.ic_window"),
                        ({"shadow": {"min_days": 10, "max_days": 5}}, "policy.shadow"), ({"nonsense": 1}, "policy.nonsense"),
                        ({"model_type": "nope"}, "policy.model_type"), ({"params": {"no_such_param": 1}}, None),
                        ({"trigger": {"method": "cusum"}}, "policy.trigger.method"), ({"change": {"min_days": 3}}, "policy.change.min_days"),
                        ({"change": {"params": {"no_such_param": 1}}}, None)):  # fmt: skip
        with pytest.raises(ValidationError) as err:
            load_policy(data)
        if field:
            assert err.value.field == field
    path = tmp_path / "policy.yaml"
    path.write_text("retrain_every: 5\ntrigger:\n  ic_floor: 0.01\n")
    assert load_policy(path).trigger.ic_floor == 0.01
    path.write_text("- not a mapping\n")
    with pytest.raises(ValidationError):
        load_policy(path)
    with pytest.raises(ValidationError):
        load_policy(tmp_path / "missing.yaml")
