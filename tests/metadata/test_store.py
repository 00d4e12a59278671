"""The metadata store: migrations, single-writer actor, batch appends that survive SIGKILL."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
from datetime import datetime
from pathlib import Path

import pytest

from qmlops.exceptions import NotFoundError, SchemaVersionError, ValidationError
from qmlops.metadata import MIGRATIONS, Database, MetadataStore, get_store
from qmlops.metadata import _db as db_module


def test_fresh_database_has_every_migration(tmp_path: Path) -> None:
    db = Database(str(tmp_path / "m.duckdb"))
    assert db.schema_version() == MIGRATIONS[-1][0]
    rows = db.query("SELECT version, name FROM schema_version ORDER BY version")
    assert [r["version"] for r in rows] == [n for n, _, _ in MIGRATIONS]
    assert db.migrate() == []  # idempotent: nothing left to apply
    db.close()


def test_older_database_is_migrated_and_keeps_its_rows(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = str(tmp_path / "old.duckdb")
    monkeypatch.setattr(db_module, "MIGRATIONS", MIGRATIONS[:1])
    old = Database(path)
    assert old.schema_version() == 1
    old.execute(
        "INSERT INTO lineage_nodes VALUES (?, ?, ?, ?)", ["n1", "dataset", "kept", datetime(2020, 1, 1)]
    )
    old.close()
    monkeypatch.setattr(db_module, "MIGRATIONS", MIGRATIONS)
    new = Database(path)
    assert new.schema_version() == MIGRATIONS[-1][0]
    assert new.query("SELECT label FROM lineage_nodes WHERE id = ?", ["n1"]) == [{"label": "kept"}]
    new.close()


def test_a_migration_landing_after_a_higher_number_is_still_applied(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Numbers are reserved per change and may land out of order: a database at 1 and 3 gets 2 when it ships."""
    path = str(tmp_path / "gap.duckdb")
    late = (2, "late", "CREATE TABLE late_table (x INTEGER)")
    monkeypatch.setattr(
        db_module, "MIGRATIONS", [MIGRATIONS[0], (3, "early", "CREATE TABLE early_table (x INTEGER)")]
    )
    db = Database(path)
    assert db.schema_version() == 3
    db.close()
    monkeypatch.setattr(
        db_module, "MIGRATIONS", [MIGRATIONS[0], late, (3, "early", "CREATE TABLE early_table (x INTEGER)")]
    )
    db = Database(path)
    assert [r["version"] for r in db.query("SELECT version FROM schema_version ORDER BY version")] == [
        1,
        2,
        3,
    ]
    assert db.query("SELECT count(*) AS n FROM late_table") == [{"n": 0}]
    assert db.migrate() == []
    db.close()


def test_newer_database_is_refused_untouched(tmp_path: Path) -> None:
    path = str(tmp_path / "new.duckdb")
    db = Database(path)
    future = MIGRATIONS[-1][0] + 5
    db.execute(
        "INSERT INTO schema_version VALUES (?, ?, ?)", [future, "from_the_future", datetime(2030, 1, 1)]
    )
    db.close()
    with pytest.raises(SchemaVersionError, match="newer than this qmlops"):
        Database(path)
    with pytest.raises(SchemaVersionError):  # a read-only open refuses too
        Database(path, read_only=True)
    import duckdb  # the refusal left the newer schema row in place

    con = duckdb.connect(path, read_only=True)
    assert con.execute("SELECT max(version) FROM schema_version").fetchall() == [(future,)]
    con.close()


def test_lineage_traversal_and_cycles(tmp_path: Path) -> None:
    store = MetadataStore(str(tmp_path / "l.duckdb"))
    for node, kind in [("d1", "dataset"), ("d2", "dataset"), ("f1", "feature_set"), ("m1", "model_version"),
                       ("dep1", "deployment")]:  # fmt: skip
        store.lineage.add_node(node, kind)
    store.lineage.add_edge("d1", "d2", "derived_from")
    store.lineage.add_edge("d2", "f1", "materialized_from", {"set": "alpha158"})
    store.lineage.add_edge("f1", "m1", "trained_on")
    store.lineage.add_edge("m1", "dep1", "deployed_as")
    assert [(n.id, n.depth) for n in store.lineage.downstream("d1")] == [
        ("d2", 1), ("f1", 2), ("m1", 3), ("dep1", 4)]  # fmt: skip
    assert [n.id for n in store.lineage.upstream("dep1")] == ["m1", "f1", "d2", "d1"]
    impact = store.lineage.impact("d2")
    assert {k: [n.id for n in v] for k, v in impact.items()} == {
        "feature_set": ["f1"], "model_version": ["m1"], "deployment": ["dep1"]}  # fmt: skip
    # A cycle must not make the recursive query run forever.
    store.lineage.add_edge("dep1", "d1", "feeds_back")
    assert {n.id for n in store.lineage.downstream("d1")} == {"d2", "f1", "m1", "dep1"}
    with pytest.raises(NotFoundError, match="no lineage node 'nope'"):
        store.lineage.add_edge("d1", "nope", "x")
    with pytest.raises(ValidationError):
        store.lineage.add_node("z", "not-a-kind")
    store.close()


