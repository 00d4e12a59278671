"""Sticky assignment of units (users, accounts) to variants, with mutually exclusive experiments in layers.

A unit's bucket is ``int(sha256(f"{salt}:{unit_id}")[:8 bytes]) mod 10_000``: deterministic across processes
and machines (unlike Python's ``hash``), uniform, and independent between salts. Within a :class:`Layer`,
experiments own disjoint bucket ranges of the *layer's* hash, so a unit is in at most one experiment of the
layer; the variant is then drawn from a second hash salted with the experiment name, so the split inside an
experiment is independent of which layer slice it got (Tang et al. 2010, "Overlapping Experiment
Infrastructure: More, Better, Faster Experimentation", KDD). Different layers use different salts, so their
assignments are independent of each other.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from qmlops.exceptions import ValidationError

__all__ = ["BUCKETS", "bucket_of", "assign_variant", "ExperimentSlot", "Layer"]

BUCKETS = 10_000


def bucket_of(unit_id: str, salt: str, buckets: int = BUCKETS) -> int:
    """Deterministic bucket in ``[0, buckets)`` of ``unit_id`` under ``salt``."""
    digest = hashlib.sha256(f"{salt}:{unit_id}".encode()).digest()
    return int.from_bytes(digest[:8], "big") % buckets


def _cumulative(weights: Sequence[float]) -> np.ndarray:
    w = np.asarray(weights, dtype=np.float64)
    if w.size == 0 or np.any(w < 0) or not np.isfinite(w).all() or w.sum() <= 0:
        raise ValidationError("variant weights must be non-negative with a positive sum", field="weights")
    return np.cumsum(w / w.sum())


def assign_variant(
    unit_id: str, experiment: str, variants: Sequence[str], weights: Sequence[float] | None = None
) -> str:
    """The variant of ``unit_id`` in ``experiment``: the same answer every time for the same inputs."""
    if not variants:
        raise ValidationError("an experiment needs at least one variant", field="variants")
    if weights is not None and len(weights) != len(variants):
        raise ValidationError("one weight per variant is needed", field="weights")
    cum = _cumulative(weights if weights is not None else [1.0] * len(variants))
    u = (bucket_of(unit_id, f"experiment:{experiment}") + 0.5) / BUCKETS
    return variants[min(int(np.searchsorted(cum, u, side="right")), len(variants) - 1)]


@dataclass(frozen=True)
class ExperimentSlot:
    """An experiment in a layer: its share of the layer's traffic and its variants with weights."""

    name: str
    traffic: float
    variants: tuple[str, ...]
    weights: tuple[float, ...] | None = None


class Layer:
    """Mutually exclusive experiments: slots take consecutive, disjoint bucket ranges of the layer's hash."""

    def __init__(self, name: str, experiments: Sequence[ExperimentSlot]) -> None:
        total = sum(e.traffic for e in experiments)
        if any(e.traffic < 0 for e in experiments) or total > 1.0 + 1e-9:
            raise ValidationError(f"layer {name!r}: traffic shares must be >= 0 and sum to at most 1",
                                  field="traffic")  # fmt: skip
        if len({e.name for e in experiments}) != len(experiments):
            raise ValidationError(f"layer {name!r}: experiment names must be unique", field="experiments")
        self.name = name
        self.experiments = list(experiments)
        self._upper = np.round(np.cumsum([e.traffic for e in experiments]) * BUCKETS).astype(int)

    def assign(self, unit_id: str) -> tuple[str, str] | None:
        """``(experiment, variant)`` for the unit, or ``None`` when it falls in the layer's unused traffic."""
        bucket = bucket_of(unit_id, f"layer:{self.name}")
        i = int(np.searchsorted(self._upper, bucket, side="right"))
        if i >= len(self.experiments):
            return None
        slot = self.experiments[i]
        return slot.name, assign_variant(unit_id, slot.name, slot.variants, slot.weights)
