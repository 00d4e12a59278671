"""Model signatures: the input features (names, order, dtypes) and what the output means."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

import pandas as pd

__all__ = ["Signature", "DEFAULT_OUTPUT"]

DEFAULT_OUTPUT: dict[str, Any] = {"shape": ["n"], "meaning": "predicted LABEL0 (next-day return) score"}


@dataclass(frozen=True)
class Signature:
    feature_names: list[str]
    dtypes: list[str]
    output: dict[str, Any] = field(default_factory=lambda: dict(DEFAULT_OUTPUT))

    @classmethod
    def from_frame(cls, frame: pd.DataFrame, output: dict[str, Any] | None = None) -> Signature:
        names = [str(c) for c in frame.columns]
        dtypes = [str(frame[c].dtype) for c in frame.columns]
        return cls(names, dtypes, output or dict(DEFAULT_OUTPUT))

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Signature:
        return cls(list(data["feature_names"]), list(data["dtypes"]), dict(data.get("output") or {}))

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)
