"""Qlib's handler processors with Qlib's exact semantics, over a (datetime, instrument) x (group, name) frame.

Infer-time (applied to every segment): :class:`RobustZScoreNorm` fitted on a train window, then
:class:`Fillna`. Learn-time (training data only): :class:`DropnaLabel`, then :class:`CSRankNorm` on the label.
These mirror ``qlib.data.dataset.processor`` (0.9.7) and are tested against it.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

__all__ = ["Processor", "RobustZScoreNorm", "Fillna", "DropnaLabel", "CSRankNorm", "default_processors",
           "apply_processors"]  # fmt: skip

_EPS = 1e-12


class Processor(ABC):
    for_infer: bool = True

    def fit(self, df: pd.DataFrame) -> Processor:
        return self

    @abstractmethod
    def __call__(self, df: pd.DataFrame) -> pd.DataFrame: ...


@dataclass
class RobustZScoreNorm(Processor):
    """(x - median) / (1.4826 (MAD + 1e-12)), fitted on [fit_start, fit_end]; clipped to [-3, 3] by default."""

    fit_start: str | pd.Timestamp
    fit_end: str | pd.Timestamp
    group: str = "feature"
    clip_outlier: bool = True
    median_: np.ndarray | None = field(default=None, repr=False)
    scale_: np.ndarray | None = field(default=None, repr=False)

    def fit(self, df: pd.DataFrame) -> RobustZScoreNorm:
        dates = df.index.get_level_values("datetime")
        window = df[(dates >= pd.Timestamp(self.fit_start)) & (dates <= pd.Timestamp(self.fit_end))]
        x = window[self.group].to_numpy(dtype=np.float64)
        with np.errstate(all="ignore"):
            self.median_ = np.nanmedian(x, axis=0)
            self.scale_ = (np.nanmedian(np.abs(x - self.median_), axis=0) + _EPS) * 1.4826
        return self

    def __call__(self, df: pd.DataFrame) -> pd.DataFrame:
        if self.median_ is None or self.scale_ is None:
            raise RuntimeError("RobustZScoreNorm must be fitted first")
        out = df.copy()
        x = (out[self.group].to_numpy(dtype=np.float64) - self.median_) / self.scale_
        if self.clip_outlier:
            x = np.clip(x, -3, 3)
        out[self.group] = x.astype(np.float32)
        return out


@dataclass
class Fillna(Processor):
    group: str = "feature"
    fill_value: float = 0.0

    def __call__(self, df: pd.DataFrame) -> pd.DataFrame:
        out = df.copy()
        out[self.group] = out[self.group].fillna(self.fill_value)
        return out


@dataclass
class DropnaLabel(Processor):
    group: str = "label"
    for_infer: bool = False

    def __call__(self, df: pd.DataFrame) -> pd.DataFrame:
        return df.dropna(subset=list(df[[self.group]].columns))


@dataclass
class CSRankNorm(Processor):
    """Per date: (rank(pct=True) - 0.5) x 3.46, roughly unit variance."""

    group: str = "label"
    for_infer: bool = False

    def __call__(self, df: pd.DataFrame) -> pd.DataFrame:
        out = df.copy()
        ranked = out[self.group].groupby(level="datetime", group_keys=False).rank(pct=True)
        out[self.group] = (ranked - 0.5) * 3.46
        return out


def default_processors(fit_start: str | pd.Timestamp, fit_end: str | pd.Timestamp) -> list[Processor]:
    """Qlib Alpha158's defaults: RobustZScoreNorm + Fillna (infer), DropnaLabel + CSRankNorm (learn)."""
    return [RobustZScoreNorm(fit_start, fit_end), Fillna(), DropnaLabel(), CSRankNorm()]


def apply_processors(df: pd.DataFrame, processors: list[Processor], *, for_learning: bool) -> pd.DataFrame:
    """Fit (where needed) and apply; learn-only processors run only when ``for_learning``."""
    for proc in processors:
        if not proc.for_infer and not for_learning:
            continue
        df = proc.fit(df)(df) if isinstance(proc, RobustZScoreNorm) and proc.median_ is None else proc(df)
    return df
