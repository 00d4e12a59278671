"""Appending new bars (a trading day's, typically) to a dataset as a new version chained to the previous one.

The new version's hash is ``sha256(format, parent hash, content hash of the new rows)``: computing it reads only
the new rows, so a day's cost does not grow with history, and the chain still names the whole content (two
versions share a hash only if their parents and their appended rows do). Rows are validated as at ingest; with
``on_error="quarantine"`` bad rows are set aside with their reasons, and instruments the parent has on its last
day but the new bars lack are reported (``missing_instruments``) for the caller to alert on.

The stored Parquet is a full snapshot (parent rows + new rows), so every version reads like any other
(``load_dataset``, the feature store); the caller may pass the parent's table to skip re-reading it.
"""

from __future__ import annotations

import hashlib
from typing import Any

import pandas as pd
import pyarrow as pa

from qmlops import storage
from qmlops.config import Settings, get_settings
from qmlops.data._canonical import canonical_order
from qmlops.data._hashing import content_hash
from qmlops.data._sources import Source, _apply_mapping, detect_mapping, resolve_source
from qmlops.data._sync import notify
from qmlops.data._versions import IngestResult, OnError, Store, _canonical, _user, load_dataset, version_id
from qmlops.exceptions import NotFoundError, ValidationError
from qmlops.metadata import DatasetRecord, get_store

__all__ = ["append_bars", "branch_dataset", "chain_hash", "FrameSource"]

_CHAIN_FORMAT = b"qmlops-append-v1"


class FrameSource(Source):
    """Rows already in memory (a day's bars handed over by the loop), with canonical or aliased column names."""

    name = "frame"
    description = "rows in memory"

    def __init__(self, frame: pd.DataFrame, label: str = "frame") -> None:
        self.frame = frame
        self._label = label

    def read(self) -> pd.DataFrame:
        raw = self.frame.reset_index(drop=True)
        return _apply_mapping(raw, detect_mapping([str(c) for c in raw.columns]))

    def config(self) -> dict[str, Any]:
        return {"source": self._label}

    @property
    def label(self) -> str:
        return self._label


def chain_hash(parent_hash: str, rows: pd.DataFrame) -> str:
    """sha256 (hex) of the parent's hash followed by the content hash of the appended canonical rows."""
    h = hashlib.sha256(_CHAIN_FORMAT)
    h.update(parent_hash.encode())
    h.update(content_hash(rows).encode())
    return h.hexdigest()


