"""Monitoring over the real Serve app: prediction log completeness, metrics and online accuracy after a burst,
Ray metrics, a planted drift raising the default drift alert at a webhook, an SMTP server and a WebSocket client,
dedup, and a SIGKILLed gateway replica losing at most its unflushed buffer (counted)."""

from __future__ import annotations

import json
import os
import signal
import threading
import time
import uuid
from dataclasses import replace
from typing import Any

import httpx
import numpy as np
import pandas as pd

from qmlops.features import load_features
from qmlops.metadata import get_store
from qmlops.monitoring import AlertChannel
from qmlops.serving import ServeService

from ..monitoring.receivers import SmtpReceiver, WebhookReceiver, wait_for
from .conftest import Served

TOKEN = {"Authorization": "Bearer s3cret-token"}


def _configure(**monitoring: Any) -> None:
    service = ServeService()
    options = replace(service.options(), monitoring=monitoring)
    service._save(options)
    service.apply(options)
    service.wait_revision()


def _rows(frame: pd.DataFrame) -> list[dict[str, float]]:
    return [{k: float(v) for k, v in row.items()} for row in frame.to_dict(orient="records")]


def _post_all(served: Served, bodies: list[dict[str, Any]], threads: int = 4) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    lock = threading.Lock()

    def run(part: list[dict[str, Any]]) -> None:
        with httpx.Client(base_url=served.url, timeout=60) as client:
            for body in part:
                r = client.post("/v1/predict", json=body)
                assert r.status_code == 200, r.text
                with lock:
                    out.append(r.json())

    workers = [threading.Thread(target=run, args=(bodies[i::threads],)) for i in range(threads)]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    return out


def test_log_is_complete_and_metrics_follow_a_burst(served: Served) -> None:
    _configure(log={"flush_interval_s": 0.5, "inputs": "full"})
    store = get_store()
    frame = load_features("sub", "alpha158", start=served.test_day)["feature"].dropna().head(60)
    rows = _rows(frame)
    tag = uuid.uuid4().hex[:8]
    bodies = [{"model": "alpha", "request_id": f"{tag}-{i}", "user_id": f"u{i}", "features": rows[i % 60]}
              for i in range(120)]  # fmt: skip
    answers = _post_all(served, bodies)
    batch = served.client.post(
        "/v1/predict", json={"model": "alpha", "request_id": f"{tag}-batch", "rows": rows[:3]}
    )
    assert batch.status_code == 200 and batch.json()["request_ids"] == [f"{tag}-batch/{i}" for i in range(3)]
    expected = {a["request_id"]: a for a in answers}
    wanted = set(expected) | set(batch.json()["request_ids"])
    assert wait_for(lambda: wanted <= set(store.predictions.request_ids("alpha")), 15)

    # one row over the API: the answer as the client saw it, the inputs in the signature's order
    one = f"{tag}-7"
    r = served.client.get("/v1/predictions", params={"request_id": one})
    assert r.status_code == 200, r.text
    logged = r.json()["predictions"]
    assert r.status_code == 200 and len(logged) == 1
    row = logged[0]
    assert row["output"] == expected[one]["prediction"] and row["status"] == "ok"
    assert row["model_id"] == expected[one]["model_version"] and row["variant"] == expected[one]["variant"]
    assert row["latency_ms"] > 0 and row["replica"] and row["input_hash"]
    names = store.models.get(row["model_id"]).signature["feature_names"]
    assert row["inputs"] == [rows[7][n] for n in names]

    # metrics over the shared log, then online accuracy from feedback joined by request_id
    metrics = served.client.get("/v1/metrics/models", params={"window_s": 600, "model": "alpha"}).json()
    v1 = [
        m
        for m in metrics["models"]
        if m["model_id"] == served.versions["alpha1"]["id"] and m["variant"] == "stable"
    ]
    # 120 one-row requests and one 3-row batch: 121 requests, 123 rows
    assert (
        v1
        and v1[0]["requests"] >= 121
        and v1[0]["rows"] >= 123
        and v1[0]["errors"] == 0
        and v1[0]["error_rate"] == 0
    )
    assert 0 < v1[0]["p50_ms"] <= v1[0]["p95_ms"] <= v1[0]["p99_ms"]
    rng = np.random.default_rng(3)
    preds = np.array([expected[f"{tag}-{i}"]["prediction"] for i in range(60)])
    realised = 2 * preds + rng.normal(0, preds.std() + 1e-9, 60)
    items = [{"request_id": f"{tag}-{i}", "value": float(realised[i])} for i in range(60)]
    assert served.client.post("/v1/feedback", json={"items": items}).status_code == 202
    metrics = served.client.get("/v1/metrics/models", params={"window_s": 600, "model": "alpha"}).json()
    v1 = [
        m
        for m in metrics["models"]
        if m["model_id"] == served.versions["alpha1"]["id"] and m["variant"] == "stable"
    ][0]
    assert v1["labelled"] >= 60
    if v1["labelled"] == 60:  # only this test's feedback in the window: the figure is exactly reproducible
        assert abs(v1["ic"] - float(np.corrcoef(preds, realised)[0, 1])) < 1e-9
        assert v1["hit_rate"] == float(np.mean(np.sign(preds) == np.sign(realised)))

    # the same counts as Ray metrics (Prometheus format, exported by the node's metrics agent)
    import ray

    port = ray._private.worker.global_worker.node.metrics_export_port

    def exported() -> bool:
        try:
            text = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=5).text
        except httpx.HTTPError:
            return False
        return "qmlops_predictions_total" in text and "qmlops_prediction_latency_ms" in text

    assert wait_for(exported, 60, 1.0)
    # bad query parameters are 4xx naming the parameter
    for params, field in [
        ({"limit": 0}, "limit"),
        ({"limit": "many"}, "limit"),
        ({"since_s": -1}, "since_s"),
    ]:
        bad = served.client.get("/v1/predictions", params=params)
        assert bad.status_code == 422 and bad.json()["error"]["field"] == field


