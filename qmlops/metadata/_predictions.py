"""The prediction log. Written only in batches (one Arrow insert per call), never row by row."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np
import pyarrow as pa

from qmlops.exceptions import ValidationError
from qmlops.metadata._db import Database, Where, iso, loads, utcnow
from qmlops.metadata._runs import finite_or_none

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
        ("batch_index", pa.int32()),
    ]
)
_REQUIRED = ("request_id", "ts", "model_name", "status")
_QUANTILES = (50, 75, 90, 95, 99)


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
        """Append a batch in one transaction; returns how many rows were written.

        Rows that carry their replica and sequence number (what the gateway writes) are appended once: a batch
        retried after its answer was lost (the metadata actor died after the commit) skips what is stored."""
        table = _to_arrow(rows)
        keyed = table.num_rows > 0 and table["replica"].null_count == 0 and table["seq"].null_count == 0
        return self._db.append_arrow("predictions", table, key=("replica", "seq") if keyed else None)

    def count(self, model_name: str | None = None) -> int:
        if model_name is None:
            row = self._db.query_one("SELECT count(*) AS n FROM predictions")
        else:
            row = self._db.query_one(
                "SELECT count(*) AS n FROM predictions WHERE model_name = ?", [model_name]
            )
        return int(row["n"]) if row else 0

    def known_request_ids(self, request_ids: list[str]) -> set[str]:
        """Which of ``request_ids`` the log holds (a batch request's rows are ``id/i``)."""
        if not request_ids:
            return set()
        rows = self._db.query("SELECT DISTINCT request_id FROM predictions WHERE list_contains(?, request_id)",
                              [list(request_ids)])  # fmt: skip
        return {r["request_id"] for r in rows}

    def replica_seqs(self, replica: str) -> set[int]:
        """The sequence numbers a gateway replica's rows have in the log (to replay its spool without duplicates)."""
        rows = self._db.query("SELECT seq FROM predictions WHERE replica = ?", [replica])
        return {int(r["seq"]) for r in rows if r["seq"] is not None}

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
        w = Where().equal(model_name=model_name, request_id=request_id, status=status)
        if since_s is not None:
            w.add("ts > ?", utcnow() - timedelta(seconds=float(since_s)))
        rows = self._db.query(f"SELECT * FROM predictions {w.sql} ORDER BY ts DESC, seq DESC LIMIT ?",
                              [*w.params, int(limit)])  # fmt: skip
        return [{**r, "ts": iso(r["ts"]), "inputs": loads(r["inputs"])} for r in rows]

    def window_stats(self, *, window_s: float = 300.0, model_name: str | None = None) -> list[dict[str, Any]]:
        """Per model version and variant over the last ``window_s`` seconds of the log (see :meth:`_aggregate`),
        with the throughput over the window."""
        w = (
            Where("p.")
            .equal(model_name=model_name)
            .add("p.ts > ?", utcnow() - timedelta(seconds=float(window_s)))
        )
        rows = self._aggregate(w, ("model_name", "model_id", "model_version", "variant"))
        return [r | {"throughput_rps": r["requests"] / window_s, "window_s": window_s} for r in rows]

    def version_stats(self, since_epoch: float, model_ids: list[str]) -> dict[str, dict[str, Any]]:
        """Per registry version id since a UNIX time: the figures rollout gates compare (:meth:`_aggregate`)."""
        if not model_ids:
            return {}
        since = datetime.fromtimestamp(float(since_epoch), UTC).replace(tzinfo=None)
        w = Where().add("p.ts > ?", since).one_of("p.model_id", model_ids)
        return {r["model_id"]: r for r in self._aggregate(w, ("model_id",))}

    def timeline(
        self, *, window_s: float = 3600.0, bucket_s: float = 60.0, model_name: str | None = None
    ) -> list[dict[str, Any]]:
        """Per model version and time bucket of the last ``window_s`` seconds, oldest first: requests, errors,
        p50/p99 latency of the answered ones and online accuracy from feedback (``t`` is the bucket's start,
        UNIX seconds). The page's traffic and accuracy charts read this."""
        bucket = float(bucket_s)
        w = (
            Where("p.")
            .equal(model_name=model_name)
            .add("p.ts > ?", utcnow() - timedelta(seconds=float(window_s)))
        )
        t = f"CAST(floor(epoch(p.ts) / {bucket!r}) * {bucket!r} AS DOUBLE)"
        rows = self._db.query(
            f"""SELECT p.model_name, p.model_version, {t} AS t, count(*) AS requests,
                       count(*) FILTER (WHERE p.status <> 'ok') AS errors,
                       quantile_cont(p.latency_ms, 0.5) FILTER (WHERE p.status = 'ok') AS p50_ms,
                       quantile_cont(p.latency_ms, 0.99) FILTER (WHERE p.status = 'ok') AS p99_ms
                FROM predictions p {w.sql} GROUP BY 1, 2, 3 ORDER BY 1, 2, 3""",
            w.params,
        )  # fmt: skip
        labelled = self._db.query(
            f"""SELECT p.model_name, p.model_version, {t} AS t, count(*) AS labelled, corr(p.output, f.value) AS ic
                FROM predictions p
                JOIN (SELECT request_id, last(value ORDER BY ts) AS value FROM feedback GROUP BY request_id) f
                USING (request_id)
                {w.sql} AND p.status = 'ok' AND p.output IS NOT NULL GROUP BY 1, 2, 3""",
            w.params,
        )  # fmt: skip
        acc = {
            (r["model_name"], r["model_version"], r["t"]): r for r in labelled
        }  # IC in SQL: no rows to Python
        out = []
        for r in rows:
            n, errors = int(r["requests"]), int(r["errors"])
            a = acc.get((r["model_name"], r["model_version"], r["t"])) or {"labelled": 0, "ic": None}
            ic = finite_or_none(a["ic"]) if a["labelled"] >= 3 else None  # as online_accuracy: None below 3
            out.append({**r, "t": float(r["t"]), "rps": n / bucket, "error_rate": errors / n if n else None,
                        "labelled": int(a["labelled"]), "ic": ic})  # fmt: skip
        return out

    def _aggregate(self, where: Where, keys: tuple[str, ...]) -> list[dict[str, Any]]:
        """Rows of the log matching ``where`` (alias ``p``), grouped by ``keys``: requests, errors, error rate,
        answered requests, latency percentiles of the answered ones (p50 .. p99), and online accuracy from
        feedback joined by request_id (IC, Rank IC, hit rate, MSE; ``None`` below 3 labelled rows)."""
        cols = ", ".join(f"p.{k}" for k in keys)
        # A batch request logs one row per input row, all with the request's latency and status: it counts once
        # as a request (its first row, batch_index 0; older rows have none), and its rows are counted apart.
        first = "coalesce(p.batch_index, 0) = 0"
        quantiles = ", ".join(f"quantile_cont(p.latency_ms, {q / 100}) FILTER (WHERE p.status = 'ok' AND {first}) "
                              f"AS p{q}_ms" for q in _QUANTILES)  # fmt: skip
        rows = self._db.query(
            f"""SELECT {cols}, count(*) FILTER (WHERE {first}) AS requests, count(*) AS rows,
                       count(*) FILTER (WHERE p.status <> 'ok' AND {first}) AS errors, {quantiles}
                FROM predictions p {where.sql} GROUP BY {cols} ORDER BY {cols}""",
            where.params,
        )  # fmt: skip
        labelled = self._db.query(
            f"""SELECT {cols}, p.output, f.value FROM predictions p
                JOIN (SELECT request_id, last(value ORDER BY ts) AS value FROM feedback GROUP BY request_id) f
                USING (request_id)
                {where.sql} {"AND" if where.clauses else "WHERE"} p.status = 'ok' AND p.output IS NOT NULL""",
            where.params,
        )  # fmt: skip
        pairs: dict[tuple[Any, ...], list[tuple[float, float]]] = {}
        for r in labelled:
            pairs.setdefault(tuple(r[k] for k in keys), []).append((float(r["output"]), float(r["value"])))
        out = []
        for r in rows:
            n, errors = int(r["requests"]), int(r["errors"])
            out.append({**r, "error_rate": errors / n if n else None, "ok_requests": n - errors,
                        **online_accuracy(pairs.get(tuple(r[k] for k in keys), []))})  # fmt: skip
        return out


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
