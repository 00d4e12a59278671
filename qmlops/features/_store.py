"""The feature store: materialise a feature set for a dataset version once, read it back many times.

``materialize`` computes with the chosen engine, writes one Parquet file atomically, stores per-feature reference
statistics (the drift reference) and a lineage edge dataset -> materialisation, and only then marks the record
complete; a failure marks it failed and leaves no file. Asking again for a complete materialisation is a cache
hit: nothing is computed.
"""

from __future__ import annotations

import hashlib
import logging
import time
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
import pyarrow.parquet as pq

from qmlops import storage
from qmlops.config import Settings, get_settings
from qmlops.exceptions import NotFoundError, ValidationError
from qmlops.features._alpha158 import LABEL_NAME
from qmlops.features._engine import Progress
from qmlops.features._sets import FeatureSetDefinition, builtin_set
from qmlops.features._write import materialize_to
from qmlops.metadata import (
    FeatureStat,
    MaterializationRecord,
    MetadataStore,
    RemoteMetadataStore,
    get_store,
)

__all__ = ["Materialization", "materialize", "load_features", "get_features", "reference_stats",
           "enable_auto_materialize", "disable_auto_materialize", "default_feature_sets"]  # fmt: skip

log = logging.getLogger(__name__)
Store = MetadataStore | RemoteMetadataStore
N_BINS = 10


@dataclass
class Materialization:
    record: MaterializationRecord
    feature_set: FeatureSetDefinition
    cache_hit: bool

    def to_dict(self) -> dict[str, Any]:
        return {**self.record.to_dict(), "feature_set": self.feature_set.name, "cache_hit": self.cache_hit}


def _mat_id(dataset_id: str, set_id: str) -> str:
    return "fm-" + hashlib.sha256(f"{dataset_id}|{set_id}".encode()).hexdigest()[:16]


def check_stats(stats: list[FeatureStat]) -> None:
    """A last consistency check before a materialisation is marked complete."""
    for s in stats:
        if s.bin_edges and len(s.bin_counts) != N_BINS:
            raise ValidationError(f"statistics of {s.feature} are incomplete", field="stats")


def reference_stats(frame: pd.DataFrame, names: list[str]) -> list[FeatureStat]:
    """Per feature: dtype, null ratio, mean, std, decile edges and the row count per decile bin (finite values)."""
    out = []
    for pos, name in enumerate(names):
        values = frame[name].to_numpy(dtype=np.float64)
        finite = values[np.isfinite(values)]
        null_ratio = float(1.0 - finite.size / values.size) if values.size else 1.0
        if finite.size:
            edges = np.quantile(finite, np.linspace(0, 1, N_BINS + 1))
            counts = np.bincount(np.searchsorted(edges[1:-1], finite, side="right"), minlength=N_BINS)
            out.append(FeatureStat(name, pos, str(frame[name].dtype), null_ratio, float(finite.mean()),
                                   float(finite.std(ddof=1)) if finite.size > 1 else None,
                                   [float(e) for e in edges], [int(c) for c in counts]))  # fmt: skip
        else:
            out.append(FeatureStat(name, pos, str(frame[name].dtype), null_ratio, None, None, [], []))
    return out


def materialize(
    dataset: str,
    feature_set: str | FeatureSetDefinition = "alpha158",
    *,
    engine: str = "ray",
    store: Store | None = None,
    settings: Settings | None = None,
    progress: Progress | None = None,
    num_cpus: int | None = None,
) -> Materialization:
    """Materialise ``feature_set`` for a dataset version (id, prefix or name); a cache hit computes nothing."""
    from qmlops.features import min_history

    settings = settings or get_settings()
    store = store or get_store(settings)
    definition = builtin_set(feature_set)
    record = store.datasets.resolve(dataset)
    store.features.register_set(definition.record())
    mat_id = _mat_id(record.id, definition.id)
    existing = store.features.find(record.id, definition.id)
    if existing is not None and existing.status == "complete":
        return Materialization(existing, definition, cache_hit=True)

    days = len(storage.read_parquet(record.uri, columns=["date"]).column("date").unique())
    needed = min_history(definition.kind)
    if days < needed:
        raise ValidationError(
            f"dataset {record.id} has {days} trading days; feature set {definition.name} needs at least {needed}",
            field="dataset",
        )
    store.features.start(mat_id, record.id, definition.id, engine)
    uri = storage.join(settings.features_uri, mat_id)
    try:
        start = time.perf_counter()
        written = materialize_to(
            record.uri, definition, uri, engine=engine, num_cpus=num_cpus, progress=progress
        )
        elapsed = time.perf_counter() - start
        check_stats(written.stats)
        done = store.features.complete(
            mat_id, uri=uri, n_rows=written.n_rows, n_instruments=written.n_instruments,
            start_date=written.start.date(), end_date=written.end.date(), compute_seconds=elapsed,
            stats=written.stats,
        )  # fmt: skip
    except BaseException as exc:
        storage.delete(uri)
        store.features.fail(mat_id, f"{type(exc).__name__}: {exc}")
        raise
    store.lineage.add_node(mat_id, "feature_set", f"{definition.name} on {record.id}")
    store.lineage.add_edge(
        record.id, mat_id, "materialized_from", {"feature_set": definition.id, "engine": engine}
    )
    return Materialization(done, definition, cache_hit=False)


