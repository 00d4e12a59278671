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

__all__ = ["BUCKETS", "bucket_of", "assign_variant", "allocate_buckets", "ExperimentSlot", "Layer"]

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


Ranges = list[tuple[int, int]]


def allocate_buckets(taken: Sequence[Sequence[int]], traffic: float) -> Ranges:
    """``traffic`` of the layer's buckets from those not ``taken`` (``[lo, hi)`` ranges), lowest first.

    An experiment gets its buckets once, when it starts, and keeps them: stopping or starting another
    experiment in the layer never moves a running experiment's users. The free buckets may be in several
    pieces (a stopped experiment's range between running ones), so the result is a list of ranges.
    """
    need = int(round(float(traffic) * BUCKETS))
    used = np.zeros(BUCKETS, dtype=bool)
    for lo, hi in taken:
        used[int(lo) : int(hi)] = True
    free = np.flatnonzero(~used)
    if need > free.size:
        raise ValidationError(f"the layer has {free.size / BUCKETS:.0%} of its traffic free; {traffic:.0%} needed",
                              field="traffic")  # fmt: skip
    chosen = free[:need]
    if chosen.size == 0:
        return []
    breaks = np.flatnonzero(np.diff(chosen) > 1)
    starts = np.concatenate([[chosen[0]], chosen[breaks + 1]])
    ends = np.concatenate([chosen[breaks], [chosen[-1]]]) + 1
    return [(int(lo), int(hi)) for lo, hi in zip(starts, ends, strict=True)]


@dataclass(frozen=True)
class ExperimentSlot:
    """An experiment in a layer: its share of the layer's traffic and its variants with weights. ``buckets``:
    the ``[lo, hi)`` ranges it was given when it started (``None``: allocated here, in order)."""

    name: str
    traffic: float
    variants: tuple[str, ...]
    weights: tuple[float, ...] | None = None
    buckets: tuple[tuple[int, int], ...] | None = None


class Layer:
    """Mutually exclusive experiments: each owns fixed, disjoint bucket ranges of the layer's hash (its own
    when it has them, else the next free ones in order)."""

    def __init__(self, name: str, experiments: Sequence[ExperimentSlot]) -> None:
        total = sum(e.traffic for e in experiments)
        if any(e.traffic < 0 for e in experiments) or total > 1.0 + 1e-9:
            raise ValidationError(f"layer {name!r}: traffic shares must be >= 0 and sum to at most 1",
                                  field="traffic")  # fmt: skip
        if len({e.name for e in experiments}) != len(experiments):
            raise ValidationError(f"layer {name!r}: experiment names must be unique", field="experiments")
        self.name = name
        self.experiments = list(experiments)
        owner = np.full(BUCKETS, -1, dtype=np.int64)
        for i, e in enumerate(self.experiments):
            if e.buckets is not None:
                for lo, hi in e.buckets:
                    if (owner[lo:hi] >= 0).any():
                        raise ValidationError(f"layer {name!r}: experiments' bucket ranges overlap",
                                              field="buckets")  # fmt: skip
                    owner[lo:hi] = i
        taken: Ranges = [r for e in self.experiments if e.buckets for r in e.buckets]
        for i, e in enumerate(self.experiments):
            if e.buckets is None:
                ranges = allocate_buckets(taken, e.traffic)
                taken += ranges
                for lo, hi in ranges:
                    owner[lo:hi] = i
        self._owner = owner

    def assign(self, unit_id: str) -> tuple[str, str] | None:
        """``(experiment, variant)`` for the unit, or ``None`` when it falls in the layer's unused traffic."""
        i = int(self._owner[bucket_of(unit_id, f"layer:{self.name}")])
        if i < 0:
            return None
        slot = self.experiments[i]
        return slot.name, assign_variant(unit_id, slot.name, slot.variants, slot.weights)
