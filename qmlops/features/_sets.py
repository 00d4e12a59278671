"""Feature set definitions: what a set computes, versioned by the hash of its definition.

A definition names its kind (alpha158, indicators, or all), its parameters, its label and the version of the
feature code; changing any of them is a new feature-set version, so stale materialisations are never reused.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field
from typing import Any

from qmlops.exceptions import NotFoundError
from qmlops.features._alpha158 import LABEL_NAME, alpha158_feature_names
from qmlops.features._indicators import IndicatorParams, indicator_feature_names
from qmlops.metadata import FeatureSetRecord

__all__ = ["FeatureSetDefinition", "BUILTIN_SETS", "builtin_set", "FEATURE_CODE_VERSION"]

# Bump when the feature math changes in a way that changes values.
FEATURE_CODE_VERSION = "1"
_KINDS = ("alpha158", "indicators", "all")


@dataclass(frozen=True)
class FeatureSetDefinition:
    name: str
    kind: str
    indicator_params: IndicatorParams = field(default_factory=IndicatorParams)
    label: str = "Ref($close, -2)/Ref($close, -1) - 1"
    code_version: str = FEATURE_CODE_VERSION

    def __post_init__(self) -> None:
        if self.kind not in _KINDS:
            raise NotFoundError(f"unknown feature set kind {self.kind!r}; use one of {', '.join(_KINDS)}",
                                field="feature_set")  # fmt: skip

    @property
    def uses_alpha158(self) -> bool:
        return self.kind in ("alpha158", "all")

    @property
    def uses_indicators(self) -> bool:
        return self.kind in ("indicators", "all")

    def feature_names(self) -> list[str]:
        names: list[str] = []
        if self.uses_alpha158:
            names += alpha158_feature_names()
        if self.uses_indicators:
            names += indicator_feature_names(self.indicator_params)
        return names

    def label_names(self) -> list[str]:
        return [LABEL_NAME]

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["indicator_params"] = {
            k: list(v) if isinstance(v, tuple) else v for k, v in out["indicator_params"].items()
        }
        return out

    @property
    def id(self) -> str:
        blob = json.dumps(self.to_dict(), sort_keys=True).encode()
        return "fs-" + hashlib.sha256(blob).hexdigest()[:16]

    def record(self) -> FeatureSetRecord:
        return FeatureSetRecord(self.id, self.name, self.to_dict(), self.feature_names(), self.label_names())


BUILTIN_SETS = {
    "alpha158": FeatureSetDefinition("alpha158", "alpha158"),
    "indicators": FeatureSetDefinition("indicators", "indicators"),
    "all": FeatureSetDefinition("all", "all"),
}


def builtin_set(name: str | FeatureSetDefinition) -> FeatureSetDefinition:
    if isinstance(name, FeatureSetDefinition):
        return name
    try:
        return BUILTIN_SETS[name]
    except KeyError:
        raise NotFoundError(
            f"unknown feature set {name!r}; use one of {', '.join(BUILTIN_SETS)}", field="feature_set"
        ) from None
