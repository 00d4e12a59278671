"""Bounded per-feature window sketches, cheap enough to update on the request path.

A :class:`WindowSketch` keeps the last ``capacity`` rows of ``F`` features in a preallocated ``capacity x F``
ring buffer, the reference cell of every stored value (``capacity x F`` int16), and the per-feature cell
counts of the window. Adding a row costs O(F B) vectorised comparisons against the padded reference edges
(equivalent to ``searchsorted(edges, x, side="right")``) plus O(F) count updates for the row it evicts: no
allocation that grows with the window, no sorting. The drift tests then run off the request path, on a
schedule decided by the pure :func:`should_run`.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from qmlops.exceptions import ValidationError
from qmlops.monitoring._drift import FeatureReference

__all__ = ["WindowSketch", "should_run"]


def should_run(now_s: float, rows_since_last: int, *, last_run_s: float | None, every_rows: int = 1000,
               every_s: float = 60.0, min_rows: int = 1) -> bool:  # fmt: skip
    """Whether to evaluate drift now: after ``every_rows`` new rows or ``every_s`` seconds since the last run,
    whichever comes first, but never with fewer than ``min_rows`` new rows (nothing new, nothing to test).
    ``last_run_s=None`` (never run) counts as due once ``min_rows`` rows arrived."""
    if rows_since_last < max(min_rows, 0) or rows_since_last <= 0:
        return False
    if last_run_s is None or rows_since_last >= every_rows:
        return True
    return now_s - last_run_s >= every_s


class WindowSketch:
    """Ring buffer of the last ``capacity`` rows plus incrementally maintained cell counts per feature."""

    def __init__(self, references: Sequence[FeatureReference], capacity: int = 10_000) -> None:
        if capacity < 1:
            raise ValidationError("window capacity must be at least 1", field="capacity")
        if not references:
            raise ValidationError("at least one feature reference is needed", field="references")
        self.references = list(references)
        self.capacity = int(capacity)
        n_features = len(self.references)
        self.n_cells = np.array([r.n_cells for r in self.references])
        width = int(self.n_cells.max())
        self._continuous = np.array([r.kind == "continuous" for r in self.references])
        self._all_continuous = bool(self._continuous.all())
        # Interior edges padded with +inf (never <= a finite x); categories padded with NaN (never equal).
        self._edges = np.full((n_features, max(width - 1, 1)), np.inf)
        self._cats = np.full((n_features, max(width - 1, 1)), np.nan)
        for j, ref in enumerate(self.references):
            if ref.kind == "continuous":
                inner = ref.bin_edges[1:-1]
                self._edges[j, : inner.size] = inner
            else:
                assert ref.categories is not None
                self._cats[j, : ref.categories.size] = ref.categories
        self._n_categories = np.array(
            [0 if r.categories is None else r.categories.size for r in self.references]
        )
        self._values = np.full((self.capacity, n_features), np.nan)
        self._cells = np.full((self.capacity, n_features), -1, dtype=np.int16)
        self._counts = np.zeros((n_features, width), dtype=np.int64)
        self._offsets = np.arange(n_features) * width
        self._pos = 0
        self.size = 0
        self.rows_seen = 0

    @property
    def n_features(self) -> int:
        return len(self.references)

    def _cells_of(self, rows: np.ndarray) -> np.ndarray:
        """Cell of every value of ``rows`` (k x F); -1 for non-finite values."""
        finite = np.isfinite(rows)
        x = rows[:, :, None]
        cells = (self._edges[None] <= x).sum(axis=2)
        if not self._all_continuous:
            hits = self._cats[None] == x
            categorical = np.where(hits.any(axis=2), hits.argmax(axis=2), self._n_categories[None])
            cells = np.where(self._continuous[None], cells, categorical)
        return np.where(finite, cells, -1).astype(np.int16)

    def _check(self, rows: np.ndarray) -> np.ndarray:
        arr = np.asarray(rows, dtype=np.float64)
        if arr.ndim == 1:
            arr = arr[None]
        if arr.ndim != 2 or arr.shape[1] != self.n_features:
            raise ValidationError(f"rows must have {self.n_features} features, got shape {np.shape(rows)}",
                                  field="row")  # fmt: skip
        return arr

    def update(self, row: np.ndarray) -> None:
        """Add one row (F values; NaN allowed, it is simply not counted)."""
        self.update_batch(row)

    def update_batch(self, rows: np.ndarray) -> None:
        """Add k rows (k x F); only the last ``capacity`` of them can remain in the window."""
        arr = self._check(rows)
        k_total = arr.shape[0]
        if k_total == 0:
            return
        arr = arr[-self.capacity :]
        k = arr.shape[0]
        slots = (self._pos + np.arange(k)) % self.capacity
        old = self._cells[slots]
        new = self._cells_of(arr)
        flat = self._counts.reshape(-1)
        old_idx = (self._offsets[None] + old)[old >= 0]
        new_idx = (self._offsets[None] + new)[new >= 0]
        if k == 1:  # one row: indices are distinct (one per feature), so fancy in-place updates are exact
            flat[old_idx] -= 1
            flat[new_idx] += 1
        else:
            if old_idx.size:
                flat -= np.bincount(old_idx, minlength=flat.size)
            flat += np.bincount(new_idx, minlength=flat.size)
        self._values[slots] = arr
        self._cells[slots] = new
        self._pos = int((self._pos + k) % self.capacity)
        self.size = min(self.size + k, self.capacity)
        self.rows_seen += k_total

    def counts(self, j: int) -> np.ndarray:
        """Window cell counts of feature ``j`` aligned with its reference cells."""
        return self._counts[j, : self.n_cells[j]].astype(np.float64)

    def values(self, j: int) -> np.ndarray:
        """Finite window values of feature ``j`` (order not meaningful)."""
        col = self._values[: self.size, j]
        return col[np.isfinite(col)]
