"""The hand-written corpus of hostile requests: every one gets a 4xx JSON naming the field, never a 500.

Also: a poison request followed by 1,000 normal ones leaves all 1,000 in the prediction log; browsers' cross-
origin writes, non-JSON content types and cross-origin WebSocket upgrades are refused.
"""

from __future__ import annotations

import json
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest

from qmlops.experiments import ExperimentService
from qmlops.features import load_features
from qmlops.metadata import get_store

from .conftest import Served

JSON = {"content-type": "application/json"}
TOKEN = {"authorization": "Bearer s3cret-token", **JSON}


def _row(served: Served) -> dict[str, float]:
    frame = load_features("sub", "alpha158", start=served.test_day)["feature"].dropna().head(1)
    return {k: float(v) for k, v in frame.iloc[0].items()}


def _raw(body: dict, **replace: str) -> bytes:
    """JSON text of ``body`` with placeholder strings swapped for raw JSON (escapes json.dumps would not write)."""
    text = json.dumps(body)
    for key, raw in replace.items():
        text = text.replace(json.dumps(key), raw)
    return text.encode()


def _expect(r: httpx.Response, status: int | tuple[int, ...], field: str | None) -> None:
    statuses = status if isinstance(status, tuple) else (status,)
    assert r.status_code in statuses, (r.status_code, r.text[:300])
    error = r.json()["error"]
    assert error["reason"], r.text
    if field is not None:
        assert error["field"] == field, error


@pytest.fixture(scope="module")
def experiment(served: Served) -> dict:
    service = ExperimentService()
    return service.create("hostile-events", "lin", [{"name": "a", "version": 1}, {"name": "b", "version": 1}],
                          metrics=[{"name": "c", "kind": "proportion", "event": "trade"}], layer="hostile")  # fmt: skip


