"""The gateway over HTTP: predictions equal offline predict, bad input is 4xx, sticky routing, live reconfigure."""

from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import pytest

from qmlops.features import get_features, load_features
from qmlops.metadata import get_store
from qmlops.registry import ModelRegistry
from qmlops.serving import BUCKETS, RouteEntry, RoutingTable, ServeService

from .conftest import Served, Traffic


def _rows(served: Served, n: int = 20) -> tuple[pd.DataFrame, list[dict[str, float]]]:
    frame = load_features("sub", "alpha158", start=served.test_day)["feature"].dropna().head(n)
    return frame, [{k: float(v) for k, v in row.items()} for row in frame.to_dict(orient="records")]


def test_predictions_equal_offline_predict(served: Served) -> None:
    registry = ModelRegistry(get_store())
    frame, rows = _rows(served)
    r = served.client.post("/v1/predict", json={"model": "alpha", "rows": rows})
    assert r.status_code == 200, r.text
    body = r.json()
    assert (
        body["model"] == "alpha"
        and body["version"] == 1
        and body["variant"] == "stable"
        and body["request_id"]
    )
    offline = registry.load_predictor("alpha", 1).predict(frame)
    np.testing.assert_allclose(body["predictions"], offline, rtol=1e-9)
    # point-in-time: {instrument, date} resolves the latest feature row on or before the date
    inst = served.instruments[3]
    r = served.client.post("/v1/predict", json={"model": "lin", "instrument": inst, "date": served.test_day})
    assert r.status_code == 200, r.text
    pit = get_features([inst], served.test_day, dataset="sub")
    expected = registry.load_predictor("lin", 1).predict(pit.drop(columns="datetime"))
    assert r.json()["prediction"] == pytest.approx(float(expected[0]), rel=1e-5)
    assert r.json()["rows"][0]["instrument"] == inst
    many = served.client.post("/v1/predict", json={"model": "lin", "instruments": served.instruments[:5],
                                                   "date": served.test_day})  # fmt: skip
    assert many.status_code == 200 and len(many.json()["predictions"]) == 5


def test_point_in_time_weeks_after_the_data_answers_with_its_staleness(served: Served) -> None:
    """A date weeks past the data's end answers with the latest row (it was a 422 after about 15 days), that
    row's own date and age, and a caller's max_staleness_days bounds it."""
    registry = ModelRegistry(get_store())
    inst = served.instruments[2]
    frame = load_features("sub", "alpha158")
    last = pd.Timestamp(frame.xs(inst, level="instrument").index.max())
    date = (last + pd.Timedelta(days=45)).date().isoformat()
    r = served.client.post("/v1/predict", json={"model": "lin", "instrument": inst, "date": date})
    assert r.status_code == 200, r.text
    row = r.json()["rows"][0]
    assert row["date"] == str(last.date()) and row["staleness_days"] == 45
    pit = get_features([inst], date, dataset="sub")
    expected = registry.load_predictor("lin", 1).predict(pit.drop(columns="datetime"))
    assert r.json()["prediction"] == pytest.approx(float(expected[0]), rel=1e-5)
    fresh = served.client.post("/v1/predict", json={"model": "lin", "instrument": inst, "date": date,
                                                    "max_staleness_days": 30})  # fmt: skip
    assert fresh.status_code == 422 and fresh.json()["error"]["field"] == "max_staleness_days"
    ok = served.client.post("/v1/predict", json={"model": "lin", "instrument": inst, "date": date,
                                                 "max_staleness_days": 45})  # fmt: skip
    assert ok.status_code == 200
    bad = served.client.post("/v1/predict", json={"model": "lin", "instrument": inst, "date": date,
                                                  "max_staleness_days": -1})  # fmt: skip
    assert bad.status_code == 422 and bad.json()["error"]["field"] == "max_staleness_days"


