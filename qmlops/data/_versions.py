"""Ingest: read a source, validate, canonicalise, hash, and store a dataset version once per content.

Order of effects, so a crash never leaves a registered version without its data: (1) hash the canonical table;
(2) if the hash is stored, return that version (nothing written); (3) write the Parquet atomically; (4) insert
the metadata row and lineage; (5) notify data-sync subscribers (their failures are reported, not raised).
"""

from __future__ import annotations

import getpass
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
import pandas as pd
import pyarrow as pa

from qmlops import storage
from qmlops.config import Settings, get_settings
from qmlops.data._canonical import CANONICAL_COLUMNS, canonical_order
from qmlops.data._hashing import content_hash
from qmlops.data._planted import generate_planted
from qmlops.data._planted_spec import PlantedSpec
from qmlops.data._sources import Source, resolve_source
from qmlops.data._sync import Notification, notify
from qmlops.data._validate import ValidationReport, validate_ohlcv
from qmlops.exceptions import NotFoundError, ValidationError
from qmlops.metadata import DatasetRecord, MetadataStore, RemoteMetadataStore, get_store

__all__ = [
    "IngestResult",
    "ingest",
    "load_dataset",
    "load_artifact",
    "load_oracle",
    "diff_summary",
    "version_id",
]

OnError = Literal["fail", "quarantine"]
Store = MetadataStore | RemoteMetadataStore


@dataclass
class IngestResult:
    record: DatasetRecord
    created: bool
    report: ValidationReport | None = None
    notifications: list[Notification] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {
            **self.record.to_dict(),
            "created": self.created,
            "notifications": [n.to_dict() for n in self.notifications],
        }


def version_id(digest: str) -> str:
    return "ds-" + digest[:16]


def _canonical(source: Source, on_error: OnError) -> tuple[pd.DataFrame, pd.DataFrame, ValidationReport]:
    raw = source.read()
    parsed, report = validate_ohlcv(raw, source=source.label)
    if not report.ok and on_error == "fail":
        raise report.error(source.label)
    good = parsed.loc[~report.bad_rows]
    bad = parsed.loc[report.bad_rows]
    good = source.finalize(good, raw)
    good = good.assign(instrument=good["instrument"].astype(str))
    for col in CANONICAL_COLUMNS[2:]:
        if col in good.columns:
            good[col] = good[col].astype("float64")
    good["date"] = good["date"].astype("datetime64[ns]")
    if bad.shape[0]:
        reasons: dict[int, list[str]] = {}
        for p in report.problems:
            reasons.setdefault(p.row, []).append(f"{p.rule}: {p.value}")
        rows = raw.loc[report.bad_rows, "_source_row"].to_numpy()
        bad = raw.loc[report.bad_rows].drop(columns=[c for c in raw.columns if c.startswith("_")])
        bad = bad.astype("string").assign(
            source_row=rows, reason=["; ".join(reasons.get(int(r), [])) for r in rows]
        )
    return canonical_order(good), bad, report


def diff_summary(old: pd.DataFrame, new: pd.DataFrame) -> dict[str, Any]:
    """Rows added / removed / changed by (instrument, date), instruments added / removed, date ranges."""
    key = ["instrument", "date"]
    merged = old.merge(new, on=key, how="outer", suffixes=("_old", "_new"), indicator=True)
    added = int((merged["_merge"] == "right_only").sum())
    removed = int((merged["_merge"] == "left_only").sum())
    both = merged[merged["_merge"] == "both"]
    changed = np.zeros(len(both), dtype=bool)
    for col in sorted((set(old.columns) | set(new.columns)) - set(key)):
        a = both[f"{col}_old"] if f"{col}_old" in both else pd.Series(np.nan, index=both.index)
        b = both[f"{col}_new"] if f"{col}_new" in both else pd.Series(np.nan, index=both.index)
        a_, b_ = a.to_numpy(dtype="float64", na_value=np.nan), b.to_numpy(dtype="float64", na_value=np.nan)
        changed |= ~((a_ == b_) | (np.isnan(a_) & np.isnan(b_)))
    old_inst, new_inst = set(old["instrument"]), set(new["instrument"])

    def span(frame: pd.DataFrame) -> list[str | None]:
        if frame.empty:
            return [None, None]
        return [frame["date"].min().strftime("%Y-%m-%d"), frame["date"].max().strftime("%Y-%m-%d")]

    return {
        "rows_added": added,
        "rows_removed": removed,
        "rows_changed": int(changed.sum()),
        "instruments_added": sorted(new_inst - old_inst),
        "instruments_removed": sorted(old_inst - new_inst),
        "date_range_before": span(old),
        "date_range_after": span(new),
    }


def load_dataset(ref: str, *, store: Store | None = None, settings: Settings | None = None) -> pd.DataFrame:
    """The canonical table of a dataset version (by id, unique id prefix, or name for its latest version)."""
    store = store or get_store(settings)
    record = store.datasets.resolve(ref)
    frame = storage.read_parquet(record.uri).to_pandas()
    frame["date"] = frame["date"].astype("datetime64[ns]")
    return frame