def test_planted_drift_alerts_webhook_smtp_and_websocket(served: Served) -> None:
    from websockets.sync.client import connect

    store = get_store()
    model_id = served.versions["alpha1"]["id"]
    # Only the feature verdict's rule stays on: in-sample training rows score wider than the out-of-sample
    # predictions the prediction reference holds (prediction-PSI would fire on the baseline), and the earlier
    # tests' traffic may breach the latency and error-rate rules meanwhile.
    saved_rules = store.monitoring.rules()
    # earlier tests' traffic may have raised drift alerts already: acknowledged, they no longer deduplicate
    for alert in store.monitoring.alerts(unacknowledged=True, limit=1000):
        store.monitoring.acknowledge(alert["id"], "test-setup")
    before = {a["id"] for a in store.monitoring.alerts(limit=1000)}
    for rule in saved_rules:
        store.monitoring.put_rule({**rule, "enabled": rule["name"] == "drift-share"})
    _configure(drift={"window": 300, "every_rows": 10**9, "every_s": 3600, "min_rows": 50})
    reference = store.monitoring.get_reference(model_id)
    assert reference and reference["source"] == "train_segment" and reference["prediction"]
    train = load_features("sub", "alpha158", end=served.test_day)["feature"].dropna()
    sample = train.sample(300, random_state=0)
    with WebhookReceiver() as hook, SmtpReceiver() as smtp:
        store.monitoring.put_channel(AlertChannel("hook", "webhook", {"url": hook.url}).to_dict())
        store.monitoring.put_channel(AlertChannel("mail", "email", {"host": "127.0.0.1", "port": smtp.port,
                                                                    "from": "qmlops@localhost", "to": "ops@localhost"}).to_dict())  # fmt: skip
        store.monitoring.put_channel(AlertChannel("ws", "websocket", {}).to_dict())
        received: list[dict[str, Any]] = []
        ws_url = served.url.replace("http://", "ws://") + "/v1/ws/alerts"
        with connect(ws_url, open_timeout=30) as ws:
            reader = threading.Thread(target=lambda: _read(ws, received), daemon=True)
            reader.start()

            # in-distribution rows (the training period): no drift verdict, no alert
            _post_all(served, [{"model": "alpha", "version": 1, "features": r} for r in _rows(sample)])
            base = served.client.post("/v1/admin/drift/evaluate", headers=TOKEN).json()["reports"]
            assert base and base[0]["drift_share"] < 0.2
            assert [a for a in store.monitoring.alerts(source="drift") if a["id"] not in before] == []

            # planted shift in 40 features: they are found, the default drift-share rule fires
            planted = list(sample.columns[::4][:40])
            shifted = sample.copy()
            shifted[planted] = shifted[planted] + 3 * shifted[planted].std().fillna(1.0) + 1.0
            _post_all(served, [{"model": "alpha", "version": 1, "features": r} for r in _rows(shifted)])
            report = served.client.post("/v1/admin/drift/evaluate", headers=TOKEN).json()["reports"][0]
            assert report["drift_share"] > 0.2 and report["n_rows"] == 300
            stored = served.client.get("/v1/drift", params={"model": "alpha", "full": True}).json()[
                "reports"
            ][0]
            assert stored["model_version"] == model_id and stored["drift_share"] == report["drift_share"]
            assert len(set(stored["drifted"]) & set(planted)) >= 30

            alerts = wait_for(
                lambda: [a for a in store.monitoring.alerts(source="drift") if a["id"] not in before], 10
            )
            assert len(alerts) == 1 and alerts[0]["rule"] == "drift-share" and alerts[0]["subject"] == "alpha"
            alert_id = alerts[0]["id"]
            assert alerts[0]["details"]["value"] == report["drift_share"]
            assert wait_for(lambda: hook.bodies and smtp.messages and received, 20)
            assert hook.bodies[0]["alert"]["id"] == alert_id == received[0]["id"]
            assert alert_id in smtp.messages[0].get_payload()

            # the same verdict again within the cooldown: a repeat, delivered nowhere
            served.client.post("/v1/admin/drift/evaluate", headers=TOKEN)
            assert wait_for(lambda: store.monitoring.get_alert(alert_id)["repeats"] >= 1, 10)
            time.sleep(1.5)
            assert len(hook.bodies) == len(smtp.messages) == len(received) == 1
        listed = served.client.get("/v1/alerts", params={"unacknowledged": True}).json()["alerts"]
        assert alert_id in {a["id"] for a in listed}
        assert served.client.post(f"/v1/alerts/{alert_id}/ack").status_code == 401
        acked = served.client.post(f"/v1/alerts/{alert_id}/ack", headers=TOKEN, json={"by": "oncall"})
        assert acked.status_code == 200 and acked.json()["acknowledged_by"] == "oncall"
        for name in ("hook", "mail", "ws"):
            store.monitoring.delete_channel(name)
        for rule in saved_rules:
            store.monitoring.put_rule(rule)


