"""Data: real sources, validation, versions by content hash with diffs and lineage, Qlib export.

``ingest("sp500")`` stores the bundled S&P 500 set as a dataset version (once per distinct content);
``append_bars(name, rows)`` appends a day's bars as a version chained to the previous one;
``load_dataset(id)`` reads the canonical table back; ``export_qlib(frame, dir)`` writes Qlib's binary format.

``ingest("planted", n_instruments=..., n_days=..., seed=..., signal=..., regimes=...)`` stores a market with a
known answer (:class:`PlantedSpec`, :func:`generate_planted`); ``load_oracle(version)`` reads its oracle and
``oracle_daily_ic`` / ``oracle_summary`` measure it.
"""

from qmlops.data._append import FrameSource, append_bars, branch_dataset, chain_hash
from qmlops.data._canonical import CANONICAL_COLUMNS, REQUIRED_COLUMNS
from qmlops.data._hashing import content_hash
from qmlops.data._planted import (
    ORACLE_COLUMNS,
    PlantedMarket,
    generate_planted,
    oracle_daily_ic,
    oracle_summary,
)
from qmlops.data._planted_spec import SIGNAL_TERMS, PlantedSpec, Regime, SignalSpec, SignalTerm, parse_signal
from qmlops.data._qlib_export import QLIB_FIELDS, export_qlib, with_vwap
from qmlops.data._sources import (
    SOURCES,
    Bokeh5Source,
    FileSource,
    PlantedSource,
    Source,
    Sp500Source,
    SyntheticSource,
    list_sources,
    resolve_source,
)
from qmlops.data._sync import Notification, subscribe, subscribers, unsubscribe
from qmlops.data._synthetic import generate_synthetic
from qmlops.data._validate import RULES, RowProblem, ValidationReport, validate_ohlcv
from qmlops.data._versions import (
    IngestResult,
    diff_summary,
    ingest,
    load_artifact,
    load_dataset,
    load_oracle,
)

__all__ = [
    "CANONICAL_COLUMNS",
    "ORACLE_COLUMNS",
    "SIGNAL_TERMS",
    "PlantedMarket",
    "PlantedSource",
    "PlantedSpec",
    "Regime",
    "SignalSpec",
    "SignalTerm",
    "generate_planted",
    "load_artifact",
    "load_oracle",
    "oracle_daily_ic",
    "oracle_summary",
    "parse_signal",
    "REQUIRED_COLUMNS",
    "QLIB_FIELDS",
    "RULES",
    "SOURCES",
    "Source",
    "Sp500Source",
    "Bokeh5Source",
    "FileSource",
    "FrameSource",
    "SyntheticSource",
    "IngestResult",
    "Notification",
    "RowProblem",
    "ValidationReport",
    "append_bars",
    "branch_dataset",
    "chain_hash",
    "content_hash",
    "diff_summary",
    "export_qlib",
    "generate_synthetic",
    "ingest",
    "list_sources",
    "load_dataset",
    "resolve_source",
    "subscribe",
    "subscribers",
    "unsubscribe",
    "validate_ohlcv",
    "with_vwap",
]
