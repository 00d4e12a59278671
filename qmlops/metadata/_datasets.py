"""Dataset versions: one row per distinct content hash."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from datetime import date, datetime
from typing import Any

from qmlops.exceptions import NotFoundError
from qmlops.metadata._db import Database, dumps, loads, utcnow

__all__ = ["DatasetRecord", "DatasetRepository"]


@dataclass(frozen=True)
class DatasetRecord:
    id: str
    name: str
    source: str
    content_hash: str
    uri: str
    n_rows: int
    n_instruments: int
    start_date: date | None
    end_date: date | None
    columns: list[str]
    n_quarantined: int = 0
    quarantine_uri: str | None = None
    parent_id: str | None = None
    diff: dict[str, Any] | None = None
    config: dict[str, Any] = field(default_factory=dict)
    created_at: datetime | None = None
    created_by: str | None = None

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        for key in ("start_date", "end_date", "created_at"):
            if out[key] is not None:
                out[key] = out[key].isoformat()
        return out


_COLUMNS = [
    "id", "name", "source", "content_hash", "uri", "n_rows", "n_instruments", "start_date", "end_date",
    "columns", "n_quarantined", "quarantine_uri", "parent_id", "diff", "config", "created_at", "created_by",
]  # fmt: skip


def _from_row(row: dict[str, Any]) -> DatasetRecord:
    row = dict(row)
    for key in ("columns", "diff", "config"):
        row[key] = loads(row[key])
    row["config"] = row["config"] or {}
    return DatasetRecord(**row)


class DatasetRepository:
    """Stores and finds dataset versions. Versions are immutable once added."""

    def __init__(self, db: Database) -> None:
        self._db = db

    def add(self, record: DatasetRecord) -> DatasetRecord:
        """Insert ``record``; if its content hash is already stored, return the stored version unchanged."""
        with self._db.transaction():
            existing = self._db.query_one(
                "SELECT * FROM datasets WHERE content_hash = ?", [record.content_hash]
            )
            if existing is not None:
                return _from_row(existing)
            values = asdict(record)
            values["created_at"] = values["created_at"] or utcnow()
            for key in ("columns", "diff", "config"):
                values[key] = dumps(values[key])
            placeholders = ", ".join("?" for _ in _COLUMNS)
            self._db.execute(
                f"INSERT INTO datasets ({', '.join(_COLUMNS)}) VALUES ({placeholders})",
                [values[c] for c in _COLUMNS],
            )
        return self.get(record.id)

    def get(self, dataset_id: str) -> DatasetRecord:
        row = self._db.query_required(
            "SELECT * FROM datasets WHERE id = ?",
            [dataset_id],
            missing=f"no dataset version {dataset_id!r}",
            field="dataset",
        )
        return _from_row(row)

    def find_by_hash(self, content_hash: str) -> DatasetRecord | None:
        row = self._db.query_one("SELECT * FROM datasets WHERE content_hash = ?", [content_hash])
        return None if row is None else _from_row(row)

    def latest(self, name: str) -> DatasetRecord | None:
        row = self._db.query_one(
            "SELECT * FROM datasets WHERE name = ? ORDER BY created_at DESC, id LIMIT 1", [name]
        )
        return None if row is None else _from_row(row)

    def list(self, name: str | None = None, limit: int = 100, offset: int = 0) -> list[DatasetRecord]:
        if name is None:
            rows = self._db.query(
                "SELECT * FROM datasets ORDER BY created_at DESC, id LIMIT ? OFFSET ?", [limit, offset]
            )
        else:
            rows = self._db.query(
                "SELECT * FROM datasets WHERE name = ? ORDER BY created_at DESC, id LIMIT ? OFFSET ?",
                [name, limit, offset],
            )
        return [_from_row(r) for r in rows]

    def resolve(self, ref: str) -> DatasetRecord:
        """Find a version by id, by unique id prefix, or by name (its latest version)."""
        row = self._db.query_one("SELECT * FROM datasets WHERE id = ?", [ref])
        if row is not None:
            return _from_row(row)
        latest = self.latest(ref)
        if latest is not None:
            return latest
        rows = self._db.query("SELECT * FROM datasets WHERE starts_with(id, ?) LIMIT 2", [ref])
        if len(rows) == 1:
            return _from_row(rows[0])
        if len(rows) > 1:
            raise NotFoundError(
                f"dataset reference {ref!r} is ambiguous; give more of the id", field="dataset"
            )
        raise NotFoundError(f"no dataset version or name {ref!r}", field="dataset")