def test_prediction_append_validates_columns(tmp_path: Path) -> None:
    store = MetadataStore(str(tmp_path / "p.duckdb"))
    with pytest.raises(ValidationError, match="unknown prediction columns"):
        store.predictions.append([{"request_id": "r", "ts": datetime.now(), "model_name": "m", "status": "ok",
                                   "sneaky": 1}])  # fmt: skip
    with pytest.raises(ValidationError, match="missing required"):
        store.predictions.append([{"request_id": "r"}])
    assert store.predictions.count() == 0
    store.close()


def test_a_resent_keyed_batch_is_stored_once(tmp_path: Path) -> None:
    """A gateway resends a batch whose answer it lost (the actor died after committing): rows keyed by replica and
    sequence number are not stored twice, new rows in the same batch are."""
    store = MetadataStore(str(tmp_path / "k.duckdb"))
    rows = [{"request_id": f"r{i}", "ts": datetime.now(), "model_name": "m", "status": "ok", "replica": "g1",
             "seq": i} for i in range(1, 6)]  # fmt: skip
    other = [{**r, "replica": "g2", "request_id": f"x{r['seq']}"} for r in rows]
    assert store.predictions.append(rows) == 5
    assert store.predictions.append([*rows[2:], {**rows[0], "seq": 6, "request_id": "r6"}, *other]) == 6
    ids = store.predictions.request_ids()
    assert sorted(ids) == sorted([f"r{i}" for i in range(1, 7)] + [f"x{i}" for i in range(1, 6)])
    store.close()


_WRITER = textwrap.dedent(
    """
    import sys, datetime
    from qmlops.metadata import MetadataStore
    store = MetadataStore(sys.argv[1])
    batch_size = int(sys.argv[2])
    k = 0
    while True:
        rows = [{"request_id": f"b{k}-{i}", "ts": datetime.datetime(2024, 1, 1), "model_name": "m",
                 "output": float(i), "status": "ok"} for i in range(batch_size)]
        store.predictions.append(rows)
        print(k, flush=True)  # the append call for batch k has returned
        k += 1
    """
)


def test_sigkilled_writer_keeps_every_returned_batch(tmp_path: Path) -> None:
    path = str(tmp_path / "kill.duckdb")
    batch = 500
    proc = subprocess.Popen(
        [sys.executable, "-c", _WRITER, path, str(batch)],
        stdout=subprocess.PIPE,
        text=True,
        env=os.environ.copy(),
    )
    assert proc.stdout is not None
    returned = []
    for line in proc.stdout:
        returned.append(int(line))
        if len(returned) >= 25:
            break
    os.kill(proc.pid, signal.SIGKILL)  # in the middle of appending batch 25 or later
    proc.wait(timeout=30)
    assert proc.returncode == -signal.SIGKILL

    store = MetadataStore(path)
    ids = store.predictions.request_ids()
    assert len(ids) == len(set(ids)), "a batch was duplicated"
    for k in returned:
        for i in (0, batch - 1):
            assert f"b{k}-{i}" in set(ids)
    assert len(ids) % batch == 0, "a partial batch survived: appends must be atomic"
    assert len(ids) >= len(returned) * batch
    store.close()


