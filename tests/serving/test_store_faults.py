"""The metadata actor killed under load: the gateway keeps answering, every answered prediction is in the log
exactly once after the actor is back, and a tuning run reporting through the actor finishes without duplicates."""

from __future__ import annotations

import collections
import os
import threading
import time
import uuid
from dataclasses import replace
from typing import Any

import httpx

from qmlops.features import load_features
from qmlops.metadata import get_store
from qmlops.serving import ServeService

from ..monitoring.receivers import wait_for
from .conftest import Served


def _configure(**monitoring: Any) -> None:
    service = ServeService()
    options = replace(service.options(), monitoring=monitoring)
    service._save(options)
    service.apply(options)
    service.wait_revision()


def test_metadata_actor_killed_under_load(served: Served) -> None:
    import ray

    from qmlops.tuning import TuneConfig, tune_models

    _configure(log={"flush_interval_s": 0.3}, drift={"enabled": False})
    store = get_store()
    frame = load_features("sub", "alpha158", start=served.test_day)["feature"].dropna().head(1)
    row = {k: float(v) for k, v in frame.iloc[0].items()}
    tag = uuid.uuid4().hex[:8]
    answered: list[tuple[str, float]] = []
    failed: list[str] = []
    stop = threading.Event()
    lock = threading.Lock()

    def client(n: int) -> None:
        with httpx.Client(base_url=served.url, timeout=30) as c:
            i = 0
            while not stop.is_set():
                rid = f"{tag}-{n}-{i}"
                i += 1
                r = c.post("/v1/predict", json={"model": "alpha", "request_id": rid, "features": row})
                with lock:
                    (answered.append((rid, time.time())) if r.status_code == 200 else failed.append(r.text))

    tuned: dict[str, Any] = {}

    def tuning() -> None:
        try:
            tuned["result"] = tune_models(TuneConfig(
                model_types=["lightgbm"], dataset="sub", num_samples=3, searcher="random", scheduler="fifo",
                max_concurrent=1, register_as="", progress_every=2, fixed_params={"lightgbm": {"num_boost_round": 40}},
            ))  # fmt: skip
        except Exception as exc:  # reported below
            tuned["error"] = exc

    clients = [threading.Thread(target=client, args=(n,), daemon=True) for n in range(2)]
    tuner = threading.Thread(target=tuning, daemon=True)
    for t in [*clients, tuner]:
        t.start()
    actor = ray.get_actor(os.environ["QMLOPS_METADATA_ACTOR"], namespace="qmlops")
    kills = []
    for _ in range(2):  # twice, while predictions are flushed and trials report
        time.sleep(4)
        kills.append(time.time())
        ray.kill(actor, no_restart=False)  # the actor restarts on its own (max_restarts=-1)
    time.sleep(3)
    stop.set()
    for t in clients:
        t.join(timeout=60)
    tuner.join(timeout=600)

    assert not failed, failed[:3]
    during = [rid for rid, t in answered if kills[0] <= t <= kills[-1] + 1]
    assert during, "the gateway answered nothing while the metadata actor was down"
    assert "error" not in tuned, repr(tuned.get("error"))
    result = tuned["result"]
    assert len(result.trials) == 3 and store.runs.get(result.run_id).status == "finished"
    trials = [r for r in store.runs.list(kind="trial", limit=500) if r.parent_id == result.run_id]
    assert len(trials) == 3

    wanted = {rid for rid, _ in answered}

    def logged() -> collections.Counter[str]:
        return collections.Counter(r for r in store.predictions.request_ids("alpha") if r.startswith(tag))

    assert wait_for(lambda: wanted <= set(logged()), 60, 0.5), len(wanted - set(logged()))
    counts = logged()
    assert set(counts) == wanted and max(counts.values()) == 1  # every answer once, nothing duplicated
