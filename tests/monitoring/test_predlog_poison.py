"""One row the store cannot take is quarantined and counted; every other row still reaches the log."""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np

from qmlops.metadata import get_store
from qmlops.monitoring._predlog import PredictionLog


def _add(log: PredictionLog, rid: str) -> None:
    log.add(rid, time.time(), "m", "mv-1", 1, "stable", np.ones((1, 3)), [0.5], 1.0, "ok")


def test_a_poison_row_is_quarantined_and_the_rest_flush(tmp_home: Path) -> None:
    store = get_store()
    log = PredictionLog(store, "r1", tmp_home / "run" / "predlog")
    _add(log, "\ud800")  # a lone surrogate: neither Arrow nor DuckDB can store it
    for i in range(1000):
        _add(log, f"ok-{i}")
    assert log.flush() == 1000
    assert log.status()["quarantined"] == 1 and log.status()["buffered"] == 0
    assert set(store.predictions.request_ids("m")) == {f"ok-{i}" for i in range(1000)}
    # later rows keep flowing: the poison row is not retried in front of them
    _add(log, "after")
    assert log.flush() == 1 and "after" in store.predictions.request_ids("m")
    lines = [
        json.loads(x)
        for x in next((tmp_home / "run" / "predlog" / "quarantine").glob("*.jsonl")).read_text().splitlines()
    ]
    assert [x["request_id"] for x in lines] == ["\ud800"] and "Error" in lines[0]["reason"]
    log.close()


def test_a_row_the_store_refuses_alone_is_isolated_by_halves(tmp_home: Path) -> None:
    """A row that serialises but fails in the append (here a model name the store refuses through a wrapper
    that rejects exactly that row's batch) is found by halving; its neighbours are written."""
    real = get_store()

    class Picky:
        def __init__(self) -> None:
            self.calls = 0

        def append(self, rows: list[dict]) -> int:
            self.calls += 1
            if any(r["request_id"] == "bad" for r in rows):
                raise ValueError("conversion failed")
            return int(real.predictions.append(rows))

    class Store:
        predictions = Picky()

    log = PredictionLog(Store(), "r2", tmp_home / "run" / "predlog")
    for i in range(200):
        _add(log, "bad" if i == 137 else f"x-{i}")
    assert log.flush() == 199
    assert log.status()["quarantined"] == 1
    assert Store.predictions.calls <= 2 * 8 + 1  # log2(200) levels, not one call per row
    assert len(real.predictions.request_ids("m")) == 199


def test_an_unavailable_store_keeps_rows_buffered(tmp_home: Path) -> None:
    class Down:
        class predictions:  # noqa: N801 - stands in for the repository attribute
            @staticmethod
            def append(rows: list[dict]) -> int:
                raise ConnectionError("metadata actor gone")

    log = PredictionLog(Down(), "r3", tmp_home / "run" / "predlog")
    for i in range(10):
        _add(log, f"k-{i}")
    assert log.flush() == 0
    status = log.status()
    assert status["buffered"] == 10 and status["quarantined"] == 0 and status["failed_flushes"] == 1
    log.store = get_store()
    assert log.flush() == 10 and log.status()["buffered"] == 0


def test_sigkill_loses_no_answered_row_the_spool_is_replayed(tmp_home: Path) -> None:
    """A process adds 500 rows (each add returns only after its spool write, as a response would be sent
    after it) and is SIGKILLed before any flush; the next reconcile on the host replays them: zero loss."""
    import os
    import subprocess
    import sys

    from qmlops.monitoring import reconcile_losses

    directory = tmp_home / "run" / "predlog"
    code = (
        "import os, signal, sys, time, numpy as np\n"
        "from pathlib import Path\n"
        "from qmlops.monitoring._predlog import PredictionLog\n"
        "log = PredictionLog(None, 'victim', Path(sys.argv[1]))\n"
        "for i in range(500):\n"
        "    log.add(f'spooled-{i}', time.time(), 'm', 'mv-1', 1, 'stable', np.full((1, 3), i / 7), [i / 3], 1.0, 'ok')\n"
        "os.kill(os.getpid(), signal.SIGKILL)\n"
    )
    proc = subprocess.run([sys.executable, "-c", code, str(directory)], env={**os.environ}, timeout=120)
    assert proc.returncode == -9
    store = get_store()
    store.predictions.append([{"request_id": "spooled-0", "ts": __import__("datetime").datetime.now(), "model_name": "m",
                               "status": "ok", "replica": "victim", "seq": 1}])  # fmt: skip
    losses = reconcile_losses(store, directory)
    assert [(x["replica"], x["answered"], x["lost"], x["replayed"]) for x in losses] == [
        ("victim", 500, 0, 499)
    ]
    ids = store.predictions.request_ids("m")
    assert sorted(ids) == sorted(f"spooled-{i}" for i in range(500))  # no duplicate of the row already there
    rows = {r["request_id"]: r for r in store.predictions.query(model_name="m", limit=1000)}
    assert rows["spooled-9"]["output"] == 9 / 3
    assert not list((directory / "spool").glob("*victim*"))


def test_a_restarted_log_of_the_same_replica_keeps_its_rows(tmp_home: Path) -> None:
    """New monitoring options restart a replica's log; appends are keyed by (replica, seq), so the new log
    numbers on from the old one instead of restarting at 1 and having its rows skipped as resent."""
    store = get_store()
    first = PredictionLog(store, "r3", tmp_home / "run" / "predlog")
    for i in range(5):
        _add(first, f"before-{i}")
    first.close()
    second = PredictionLog(store, "r3", tmp_home / "run" / "predlog")
    for i in range(5):
        _add(second, f"after-{i}")
    assert second.flush() == 5
    assert {f"after-{i}" for i in range(5)} <= set(store.predictions.request_ids("m"))
    assert second.status()["answered"] == 10 and second.status()["flushed"] == 10
    second.close()
