"""An A/B experiment over real Serve traffic with business events and its analysis; the explain endpoint."""

from __future__ import annotations

import json

import numpy as np
import pytest
from typer.testing import CliRunner

from qmlops.exceptions import ConflictError
from qmlops.experiments import ExperimentService
from qmlops.features import load_features
from qmlops.metadata import get_store

from ..monitoring.receivers import wait_for
from .conftest import Served


def _row(served: Served) -> dict[str, float]:
    frame = load_features("sub", "alpha158", start=served.test_day)["feature"].dropna().head(1)
    return {k: float(v) for k, v in frame.iloc[0].items()}


def test_experiment_end_to_end_over_serve(served: Served) -> None:
    service = ExperimentService()
    exp = service.create("lr-test", "alpha", [{"name": "control", "version": 1}, {"name": "treatment", "version": 2}],
                         metrics=[{"name": "conversion", "kind": "proportion", "event": "trade"},
                                  {"name": "pnl", "kind": "mean", "event": "pnl", "test": "mann_whitney"}],
                         layer="ranking", traffic=1.0)  # fmt: skip
    assert exp["state"] == "draft"
    exp = service.start(exp["id"])
    other = service.create("other", "alpha", [{"name": "a", "version": 1}, {"name": "b", "version": 2}],
                           metrics=[{"name": "c", "kind": "proportion", "event": "trade"}], layer="ranking")  # fmt: skip
    with pytest.raises(ConflictError) as err:  # the layer's traffic is taken: users stay in one experiment
        service.start(other["id"])
    assert err.value.field == "traffic"

    row = _row(served)
    versions = {"control": served.versions["alpha1"]["id"], "treatment": served.versions["alpha2"]["id"]}
    assigned: dict[str, str] = {}
    for i in range(400):
        r = served.client.post(
            "/v1/predict", json={"model": "alpha", "user_id": f"user-{i}", "features": row}
        )
        assert r.status_code == 200, r.text
        body = r.json()
        assert body["experiment"] == exp["id"] and body["model_version"] == versions[body["variant"]]
        assigned[f"user-{i}"] = body["variant"]
    for i in range(0, 400, 40):  # sticky: the same user, the same variant
        again = served.client.post(
            "/v1/predict", json={"model": "alpha", "user_id": f"user-{i}", "features": row}
        )
        assert again.json()["variant"] == assigned[f"user-{i}"]
    counts = {v: sum(1 for a in assigned.values() if a == v) for v in ("control", "treatment")}
    assert abs(counts["control"] - 200) < 4 * 10  # 50/50 within 4 standard errors (sd = 10)

    # business events: a planted effect (treatment converts at 0.6, control at 0.3)
    rng = np.random.default_rng(1)
    events = []
    for user, variant in assigned.items():
        if rng.random() < (0.6 if variant == "treatment" else 0.3):
            events.append({"experiment": "lr-test", "user_id": user, "event": "trade", "value": 1})
            events.append({"experiment": exp["id"], "user_id": user, "event": "pnl",
                           "value": float(rng.standard_t(3) * 0.01 + (0.002 if variant == "treatment" else 0.0))})  # fmt: skip
    bad = served.client.post("/v1/events", json={"events": [*events[:3], {"experiment": "lr-test", "user_id": "u",
                                                                          "event": "trade", "value": "x"}]})  # fmt: skip
    assert bad.status_code == 422 and bad.json()["error"]["field"] == "events[3].value"
    unknown = served.client.post("/v1/events", json={"experiment": "nope", "user_id": "u", "event": "trade"})
    assert unknown.status_code == 404 and unknown.json()["error"]["field"] == "experiment"
    accepted = served.client.post("/v1/events", json={"events": events})
    assert accepted.status_code == 202 and accepted.json()["accepted"] == len(events)

    store = get_store()
    assert wait_for(lambda: len(store.experiments.units(exp["id"])) == 400, 20)
    results = served.client.get(f"/v1/experiments/{exp['id']}/results").json()
    assert results["units"] == counts and results["srm"]["mismatch"] is False
    by = {(m["metric"], m["variant"]): m for m in results["metrics"]}
    conv = by[("conversion", "treatment")]
    expected_c = np.mean([1.0 if any(e["user_id"] == u and e["event"] == "trade" for e in events) else 0.0
                          for u, v in assigned.items() if v == "control"])  # fmt: skip
    assert conv["control_mean"] == pytest.approx(expected_c) and conv["significant"] is True
    assert (
        conv["relative_lift"] > 0.5
        and conv["relative_ci"][0] > 0
        and conv["adjusted_p_value"] >= conv["p_value"]
    )
    assert 0 <= conv["always_valid_p_value"] <= 1 and by[("pnl", "treatment")]["test"] == "mann_whitney"
    boot = service.results(exp["id"], ci="bootstrap")
    bconv = next(m for m in boot["metrics"] if m["metric"] == "conversion")
    assert bconv["p_value"] == conv["p_value"] and bconv["absolute_ci"] != conv["absolute_ci"]
    assert bconv["absolute_ci"][0] < bconv["absolute_lift"] < bconv["absolute_ci"][1]
    bad_ci = served.client.get(f"/v1/experiments/{exp['id']}/results", params={"ci": "magic"})
    assert bad_ci.status_code == 422 and bad_ci.json()["error"]["field"] == "ci"
    html = service.report_html(exp["id"])
    assert html.count("data:image/png;base64") == 2 and "conversion" in html

    service.stop(exp["id"])
    after = served.client.post("/v1/predict", json={"model": "alpha", "user_id": "user-1", "features": row})
    assert "experiment" not in after.json()

    # control never converts: the relative lift over a zero mean is undefined, answered as null, not a 500
    zero = service.create("zero-control", "alpha", [{"name": "control", "version": 1},
                          {"name": "treatment", "version": 2}],
                          metrics=[{"name": "conversion", "kind": "proportion", "event": "trade"}], layer="zero")  # fmt: skip
    service.start(zero["id"])
    variants = {}
    for i in range(20):
        body = {"model": "alpha", "user_id": f"z-{i}", "features": row}
        variants[f"z-{i}"] = served.client.post("/v1/predict", json=body).json()["variant"]
    trades = [{"experiment": zero["id"], "user_id": u, "event": "trade", "value": 1}
              for u, v in variants.items() if v == "treatment"]  # fmt: skip
    assert served.client.post("/v1/events", json={"events": trades}).status_code == 202
    assert wait_for(lambda: len(store.experiments.units(zero["id"])) == 20, 20)
    res = served.client.get(f"/v1/experiments/{zero['id']}/results")
    assert res.status_code == 200, res.text
    (m,) = res.json()["metrics"]
    assert m["control_mean"] == 0 and m["relative_lift"] is None and m["absolute_lift"] > 0
    # the CLI's --json is strict JSON too (Python would print a bare NaN token, which JSON parsers refuse)
    from qmlops.cli import app

    out = CliRunner().invoke(app, ["experiments", "results", zero["id"], "--json"])
    assert out.exit_code == 0, out.output
    (cli_metric,) = json.loads(out.stdout, parse_constant=_not_json)["metrics"]
    assert cli_metric["relative_lift"] is None and cli_metric["absolute_lift"] == m["absolute_lift"]
    service.stop(zero["id"])


