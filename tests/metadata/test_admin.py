"""``qmlops admin backup | restore | check``: a consistent copy taken while the metadata actor owns the file
(to a ``pyarrow.fs`` URI), restored into a fresh home by another process and read back table by table; a damaged
store, a damaged backup and a tampered artifact each get one clear line, and nothing is overwritten."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from typer.testing import CliRunner

REPO = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent


def _qmlops(home: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("QMLOPS_", "RAY_ADDRESS"))}
    env.update(QMLOPS_HOME=str(home), PYTHONPATH=str(REPO))
    return subprocess.run([str(BIN / "qmlops"), *args], env=env, capture_output=True, text=True, timeout=300)


def _rows(table: Any) -> list[str]:
    return sorted(json.dumps(r, sort_keys=True, default=str) for r in table.to_pylist())


def test_backup_beside_the_actor_restore_into_a_fresh_home(ray_home: Path, tmp_path: Path) -> None:
    from sklearn.linear_model import Ridge

    from qmlops.cli import app
    from qmlops.data import ingest
    from qmlops.metadata import MetadataStore, get_store
    from qmlops.registry import ModelRegistry

    store = get_store()
    assert store.is_remote
    ingest("bokeh5", store=store)
    x = pd.DataFrame(np.random.default_rng(0).normal(size=(200, 3)), columns=["a", "b", "c"])
    model = Ridge().fit(x, x["a"] * 0.5)
    rec = ModelRegistry(store).register("backup-me", model, signature=x, metrics={"test_ic": 0.1})
    original = {name: store.admin.table(name) for name in store.admin.tables()}
    assert sum(t.num_rows for t in original.values()) > 10

    dest = f"file://{tmp_path}/backups/meta.duckdb"
    result = CliRunner().invoke(app, ["admin", "backup", dest, "--json"])
    assert result.exit_code == 0, result.output
    info = json.loads(result.output)
    assert info["tables"]["model_versions"] == 1 and info["bytes"] > 0

    fresh = tmp_path / "fresh-home"
    restored = _qmlops(fresh, "admin", "restore", dest, "--json")
    assert restored.returncode == 0, restored.stderr
    assert json.loads(restored.stdout)["tables"] == info["tables"]
    check = _qmlops(fresh, "admin", "check", "--json")
    assert check.returncode == 0, check.stderr
    report = json.loads(check.stdout)
    assert report["ok"] and report["artifacts_ok"] == report["artifacts"] == 1

    copy = MetadataStore(str(fresh / "metadata.duckdb"))
    try:
        assert copy.admin.tables() == sorted(original)
        for name, table in original.items():  # every table reads back row for row
            assert _rows(copy.admin.table(name)) == _rows(table), name
    finally:
        copy.close()

    # Restoring over an existing store is refused and changes nothing.
    before = (fresh / "metadata.duckdb").read_bytes()
    again = _qmlops(fresh, "admin", "restore", dest)
    assert again.returncode == 4 and "nothing was overwritten" in again.stderr
    assert (fresh / "metadata.duckdb").read_bytes() == before

    # A tampered artifact fails the check, naming the version.
    Path(rec.artifact_uri).write_bytes(b"tampered")
    bad = _qmlops(fresh, "admin", "check")
    assert bad.returncode == 7 and "backup-me v1" in bad.stderr and "Traceback" not in bad.stderr


def test_damaged_store_and_damaged_backup_get_one_line_and_stay_as_they_are(tmp_path: Path) -> None:
    home = tmp_path / "damaged"
    home.mkdir()
    (home / "metadata.duckdb").write_bytes(b"not a database" * 100)
    result = _qmlops(home, "data", "versions")
    assert result.returncode == 7 and "admin restore" in result.stderr and "Traceback" not in result.stderr
    assert (home / "metadata.duckdb").read_bytes() == b"not a database" * 100

    backup = tmp_path / "broken.duckdb"
    backup.write_bytes(b"\0" * 4096)
    fresh = tmp_path / "fresh"
    result = _qmlops(fresh, "admin", "restore", str(backup))
    assert result.returncode == 7 and "not a readable metadata store" in result.stderr
    assert not (fresh / "metadata.duckdb").exists()
