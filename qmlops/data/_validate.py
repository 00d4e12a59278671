"""Validation of OHLCV rows: every bad row is named with its source row number, instrument, date and rule.

Rules (checked on the source values, before any adjustment):

=================  ===========================================================================
rule               a row breaks it when
=================  ===========================================================================
``bad_date``       the date is missing or cannot be parsed
``bad_instrument`` the instrument is missing or empty
``wrong_type``     a price or volume is present but not a number
``missing_value``  a required price or the volume is missing
``non_finite``     a price, volume, factor or vwap is +/-inf
``non_positive``   a price (or factor) is <= 0
``negative_volume``volume < 0
``high_lt_low``    high < low
``close_outside``  close is outside [low, high]
``duplicate``      (instrument, date) appeared in an earlier row (the first occurrence is kept)
=================  ===========================================================================

Warnings (reported and counted in the version record, the row is kept): ``open_outside``, open outside
[low, high]. Real feeds print opening auction prices outside the continuous session's range (the bundled S&P
500 set has 78 such rows), so this is not a reason to reject a row.

Missing *columns* are not row problems: they raise :class:`~qmlops.exceptions.ValidationError` at once,
naming the column.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from qmlops.data._canonical import PRICE_COLUMNS, REQUIRED_COLUMNS
from qmlops.exceptions import ValidationError

__all__ = ["RowProblem", "ValidationReport", "validate_ohlcv", "parse_dates", "RULES", "WARNING_RULES"]

RULES = (
    "bad_date", "bad_instrument", "wrong_type", "missing_value", "non_finite", "non_positive",
    "negative_volume", "high_lt_low", "close_outside", "duplicate",
)  # fmt: skip
WARNING_RULES = ("open_outside",)
_MAX_DETAILS = 200


@dataclass(frozen=True)
class RowProblem:
    row: int  # 1-based row number in the source (for a CSV with a header: the line number minus one)
    instrument: str | None
    date: str | None
    rule: str
    value: str

    def describe(self) -> str:
        where = " ".join(x for x in (self.instrument, self.date) if x)
        return f"row {self.row}{f' ({where})' if where else ''}: {self.rule}: {self.value}"

    def to_dict(self) -> dict[str, Any]:
        return {"row": self.row, "instrument": self.instrument, "date": self.date, "rule": self.rule,
                "value": self.value}  # fmt: skip


@dataclass
class ValidationReport:
    n_rows: int
    problems: list[RowProblem] = field(default_factory=list)
    bad_rows: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=bool))
    warnings: list[RowProblem] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems

    @property
    def n_bad(self) -> int:
        return int(self.bad_rows.sum())

    def counts(self) -> dict[str, int]:
        """Rule -> number of rows (errors and warnings)."""
        out: dict[str, int] = {}
        for p in [*self.problems, *self.warnings]:
            out[p.rule] = out.get(p.rule, 0) + 1
        return out

    def error(self, source: str) -> ValidationError:
        first = "; ".join(p.describe() for p in self.problems[:3])
        more = f" (and {len(self.problems) - 3} more)" if len(self.problems) > 3 else ""
        errors: dict[str, int] = {}
        for p in self.problems:
            errors[p.rule] = errors.get(p.rule, 0) + 1
        counts = ", ".join(f"{k}={v}" for k, v in sorted(errors.items()))
        return ValidationError(
            f"{self.n_bad} of {self.n_rows} rows break validation rules [{counts}]: {first}{more}; "
            "fix the source or ingest with --on-error quarantine",
            field=source,
            details=[p.describe() for p in self.problems[:_MAX_DETAILS]],
        )


def parse_dates(values: pd.Series) -> pd.Series:
    """Parse dates given as datetimes, ISO strings, or YYYYMMDD integers/strings; unparseable -> NaT."""
    if pd.api.types.is_datetime64_any_dtype(values):
        return (
            pd.to_datetime(values).dt.tz_localize(None).dt.normalize()
            if values.dt.tz
            else values.dt.normalize()
        )
    text = values.astype("string").str.strip()
    compact = text.str.fullmatch(r"\d{8}").fillna(False)
    out = pd.Series(pd.NaT, index=values.index, dtype="datetime64[ns]")
    if compact.any():
        out[compact] = pd.to_datetime(text[compact], format="%Y%m%d", errors="coerce")
    rest = ~compact & text.notna()
    if rest.any():
        out[rest] = pd.to_datetime(text[rest], errors="coerce", format="mixed")
    return out.dt.normalize()


def _fmt_date(value: Any) -> str | None:
    return None if pd.isna(value) else pd.Timestamp(value).strftime("%Y-%m-%d")


def validate_ohlcv(raw: pd.DataFrame, *, source: str = "data") -> tuple[pd.DataFrame, ValidationReport]:
    """Check a frame whose columns already carry canonical names; return (parsed frame, report).

    The parsed frame has canonical dtypes (dates parsed, numbers as float64, instruments upper-case) and the
    same row order as ``raw``; ``report.bad_rows`` marks the rows that broke a rule. ``raw`` may carry a
    ``_source_row`` column with the row numbers to report (default: position + 1).
    """
    missing = [c for c in REQUIRED_COLUMNS if c not in raw.columns]
    if missing:
        raise ValidationError(
            f"missing required column(s) {', '.join(missing)}; have {', '.join(map(str, raw.columns))} "
            "(map source columns with --map canonical=source)",
            field=missing[0],
        )
    n = len(raw)
    rows = raw["_source_row"].to_numpy() if "_source_row" in raw.columns else np.arange(1, n + 1)
    parsed = pd.DataFrame(index=raw.index)
    parsed["date"] = parse_dates(raw["date"])
    inst = raw["instrument"].astype("string").str.strip().str.upper()
    parsed["instrument"] = inst
    numeric_cols = [c for c in (*PRICE_COLUMNS, "volume", "factor", "vwap") if c in raw.columns]
    wrong_type = {}
    for col in numeric_cols:
        values = pd.to_numeric(raw[col], errors="coerce").astype("float64")
        wrong_type[col] = values.isna().to_numpy() & raw[col].notna().to_numpy()
        if raw[col].dtype == object or pd.api.types.is_string_dtype(raw[col]):
            blank = raw[col].astype("string").str.strip().fillna("").eq("").to_numpy()
            wrong_type[col] &= ~blank
        parsed[col] = values

    problems: list[tuple[int, str, str]] = []  # (position, rule, value)
    warnings: list[tuple[int, str, str]] = []
    bad = np.zeros(n, dtype=bool)

    def flag(mask: np.ndarray, rule: str, describe: Any) -> None:
        idx = np.flatnonzero(mask)
        sink = warnings if rule in WARNING_RULES else problems
        for i in idx:
            sink.append((int(i), rule, describe(i)))
        if rule not in WARNING_RULES:
            bad[idx] = True

    def raw_value(col: str) -> Any:
        values = raw[col].to_numpy()
        return lambda i: f"{col}={values[i]!r}"

    def num(col: str) -> np.ndarray:
        return parsed[col].to_numpy(dtype="float64", na_value=np.nan)

    flag(parsed["date"].isna().to_numpy(), "bad_date", raw_value("date"))
    flag(inst.fillna("").eq("").to_numpy(), "bad_instrument", raw_value("instrument"))
    for col in numeric_cols:
        flag(wrong_type[col], "wrong_type", raw_value(col))
    for col in (*PRICE_COLUMNS, "volume"):
        flag(
            parsed[col].isna().to_numpy() & ~wrong_type[col],
            "missing_value",
            lambda i, c=col: f"{c} is empty",
        )
    for col in numeric_cols:
        flag(np.isinf(num(col)), "non_finite", raw_value(col))
    for col in (*PRICE_COLUMNS, *(["factor"] if "factor" in parsed else [])):
        v = num(col)
        flag(np.isfinite(v) & (v <= 0), "non_positive", lambda i, c=col, v=v: f"{c}={v[i]:g}")
    vol = num("volume")
    flag(vol < 0, "negative_volume", lambda i: f"volume={vol[i]:g}")
    o, h, lo, c = (num(x) for x in PRICE_COLUMNS)
    flag(h < lo, "high_lt_low", lambda i: f"high {h[i]:g} < low {lo[i]:g}")
    flag((c < lo) | (c > h), "close_outside", lambda i: f"close {c[i]:g} not in [{lo[i]:g}, {h[i]:g}]")
    flag((o < lo) | (o > h), "open_outside", lambda i: f"open {o[i]:g} not in [{lo[i]:g}, {h[i]:g}]")
    keyed = parsed["date"].notna().to_numpy() & inst.notna().to_numpy()
    dup = np.zeros(n, dtype=bool)
    dup[keyed] = parsed.loc[keyed, ["instrument", "date"]].duplicated(keep="first").to_numpy()
    flag(dup, "duplicate", lambda i: "(instrument, date) already seen in an earlier row")

    problems.sort(key=lambda p: (p[0], RULES.index(p[1])))
    dates = parsed["date"].to_numpy()
    insts = inst.to_numpy()

    def named(found: list[tuple[int, str, str]]) -> list[RowProblem]:
        return [
            RowProblem(
                int(rows[i]), None if pd.isna(insts[i]) else str(insts[i]), _fmt_date(dates[i]), rule, value
            )
            for i, rule, value in found
        ]

    report = ValidationReport(n_rows=n, problems=named(problems), bad_rows=bad, warnings=named(warnings))
    return parsed, report
