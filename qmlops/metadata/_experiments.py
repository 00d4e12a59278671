"""Experiments, their exposures and business events, and stored global explanations of model versions."""

from __future__ import annotations

import builtins
import uuid
from datetime import datetime
from typing import Any

from qmlops.exceptions import ConflictError
from qmlops.metadata._db import Database, dumps, iso, loads, utcnow

__all__ = ["ExperimentRepository"]


def _ts(value: Any) -> datetime:
    if isinstance(value, datetime):
        return value
    if isinstance(value, int | float):
        return datetime.utcfromtimestamp(float(value))
    return datetime.fromisoformat(str(value).removesuffix("Z"))


def _experiment(row: dict[str, Any]) -> dict[str, Any]:
    out = dict(row)
    for key in ("variants", "targeting", "metrics", "buckets"):
        out[key] = loads(row.get(key))
    for key in ("start_at", "stop_at", "created_at"):
        out[key] = iso(row[key])
    return out


class ExperimentRepository:
    def __init__(self, db: Database) -> None:
        self._db = db

    def create(self, exp: dict[str, Any]) -> dict[str, Any]:
        if self._db.query_one("SELECT id FROM experiments WHERE name = ?", [exp["name"]]) is not None:
            raise ConflictError(f"an experiment named {exp['name']!r} exists", field="name")
        exp_id = "ex-" + uuid.uuid4().hex[:12]
        self._db.execute("INSERT INTO experiments (id, name, model, layer, salt, variants, targeting, metrics, traffic, "
                         "state, start_at, stop_at, created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, 'draft', ?, ?, ?)",
                         [exp_id, exp["name"], exp["model"], exp["layer"], exp["salt"], dumps(exp["variants"]),
                          dumps(exp.get("targeting")), dumps(exp["metrics"]), float(exp["traffic"]),
                          _ts(exp["start_at"]) if exp.get("start_at") else None,
                          _ts(exp["stop_at"]) if exp.get("stop_at") else None, utcnow()])  # fmt: skip
        return self.get(exp_id)

    def get(self, ref: str) -> dict[str, Any]:
        row = self._db.query_required(
            "SELECT * FROM experiments WHERE id = ? OR name = ?",
            [ref, ref],
            missing=f"no experiment {ref!r}",
            field="experiment",
        )
        return _experiment(row)

    def list(self, *, state: str | None = None) -> builtins.list[dict[str, Any]]:
        if state:
            rows = self._db.query("SELECT * FROM experiments WHERE state = ? ORDER BY created_at", [state])
        else:
            rows = self._db.query("SELECT * FROM experiments ORDER BY created_at")
        return [_experiment(r) for r in rows]

    def set_state(self, exp_id: str, state: str, **times: Any) -> dict[str, Any]:
        self.get(exp_id)
        sets: list[str] = ["state = ?"]
        params: list[Any] = [state]
        for key in ("start_at", "stop_at"):
            if key in times:
                sets.append(f"{key} = ?")
                params.append(_ts(times[key]) if times[key] is not None else None)
        if "buckets" in times:
            sets.append("buckets = ?")
            params.append(dumps(times["buckets"]))
        self._db.execute(f"UPDATE experiments SET {', '.join(sets)} WHERE id = ?", [*params, exp_id])
        return self.get(exp_id)

    def add_exposures(self, rows: builtins.list[tuple[str, str, str, str, float]]) -> int:
        with self._db.transaction():
            for exp_id, unit, variant, request_id, ts in rows:
                self._db.execute(
                    "INSERT INTO exposures VALUES (?, ?, ?, ?, ?)",
                    [exp_id, unit, variant, request_id, _ts(ts)],
                )
        return len(rows)

    def add_events(self, rows: builtins.list[tuple[str, str, str, float, Any]]) -> int:
        with self._db.transaction():
            for exp_id, unit, name, value, ts in rows:
                self._db.execute("INSERT INTO experiment_events VALUES (?, ?, ?, ?, ?)",
                                 [exp_id, unit, name, float(value), _ts(ts) if ts is not None else utcnow()])  # fmt: skip
        return len(rows)

    def units(self, exp_id: str) -> builtins.list[dict[str, Any]]:
        """One row per exposed unit: its variant (first exposure) and first exposure time."""
        return self._db.query(
            "SELECT unit_id, arg_min(variant, ts) AS variant, min(ts) AS first_ts, count(*) AS exposures "
            "FROM exposures WHERE experiment_id = ? GROUP BY unit_id", [exp_id])  # fmt: skip

    def assignment_timeline(self, exp_id: str, *, bucket_s: float = 60.0) -> builtins.list[dict[str, Any]]:
        """Units newly assigned per variant and time bucket (``t``: the bucket's start, UNIX seconds), oldest
        first; a unit counts once, in the variant and bucket of its first exposure (as :meth:`units`)."""
        bucket = float(bucket_s)
        return self._db.query(
            f"""SELECT variant, CAST(floor(epoch(first_ts) / {bucket!r}) * {bucket!r} AS DOUBLE) AS t,
                       count(*) AS units
                FROM (SELECT unit_id, arg_min(variant, ts) AS variant, min(ts) AS first_ts FROM exposures
                      WHERE experiment_id = ? GROUP BY unit_id)
                GROUP BY 1, 2 ORDER BY 2, 1""", [exp_id])  # fmt: skip

    def unit_events(self, exp_id: str) -> builtins.list[dict[str, Any]]:
        """Per unit and event name: count and sum of values, only events at or after the unit's first exposure."""
        return self._db.query(
            """SELECT e.unit_id, e.name, count(*) AS n, sum(e.value) AS total, min(e.ts) AS first_ts
               FROM experiment_events e JOIN (SELECT unit_id, min(ts) AS first_ts FROM exposures
                                              WHERE experiment_id = ? GROUP BY unit_id) x USING (unit_id)
               WHERE e.experiment_id = ? AND e.ts >= x.first_ts GROUP BY e.unit_id, e.name""", [exp_id, exp_id])  # fmt: skip

    # -- explanations -------------------------------------------------------------------------------------
    def put_explanation(self, model_version: str, method: str, base_value: float, importance: dict[str, float],
                        families: builtins.list[dict[str, Any]] | None, rows: int, report_uri: str | None) -> None:  # fmt: skip
        with self._db.transaction():
            self._db.execute("DELETE FROM model_explanations WHERE model_version = ?", [model_version])
            self._db.execute("INSERT INTO model_explanations VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                             [model_version, method, float(base_value), dumps(importance), dumps(families), int(rows),
                              report_uri, utcnow()])  # fmt: skip

    def get_explanation(self, model_version: str) -> dict[str, Any] | None:
        row = self._db.query_one("SELECT * FROM model_explanations WHERE model_version = ?", [model_version])
        if row is None:
            return None
        importance = dict(
            sorted(loads(row["importance"]).items(), key=lambda kv: -kv[1])
        )  # stored key-sorted
        return {**row, "importance": importance, "families": loads(row["families"]),
                "created_at": iso(row["created_at"])}  # fmt: skip