def append_bars(
    name: str,
    source: str | Source | pd.DataFrame,
    *,
    on_error: OnError = "quarantine",
    parent_frame: pd.DataFrame | None = None,
    store: Store | None = None,
    settings: Settings | None = None,
) -> tuple[IngestResult, pd.DataFrame]:
    """Append ``source``'s rows to the latest version of dataset ``name``; returns the result and the full table.

    The rows must all be dated after the parent's last day (history is never rewritten by an append). Appending
    the same rows twice returns the stored version (same chained hash) and writes nothing.
    Raises :class:`NotFoundError` when ``name`` has no version, :class:`ValidationError` for rows dated on or
    before the parent's end, or when no valid row is left.
    """
    if on_error not in ("fail", "quarantine"):
        raise ValidationError(f"must be 'fail' or 'quarantine', got {on_error!r}", field="on_error")
    settings = settings or get_settings()
    store = store or get_store(settings)
    parent = store.datasets.latest(name)
    if parent is None:
        raise NotFoundError(f"no dataset named {name!r} to append to; ingest it first", field="name")
    src = (
        FrameSource(source, label=f"append:{name}")
        if isinstance(source, pd.DataFrame)
        else resolve_source(source)
    )
    rows, bad, report = _canonical(src, on_error)
    if rows.empty:
        raise ValidationError(f"no valid rows left in {src.label} ({report.n_bad} rejected)", field="source")
    if rows["date"].min().date() <= parent.end_date:
        raise ValidationError(
            f"appended rows must be dated after {parent.end_date} (the last day of {parent.id}); "
            f"got {rows['date'].min().date()}", field="date",
        )  # fmt: skip
    digest = chain_hash(parent.content_hash, rows)
    existing = store.datasets.find_by_hash(digest)
    if existing is not None:
        full = (
            parent_frame
            if parent_frame is not None
            else load_dataset(parent.id, store=store, settings=settings)
        )
        return IngestResult(existing, created=False, report=report), _concat(full, rows)

    previous = (
        parent_frame if parent_frame is not None else load_dataset(parent.id, store=store, settings=settings)
    )
    full = _concat(previous, rows)
    vid = version_id(digest)
    uri = storage.join(settings.data_uri, vid, "data.parquet")
    storage.write_parquet(pa.Table.from_pandas(full, preserve_index=False), uri)
    quarantine_uri = None
    if len(bad):
        quarantine_uri = storage.join(settings.data_uri, vid, "quarantine.parquet")
        storage.write_parquet(pa.Table.from_pandas(bad, preserve_index=False), quarantine_uri)
    last_day = previous.loc[previous["date"] == previous["date"].max(), "instrument"]
    missing = sorted(set(last_day) - set(rows["instrument"]))
    days = sorted({d.strftime("%Y-%m-%d") for d in rows["date"]})
    diff = {"rows_added": len(rows), "rows_removed": 0, "rows_changed": 0, "days_added": days,
            "instruments_added": sorted(set(rows["instrument"]) - set(previous["instrument"])),
            "missing_instruments": missing, "rows_quarantined": int(len(bad)),
            "date_range_before": [str(parent.start_date), str(parent.end_date)],
            "date_range_after": [str(parent.start_date), days[-1]]}  # fmt: skip
    config = {**src.config(), "on_error": on_error, "rule_counts": report.counts(), "append": True,
              "parent_hash": parent.content_hash, "rows_hash": content_hash(rows)}  # fmt: skip
    record = DatasetRecord(
        id=vid, name=name, source=src.label, content_hash=digest, uri=uri, n_rows=len(full),
        n_instruments=int(full["instrument"].nunique()), start_date=parent.start_date,
        end_date=rows["date"].max().date(), columns=list(full.columns), n_quarantined=int(len(bad)),
        quarantine_uri=quarantine_uri, parent_id=parent.id, diff=diff, config=config, created_by=_user(),
    )  # fmt: skip
    stored = store.datasets.add(record)
    store.lineage.add_node(stored.id, "dataset", f"{name} ({stored.n_rows} rows, +{len(rows)})")
    store.lineage.add_edge(parent.id, stored.id, "appended_to", {"days": days, "rows": len(rows)})
    return IngestResult(stored, created=True, report=report, notifications=notify(stored)), full


def branch_dataset(
    name: str,
    rows: pd.DataFrame,
    *,
    origin: str,
    store: Store | None = None,
    settings: Settings | None = None,
) -> IngestResult:
    """Start dataset ``name`` from ``rows`` taken out of the stored version ``origin`` (a loop's history).

    The first version's hash chains ``name`` and ``origin``'s hash with the rows, so two loops replaying the same
    history each own a dataset to append to (an ingest of the same rows would return one shared version).
    Lineage: ``origin -> branch (branched_from)``. Returns the stored version when it exists already.
    """
    settings = settings or get_settings()
    store = store or get_store(settings)
    source = store.datasets.get(origin)
    frame, _, report = _canonical(FrameSource(rows, label=f"branch:{origin}"), "fail")
    digest = chain_hash(hashlib.sha256(f"branch|{name}|{source.content_hash}".encode()).hexdigest(), frame)
    existing = store.datasets.find_by_hash(digest)
    if existing is not None:
        return IngestResult(existing, created=False, report=report)
    vid = version_id(digest)
    uri = storage.join(settings.data_uri, vid, "data.parquet")
    storage.write_parquet(pa.Table.from_pandas(frame, preserve_index=False), uri)
    record = DatasetRecord(
        id=vid, name=name, source=f"branch:{origin}", content_hash=digest, uri=uri, n_rows=len(frame),
        n_instruments=int(frame["instrument"].nunique()), start_date=frame["date"].min().date(),
        end_date=frame["date"].max().date(), columns=list(frame.columns), n_quarantined=0, quarantine_uri=None,
        parent_id=None, diff=None, config={"branch_of": origin, "rows_hash": content_hash(frame)}, created_by=_user(),
    )  # fmt: skip
    stored = store.datasets.add(record)
    store.lineage.add_node(stored.id, "dataset", f"{name} ({stored.n_rows} rows)")
    store.lineage.add_edge(origin, stored.id, "branched_from", {"end_date": str(record.end_date)})
    return IngestResult(stored, created=True, report=report)


def _concat(previous: pd.DataFrame, rows: pd.DataFrame) -> pd.DataFrame:
    cols = list(previous.columns)
    extra = rows.reindex(columns=cols)
    out = pd.concat([previous, extra], ignore_index=True)
    out["date"] = out["date"].astype("datetime64[ns]")
    return canonical_order(out)
