"""Feature sets, their materialisations (one per dataset version and set) and per-feature statistics."""

from __future__ import annotations

import builtins
from dataclasses import asdict, dataclass, field
from datetime import date, datetime
from typing import Any

from qmlops.exceptions import ConflictError, NotFoundError
from qmlops.metadata._db import Database, dumps, loads, utcnow

__all__ = ["FeatureSetRecord", "MaterializationRecord", "FeatureStat", "FeatureRepository"]


@dataclass(frozen=True)
class FeatureSetRecord:
    id: str
    name: str
    definition: dict[str, Any]
    feature_names: list[str]
    label_names: list[str]
    created_at: datetime | None = None

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["created_at"] = self.created_at.isoformat() if self.created_at else None
        out["n_features"] = len(self.feature_names)
        return out


@dataclass(frozen=True)
class MaterializationRecord:
    id: str
    dataset_id: str
    feature_set_id: str
    status: str
    engine: str
    uri: str | None = None
    n_rows: int | None = None
    n_instruments: int | None = None
    start_date: date | None = None
    end_date: date | None = None
    compute_seconds: float | None = None
    computations: int = 0
    error: str | None = None
    created_at: datetime | None = None
    completed_at: datetime | None = None

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        for key in ("start_date", "end_date", "created_at", "completed_at"):
            out[key] = out[key].isoformat() if out[key] is not None else None
        return out


@dataclass(frozen=True)
class FeatureStat:
    feature: str
    position: int
    dtype: str
    null_ratio: float
    mean: float | None
    std: float | None
    bin_edges: list[float] = field(default_factory=list)
    bin_counts: list[int] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class FeatureRepository:
    def __init__(self, db: Database) -> None:
        self._db = db

    # -- feature sets -------------------------------------------------------------------------------------
    def register_set(self, record: FeatureSetRecord) -> FeatureSetRecord:
        """Store a feature set definition once per content hash (its id); returns the stored record."""
        self._db.execute(
            "INSERT INTO feature_sets VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (id) DO NOTHING",
            [record.id, record.name, dumps(record.definition), dumps(record.feature_names),
             dumps(record.label_names), record.created_at or utcnow()],
        )  # fmt: skip
        return self.get_set(record.id)

    def get_set(self, set_id: str) -> FeatureSetRecord:
        row = self._db.query_required(
            "SELECT * FROM feature_sets WHERE id = ?",
            [set_id],
            missing=f"no feature set {set_id!r}",
            field="feature_set",
        )
        return _set(row)

    def list_sets(self) -> list[FeatureSetRecord]:
        return [_set(r) for r in self._db.query("SELECT * FROM feature_sets ORDER BY created_at, id")]

    # -- materialisations ---------------------------------------------------------------------------------
    def find(self, dataset_id: str, feature_set_id: str) -> MaterializationRecord | None:
        row = self._db.query_one(
            "SELECT * FROM feature_materializations WHERE dataset_id = ? AND feature_set_id = ?",
            [dataset_id, feature_set_id],
        )
        return None if row is None else MaterializationRecord(**row)

    def get(self, mat_id: str) -> MaterializationRecord:
        row = self._db.query_one("SELECT * FROM feature_materializations WHERE id = ?", [mat_id])
        if row is None:
            rows = self._db.query(
                "SELECT * FROM feature_materializations WHERE starts_with(id, ?) LIMIT 2", [mat_id]
            )
            if len(rows) != 1:
                raise NotFoundError(f"no feature materialisation {mat_id!r}", field="materialization")
            row = rows[0]
        return MaterializationRecord(**row)

    def list(self, dataset_id: str | None = None, limit: int = 100) -> list[MaterializationRecord]:
        if dataset_id is None:
            rows = self._db.query(
                "SELECT * FROM feature_materializations ORDER BY created_at DESC, id LIMIT ?", [limit]
            )
        else:
            rows = self._db.query(
                "SELECT * FROM feature_materializations WHERE dataset_id = ? ORDER BY created_at DESC LIMIT ?",
                [dataset_id, limit],
            )
        return [MaterializationRecord(**r) for r in rows]

    def start(self, mat_id: str, dataset_id: str, feature_set_id: str, engine: str) -> MaterializationRecord:
        """Mark a materialisation as building (new, or a retry of a failed one) and count the computation."""
        with self._db.transaction():
            row = self._db.query_one("SELECT status FROM feature_materializations WHERE id = ?", [mat_id])
            if row is None:
                self._db.execute(
                    "INSERT INTO feature_materializations (id, dataset_id, feature_set_id, status, engine,"
                    " computations, created_at) VALUES (?, ?, ?, 'building', ?, 1, ?)",
                    [mat_id, dataset_id, feature_set_id, engine, utcnow()],
                )
            elif row["status"] == "complete":
                raise ConflictError(f"materialisation {mat_id} is already complete", field="materialization")
            else:
                self._db.execute(
                    "UPDATE feature_materializations SET status = 'building', engine = ?, error = NULL,"
                    " computations = computations + 1 WHERE id = ?",
                    [engine, mat_id],
                )
        return self.get(mat_id)

    def complete(
        self,
        mat_id: str,
        *,
        uri: str,
        n_rows: int,
        n_instruments: int,
        start_date: date,
        end_date: date,
        compute_seconds: float,
        stats: builtins.list[FeatureStat],
    ) -> MaterializationRecord:
        """Record the statistics and mark complete, in one transaction (the files already exist)."""
        with self._db.transaction():
            self._db.execute("DELETE FROM feature_stats WHERE materialization_id = ?", [mat_id])
            for s in stats:
                self._db.execute(
                    "INSERT INTO feature_stats VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    [mat_id, s.feature, s.position, s.dtype, s.null_ratio, s.mean, s.std, dumps(s.bin_edges),
                     dumps(s.bin_counts)],
                )  # fmt: skip
            self._db.execute(
                "UPDATE feature_materializations SET status = 'complete', uri = ?, n_rows = ?, n_instruments = ?,"
                " start_date = ?, end_date = ?, compute_seconds = ?, completed_at = ? WHERE id = ?",
                [uri, n_rows, n_instruments, start_date, end_date, compute_seconds, utcnow(), mat_id],
            )
        return self.get(mat_id)

    def fail(self, mat_id: str, error: str) -> MaterializationRecord:
        self._db.execute(
            "UPDATE feature_materializations SET status = 'failed', error = ?, uri = NULL WHERE id = ?",
            [error[:2000], mat_id],
        )
        return self.get(mat_id)

    def stats(self, mat_id: str) -> builtins.list[FeatureStat]:
        rows = self._db.query(
            "SELECT * FROM feature_stats WHERE materialization_id = ? ORDER BY position", [mat_id]
        )
        return [
            FeatureStat(
                r["feature"],
                r["position"],
                r["dtype"],
                r["null_ratio"],
                r["mean"],
                r["std"],
                loads(r["bin_edges"]) or [],
                loads(r["bin_counts"]) or [],
            )  # fmt: skip
            for r in rows
        ]


def _set(row: dict[str, Any]) -> FeatureSetRecord:
    return FeatureSetRecord(
        id=row["id"],
        name=row["name"],
        definition=loads(row["definition"]),
        feature_names=loads(row["feature_names"]),
        label_names=loads(row["label_names"]),
        created_at=row["created_at"],
    )
