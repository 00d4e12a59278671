"""The store about itself: a consistent copy of the DuckDB file, per-table row counts, each table's rows.

Served like any repository (``store.admin``), so on a cluster the copy is taken by the single writer while it
holds the connection: no statement runs between the checkpoint and the end of the copy, so the copy is the
database as of one moment, with the WAL folded in.
"""

from __future__ import annotations

from typing import Any

import pyarrow as pa

from qmlops import storage
from qmlops.exceptions import NotFoundError
from qmlops.metadata._db import MIGRATIONS, Database

__all__ = ["AdminRepository"]


class AdminRepository:
    def __init__(self, db: Database) -> None:
        self.db = db

    def tables(self) -> list[str]:
        rows = self.db.query(
            "SELECT table_name FROM information_schema.tables WHERE table_schema = 'main' "
            "AND table_type = 'BASE TABLE' ORDER BY table_name"
        )
        return [str(r["table_name"]) for r in rows]

    def table_counts(self) -> dict[str, int]:
        out = {}
        for name in self.tables():  # identifiers from the catalogue, never from input
            row = self.db.query_one(f'SELECT count(*) AS n FROM "{name}"')
            out[name] = int(row["n"]) if row else 0
        return out

    def table(self, name: str) -> pa.Table:
        """Every row of one table (``name`` must be one of :meth:`tables`)."""
        if name not in self.tables():
            raise NotFoundError(f"no table {name!r} in the metadata store", field="table")
        return self.db.query_arrow(f'SELECT * FROM "{name}"')

    def describe(self) -> dict[str, Any]:
        return {
            "path": self.db.path,
            "schema_version": self.db.schema_version(),
            "newest_schema_version": MIGRATIONS[-1][0],
            "tables": self.table_counts(),
        }

    def backup(self, dest: str) -> dict[str, Any]:
        """Copy the database file to ``dest`` (a local path or a ``pyarrow.fs`` URI) as of one moment."""
        with self.db.locked():
            self.db.execute("CHECKPOINT")
            info = self.describe()
            size, digest = storage.upload_file(self.db.path, dest)
        return {**info, "dest": dest, "bytes": size, "sha256": digest}

    def artifacts(self) -> list[dict[str, Any]]:
        """Each registered version's artifact: where it is and the checksum and size recorded for it."""
        return self.db.query(
            "SELECT id, name, version, artifact_sha256 AS sha256, artifact_uri AS uri, artifact_bytes AS bytes "
            "FROM model_versions ORDER BY name, version"
        )
