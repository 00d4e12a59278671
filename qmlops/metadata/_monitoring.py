"""Monitoring tables: model reference statistics, drift reports, alert rules / channels / deduplicated alerts,
resource samples, the job admission queue and prediction-log loss.

The prediction log itself is :mod:`qmlops.metadata._predictions`; the window aggregates over it live there too.
"""

from __future__ import annotations

import builtins
import uuid
from datetime import datetime, timedelta
from typing import Any

from qmlops.exceptions import NotFoundError, ValidationError
from qmlops.metadata._db import Database, Where, dumps, iso, loads, utcnow

__all__ = ["MonitoringRepository", "SEVERITIES", "JOB_STATES"]

SEVERITIES = ("info", "warning", "critical")
JOB_STATES = ("queued", "admitted", "running", "succeeded", "failed", "stopped", "cancelled")
_ALERT_JSON = ("details", "deliveries")


def _alert(row: dict[str, Any]) -> dict[str, Any]:
    out = dict(row)
    for key in ("ts", "acknowledged_at", "last_seen"):
        out[key] = iso(row.get(key))
    for key in _ALERT_JSON:
        out[key] = loads(row.get(key)) or ({} if key == "details" else [])
    return out


class MonitoringRepository:
    def __init__(self, db: Database) -> None:
        self._db = db

    # -- reference statistics per model version -----------------------------------------------------------
    def put_reference(
        self, model_version: str, source: str, stats: builtins.list[dict[str, Any]],
        prediction: dict[str, Any] | None = None,
    ) -> None:  # fmt: skip
        with self._db.transaction():
            self._db.execute("DELETE FROM model_references WHERE model_version = ?", [model_version])
            self._db.execute("INSERT INTO model_references VALUES (?, ?, ?, ?, ?)",
                             [model_version, source, dumps(stats), dumps(prediction), utcnow()])  # fmt: skip

    def get_reference(self, model_version: str) -> dict[str, Any] | None:
        row = self._db.query_one("SELECT * FROM model_references WHERE model_version = ?", [model_version])
        if row is None:
            return None
        return {"model_version": row["model_version"], "source": row["source"], "stats": loads(row["stats"]),
                "prediction": loads(row["prediction"]), "created_at": iso(row["created_at"])}  # fmt: skip

    # -- drift --------------------------------------------------------------------------------------------
    def add_drift(self, model_name: str, model_version: str, report: dict[str, Any]) -> str:
        report_id = "dr-" + uuid.uuid4().hex[:12]
        drifted = [
            f["feature"]
            for f in sorted(report.get("features", []), key=lambda f: -(f.get("psi") or 0.0))
            if f.get("drifted_corrected")
        ]  # most shifted (PSI) first
        self._db.execute("INSERT INTO drift_reports VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                         [report_id, utcnow(), model_name, model_version, int(report.get("n_rows", 0)),
                          float(report.get("drift_share", 0.0)), dumps(drifted), dumps(report.get("prediction")),
                          dumps(report)])  # fmt: skip
        return report_id

    def drift(
        self, *, model_name: str | None = None, model_version: str | None = None, limit: int = 20,
        full: bool = False,
    ) -> builtins.list[dict[str, Any]]:  # fmt: skip
        w = Where().equal(model_name=model_name, model_version=model_version)
        rows = self._db.query(
            f"SELECT * FROM drift_reports {w.sql} ORDER BY ts DESC LIMIT ?", [*w.params, int(limit)]
        )
        out = []
        for r in rows:
            item = {"id": r["id"], "ts": iso(r["ts"]), "model_name": r["model_name"],
                    "model_version": r["model_version"], "n_rows": r["n_rows"], "drift_share": r["drift_share"],
                    "drifted": loads(r["drifted"]), "prediction": loads(r["prediction"])}  # fmt: skip
            if full:
                item["report"] = loads(r["report"])
            out.append(item)
        return out

    # -- alert rules and channels -------------------------------------------------------------------------
    def put_rule(self, rule: dict[str, Any]) -> dict[str, Any]:
        with self._db.transaction():
            self._db.execute("DELETE FROM alert_rules WHERE name = ?", [rule["name"]])
            self._db.execute("INSERT INTO alert_rules VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                             [rule["name"], rule["metric"], rule["comparator"], float(rule["threshold"]),
                              float(rule["window_s"]), rule["severity"], float(rule["cooldown_s"]),
                              rule.get("subject"), bool(rule.get("enabled", True)), utcnow()])  # fmt: skip
        return rule

    def rules(self) -> builtins.list[dict[str, Any]]:
        rows = self._db.query("SELECT * FROM alert_rules ORDER BY name")
        return [{k: v for k, v in r.items() if k != "updated_at"} for r in rows]

    def delete_rule(self, name: str) -> None:
        if self._db.query_one("SELECT name FROM alert_rules WHERE name = ?", [name]) is None:
            raise NotFoundError(f"no alert rule {name!r}", field="name")
        self._db.execute("DELETE FROM alert_rules WHERE name = ?", [name])

    def put_channel(self, channel: dict[str, Any]) -> dict[str, Any]:
        with self._db.transaction():
            self._db.execute("DELETE FROM alert_channels WHERE name = ?", [channel["name"]])
            self._db.execute("INSERT INTO alert_channels VALUES (?, ?, ?, ?, ?, ?)",
                             [channel["name"], channel["kind"], dumps(channel.get("config") or {}),
                              channel.get("min_severity", "info"), bool(channel.get("enabled", True)), utcnow()])  # fmt: skip
        return channel

    def channels(self) -> builtins.list[dict[str, Any]]:
        rows = self._db.query("SELECT * FROM alert_channels ORDER BY name")
        return [
            {**{k: v for k, v in r.items() if k != "updated_at"}, "config": loads(r["config"]) or {}}
            for r in rows
        ]

    def delete_channel(self, name: str) -> None:
        if self._db.query_one("SELECT name FROM alert_channels WHERE name = ?", [name]) is None:
            raise NotFoundError(f"no alert channel {name!r}", field="name")
        self._db.execute("DELETE FROM alert_channels WHERE name = ?", [name])

    # -- alerts with deduplication ------------------------------------------------------------------------
    def fire_alert(
        self, *, rule: str | None, severity: str, source: str, subject: str | None, message: str,
        details: dict[str, Any] | None = None, cooldown_s: float = 0.0,
    ) -> tuple[dict[str, Any], bool]:  # fmt: skip
        """Record an alert unless the same (rule, subject) fired less than ``cooldown_s`` ago and is not
        acknowledged: then the earlier alert counts a repeat. Returns (alert, is_new)."""
        if severity not in SEVERITIES:
            raise ValidationError(f"severity must be one of {SEVERITIES}", field="severity")
        key = f"{rule or source}|{subject or ''}"
        now = utcnow()
        with self._db.transaction():
            row = self._db.query_one(
                "SELECT * FROM alerts WHERE dedup_key = ? AND acknowledged_at IS NULL ORDER BY ts DESC LIMIT 1",
                [key],
            )
            if row is not None and cooldown_s > 0 and now - row["ts"] < timedelta(seconds=cooldown_s):
                self._db.execute("UPDATE alerts SET repeats = coalesce(repeats, 0) + 1, last_seen = ? WHERE id = ?",
                                 [now, row["id"]])  # fmt: skip
                updated = self._db.query_one("SELECT * FROM alerts WHERE id = ?", [row["id"]])
                assert updated is not None
                return _alert(updated), False
            alert_id = "al-" + uuid.uuid4().hex[:12]
            self._db.execute(
                "INSERT INTO alerts (id, ts, severity, source, subject, message, details, rule, dedup_key, repeats, "
                "last_seen, deliveries) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, 0, ?, ?)",
                [alert_id, now, severity, source, subject, message, dumps(details or {}), rule, key, now, dumps([])],
            )  # fmt: skip
            created = self._db.query_one("SELECT * FROM alerts WHERE id = ?", [alert_id])
        assert created is not None
        return _alert(created), True

    def set_deliveries(self, alert_id: str, deliveries: builtins.list[dict[str, Any]]) -> None:
        self._db.execute("UPDATE alerts SET deliveries = ? WHERE id = ?", [dumps(deliveries), alert_id])

    def get_alert(self, alert_id: str) -> dict[str, Any]:
        row = self._db.query_required(
            "SELECT * FROM alerts WHERE id = ?",
            [alert_id],
            missing=f"no alert {alert_id!r}",
            field="alert_id",
        )
        return _alert(row)

    def alerts(
        self, *, since: str | None = None, source: str | None = None, subject: str | None = None,
        unacknowledged: bool = False, limit: int = 100,
    ) -> builtins.list[dict[str, Any]]:  # fmt: skip
        w = Where().equal(source=source, subject=subject)
        if since is not None:
            w.add("ts > ?", datetime.fromisoformat(since.removesuffix("Z")))
        if unacknowledged:
            w.add("acknowledged_at IS NULL")
        rows = self._db.query(
            f"SELECT * FROM alerts {w.sql} ORDER BY ts DESC LIMIT ?", [*w.params, int(limit)]
        )
        return [_alert(r) for r in rows]

    def acknowledge(self, alert_id: str, by: str) -> dict[str, Any]:
        alert = self.get_alert(alert_id)
        if alert["acknowledged_at"] is None:
            self._db.execute("UPDATE alerts SET acknowledged_at = ?, acknowledged_by = ? WHERE id = ?",
                             [utcnow(), by, alert_id])  # fmt: skip
        return self.get_alert(alert_id)

    # -- resources ----------------------------------------------------------------------------------------
    def add_samples(self, rows: builtins.list[dict[str, Any]]) -> int:
        with self._db.transaction():
            for r in rows:
                self._db.execute("INSERT INTO resource_samples VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                                 [datetime.fromisoformat(r["ts"].removesuffix("Z")) if isinstance(r.get("ts"), str)
                                  else (r.get("ts") or utcnow()), r["node_id"], r.get("hostname"),
                                  r.get("cpu_percent"), r.get("memory_percent"), r.get("memory_used"),
                                  r.get("disk_percent"), r.get("net_sent"), r.get("net_recv"),
                                  _gpus_json(r.get("gpus"), r.get("gpu_note"))])  # fmt: skip
        return len(rows)

    def latest_samples(self) -> builtins.list[dict[str, Any]]:
        rows = self._db.query(
            "SELECT * FROM resource_samples QUALIFY row_number() OVER (PARTITION BY node_id ORDER BY ts DESC) = 1 "
            "ORDER BY node_id"
        )
        return [{**r, "ts": iso(r["ts"]), **_gpus_of(r["gpus"])} for r in rows]

    def samples(
        self, *, node_id: str | None = None, since_s: float | None = None, limit: int = 1000
    ) -> builtins.list[dict[str, Any]]:
        """Newest first; ``since_s`` keeps only the last that many seconds."""
        w = Where().equal(node_id=node_id)
        if since_s is not None:
            w.add("ts > ?", utcnow() - timedelta(seconds=float(since_s)))
        rows = self._db.query(
            f"SELECT * FROM resource_samples {w.sql} ORDER BY ts DESC LIMIT ?", [*w.params, int(limit)]
        )
        return [{**r, "ts": iso(r["ts"]), **_gpus_of(r["gpus"])} for r in rows]

    # -- job queue ----------------------------------------------------------------------------------------
    def enqueue_job(self, job: dict[str, Any]) -> dict[str, Any]:
        self._db.execute(
            "INSERT INTO job_queue VALUES (?, ?, ?, ?, ?, ?, ?, 'queued', ?, ?, NULL, NULL, NULL)",
            [job["id"], job["name"], job["entrypoint"], float(job["num_cpus"]), float(job["num_gpus"]),
             int(job["memory"]), int(job["priority"]), dumps(job.get("runtime_env")), utcnow()],
        )  # fmt: skip
        return self.get_job(job["id"])

    def update_job(self, job_id: str, **changes: Any) -> dict[str, Any]:
        self.get_job(job_id)
        allowed = {"state", "admitted_at", "ended_at", "message"}
        unknown = set(changes) - allowed
        if unknown:
            raise ValidationError(
                f"cannot change {sorted(unknown)} of a queued job", field=sorted(unknown)[0]
            )
        if "state" in changes and changes["state"] not in JOB_STATES:
            raise ValidationError(f"state must be one of {JOB_STATES}", field="state")
        for key in ("admitted_at", "ended_at"):
            if changes.get(key) == "now":
                changes[key] = utcnow()
        if changes:
            cols = ", ".join(f"{k} = ?" for k in changes)
            self._db.execute(f"UPDATE job_queue SET {cols} WHERE id = ?", [*changes.values(), job_id])
        return self.get_job(job_id)

    def get_job(self, job_id: str) -> dict[str, Any]:
        row = self._db.query_required(
            "SELECT * FROM job_queue WHERE id = ?",
            [job_id],
            missing=f"no queued job {job_id!r}",
            field="job_id",
        )
        return _job(row)

    def jobs(
        self, *, states: builtins.list[str] | None = None, limit: int = 200
    ) -> builtins.list[dict[str, Any]]:
        if states:
            w = Where().one_of("state", states)
            rows = self._db.query(f"SELECT * FROM job_queue {w.sql} ORDER BY submitted_at LIMIT ?",
                                  [*w.params, int(limit)])  # fmt: skip
        else:
            rows = self._db.query("SELECT * FROM job_queue ORDER BY submitted_at DESC LIMIT ?", [int(limit)])
        return [_job(r) for r in rows]

    # -- prediction-log loss --------------------------------------------------------------------------------
    def record_loss(self, replica: str, answered: int, flushed: int) -> dict[str, Any]:
        with self._db.transaction():
            self._db.execute("DELETE FROM prediction_log_loss WHERE replica = ?", [replica])
            self._db.execute("INSERT INTO prediction_log_loss VALUES (?, ?, ?, ?, ?)",
                             [replica, int(answered), int(flushed), max(0, int(answered) - int(flushed)), utcnow()])  # fmt: skip
        return {
            "replica": replica,
            "answered": answered,
            "flushed": flushed,
            "lost": max(0, answered - flushed),
        }

    def losses(self) -> builtins.list[dict[str, Any]]:
        rows = self._db.query("SELECT * FROM prediction_log_loss ORDER BY detected_at DESC")
        return [{**r, "detected_at": iso(r["detected_at"])} for r in rows]


def _job(row: dict[str, Any]) -> dict[str, Any]:
    out = dict(row)
    out["runtime_env"] = loads(row["runtime_env"])
    for key in ("submitted_at", "admitted_at", "ended_at"):
        out[key] = iso(row[key])
    return out


def _gpus_json(gpus: Any, note: str | None) -> str | None:
    """The ``gpus`` column: the list of GPUs, or ``{"devices": [], "note": why}`` when a node reports why it has
    none (NVML missing, no driver), so the reason is kept without a new column."""
    return dumps({"devices": list(gpus or []), "note": str(note)} if note else list(gpus or []))


def _gpus_of(value: Any) -> dict[str, Any]:
    data = loads(value)
    if isinstance(data, dict):
        return {"gpus": list(data.get("devices") or []), "gpu_note": data.get("note")}
    return {"gpus": list(data or []), "gpu_note": None}