def test_poison_corpus_is_4xx_naming_the_field(served: Served, experiment: dict) -> None:
    row = _row(served)
    inst = served.instruments[0]
    predict = [
        # unpaired surrogates: in a value, a field name, the instrument, the sticky key
        (_raw({"model": "alpha", "request_id": "RID", "features": row}, RID=r'"\ud800"'), 422, "request_id"),
        (_raw({"model": "alpha", "features": {**row, "KEY": 1.0}}, KEY=r'"\udfff"'), 422, "features.\\udfff"),
        (
            _raw({"model": "lin", "instrument": "I", "date": served.test_day}, I=r'"A\ud800"'),
            422,
            "instrument",
        ),
        (_raw({"model": "alpha", "user_id": "U", "features": row}, U=r'"\udc00x"'), 422, "user_id"),
        # JSON nested tens of thousands deep
        (b"[" * 50_000 + b"]" * 50_000, 400, "body"),
        (b'{"model": ' + b'{"a": ' * 40_000 + b"1" + b"}" * 40_001, 400, None),
        # integers of hundreds and thousands of digits as a feature
        (_raw({"model": "alpha", "features": {**row, "KMID": "N"}}, N="9" * 400), 413, "features.KMID"),
        (
            _raw({"model": "alpha", "features": {**row, "KMID": "N"}}, N="-" + "1" * 5000),
            413,
            "features.KMID",
        ),
        (
            _raw({"model": "alpha", "features": {**row, "KMID": "N"}}, N="1" * 300 + ".5"),
            413,
            "features.KMID",
        ),
        # a list or object where a model name goes
        (json.dumps({"model": ["alpha"], "features": row}).encode(), 422, "model"),
        (json.dumps({"model": {"a": 1}, "features": row}).encode(), 422, "model"),
        # dates that are not dates, out of range or with a timezone
        *[
            (json.dumps({"model": "lin", "instrument": inst, "date": d}).encode(), 422, "date")
            for d in (
                "",
                "NaT",
                "0001-01-01",
                "9999-12-31",
                "2262-04-12",
                "2010-06-01T00:00:00+02:00",
                "2010-06-01Z",
                "2010-02-30",
                " 2010-06-01",
            )
        ],  # fmt: skip
        (json.dumps({"model": "lin", "instrument": inst, "date": 20100601}).encode(), 422, "date"),
        # ids of the wrong type or size
        (json.dumps({"model": "alpha", "request_id": {"a": 1}, "features": row}).encode(), 422, "request_id"),
        (
            json.dumps({"model": "alpha", "request_id": "x" * 900_000, "features": row}).encode(),
            422,
            "request_id",
        ),
        (json.dumps({"model": "alpha", "request_id": "a b", "features": row}).encode(), 422, "request_id"),
        (json.dumps({"model": "alpha", "version": "1", "features": row}).encode(), 422, "version"),
        (json.dumps({"model": "alpha", "version": True, "features": row}).encode(), 422, "version"),
    ]
    for payload, status, field in predict:
        _expect(served.client.post("/v1/predict", content=payload, headers=JSON), status, field)
        _expect(served.client.post("/v1/explain", content=payload, headers=JSON), status, field)
    # a list or object as a model name with a sticky-key header
    for model in (["alpha"], {"m": "alpha"}, 7):
        r = served.client.post(
            "/v1/predict", json={"model": model, "features": row}, headers={"x-user-id": "u1"}
        )
        _expect(r, 422, "model")

    feedback = [
        (_raw({"request_id": "RID", "value": 1.0}, RID=r'"\ud800"'), 422, "request_id"),
        (_raw({"request_id": "r-1", "value": "V"}, V="7" * 1000), 413, "value"),
        (json.dumps({"request_id": {"a": 1}, "value": 1.0}).encode(), 422, "request_id"),
        (json.dumps({"request_id": "r" * 900_000, "value": 1.0}).encode(), 422, "request_id"),
        (json.dumps({"request_id": "r-1", "value": True}).encode(), 422, "value"),
        (
            json.dumps(
                {"items": [{"request_id": "r-1", "value": 1.0}, {"request_id": 5, "value": 1}]}
            ).encode(),
            422,
            "items[1].request_id",
        ),  # fmt: skip
        (json.dumps({"items": [], "x": 1}).encode(), 422, "x"),
    ]
    for payload, status, field in feedback:
        _expect(served.client.post("/v1/feedback", content=payload, headers=JSON), status, field)

    ev = {"experiment": experiment["id"], "user_id": "u1", "event": "trade", "value": 1.0}
    events = [
        (_raw({**ev, "user_id": "U"}, U=r'"\ud800"'), 422, "user_id"),
        (_raw({**ev, "value": "V"}, V="9" * 2000), 413, "value"),
        *[
            (json.dumps({**ev, "ts": ts}).encode(), 422, "events[0].ts")
            for ts in (
                "0001-01-01T00:00:00",
                "99999-01-01",
                "2262-04-12T00:00:00",
                "",
                "NaT",
                1e20,
                -1e20,
                True,
            )
        ],  # fmt: skip
        (json.dumps({**ev, "user_id": ["u"]}).encode(), 422, "events[0].user_id"),
    ]
    for payload, status, field in events:
        _expect(served.client.post("/v1/events", content=payload, headers=JSON), status, field)
    # an event time with a timezone is converted, not refused
    ok = served.client.post("/v1/events", json={**ev, "ts": "2024-05-01T12:00:00+02:00"})
    assert ok.status_code == 202, ok.text

    admin = [
        (json.dumps({"model": ["alpha"], "version": 2, "strategy": "canary"}).encode(), 422, "model"),
        (json.dumps({"model": {"a": 1}, "version": 2, "strategy": "canary"}).encode(), 422, "model"),
        (json.dumps({"model": "alpha", "version": [2], "strategy": "canary"}).encode(), 422, "version"),
        (
            json.dumps({"model": "alpha", "version": 2, "strategy": "canary", "options": []}).encode(),
            422,
            "options",
        ),
        (_raw({"model": "M", "version": 2, "strategy": "canary"}, M=r'"\ud800"'), 422, "model"),
    ]
    for payload, status, field in admin:
        _expect(served.client.post("/v1/admin/rollouts", content=payload, headers=TOKEN), status, field)
    # the service is still healthy
    assert served.client.post("/v1/predict", json={"model": "alpha", "features": row}).status_code == 200