def load_artifact(
    ref: str, artifact: str, *, store: Store | None = None, settings: Settings | None = None
) -> pd.DataFrame:
    """A table a source stored beside a version's data (e.g. a planted market's ``oracle``).

    Raises :class:`NotFoundError` (field ``artifact``) when the version has no such table.
    """
    store = store or get_store(settings)
    record = store.datasets.resolve(ref)
    uris = (record.config or {}).get("artifacts", {})
    if artifact not in uris:
        have = ", ".join(uris) or "none"
        raise NotFoundError(
            f"dataset version {record.id} ({record.source}) has no {artifact!r} table (it has: {have})",
            field="artifact",
        )
    frame = storage.read_parquet(uris[artifact]).to_pandas()
    if "date" in frame.columns:
        frame["date"] = frame["date"].astype("datetime64[ns]")
    return frame


def load_oracle(
    ref: str | PlantedSpec, *, store: Store | None = None, settings: Settings | None = None
) -> pd.DataFrame:
    """The oracle of a planted market: one row per (date, instrument) with ``regime``, ``score`` (the planted
    signal, the best possible prediction) and ``label`` (realised LABEL0).

    ``ref`` is a dataset version (id, id prefix or name) ingested from ``planted``, or a :class:`PlantedSpec`
    (generated in memory). Raises :class:`NotFoundError` for a version that is not a planted market.
    """
    if isinstance(ref, PlantedSpec):
        return generate_planted(ref).oracle
    try:
        return load_artifact(ref, "oracle", store=store, settings=settings)
    except NotFoundError as exc:
        if exc.field != "artifact":
            raise
        raise NotFoundError(
            f"{ref!r} is not a planted market (no oracle); ingest one with source 'planted'", field="dataset"
        ) from None


def ingest(
    source: str | Source,
    *,
    name: str | None = None,
    on_error: OnError = "fail",
    mapping: Mapping[str, str] | None = None,
    store: Store | None = None,
    settings: Settings | None = None,
    **source_options: Any,
) -> IngestResult:
    """Ingest ``source`` (``sp500``, ``bokeh5``, ``synthetic``, ``planted``, or a CSV/Parquet path) as a version.

    Identical content returns the stored version and writes nothing. ``on_error="fail"`` raises
    :class:`ValidationError` listing bad rows; ``"quarantine"`` stores them aside (with reasons) and ingests
    the rest. Raises :class:`ValidationError` when no valid row is left.
    """
    if on_error not in ("fail", "quarantine"):
        raise ValidationError(f"must be 'fail' or 'quarantine', got {on_error!r}", field="on_error")
    settings = settings or get_settings()
    store = store or get_store(settings)
    src = resolve_source(source, mapping=mapping, **source_options)
    name = name or (src.name if src.name != "file" else src.label.split(":", 1)[1].split(".")[0])
    frame, bad, report = _canonical(src, on_error)
    if frame.empty:
        raise ValidationError(f"no valid rows left in {src.label} ({report.n_bad} rejected)", field="source")
    digest = content_hash(frame)
    existing = store.datasets.find_by_hash(digest)
    if existing is not None:
        return IngestResult(existing, created=False, report=report)

    vid = version_id(digest)
    uri = storage.join(settings.data_uri, vid, "data.parquet")
    storage.write_parquet(pa.Table.from_pandas(frame, preserve_index=False), uri)
    quarantine_uri = None
    if len(bad):
        quarantine_uri = storage.join(settings.data_uri, vid, "quarantine.parquet")
        storage.write_parquet(pa.Table.from_pandas(bad, preserve_index=False), quarantine_uri)

    artifacts = {}
    for art_name, table in src.artifacts().items():
        artifacts[art_name] = storage.join(settings.data_uri, vid, f"{art_name}.parquet")
        storage.write_parquet(pa.Table.from_pandas(table, preserve_index=False), artifacts[art_name])

    parent = store.datasets.latest(name)
    diff = None
    if parent is not None:
        diff = diff_summary(load_dataset(parent.id, store=store, settings=settings), frame)
    config = {**src.config(), "on_error": on_error, "rule_counts": report.counts()}
    if artifacts:
        config["artifacts"] = artifacts
    record = DatasetRecord(
        id=vid,
        name=name,
        source=src.label,
        content_hash=digest,
        uri=uri,
        n_rows=len(frame),
        n_instruments=int(frame["instrument"].nunique()),
        start_date=frame["date"].min().date(),
        end_date=frame["date"].max().date(),
        columns=list(frame.columns),
        n_quarantined=int(len(bad)),
        quarantine_uri=quarantine_uri,
        parent_id=parent.id if parent else None,
        diff=diff,
        config=config,
        created_by=_user(),
    )
    stored = store.datasets.add(record)
    store.lineage.add_node(stored.id, "dataset", f"{name} ({stored.n_rows} rows)")
    if parent is not None:
        store.lineage.add_edge(parent.id, stored.id, "derived_from", config)
    return IngestResult(stored, created=True, report=report, notifications=notify(stored))


def _user() -> str | None:
    try:
        return getpass.getuser()
    except Exception:  # no user name in some containers
        return None
