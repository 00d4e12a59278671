"""Backup, restore and check of the metadata store (``qmlops admin ...``).

A backup is a copy of the DuckDB file taken by the store's writer (the metadata actor on a cluster) between a
checkpoint and the next statement, so it is consistent while the platform runs. A restore writes a fresh home's
file only: it refuses to overwrite an existing store or one a running actor owns. A check reports the schema
version, each table's row count, and every registered artifact's checksum against its file.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Any

import duckdb

from qmlops import storage
from qmlops.config import Settings, get_settings
from qmlops.exceptions import ConflictError, IntegrityError, NotFoundError, UnavailableError
from qmlops.metadata._db import Database
from qmlops.metadata._endpoint import read_endpoint
from qmlops.metadata._store import get_store, open_local

__all__ = ["backup_store", "restore_store", "check_store"]


def _absolute(uri: str) -> str:
    return uri if "://" in uri else str(Path(uri).expanduser().absolute())


def backup_store(dest: str, store: Any = None) -> dict[str, Any]:
    """Copy the store to ``dest`` (a local path or a ``pyarrow.fs`` URI) as of one moment."""
    store = store if store is not None else get_store()
    return dict(store.admin.backup(_absolute(dest)))


def restore_store(src: str, settings: Settings | None = None) -> dict[str, Any]:
    """Make ``src`` (a backup) this home's metadata store. Refuses to overwrite anything."""
    settings = settings or get_settings()
    src = _absolute(src)
    target = Path(settings.metadata_path)
    if read_endpoint(settings.home) is not None and _endpoint_alive(settings):
        raise UnavailableError(
            f"a metadata actor is serving {settings.home}; restore into a fresh QMLOPS_HOME (or stop the cluster "
            "that owns this one first)",
            field="QMLOPS_HOME",
        )
    for existing in (target, Path(f"{target}.wal")):
        if existing.exists():
            raise ConflictError(
                f"{existing} exists; restore only into a fresh home (set QMLOPS_HOME to a new directory, or move "
                "the current store away): nothing was overwritten",
                field="QMLOPS_HOME",
            )
    if not storage.exists(src):
        raise NotFoundError(f"no backup at {src}", field="src")
    tmp = f"{target}.restore-{os.getpid()}"
    try:
        size, digest = storage.download_file(src, tmp)
        try:
            Database(tmp, read_only=True).close()  # a damaged file or a newer schema stops here
        except duckdb.Error as exc:
            raise IntegrityError(
                f"the backup at {src} is not a readable metadata store ({str(exc).splitlines()[0][:200]}); "
                "nothing was written",
                field="src",
            ) from None
        os.replace(tmp, target)
    finally:
        Path(tmp).unlink(missing_ok=True)
    info = open_local(str(target)).admin.describe()
    return {**info, "src": src, "bytes": size, "sha256": digest}


def _endpoint_alive(settings: Settings) -> bool:
    from qmlops.metadata._store import _open_endpoint

    return _open_endpoint(settings) is not None


def check_store(store: Any = None) -> dict[str, Any]:
    """Schema version, row counts, and each registry artifact's file against its recorded sha256 and size."""
    store = store if store is not None else get_store()
    info = dict(store.admin.describe())
    problems: list[str] = []
    if info["schema_version"] != info["newest_schema_version"]:
        problems.append(
            f"schema version {info['schema_version']}, this qmlops expects {info['newest_schema_version']}"
        )
    artifacts = store.admin.artifacts()
    checked = 0
    for a in artifacts:
        label = f"{a['name']} v{a['version']} ({a['id']})"
        if not storage.exists(a["uri"]):
            problems.append(f"{label}: artifact missing at {a['uri']}")
            continue
        data = storage.read_bytes(a["uri"])
        if hashlib.sha256(data).hexdigest() != a["sha256"] or len(data) != a["bytes"]:
            problems.append(f"{label}: artifact {a['uri']} does not match its recorded sha256/size")
            continue
        checked += 1
    return {**info, "artifacts": len(artifacts), "artifacts_ok": checked, "problems": problems,
            "ok": not problems}  # fmt: skip
