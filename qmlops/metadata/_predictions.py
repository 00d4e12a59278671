"""The prediction log. Written only in batches (one Arrow insert per call), never row by row."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np
import pyarrow as pa

from qmlops.exceptions import ValidationError
from qmlops.metadata._db import Database, loads, utcnow

__all__ = ["PredictionRepository", "PREDICTION_SCHEMA", "online_accuracy"]

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
        ("model_id", pa.string()),
        ("replica", pa.string()),
        ("seq", pa.int64()),
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

    def query(
        self, *, model_name: str | None = None, request_id: str | None = None, since_s: float | None = None,
        status: str | None = None, limit: int = 100,
    ) -> list[dict[str, Any]]:  # fmt: skip
        """Newest first; ``since_s`` is a look-back window in seconds."""
        clauses, params = _filters(model_name, since_s)
        for col, value in (("request_id", request_id), ("status", status)):
            if value is not None:
                clauses.append(f"{col} = ?")
                params.append(value)
        where = f"WHERE {' AND '.join(clauses)}" if clauses else ""
        rows = self._db.query(f"SELECT * FROM predictions {where} ORDER BY ts DESC, seq DESC LIMIT ?",
                              [*params, int(limit)])  # fmt: skip
        return [{**r, "ts": r["ts"].isoformat() + "Z", "inputs": loads(r["inputs"])} for r in rows]

    def window_stats(self, *, window_s: float = 300.0, model_name: str | None = None) -> list[dict[str, Any]]:
        """Per model version and variant over the last ``window_s`` seconds of the log: requests, throughput,
        error rate, latency percentiles (answered requests), and online accuracy from feedback joined by
        request_id (IC, Rank IC, hit rate, MSE; ``None`` below 3 labelled rows)."""
        clauses, params = _filters(model_name, window_s)
        where = f"WHERE {' AND '.join(clauses)}" if clauses else ""
        rows = self._db.query(
            f"""SELECT model_name, model_id, model_version, variant, count(*) AS requests,
                       count(*) FILTER (WHERE status <> 'ok') AS errors,
                       quantile_cont(latency_ms, 0.5) FILTER (WHERE status = 'ok') AS p50_ms,
                       quantile_cont(latency_ms, 0.95) FILTER (WHERE status = 'ok') AS p95_ms,
                       quantile_cont(latency_ms, 0.99) FILTER (WHERE status = 'ok') AS p99_ms,
                       min(ts) AS first_ts, max(ts) AS last_ts
                FROM predictions {where}
                GROUP BY ALL ORDER BY model_name, model_version, variant""",
            params,
        )  # fmt: skip
        labelled = self._db.query(
            f"""SELECT p.model_id, p.variant, p.output, f.value
                FROM predictions p JOIN (SELECT request_id, last(value ORDER BY ts) AS value FROM feedback
                                         GROUP BY request_id) f USING (request_id)
                {where.replace("model_name", "p.model_name").replace("ts >", "p.ts >")}
                {"AND" if where else "WHERE"} p.status = 'ok' AND p.output IS NOT NULL""",
            params,
        )  # fmt: skip
        pairs: dict[tuple[Any, Any], list[tuple[float, float]]] = {}
        for r in labelled:
            pairs.setdefault((r["model_id"], r["variant"]), []).append(
                (float(r["output"]), float(r["value"]))
            )
        out = []
        for r in rows:
            n, errors = int(r["requests"]), int(r["errors"])
            item = {k: r[k] for k in ("model_name", "model_id", "model_version", "variant", "p50_ms", "p95_ms",
                                      "p99_ms")}  # fmt: skip
            item |= {"requests": n, "errors": errors, "error_rate": errors / n if n else None,
                     "throughput_rps": n / window_s, "window_s": window_s}  # fmt: skip
            item |= online_accuracy(pairs.get((r["model_id"], r["variant"]), []))
            out.append(item)
        return out

    def version_stats(self, since_epoch: float, model_ids: list[str]) -> dict[str, dict[str, Any]]:
        """Per registry version id since a UNIX time: the fields rollout gates compare (requests, errors,
        error_rate, ok_requests, p50..p99 latency of answered requests) and online accuracy from feedback."""
        if not model_ids:
            return {}
        since = datetime.fromtimestamp(float(since_epoch), UTC).replace(tzinfo=None)
        marks = ", ".join("?" for _ in model_ids)
        rows = self._db.query(
            f"""SELECT model_id, count(*) AS requests, count(*) FILTER (WHERE status <> 'ok') AS errors,
                       {", ".join(f"quantile_cont(latency_ms, {q / 100}) FILTER (WHERE status = 'ok') AS p{q}_ms"
                                  for q in (50, 75, 90, 95, 99))}
                FROM predictions WHERE ts > ? AND model_id IN ({marks}) GROUP BY model_id""",
            [since, *model_ids],
        )  # fmt: skip
        labelled = self._db.query(
            f"""SELECT p.model_id, p.output, f.value FROM predictions p
                JOIN (SELECT request_id, last(value ORDER BY ts) AS value FROM feedback GROUP BY request_id) f
                USING (request_id)
                WHERE p.ts > ? AND p.model_id IN ({marks}) AND p.status = 'ok' AND p.output IS NOT NULL""",
            [since, *model_ids],
        )  # fmt: skip
        pairs: dict[str, list[tuple[float, float]]] = {}
        for r in labelled:
            pairs.setdefault(r["model_id"], []).append((float(r["output"]), float(r["value"])))
        out = {}
        for r in rows:
            n, errors = int(r["requests"]), int(r["errors"])
            out[r["model_id"]] = {"requests": n, "errors": errors, "error_rate": errors / n if n else None,
                                  "ok_requests": n - errors, **{f"p{q}_ms": r[f"p{q}_ms"] for q in (50, 75, 90, 95, 99)},
                                  **online_accuracy(pairs.get(r["model_id"], []))}  # fmt: skip
        return out


def _filters(model_name: str | None, since_s: float | None) -> tuple[list[str], list[Any]]:
    clauses: list[str] = []
    params: list[Any] = []
    if model_name is not None:
        clauses.append("model_name = ?")
        params.append(model_name)
    if since_s is not None:
        clauses.append("ts > ?")
        params.append(utcnow() - timedelta(seconds=float(since_s)))
    return clauses, params


def online_accuracy(pairs: Sequence[tuple[float, float]]) -> dict[str, Any]:
    """IC (Pearson), Rank IC (Spearman), hit rate (sign agreement) and MSE of (prediction, realised) pairs."""
    out: dict[str, Any] = {"labelled": len(pairs), "ic": None, "rank_ic": None, "hit_rate": None, "mse": None}
    if len(pairs) < 3:
        return out
    pred, real = np.asarray(pairs, dtype=np.float64).T
    out["mse"] = float(np.mean((pred - real) ** 2))
    out["hit_rate"] = float(np.mean(np.sign(pred) == np.sign(real)))
    if np.std(pred) > 0 and np.std(real) > 0:
        out["ic"] = float(np.corrcoef(pred, real)[0, 1])
        from scipy.stats import rankdata

        out["rank_ic"] = float(np.corrcoef(rankdata(pred), rankdata(real))[0, 1])
    return out