def test_bad_input_is_4xx_with_the_field(served: Served) -> None:
    _, rows = _rows(served, 2)
    row = rows[0]
    big = json.dumps({"model": "alpha", "rows": [row] * 900}).encode()
    cases = [
        (b"{not json", 400, "body"),
        (b"[1, 2]", 422, "body"),
        (json.dumps({"rows": [row]}).encode(), 422, "model"),
        (json.dumps({"model": "nope", "rows": [row]}).encode(), 404, "model"),
        (json.dumps({"model": "alpha", "version": 99, "rows": [row]}).encode(), 404, "version"),
        (
            json.dumps(
                {"model": "alpha", "features": {k: v for k, v in row.items() if k != "KMID"}}
            ).encode(),
            422,
            "features.KMID",
        ),
        (json.dumps({"model": "alpha", "features": {**row, "EXTRA": 1.0}}).encode(), 422, "features.EXTRA"),
        (json.dumps({"model": "alpha", "features": {**row, "KMID": "high"}}).encode(), 422, "features.KMID"),
        (json.dumps({"model": "alpha", "rows": [row, {**row, "KLEN": None}]}).encode(), 422, "rows[1].KLEN"),
        (
            json.dumps({"model": "alpha", "features": row}).replace(str(row["KMID"]), "NaN", 1).encode(),
            422,
            None,
        ),
        (
            json.dumps({"model": "alpha", "features": row}).replace(str(row["KMID"]), "Infinity", 1).encode(),
            422,
            None,
        ),
        (json.dumps({"model": "alpha", "features": row, "colour": "red"}).encode(), 422, "colour"),
        (json.dumps({"model": "alpha"}).encode(), 422, "features"),
        (
            json.dumps({"model": "alpha", "instrument": "ZZZZ", "date": served.test_day}).encode(),
            422,
            "instrument",
        ),
        (
            json.dumps(
                {"model": "alpha", "instrument": served.instruments[0], "date": "1990-01-01"}
            ).encode(),
            422,
            "instrument",
        ),
        (
            json.dumps(
                {"model": "alpha", "instrument": served.instruments[0], "date": "yesterday-ish"}
            ).encode(),
            422,
            "date",
        ),
        (json.dumps({"model": "alpha", "instrument": served.instruments[0]}).encode(), 422, "date"),
        (big + b" " * 1_000_000, 413, "body"),
    ]
    for payload, status, field in cases:
        r = served.client.post("/v1/predict", content=payload, headers={"content-type": "application/json"})
        assert r.status_code == status, (payload[:120], r.status_code, r.text[:300])
        error = r.json()["error"]
        assert error["reason"], r.text
        if field is not None:
            assert error["field"] == field, (payload[:120], error)
    fb = served.client.post("/v1/feedback", json={"request_id": "r1", "value": "x"})
    assert fb.status_code == 422 and fb.json()["error"]["field"] == "value"
    issued = served.client.post("/v1/predict", json={"model": "alpha", "request_id": "r1", "features": row})
    assert issued.status_code == 200
    fb = served.client.post("/v1/feedback", json={"request_id": "r1", "value": 0.01})
    assert fb.status_code == 202 and fb.json()["accepted"] == 1, fb.text
    assert get_store().serving.feedback("r1") == [0.01]
    # feedback for an id never issued is rejected and counted, not stored
    fb = served.client.post("/v1/feedback", json={"items": [{"request_id": "never-issued", "value": 1.0},
                                                            {"request_id": "r1/3", "value": 1.0}]})  # fmt: skip
    assert fb.status_code == 202 and fb.json() == {
        "accepted": 0,
        "rejected": 2,
        "unknown": ["never-issued", "r1/3"],
    }
    assert get_store().serving.feedback("never-issued") == []
    # the service is still healthy and nothing stored changed
    assert served.client.get("/healthz").status_code == 200
    assert served.client.post("/v1/predict", json={"model": "alpha", "features": row}).status_code == 200
    assert served.client.get("/openapi.json").status_code == 200


