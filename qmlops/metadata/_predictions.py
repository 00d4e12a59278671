"""The prediction log. Written only in batches (one Arrow insert per call), never row by row."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import pyarrow as pa

from qmlops.exceptions import ValidationError
from qmlops.metadata._db import Database

__all__ = ["PredictionRepository", "PREDICTION_SCHEMA"]

PREDICTION_SCHEMA = pa.schema(
    [
        ("request_id", pa.string()),
        ("ts", pa.timestamp("us")),
        ("model_name", pa.string()),
        ("model_version", pa.int32()),
        ("variant", pa.string()),
        ("inputs", pa.string()),
        ("input_hash", pa.string()),
        ("output", pa.float64()),
        ("latency_ms", pa.float64()),
        ("status", pa.string()),
    ]
)
_REQUIRED = ("request_id", "ts", "model_name", "status")


def _to_arrow(rows: pa.Table | Sequence[Mapping[str, Any]]) -> pa.Table:
    if isinstance(rows, pa.Table):
        table = rows
    else:
        table = pa.Table.from_pylist([dict(r) for r in rows])
    unknown = set(table.column_names) - set(PREDICTION_SCHEMA.names)
    if unknown:
        raise ValidationError(f"unknown prediction columns {sorted(unknown)}", field="rows")
    missing = [c for c in _REQUIRED if c not in table.column_names]
    if missing and table.num_rows:
        raise ValidationError(f"missing required prediction columns {missing}", field="rows")
    arrays = []
    for f in PREDICTION_SCHEMA:
        arrays.append(
            table[f.name].cast(f.type) if f.name in table.column_names else pa.nulls(table.num_rows, f.type)
        )
    return pa.Table.from_arrays(arrays, schema=PREDICTION_SCHEMA)


class PredictionRepository:
    def __init__(self, db: Database) -> None:
        self._db = db

    def append(self, rows: pa.Table | Sequence[Mapping[str, Any]]) -> int:
        """Append a batch in one transaction; returns how many rows were written."""
        return self._db.append_arrow("predictions", _to_arrow(rows))

    def count(self, model_name: str | None = None) -> int:
        if model_name is None:
            row = self._db.query_one("SELECT count(*) AS n FROM predictions")
        else:
            row = self._db.query_one(
                "SELECT count(*) AS n FROM predictions WHERE model_name = ?", [model_name]
            )
        return int(row["n"]) if row else 0

    def request_ids(self, model_name: str | None = None) -> list[str]:
        if model_name is None:
            rows = self._db.query("SELECT request_id FROM predictions")
        else:
            rows = self._db.query("SELECT request_id FROM predictions WHERE model_name = ?", [model_name])
        return [r["request_id"] for r in rows]
