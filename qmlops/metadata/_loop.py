"""The daily loop's tables: loops, stages done per day, universe predictions, matured metrics, decisions."""

from __future__ import annotations

import builtins
import uuid
from collections.abc import Sequence
from datetime import date
from typing import Any

import pyarrow as pa

from qmlops.exceptions import ConflictError
from qmlops.metadata._db import Database, dumps, iso, loads, utcnow

__all__ = ["LoopRepository", "LOOP_STAGES"]

LOOP_STAGES = ("ingest", "features", "score", "mature", "watch", "retrain", "verdict")
_LOOP_STATES = ("running", "stopping", "stopped", "finished", "failed")


def _loop_row(row: dict[str, Any]) -> dict[str, Any]:
    out = dict(row)
    out["policy"] = loads(out["policy"])
    out["last_day"] = out["last_day"].isoformat() if out.get("last_day") else None
    for key in ("created_at", "updated_at"):
        out[key] = iso(out[key])
    return out


class LoopRepository:
    def __init__(self, db: Database) -> None:
        self._db = db

    # -- loops --------------------------------------------------------------------------------------
    def create(self, loop_id: str, *, dataset: str, source: str | None, mode: str, policy: dict[str, Any],
               model: str) -> dict[str, Any]:  # fmt: skip
        """Record a new loop, or return the stored one when its policy, source and mode are the same (a resume).

        Raises :class:`ConflictError` when a loop of that name exists with another policy, source or mode.
        """
        with self._db.transaction():
            row = self._db.query_one("SELECT * FROM loops WHERE id = ?", [loop_id])
            if row is not None:
                stored = _loop_row(row)
                if (
                    stored["policy"] != loads(dumps(policy))
                    or stored["source"] != source
                    or stored["mode"] != mode
                ):
                    raise ConflictError(
                        f"loop {loop_id!r} exists with another policy, source or mode; pick another --name",
                        field="name",
                    )
                return stored
            now = utcnow()
            self._db.execute(
                "INSERT INTO loops VALUES (?, ?, ?, ?, ?, ?, 'running', NULL, NULL, NULL, ?, ?)",
                [loop_id, dataset, source, mode, dumps(policy), model, now, now],
            )
        return self.get(loop_id)

    def get(self, loop_id: str) -> dict[str, Any]:
        row = self._db.query_required(
            "SELECT * FROM loops WHERE id = ?", [loop_id], missing=f"no loop {loop_id!r}", field="loop"
        )
        return _loop_row(row)

    def list(self, limit: int = 50) -> builtins.list[dict[str, Any]]:
        rows = self._db.query("SELECT * FROM loops ORDER BY updated_at DESC LIMIT ?", [limit])
        return [_loop_row(r) for r in rows]

    def update(self, loop_id: str, **fields: Any) -> dict[str, Any]:
        allowed = {"state", "production", "last_day", "error"}
        unknown = set(fields) - allowed
        if unknown:
            raise ValueError(f"cannot update {sorted(unknown)}")
        if "state" in fields and fields["state"] not in _LOOP_STATES:
            raise ValueError(f"unknown loop state {fields['state']!r}")
        sets = ", ".join(f"{k} = ?" for k in fields)
        self._db.execute(
            f"UPDATE loops SET {sets}{', ' if sets else ''}updated_at = ? WHERE id = ?",
            [*fields.values(), utcnow(), loop_id],
        )
        return self.get(loop_id)

    # -- stages ---------------------------------------------------------------------------------------
    def stages_done(self, loop_id: str, day: date) -> dict[str, dict[str, Any]]:
        rows = self._db.query(
            "SELECT stage, details, seconds FROM loop_steps WHERE loop_id = ? AND day = ?", [loop_id, day]
        )
        return {r["stage"]: {"details": loads(r["details"]), "seconds": r["seconds"]} for r in rows}

    def finish_stage(
        self, loop_id: str, day: date, stage: str, details: dict[str, Any], seconds: float
    ) -> None:
        self._db.execute(
            "INSERT OR IGNORE INTO loop_steps VALUES (?, ?, ?, 'done', ?, ?, ?)",
            [loop_id, day, stage, dumps(details), seconds, utcnow()],
        )

    def steps(self, loop_id: str) -> builtins.list[dict[str, Any]]:
        rows = self._db.query(
            "SELECT day, stage, details, seconds, ts FROM loop_steps WHERE loop_id = ? ORDER BY day, ts",
            [loop_id],
        )
        return [{"day": r["day"].isoformat(), "stage": r["stage"], "details": loads(r["details"]),
                 "seconds": r["seconds"], "ts": iso(r["ts"])} for r in rows]  # fmt: skip

    # -- predictions and metrics ----------------------------------------------------------------------
    def add_predictions(self, loop_id: str, day: date, model_version: str, role: str,
                        instruments: Sequence[str], scores: Sequence[float]) -> int:  # fmt: skip
        """One row per (day, instrument, version); rows already stored are kept (a repeated day adds none)."""
        n = len(instruments)
        table = pa.table({"loop_id": [loop_id] * n, "day": pa.array([day] * n, pa.date32()),
                          "instrument": list(instruments), "model_version": [model_version] * n,
                          "role": [role] * n, "score": pa.array(scores, pa.float64())})  # fmt: skip
        return self._db.append_arrow("loop_predictions", table, ignore_duplicates=True)

    def predictions(self, loop_id: str, day: date | None = None) -> builtins.list[dict[str, Any]]:
        where, params = "WHERE loop_id = ?", list[Any]([loop_id])
        if day is not None:
            where += " AND day = ?"
            params.append(day)
        rows = self._db.query(
            f"SELECT day, instrument, model_version, role, score FROM loop_predictions {where} "
            "ORDER BY day, model_version, instrument",
            params,
        )
        return [{**r, "day": r["day"].isoformat()} for r in rows]

    def prediction_counts(self, loop_id: str) -> builtins.list[dict[str, Any]]:
        """(day, instrument, model_version) keys stored more than once, and rows per day (the exactly-once check)."""
        return self._db.query(
            "SELECT day, count(*) AS n, count(DISTINCT (instrument, model_version)) AS distinct_keys "
            "FROM loop_predictions WHERE loop_id = ? GROUP BY day ORDER BY day",
            [loop_id],
        )

    def add_metrics(self, loop_id: str, day: date, rows: Sequence[dict[str, Any]]) -> None:
        for r in rows:
            self._db.execute(
                "INSERT OR IGNORE INTO loop_metrics VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                [loop_id, day, r["model_version"], r["role"], r.get("ic"), r.get("rank_ic"), r.get("long_short"),
                 int(r["n"])],
            )  # fmt: skip

    def metrics(self, loop_id: str, model_version: str | None = None) -> builtins.list[dict[str, Any]]:
        where, params = "WHERE loop_id = ?", list[Any]([loop_id])
        if model_version is not None:
            where += " AND model_version = ?"
            params.append(model_version)
        rows = self._db.query(
            f"SELECT day, model_version, role, ic, rank_ic, long_short, n FROM loop_metrics {where} "
            "ORDER BY day, model_version",
            params,
        )
        return [{**r, "day": r["day"].isoformat()} for r in rows]

    # -- decisions ------------------------------------------------------------------------------------
    def add_decision(self, loop_id: str, day: date, kind: str, reason: str, *, model_version: str | None = None,
                     details: dict[str, Any] | None = None) -> str:  # fmt: skip
        decision_id = "ld-" + uuid.uuid4().hex[:12]
        self._db.execute(
            "INSERT INTO loop_decisions VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            [decision_id, loop_id, day, kind, model_version, reason, dumps(details), utcnow()],
        )
        return decision_id

    def decisions(self, loop_id: str, kind: str | None = None) -> builtins.list[dict[str, Any]]:
        where, params = "WHERE loop_id = ?", list[Any]([loop_id])
        if kind is not None:
            where += " AND kind = ?"
            params.append(kind)
        rows = self._db.query(f"SELECT * FROM loop_decisions {where} ORDER BY day, ts", params)
        return [
            {**r, "day": r["day"].isoformat(), "details": loads(r["details"]), "ts": iso(r["ts"])}
            for r in rows
        ]