def test_poison_then_1000_predictions_all_logged(served: Served) -> None:
    row = _row(served)
    poison = _raw({"model": "alpha", "request_id": "RID", "features": row}, RID=r'"\ud800"')
    assert served.client.post("/v1/predict", content=poison, headers=JSON).status_code == 422
    tag = f"after-poison-{time.time_ns()}"
    ids = [f"{tag}-{i}" for i in range(1000)]

    def send(rid: str) -> int:
        with httpx.Client(base_url=served.url, timeout=60) as client:
            return client.post(
                "/v1/predict", json={"model": "alpha", "request_id": rid, "features": row}
            ).status_code

    with ThreadPoolExecutor(8) as pool:
        statuses = list(pool.map(send, ids))
    assert statuses == [200] * 1000
    store = get_store()
    deadline = time.time() + 60
    logged: set[str] = set()
    while time.time() < deadline:
        logged = {r for r in store.predictions.request_ids("alpha") if r.startswith(tag)}
        if len(logged) == 1000:
            break
        time.sleep(0.5)
    assert logged == set(ids)
    replica = served.client.get("/v1/metrics/models").json()["replica"]
    assert replica["log"]["failed_flushes"] == 0


def test_browsers_cannot_write_cross_origin(served: Served) -> None:
    row = _row(served)
    evil = {"origin": "https://evil.example"}
    own = {"origin": served.url}
    for path, body in (("/v1/feedback", {"request_id": "csrf-1", "value": 1.0}),
                       ("/v1/events", {"experiment": "x", "user_id": "u", "event": "trade"}),
                       ("/v1/predict", {"model": "alpha", "features": row})):  # fmt: skip
        # a page may post text/plain (or a form) anywhere without a preflight: refused
        r = served.client.post(path, content=json.dumps(body), headers={"content-type": "text/plain"})
        _expect(r, 415, "content-type")
        r = served.client.post(
            path, content=json.dumps(body), headers={"content-type": "application/x-www-form-urlencoded"}
        )
        _expect(r, 415, "content-type")
        _expect(served.client.post(path, json=body, headers=evil), 403, "origin")
        assert "access-control-allow-origin" not in served.client.options(path, headers={**evil,
                "access-control-request-method": "POST"}).headers  # fmt: skip
    assert get_store().serving.feedback("csrf-1") == []
    # the gateway's own page may write
    assert (
        served.client.post(
            "/v1/feedback", json={"request_id": "own-1", "value": 1.0}, headers=own
        ).status_code
        == 202
    )
    assert (
        served.client.post("/v1/predict", json={"model": "alpha", "features": row}, headers=own).status_code
        == 200
    )


def test_websocket_upgrades_check_the_origin(served: Served) -> None:
    from websockets.exceptions import InvalidStatus
    from websockets.sync.client import connect

    ws_url = served.url.replace("http://", "ws://")
    for path in ("/v1/ws/alerts", "/v1/ws/runs/nope"):
        with pytest.raises(InvalidStatus) as refused:
            connect(ws_url + path, origin="https://evil.example", open_timeout=10)
        assert refused.value.response.status_code == 403
        with connect(ws_url + path, origin=served.url, open_timeout=10):
            pass
        with connect(ws_url + path, open_timeout=10):  # not a browser: no Origin header
            pass


def test_50_row_explain_of_tree_and_linear_uses_exact_explainers(served: Served) -> None:
    frame = load_features("sub", "alpha158", start=served.test_day)["feature"].dropna().head(50)
    rows = [{k: float(v) for k, v in r.items()} for r in frame.to_dict(orient="records")]
    for model, method in (("alpha", "tree"), ("lin", "additive")):
        r = served.client.post("/v1/explain", json={"model": model, "rows": rows, "top": 5})
        assert r.status_code == 200, r.text[:300]
        out = r.json()["explanations"]
        assert len(out) == 50 and {x["method"] for x in out} == {method}
        assert max(x["additivity_error"] for x in out) < 1e-3
    assert len(rows) == 50
