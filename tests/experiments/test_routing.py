"""Gateway-side assignment of running experiments: layers, targeting, time bounds."""

from __future__ import annotations

from datetime import datetime, timedelta

from qmlops.experiments import route_experiment


def _exp(eid: str, layer: str, traffic: float, model: str = "m", **extra: object) -> dict:
    return {"id": eid, "name": eid, "model": model, "layer": layer, "traffic": traffic, "targeting": None,
            "start_at": None, "stop_at": None,
            "variants": [{"name": "control", "model_version": "mv-a", "version": 1, "weight": 1.0},
                         {"name": "treatment", "model_version": "mv-b", "version": 2, "weight": 1.0}], **extra}  # fmt: skip


def test_layer_slices_are_exclusive_and_shares_hold() -> None:
    exps = [_exp("e1", "L", 0.3), _exp("e2", "L", 0.5)]
    seen = {"e1": 0, "e2": 0, None: 0}
    for i in range(10_000):
        hit = route_experiment(exps, "m", f"u{i}", None)
        seen[hit[0]["id"] if hit else None] += 1
        again = route_experiment(exps, "m", f"u{i}", None)
        assert (hit is None and again is None) or (hit and again and hit[1] == again[1])  # sticky
    assert abs(seen["e1"] - 3000) < 200 and abs(seen["e2"] - 5000) < 200 and abs(seen[None] - 2000) < 200


def test_targeting_model_and_time_bounds() -> None:
    now = datetime(2026, 1, 1)
    targeted = [_exp("t", "L", 1.0, targeting={"region": ["eu"]})]
    assert route_experiment(targeted, "m", "u1", {"region": "eu"}, now) is not None
    assert route_experiment(targeted, "m", "u1", {"region": "us"}, now) is None
    assert route_experiment(targeted, "m", "u1", None, now) is None
    assert route_experiment([_exp("x", "L", 1.0)], "other-model", "u1", None, now) is None
    later = [_exp("f", "L", 1.0, start_at=(now + timedelta(days=1)).isoformat())]
    ended = [_exp("g", "L", 1.0, stop_at=(now - timedelta(days=1)).isoformat())]
    assert (
        route_experiment(later, "m", "u1", None, now) is None
        and route_experiment(ended, "m", "u1", None, now) is None
    )


def test_power_cli_matches_the_library() -> None:
    import json

    from typer.testing import CliRunner

    from qmlops.cli import app
    from qmlops.experiments import power_proportions, sample_size_proportions

    runner = CliRunner()
    size = json.loads(
        runner.invoke(app, ["experiments", "power", "--p1", "0.3", "--p2", "0.35", "--json"]).stdout
    )
    assert size["n_per_arm"] == sample_size_proportions(0.3, 0.35) and size["n_per_arm"] > 1000
    pw = json.loads(runner.invoke(app, ["experiments", "power", "--p1", "0.3", "--p2", "0.35", "--n",
                                        str(size["n_per_arm"]), "--json"]).stdout)  # fmt: skip
    assert pw["power"] == power_proportions(size["n_per_arm"], 0.3, 0.35) and 0.8 <= pw["power"] < 0.81
    bad = runner.invoke(app, ["experiments", "power", "--p1", "0.3"])
    assert bad.exit_code == 2 and "p2" in bad.output