def _not_json(token: str) -> None:
    raise AssertionError(f"{token} is not JSON")


def test_explain_endpoint_matches_prediction(served: Served) -> None:
    row = _row(served)
    r = served.client.post("/v1/explain", json={"model": "alpha", "version": 1, "features": row, "top": 5})
    assert r.status_code == 200, r.text
    body = r.json()
    (e,) = body["explanations"]
    pred = served.client.post("/v1/predict", json={"model": "alpha", "version": 1, "features": row}).json()
    assert e["method"] == "tree" and len(e["contributions"]) == 5
    assert e["prediction"] == pytest.approx(pred["prediction"], rel=1e-9)
    total = e["base_value"] + sum(e["contributions"].values()) + e["others"]
    assert total == pytest.approx(e["prediction"], abs=1e-6) and e["additivity_error"] < 1e-6
    lin = served.client.post("/v1/explain", json={"model": "lin", "instrument": served.instruments[2],
                                                  "date": served.test_day})  # fmt: skip
    assert lin.status_code == 200 and lin.json()["explanations"][0]["method"] == "additive"
    assert lin.json()["explanations"][0]["additivity_error"] < 1e-4
    for body, field in [({"model": "alpha", "features": row, "top": 0}, "top"),
                        ({"model": "nope", "features": row}, "model")]:  # fmt: skip
        bad = served.client.post("/v1/explain", json=body)
        assert 400 <= bad.status_code < 500 and bad.json()["error"]["field"] == field
