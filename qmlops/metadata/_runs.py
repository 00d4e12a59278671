"""Runs (training, tuning) and the metrics they report per step while they are going."""

from __future__ import annotations

import builtins
import math
import socket
from dataclasses import asdict, dataclass, field
from datetime import datetime
from typing import Any

from qmlops.exceptions import ConflictError, NotFoundError, ValidationError
from qmlops.metadata._db import Database, Where, dumps, loads, utcnow

__all__ = ["RunRecord", "RunMetric", "RunRepository", "RUN_KINDS", "RUN_STATUSES"]

RUN_KINDS = ("train", "tune", "trial")
RUN_STATUSES = ("running", "finished", "failed", "stopped")  # stopped: by a tuning scheduler (ASHA)
_COLUMNS = (
    "id, kind, name, model_type, status, params, config, parent_id, started_at, heartbeat_at, ended_at, "
    "total_steps, best_step, stop_reason, stopped_by, metrics, model_version, report_uri, error, host"
)


@dataclass(frozen=True)
class RunRecord:
    id: str
    kind: str
    status: str
    started_at: datetime
    name: str | None = None
    model_type: str | None = None
    params: dict[str, Any] = field(default_factory=dict)
    config: dict[str, Any] = field(default_factory=dict)
    parent_id: str | None = None
    heartbeat_at: datetime | None = None
    ended_at: datetime | None = None
    total_steps: int | None = None
    best_step: int | None = None
    stop_reason: str | None = None
    stopped_by: str | None = None
    metrics: dict[str, Any] = field(default_factory=dict)
    model_version: str | None = None
    report_uri: str | None = None
    error: str | None = None
    host: str | None = None

    @property
    def duration_seconds(self) -> float | None:
        end = self.ended_at or self.heartbeat_at
        return (end - self.started_at).total_seconds() if end else None

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        for key in ("started_at", "heartbeat_at", "ended_at"):
            out[key] = out[key].isoformat() if out[key] is not None else None
        out["duration_seconds"] = self.duration_seconds
        return out


@dataclass(frozen=True)
class RunMetric:
    run_id: str
    step: int
    ts: datetime
    train_loss: float | None = None
    valid_loss: float | None = None
    valid_ic: float | None = None
    best_step: int | None = None
    early_stop: dict[str, Any] = field(default_factory=dict)
    extra: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["ts"] = self.ts.isoformat()
        return out


def finite_or_none(value: Any) -> float | None:
    """``value`` as a float, or None when it is None, NaN or infinite (what the store keeps for "no value")."""
    if value is None:
        return None
    value = float(value)
    return value if math.isfinite(value) else None


