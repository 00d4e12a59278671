"""Routing tables, rollouts with their events, deployment checks and alert events."""

from __future__ import annotations

import builtins
import uuid
from collections.abc import Sequence
from typing import Any

from qmlops.exceptions import ConflictError
from qmlops.metadata._db import Database, Where, dumps, iso, loads, utcnow

__all__ = ["ServingRepository"]

_ROLLOUT_COLUMNS = ("id, model, strategy, from_version, to_version, state, step, options, gates, reason, created_at, "
                    "updated_at, step_started_at, ended_at")  # fmt: skip


class ServingRepository:
    def __init__(self, db: Database) -> None:
        self._db = db

    # -- routing tables -----------------------------------------------------------------------------------
    def put_table(self, table: dict[str, Any], *, expected_revision: int | None = None) -> dict[str, Any]:
        """Store a table (``RoutingTable.to_dict()``); with ``expected_revision`` refuse a concurrent change."""
        with self._db.transaction():
            current = self._db.query_one(
                "SELECT revision FROM routing_tables WHERE model = ?", [table["model"]]
            )
            if (
                expected_revision is not None
                and current is not None
                and current["revision"] != expected_revision
            ):
                raise ConflictError(f"routing table {table['model']} changed (revision {current['revision']}, "
                                    f"expected {expected_revision})", field="revision")  # fmt: skip
            self._db.execute(
                "INSERT INTO routing_tables VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (model) DO UPDATE SET "
                "revision = excluded.revision, salt = excluded.salt, sticky_field = excluded.sticky_field, "
                "entries = excluded.entries, updated_at = excluded.updated_at",
                [table["model"], int(table["revision"]), table["salt"], table["sticky_field"],
                 dumps(table["entries"]), utcnow()],
            )  # fmt: skip
        return self.get_table(table["model"])

    def get_table(self, model: str) -> dict[str, Any]:
        row = self._db.query_required(
            "SELECT * FROM routing_tables WHERE model = ?",
            [model],
            missing=f"model {model!r} is not deployed (no routing table)",
            field="model",
        )
        return _table(row)

    def list_tables(self) -> builtins.list[dict[str, Any]]:
        return [_table(r) for r in self._db.query("SELECT * FROM routing_tables ORDER BY model")]

    def delete_table(self, model: str) -> None:
        self._db.execute("DELETE FROM routing_tables WHERE model = ?", [model])

    # -- rollouts -----------------------------------------------------------------------------------------
    def create_rollout(self, rollout: dict[str, Any]) -> dict[str, Any]:
        active = self._db.query_one(
            "SELECT id FROM rollouts WHERE model = ? AND state IN ('pending', 'running', 'paused')",
            [rollout["model"]],
        )
        if active is not None:
            raise ConflictError(f"model {rollout['model']} has a rollout in progress ({active['id']}); finish, "
                                "roll back or wait for it first", field="model")  # fmt: skip
        now = utcnow()
        self._db.execute(
            f"INSERT INTO rollouts ({_ROLLOUT_COLUMNS}) VALUES (?, ?, ?, ?, ?, 'pending', 0, ?, NULL, NULL, ?, ?, ?, NULL)",
            [rollout["id"], rollout["model"], rollout["strategy"], rollout.get("from_version"), rollout["to_version"],
             dumps(rollout.get("options") or {}), now, now, now],
        )  # fmt: skip
        return self.get_rollout(rollout["id"])

    def update_rollout(self, rollout_id: str, **changes: Any) -> dict[str, Any]:
        allowed = {"state", "step", "gates", "reason", "step_started_at", "ended_at", "options"}
        unknown = set(changes) - allowed
        if unknown:
            raise ValueError(f"cannot update {sorted(unknown)}")
        sets: list[str] = ["updated_at = ?"]
        params: list[Any] = [utcnow()]
        for key, value in changes.items():
            sets.append(f"{key} = ?")
            params.append(dumps(value) if key in ("gates", "options") else value)
        self._db.execute(f"UPDATE rollouts SET {', '.join(sets)} WHERE id = ?", [*params, rollout_id])
        return self.get_rollout(rollout_id)

    def get_rollout(self, rollout_id: str) -> dict[str, Any]:
        row = self._db.query_required(
            f"SELECT {_ROLLOUT_COLUMNS} FROM rollouts WHERE id = ?",
            [rollout_id],
            missing=f"no rollout {rollout_id!r}",
            field="rollout_id",
        )
        return _rollout(row)

    def list_rollouts(
        self, model: str | None = None, *, active_only: bool = False, limit: int = 50
    ) -> builtins.list[dict[str, Any]]:
        clauses, params = [], []
        if model is not None:
            clauses.append("model = ?")
            params.append(model)
        if active_only:
            clauses.append("state IN ('pending', 'running', 'paused')")
        where = f"WHERE {' AND '.join(clauses)}" if clauses else ""
        rows = self._db.query(f"SELECT {_ROLLOUT_COLUMNS} FROM rollouts {where} ORDER BY created_at DESC LIMIT ?",
                              [*params, int(limit)])  # fmt: skip
        return [_rollout(r) for r in rows]

    def add_event(self, rollout_id: str, kind: str, detail: dict[str, Any] | None = None) -> None:
        with self._db.transaction():
            row = self._db.query_one("SELECT coalesce(max(seq), 0) + 1 AS n FROM rollout_events WHERE rollout_id = ?",
                                     [rollout_id])  # fmt: skip
            self._db.execute("INSERT INTO rollout_events VALUES (?, ?, ?, ?, ?)",
                             [rollout_id, int(row["n"]) if row else 1, utcnow(), kind, dumps(detail or {})])  # fmt: skip

    def events(self, rollout_id: str) -> builtins.list[dict[str, Any]]:
        return self.events_for([rollout_id])[rollout_id]

    def events_for(self, rollout_ids: Sequence[str]) -> dict[str, builtins.list[dict[str, Any]]]:
        """Each rollout's events in order, for several rollouts in one query."""
        out: dict[str, builtins.list[dict[str, Any]]] = {rid: [] for rid in rollout_ids}
        if not out:
            return out
        w = Where().one_of("rollout_id", list(out))
        rows = self._db.query(
            f"SELECT rollout_id, seq, ts, kind, detail FROM rollout_events {w.sql} ORDER BY rollout_id, seq",
            w.params,
        )
        for r in rows:
            out[r["rollout_id"]].append(
                {"seq": r["seq"], "ts": iso(r["ts"]), "kind": r["kind"], "detail": loads(r["detail"]) or {}}
            )
        return out

    # -- checks -------------------------------------------------------------------------------------------
    def add_check(
        self, model_version: str, kind: str, ok: bool, result: dict[str, Any], rollout_id: str | None = None
    ) -> str:
        check_id = "chk-" + uuid.uuid4().hex[:12]
        self._db.execute("INSERT INTO deployment_checks VALUES (?, ?, ?, ?, ?, ?, ?)",
                         [check_id, rollout_id, model_version, kind, bool(ok), dumps(result), utcnow()])  # fmt: skip
        return check_id

    def checks(
        self, *, rollout_id: str | None = None, model_version: str | None = None, limit: int = 100
    ) -> builtins.list[dict[str, Any]]:
        w = Where().equal(rollout_id=rollout_id, model_version=model_version)
        rows = self._db.query(
            f"SELECT * FROM deployment_checks {w.sql} ORDER BY ts DESC LIMIT ?", [*w.params, int(limit)]
        )
        return [{**r, "ts": iso(r["ts"]), "result": loads(r["result"]) or {}} for r in rows]

    # -- feedback -----------------------------------------------------------------------------------------
    def add_feedback(self, rows: builtins.list[tuple[str, float]]) -> int:
        now = utcnow()
        with self._db.transaction():
            for request_id, value in rows:
                self._db.execute("INSERT INTO feedback VALUES (?, ?, ?)", [request_id, now, float(value)])
        return len(rows)

    def feedback(self, request_id: str) -> builtins.list[float]:
        rows = self._db.query("SELECT value FROM feedback WHERE request_id = ? ORDER BY ts", [request_id])
        return [float(r["value"]) for r in rows]


def _table(row: dict[str, Any]) -> dict[str, Any]:
    return {"model": row["model"], "revision": row["revision"], "salt": row["salt"], "sticky_field": row["sticky_field"],
            "entries": loads(row["entries"]), "updated_at": iso(row["updated_at"])}  # fmt: skip


def _rollout(row: dict[str, Any]) -> dict[str, Any]:
    out = dict(row)
    out["options"] = loads(row["options"]) or {}
    out["gates"] = loads(row["gates"])
    for key in ("created_at", "updated_at", "step_started_at", "ended_at"):
        out[key] = iso(row[key])
    return out