def _read(ws: Any, out: list[dict[str, Any]]) -> None:
    try:
        for message in ws:
            out.append(json.loads(message))
    except Exception:
        return


def test_killed_gateway_replica_loses_no_answered_prediction(served: Served) -> None:
    flush_s = 1.0
    _configure(log={"flush_interval_s": flush_s}, drift={"enabled": False})
    store = get_store()
    status = served.client.get("/v1/metrics/models", params={"window_s": 1}).json()["replica"]
    pid, replica = status["log"]["pid"], status["log"]["replica"]
    row = _rows(load_features("sub", "alpha158", start=served.test_day)["feature"].dropna().head(1))[0]
    answered: list[tuple[str, float]] = []
    stop = threading.Event()
    lock = threading.Lock()

    def client(n: int) -> None:
        with httpx.Client(base_url=served.url, timeout=10) as c:
            i = 0
            while not stop.is_set():
                rid = f"kill-{n}-{i}"
                i += 1
                try:
                    r = c.post("/v1/predict", json={"model": "alpha", "request_id": rid, "features": row})
                except httpx.HTTPError:
                    continue
                if r.status_code == 200:
                    with lock:
                        answered.append((rid, time.time()))

    threads = [threading.Thread(target=client, args=(n,), daemon=True) for n in range(3)]
    for t in threads:
        t.start()
    time.sleep(6)
    killed_at = time.time()
    os.kill(pid, signal.SIGKILL)
    time.sleep(1)
    stop.set()
    for t in threads:
        t.join(timeout=30)
    # Serve replaces the replica; the new one counts what the dead one lost
    assert wait_for(lambda: served.client.get("/readyz").status_code == 200, 120, 0.5)
    losses = wait_for(lambda: [x for x in store.monitoring.losses() if x["replica"] == replica], 60, 0.5)
    assert losses, "the killed replica's loss was not counted"
    loss = losses[0]
    before = [(rid, t) for rid, t in answered if t <= killed_at]
    assert len(before) > 50
    # every answered prediction was spooled before its response: the next replica replayed the dead one's
    # spool, so nothing answered is lost, before or after the kill
    assert loss["answered"] >= len(before) and loss["lost"] == 0, loss
    every = {rid for rid, _ in answered}
    missing = wait_for(lambda: not (every - set(store.predictions.request_ids("alpha"))), 60, 0.5)
    gone = every - set(store.predictions.request_ids("alpha"))
    assert missing, (loss, killed_at, sorted((t, rid) for rid, t in answered if rid in gone)[:10],
                     served.client.get("/v1/metrics/models").json()["replica"],
                     [str(p) for p in (served.home / "run" / "predlog").rglob("*")])  # fmt: skip
    after = served.client.post("/v1/predict", json={"model": "alpha", "features": row})
    assert after.status_code == 200