def test_split_and_stickiness_over_10000_keys() -> None:
    table = RoutingTable(
        "m", (RouteEntry("mv-a", 1, 70.0, "stable"), RouteEntry("mv-b", 2, 30.0, "canary")), salt="s1"
    )
    keys = [f"user-{i}" for i in range(10_000)]
    first = [table.route(k).model_version for k in keys]
    assert first == [table.route(k).model_version for k in keys]  # sticky
    share_b = first.count("mv-b") / len(keys)
    assert abs(share_b - 0.30) < 4 * math.sqrt(0.3 * 0.7 / len(keys))  # within 4 standard errors
    assert sum(hi - lo for _, lo, hi in table.ranges()) == BUCKETS
    # canary 30 -> 50: only stable users move, and only to the canary (minimal movement)
    grown = table.with_weights({"mv-a": 50.0, "mv-b": 50.0})
    after = [grown.route(k).model_version for k in keys]
    moved = [(a, b) for a, b in zip(first, after, strict=True) if a != b]
    assert all(a == "mv-a" and b == "mv-b" for a, b in moved)
    assert abs(len(moved) / len(keys) - 0.20) < 4 * math.sqrt(0.2 * 0.8 / len(keys))
    # a different salt reshuffles users; unkeyed requests split by weight
    other = RoutingTable("m", table.entries, salt="s2")
    assert sum(a != other.route(k).model_version for a, k in zip(first, keys, strict=True)) > 1000
    unkeyed = [table.route(None).model_version for _ in range(10_000)]
    assert abs(unkeyed.count("mv-b") / 10_000 - 0.30) < 4 * math.sqrt(0.3 * 0.7 / 10_000)


def test_http_routing_is_sticky_and_follows_the_table(served: Served) -> None:
    service = ServeService()
    v1, v2 = served.versions["alpha1"]["id"], served.versions["alpha2"]["id"]
    table = service.table("alpha")
    service.set_table(RoutingTable("alpha", (RouteEntry(v1, 1, 50.0, "stable"), RouteEntry(v2, 2, 50.0, "variant")),
                                   table.salt, table.sticky_field, table.revision + 1))  # fmt: skip
    try:
        table = service.table("alpha")
        _, rows = _rows(served, 1)
        seen = {}
        for i in range(120):
            key = f"user-{i}"
            r = served.client.post(
                "/v1/predict", json={"model": "alpha", "user_id": key, "features": rows[0]}
            )
            assert r.status_code == 200
            assert r.json()["model_version"] == table.route(key).model_version
            seen[key] = r.json()["model_version"]
        assert set(seen.values()) == {v1, v2}
        for key in list(seen)[:20]:  # the same user again, and through the header
            r = served.client.post(
                "/v1/predict", json={"model": "alpha", "features": rows[0]}, headers={"x-user-id": key}
            )
            assert r.json()["model_version"] == seen[key]
        routes = served.client.get("/v1/routes").json()["routes"]
        assert {e["model_version"] for t in routes if t["model"] == "alpha" for e in t["entries"]} == {v1, v2}
        assert all(t["salt"] is None for t in routes)  # the salt is not published
        models = served.client.get("/v1/models").json()["models"]
        assert {m["model"] for m in models} == {"alpha", "lin"}
    finally:
        service.deploy_model("alpha", 1)


def test_weight_changes_under_load_drop_nothing(served: Served) -> None:
    service = ServeService()
    v1, v2 = served.versions["alpha1"]["id"], served.versions["alpha2"]["id"]
    _, rows = _rows(served, 10)
    try:
        with Traffic(served.url, "alpha", rows) as traffic:
            for weight in (10.0, 50.0, 90.0, 0.0):
                table = service.table("alpha")
                entries = (RouteEntry(v1, 1, 100.0 - weight, "stable"), RouteEntry(v2, 2, weight, "canary"))
                if weight == 0.0:
                    entries = (RouteEntry(v1, 1, 100.0, "stable"),)
                service.set_table(
                    RoutingTable("alpha", entries, table.salt, table.sticky_field, table.revision + 1)
                )
        assert traffic.status[200] > 30 and set(traffic.status) == {200}, traffic.status
        assert traffic.versions[v2] > 0 and traffic.versions[v1] > 0
    finally:
        service.deploy_model("alpha", 1)