@pytest.mark.slow
def test_eight_ray_tasks_append_80000_rows_through_the_actor(ray_home: Path) -> None:
    import ray

    store = get_store()
    assert store.is_remote

    @ray.remote(num_cpus=0.25)
    def append_rows(client, task: int, n: int, batch: int) -> int:
        written = 0
        for start in range(0, n, batch):
            rows = [{"request_id": f"t{task}-{i}", "ts": datetime(2024, 1, 1), "model_name": "load",
                     "output": float(i), "status": "ok"} for i in range(start, min(n, start + batch))]  # fmt: skip
            written += client.predictions.append(rows)
        return written

    results = ray.get([append_rows.remote(store, t, 10_000, 1_000) for t in range(8)])
    assert results == [10_000] * 8
    ids = store.predictions.request_ids("load")
    assert len(ids) == 80_000
    assert len(set(ids)) == 80_000
    assert set(ids) == {f"t{t}-{i}" for t in range(8) for i in range(10_000)}


def test_actor_errors_keep_their_type_and_named_lookup_from_a_task(ray_home: Path) -> None:
    import ray

    from qmlops.ray_utils import qmlops_env_vars

    store = get_store()
    with pytest.raises(NotFoundError, match="no dataset version"):
        store.datasets.get("ds-missing")
    store.lineage.add_node("ds-x", "dataset", "from the driver")

    # A task that was given only the environment (as a job's workers are) finds the same actor by name.
    @ray.remote(num_cpus=0.25, runtime_env={"env_vars": qmlops_env_vars()})
    def read_label() -> tuple[str | None, str]:
        client = get_store()
        return client.lineage.get_node("ds-x").label, client.path

    label, path = ray.get(read_label.remote())
    assert label == "from the driver"
    assert path == store.path == str(ray_home / "metadata.duckdb")


def test_a_process_that_opened_the_file_hands_it_to_the_actor(ray_home: Path) -> None:
    from qmlops.config import get_settings
    from qmlops.metadata import open_local

    local = open_local(get_settings().metadata_path)  # e.g. an ingest before Ray was started
    local.lineage.add_node("ds-before", "dataset", "written locally")
    remote = get_store()  # connecting to Ray hands the file over instead of failing on DuckDB's lock
    assert remote.is_remote
    assert remote.lineage.get_node("ds-before").label == "written locally"


def test_rollout_events_for_several_rollouts_in_one_read(tmp_path: Path) -> None:
    store = MetadataStore(str(tmp_path / "r.duckdb"))
    for rid, model in (("ro-a", "alpha"), ("ro-b", "beta"), ("ro-c", "gamma")):
        store.serving.create_rollout({"id": rid, "model": model, "strategy": "canary", "to_version": 2})
    for rid, kind in (("ro-a", "started"), ("ro-b", "started"), ("ro-a", "step"), ("ro-b", "rolled_back"),
                      ("ro-a", "succeeded")):  # fmt: skip
        store.serving.add_event(rid, kind, {"by": rid})
    both = store.serving.events_for(["ro-b", "ro-a", "ro-c"])
    assert [e["kind"] for e in both["ro-a"]] == ["started", "step", "succeeded"]
    assert [e["seq"] for e in both["ro-a"]] == [1, 2, 3]
    assert [e["kind"] for e in both["ro-b"]] == ["started", "rolled_back"] and both["ro-c"] == []
    assert all(e["detail"] == {"by": "ro-b"} for e in both["ro-b"])
    assert store.serving.events("ro-a") == both["ro-a"] and store.serving.events_for([]) == {}
    store.close()


def test_resource_samples_keep_the_no_gpu_reason(tmp_home: Path) -> None:
    store = get_store()
    base = {"node_id": "n1", "hostname": "h", "cpu_percent": 1.0, "memory_percent": 2.0, "memory_used": 3,
            "disk_percent": 4.0, "net_sent": 5, "net_recv": 6}  # fmt: skip
    gpu = {
        "index": 0,
        "name": "A10",
        "utilization": 50.0,
        "memory_used": 1,
        "memory_total": 2,
        "temperature": 60.0,
    }
    store.monitoring.add_samples([{**base, "ts": "2026-01-01T00:00:00", "gpus": [], "gpu_note": "no GPU: NVML x"},
                                  {**base, "node_id": "n2", "ts": "2026-01-01T00:00:00", "gpus": [gpu]}])  # fmt: skip
    rows = {r["node_id"]: r for r in store.monitoring.latest_samples()}
    assert rows["n1"]["gpus"] == [] and rows["n1"]["gpu_note"] == "no GPU: NVML x"
    assert rows["n2"]["gpus"] == [gpu] and rows["n2"]["gpu_note"] is None
    assert store.monitoring.samples(node_id="n1")[0]["gpu_note"] == "no GPU: NVML x"