def _resolve(
    store: Store, dataset: str | None, feature_set: str | FeatureSetDefinition, materialization: str | None
) -> tuple[MaterializationRecord, FeatureSetDefinition]:
    definition = builtin_set(feature_set)
    if materialization is not None:
        rec = store.features.get(materialization)
        fs = store.features.get_set(rec.feature_set_id)
        definition = FeatureSetDefinition(fs.name, fs.definition["kind"])
    elif dataset is not None:
        found = store.features.find(store.datasets.resolve(dataset).id, definition.id)
        if found is None:
            raise NotFoundError(f"feature set {definition.name} is not materialised for {dataset!r}; "
                                f"run `qmlops features build {dataset} --set {definition.name}`",
                                field="dataset")  # fmt: skip
        rec = found
    else:
        complete = [
            m for m in store.features.list() if m.feature_set_id == definition.id and m.status == "complete"
        ]
        if not complete:
            raise NotFoundError(
                f"feature set {definition.name} has no materialisation yet", field="feature_set"
            )
        rec = complete[0]
    if rec.status != "complete" or rec.uri is None:
        raise NotFoundError(
            f"materialisation {rec.id} is {rec.status}, not complete", field="materialization"
        )
    return rec, definition


def load_features(
    dataset: str | None = None,
    feature_set: str | FeatureSetDefinition = "alpha158",
    *,
    materialization: str | None = None,
    start: str | None = None,
    end: str | None = None,
    store: Store | None = None,
) -> pd.DataFrame:
    """A Qlib-ready frame: index (datetime, instrument), columns ("feature", name) and ("label", LABEL0)."""
    store = store or get_store()
    rec, definition = _resolve(store, dataset, feature_set, materialization)
    filters = []
    if start is not None:
        filters.append(("datetime", ">=", pd.Timestamp(start)))
    if end is not None:
        filters.append(("datetime", "<=", pd.Timestamp(end)))
    assert rec.uri is not None
    fs, path = storage.resolve(rec.uri)
    frame = pq.read_table(path, filesystem=fs, filters=filters or None).to_pandas()
    frame["datetime"] = frame["datetime"].astype("datetime64[ns]")
    frame = frame.set_index(["datetime", "instrument"]).sort_index()
    features = definition.feature_names()
    columns = pd.MultiIndex.from_tuples([("feature", n) for n in features] + [("label", LABEL_NAME)])
    out = frame[[*features, LABEL_NAME]]
    out.columns = columns
    return out


def _pit_rows(
    instruments: list[str],
    as_of_date: str | pd.Timestamp,
    store: Store | None,
    dataset: str | None,
    feature_set: str | FeatureSetDefinition,
    materialization: str | None,
    since: pd.Timedelta | None = None,
) -> pd.DataFrame:
    """Feature rows of ``instruments`` dated at or before the date (and after ``date - since``), sorted by
    (instrument, datetime); the shared read of both point-in-time lookups. Labels are never read."""
    if not instruments:
        raise ValidationError("give at least one instrument", field="instruments")
    try:
        as_of = pd.Timestamp(as_of_date)
    except (ValueError, TypeError):
        raise ValidationError(f"not a date: {as_of_date!r}", field="date") from None
    store = store or get_store()
    rec, definition = _resolve(store, dataset, feature_set, materialization)
    assert rec.uri is not None
    fs, path = storage.resolve(rec.uri)
    filters: list[Any] = [
        ("instrument", "in", [str(i).upper() for i in instruments]),
        ("datetime", "<=", as_of),
    ]
    if since is not None:
        filters.append(("datetime", ">=", as_of - since))
    table = pq.read_table(path, filesystem=fs, columns=["datetime", "instrument", *definition.feature_names()],
                          filters=filters)  # fmt: skip
    return table.to_pandas().sort_values(["instrument", "datetime"])


