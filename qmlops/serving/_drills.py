"""Drill models: a registered version that behaves badly on purpose, to rehearse rollbacks end to end.

``register_drill_model`` wraps an existing version's artifact: the drill scores exactly like it, but fails a
share of requests (``error_rate``) and/or answers ``extra_latency_ms`` later, after its first ``healthy_calls``
calls per loaded copy (so it can pass the validator's smoke test and a health check, as a subtly bad model does). It is registered as a normal
version (pickle flavor, checksummed like every artifact) with the base version's signature and lineage, so the
compatibility validator passes and only the live gates can catch it, which is the point of the drill.
"""

from __future__ import annotations

import random
import time
from typing import Any

import numpy as np
import pandas as pd

from qmlops.exceptions import ValidationError

__all__ = ["DrillModel", "register_drill_model"]


class DrillModel:
    def __init__(self, flavor: str, artifact: bytes, signature: dict[str, Any], error_rate: float,
                 extra_latency_ms: float, healthy_calls: int = 0, seed: int = 0) -> None:  # fmt: skip
        self.flavor, self.artifact, self.signature = flavor, artifact, signature
        self.error_rate, self.extra_latency_ms = float(error_rate), float(extra_latency_ms)
        self.seed, self.healthy_calls = seed, int(healthy_calls)
        self._calls = 0
        self._score: Any = None
        self._rng: random.Random | None = None

    def __getstate__(self) -> dict[str, Any]:
        return {k: v for k, v in self.__dict__.items() if k not in ("_score", "_rng", "_calls")}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._score, self._rng, self._calls = None, None, 0

    def predict(self, frame: pd.DataFrame) -> np.ndarray:
        from qmlops.registry import Signature
        from qmlops.registry._flavors import get_flavor

        if self._score is None:
            self._score = get_flavor(self.flavor).load(self.artifact, Signature.from_dict(self.signature))
            self._rng = random.Random(self.seed)
        assert self._rng is not None
        self._calls += 1
        if self._calls <= self.healthy_calls:
            names = self.signature["feature_names"]
            return np.asarray(self._score(frame[names].to_numpy(dtype=np.float64)))
        if self.extra_latency_ms > 0:
            time.sleep(self.extra_latency_ms / 1000.0)
        if self.error_rate > 0 and self._rng.random() < self.error_rate:
            raise RuntimeError("drill model: injected failure")
        names = self.signature["feature_names"]
        return np.asarray(self._score(frame[names].to_numpy(dtype=np.float64)))


def register_drill_model(registry: Any, name: str, base_ref: int | str, *, error_rate: float = 0.0,
                         extra_latency_ms: float = 0.0, healthy_calls: int = 0) -> Any:  # fmt: skip
    """Register a drill copy of ``name``'s ``base_ref`` version as the next version of ``name``."""
    if not 0.0 <= error_rate <= 1.0:
        raise ValidationError("error_rate must be in [0, 1]", field="error_rate")
    if extra_latency_ms < 0:
        raise ValidationError("extra_latency_ms must be >= 0", field="extra_latency_ms")
    from qmlops.registry import Signature

    base = registry.get(name, base_ref)
    artifact = registry.artifacts.get(base.artifact_sha256, base.artifact_uri)
    drill = DrillModel(base.flavor, artifact, base.signature, error_rate, extra_latency_ms, healthy_calls)
    parents = [n.id for n in registry.store.lineage.upstream(base.id) if n.kind == "training_run"][:1]
    return registry.register(
        name, drill, signature=Signature.from_dict(base.signature), model_type=base.model_type, flavor="pickle",
        tags={**base.tags, "drill": f"error_rate={error_rate},extra_latency_ms={extra_latency_ms}"},
        description=f"drill copy of v{base.version}: error_rate={error_rate}, +{extra_latency_ms} ms",
        lineage_parents=parents, metrics=dict(base.metrics),
    )  # fmt: skip