class RunRepository:
    def __init__(self, db: Database) -> None:
        self._db = db

    def start(
        self,
        run_id: str,
        kind: str,
        *,
        name: str | None = None,
        model_type: str | None = None,
        params: dict[str, Any] | None = None,
        config: dict[str, Any] | None = None,
        parent_id: str | None = None,
        total_steps: int | None = None,
    ) -> RunRecord:
        if kind not in RUN_KINDS:
            raise ValidationError(f"must be one of {', '.join(RUN_KINDS)}; got {kind!r}", field="kind")
        if self._db.query_one("SELECT 1 AS x FROM runs WHERE id = ?", [run_id]) is not None:
            raise ConflictError(f"run {run_id} exists already", field="run_id")
        now = utcnow()
        self._db.execute(
            f"INSERT INTO runs ({_COLUMNS}) VALUES (?, ?, ?, ?, 'running', ?, ?, ?, ?, ?, NULL, ?, NULL, NULL, "
            "NULL, NULL, NULL, NULL, NULL, ?)",
            [run_id, kind, name, model_type, dumps(params or {}), dumps(config or {}), parent_id, now, now,
             total_steps, socket.gethostname()],
        )  # fmt: skip
        return self.get(run_id)

    def log_metric(
        self,
        run_id: str,
        step: int,
        *,
        train_loss: float | None = None,
        valid_loss: float | None = None,
        valid_ic: float | None = None,
        best_step: int | None = None,
        early_stop: dict[str, Any] | None = None,
        extra: dict[str, Any] | None = None,
    ) -> None:
        """Record one step (a boosting-round batch or an epoch); the run's heartbeat moves with it."""
        now = utcnow()
        with self._db.transaction():
            self._db.execute(
                "INSERT INTO run_metrics VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (run_id, step) DO UPDATE "
                "SET ts = excluded.ts, train_loss = excluded.train_loss, valid_loss = excluded.valid_loss, "
                "valid_ic = excluded.valid_ic, best_step = excluded.best_step, early_stop = excluded.early_stop, "
                "extra = excluded.extra",
                [run_id, int(step), now, finite_or_none(train_loss), finite_or_none(valid_loss),
                 finite_or_none(valid_ic), best_step, dumps(early_stop or {}), dumps(extra or {})],
            )  # fmt: skip
            self._db.execute(
                "UPDATE runs SET heartbeat_at = ?, best_step = ? WHERE id = ?", [now, best_step, run_id]
            )

    def finish(
        self,
        run_id: str,
        *,
        status: str = "finished",
        best_step: int | None = None,
        stop_reason: str | None = None,
        stopped_by: str | None = None,
        metrics: dict[str, Any] | None = None,
        error: str | None = None,
    ) -> RunRecord:
        if status not in ("finished", "failed", "stopped"):
            raise ValidationError("status must be finished, failed or stopped", field="status")
        self.get(run_id)
        clean = {k: (finite_or_none(v) if isinstance(v, float) else v) for k, v in (metrics or {}).items()}
        now = utcnow()
        self._db.execute(
            "UPDATE runs SET status = ?, ended_at = ?, heartbeat_at = ?, best_step = coalesce(?, best_step), "
            "stop_reason = ?, stopped_by = ?, metrics = ?, error = ? WHERE id = ?",
            [status, now, now, best_step, stop_reason, stopped_by, dumps(clean), error, run_id],
        )
        return self.get(run_id)

    def latest_metrics(self, run_ids: builtins.list[str]) -> dict[str, RunMetric]:
        """Each run's latest logged step (runs with none are absent), for several runs in one query."""
        if not run_ids:
            return {}
        w = Where().one_of("run_id", run_ids)
        rows = self._db.query(
            "SELECT run_id, step, ts, train_loss, valid_loss, valid_ic, best_step, early_stop, extra "
            f"FROM run_metrics {w.sql} QUALIFY row_number() OVER (PARTITION BY run_id ORDER BY step DESC) = 1",
            w.params,
        )
        return {r["run_id"]: _metric(r) for r in rows}

    def attach(self, run_id: str, *, model_version: str | None = None, report_uri: str | None = None) -> None:
        self.get(run_id)
        self._db.execute(
            "UPDATE runs SET model_version = coalesce(?, model_version), report_uri = coalesce(?, report_uri) "
            "WHERE id = ?",
            [model_version, report_uri, run_id],
        )

    def get(self, run_id: str) -> RunRecord:
        row = self._db.query_one(f"SELECT {_COLUMNS} FROM runs WHERE id = ?", [run_id])
        if row is None:
            matches = self._db.query(f"SELECT {_COLUMNS} FROM runs WHERE id LIKE ? LIMIT 2", [run_id + "%"])
            if len(matches) != 1:
                raise NotFoundError(f"no run {run_id!r}", field="run_id")
            row = matches[0]
        return _record(row)

    def list(
        self,
        *,
        kind: str | None = None,
        status: str | None = None,
        parent_id: str | None = None,
        limit: int = 50,
    ) -> builtins.list[RunRecord]:
        w = Where().equal(kind=kind, status=status, parent_id=parent_id)
        rows = self._db.query(
            f"SELECT {_COLUMNS} FROM runs {w.sql} ORDER BY started_at DESC, id LIMIT ?",
            [*w.params, int(limit)],
        )
        return [_record(r) for r in rows]

    def metrics(self, run_id: str, *, after_step: int = -1) -> builtins.list[RunMetric]:
        """The run's per-step metrics in step order (``after_step`` for incremental reads by followers)."""
        rows = self._db.query(
            "SELECT run_id, step, ts, train_loss, valid_loss, valid_ic, best_step, early_stop, extra "
            "FROM run_metrics WHERE run_id = ? AND step > ? ORDER BY step",
            [run_id, int(after_step)],
        )
        return [_metric(r) for r in rows]


def _metric(r: dict[str, Any]) -> RunMetric:
    return RunMetric(r["run_id"], int(r["step"]), r["ts"], r["train_loss"], r["valid_loss"], r["valid_ic"],
                     r["best_step"], loads(r["early_stop"]) or {}, loads(r["extra"]) or {})  # fmt: skip


def _record(row: dict[str, Any]) -> RunRecord:
    return RunRecord(
        id=row["id"], kind=row["kind"], status=row["status"], started_at=row["started_at"], name=row["name"],
        model_type=row["model_type"], params=loads(row["params"]) or {}, config=loads(row["config"]) or {},
        parent_id=row["parent_id"], heartbeat_at=row["heartbeat_at"], ended_at=row["ended_at"],
        total_steps=row["total_steps"], best_step=row["best_step"], stop_reason=row["stop_reason"],
        stopped_by=row["stopped_by"], metrics=loads(row["metrics"]) or {}, model_version=row["model_version"],
        report_uri=row["report_uri"], error=row["error"], host=row["host"],
    )  # fmt: skip