def get_features(
    instruments: list[str],
    as_of_date: str | pd.Timestamp,
    *,
    feature_set: str | FeatureSetDefinition = "alpha158",
    dataset: str | None = None,
    materialization: str | None = None,
    store: Store | None = None,
) -> pd.DataFrame:
    """Point-in-time read: per instrument, the latest feature row dated at or before ``as_of_date``.

    No look-ahead: rows after the date are never read, and labels (which use future prices) are not returned.
    Instruments without a row by then are absent from the result (index: instrument; column ``datetime``).
    """
    frame = _pit_rows(instruments, as_of_date, store, dataset, feature_set, materialization)
    if frame.empty:
        return frame.set_index("instrument")
    return frame.groupby("instrument", sort=True).tail(1).set_index("instrument")


def get_feature_windows(
    instruments: list[str],
    as_of_date: str | pd.Timestamp,
    step_len: int,
    *,
    feature_set: str | FeatureSetDefinition = "alpha158",
    dataset: str | None = None,
    materialization: str | None = None,
    store: Store | None = None,
) -> dict[str, tuple[pd.Timestamp, pd.DataFrame]]:
    """Point-in-time windows: per instrument, its last ``step_len`` feature rows dated at or before the date.

    The same rows a ``TSDatasetH`` window holds for that day (the instrument's own rows, oldest first); an
    instrument with fewer rows is padded at the start with copies of its first row, as Qlib's
    ``ffill+bfill`` fills the window's leading gap. Returns instrument -> (date of the last row, frame): the
    last row may be older than the date by any amount (the caller sees and bounds that staleness). Instruments
    without any row by then are absent.
    """
    if step_len < 1:
        raise ValidationError("step_len must be >= 1", field="step_len")
    frame = _pit_rows(instruments, as_of_date, store, dataset, feature_set, materialization,
                      since=pd.Timedelta(days=int(step_len * 1.6) + 14))  # fmt: skip
    stale = sorted({str(i).upper() for i in instruments} - set(frame["instrument"].astype(str)))
    if stale:  # no recent row (the date is past the data, or a long gap): their latest rows, however old
        older = _pit_rows(stale, as_of_date, store, dataset, feature_set, materialization)
        frame = pd.concat([frame, older.groupby("instrument", sort=False).tail(step_len)]) if not older.empty \
            else frame  # fmt: skip
        frame = frame.sort_values(["instrument", "datetime"])
    out: dict[str, tuple[pd.Timestamp, pd.DataFrame]] = {}
    for inst, rows in frame.groupby("instrument", sort=True):
        window = rows.tail(step_len).set_index("datetime").drop(columns="instrument")
        if len(window) < step_len:
            pad = pd.concat([window.iloc[[0]]] * (step_len - len(window)))
            window = pd.concat([pad, window])
        out[str(inst)] = (pd.Timestamp(rows["datetime"].iloc[-1]), window)
    return out


_AUTO_NAME = "features.auto_materialize"


def default_feature_sets() -> tuple[str, ...]:
    """The feature sets data-sync materialises for new dataset versions (``QMLOPS_DEFAULT_FEATURE_SETS``)."""
    import os

    raw = os.environ.get("QMLOPS_DEFAULT_FEATURE_SETS", "alpha158")
    names = tuple(n.strip() for n in raw.split(",") if n.strip())
    for name in names:
        builtin_set(name)  # refuses unknown names early
    return names


def enable_auto_materialize(
    feature_sets: tuple[str, ...] = ("alpha158",), engine: str = "auto", settings: Settings | None = None
) -> None:
    """Subscribe to new dataset versions and materialise ``feature_sets`` for each (data-sync).

    ``engine="auto"`` uses Ray when this process is connected to it, else computes in-process.
    """
    from qmlops.data import subscribe

    def on_new_version(record: Any) -> None:
        import sys

        ray = sys.modules.get("ray")
        chosen = (
            engine if engine != "auto" else ("ray" if ray is not None and ray.is_initialized() else "local")
        )
        for name in feature_sets:
            materialize(record.id, name, engine=chosen, settings=settings)

    subscribe(_AUTO_NAME, on_new_version)


def disable_auto_materialize() -> None:
    from qmlops.data import unsubscribe

    unsubscribe(_AUTO_NAME)
