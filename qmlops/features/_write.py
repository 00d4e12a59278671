"""Streaming materialisation: each batch of instruments is computed and written by a worker, so no process ever
holds the whole feature table; the driver merges small per-batch summaries into the reference statistics.

Pass 1 (per batch): compute, write ``part-NNNNN.parquet``, return per-feature count / mean / M2 (merged with
Chan et al.'s parallel update, so mean and std are exact) and a uniform sample of rows. The driver takes the
decile edges from the merged sample (at most ``SAMPLE_ROWS`` rows). Pass 2 (per part): exact row counts per
bin against those edges.
"""

from __future__ import annotations

import pickle
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from qmlops import storage
from qmlops.features._sets import FeatureSetDefinition
from qmlops.metadata import FeatureStat

__all__ = ["WriteResult", "materialize_to", "SAMPLE_ROWS", "N_BINS"]

SAMPLE_ROWS = 20_000
N_BINS = 10
Progress = Callable[[int, int], None]


@dataclass
class WriteResult:
    n_rows: int
    n_instruments: int
    start: pd.Timestamp
    end: pd.Timestamp
    stats: list[FeatureStat]


def _summarise(frame: pd.DataFrame, names: list[str], sample_rows: int, seed: int) -> dict[str, Any]:
    x = frame[names].to_numpy(np.float64)
    finite = np.isfinite(x)
    cnt = finite.sum(axis=0).astype(np.float64)
    xz = np.where(finite, x, 0.0)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean = xz.sum(axis=0) / cnt
        m2 = (np.where(finite, x - mean, 0.0) ** 2).sum(axis=0)
    rng = np.random.default_rng(seed)
    take = np.sort(rng.choice(len(frame), size=min(sample_rows, len(frame)), replace=False))
    dates = frame.index.get_level_values("datetime")
    return {
        "rows": len(frame),
        "instruments": int(frame.index.get_level_values("instrument").nunique()),
        "start": dates.min(),
        "end": dates.max(),
        "count": cnt,
        "nonnull": np.isfinite(x).sum(axis=0),
        "mean": np.nan_to_num(mean),
        "m2": m2,
        "sample": x[take],
        "dtypes": [str(frame[n].dtype) for n in names],
    }


def write_part(frame: pd.DataFrame, out_dir: str, part: int, names: list[str], sample_rows: int) -> bytes:
    """Write one batch's rows and return its pickled summary (small: per-feature moments and a row sample)."""
    table = pa.Table.from_pandas(frame.reset_index(), preserve_index=False)
    fs, path = storage.resolve(storage.join(out_dir, f"part-{part:05d}.parquet"))
    fs.create_dir(path.rsplit("/", 1)[0], recursive=True)
    pq.write_table(table, path, filesystem=fs, compression="zstd")
    return pickle.dumps(_summarise(frame, names, sample_rows, seed=part))


def merge_summaries(summaries: list[dict[str, Any]], names: list[str]) -> tuple[WriteResult, np.ndarray]:
    """Merge per-batch moments (Chan's parallel variance) and samples; returns stats without bin counts."""
    n = np.zeros(len(names))
    mean = np.zeros(len(names))
    m2 = np.zeros(len(names))
    for s in summaries:
        nb, mb, m2b = s["count"], s["mean"], s["m2"]
        total = n + nb
        with np.errstate(invalid="ignore", divide="ignore"):
            delta = mb - mean
            mean = np.where(total > 0, mean + delta * nb / total, 0.0)
            m2 = m2 + m2b + np.where(total > 0, delta**2 * n * nb / total, 0.0)
        n = total
    rows = sum(s["rows"] for s in summaries)
    sample = np.concatenate([s["sample"] for s in summaries], axis=0)
    stats = []
    for j, name in enumerate(names):
        col = sample[:, j]
        col = col[np.isfinite(col)]
        edges = np.quantile(col, np.linspace(0, 1, N_BINS + 1)).tolist() if col.size else []
        std = float(np.sqrt(m2[j] / (n[j] - 1))) if n[j] > 1 else None
        stats.append(FeatureStat(name, j, summaries[0]["dtypes"][j], float(1 - n[j] / rows) if rows else 1.0,
                                 float(mean[j]) if n[j] else None, std, edges, []))  # fmt: skip
    result = WriteResult(
        n_rows=rows,
        n_instruments=sum(s["instruments"] for s in summaries),
        start=min(s["start"] for s in summaries),
        end=max(s["end"] for s in summaries),
        stats=stats,
    )
    return result, sample


def count_bins(part_uri: str, names: list[str], edges: list[list[float]]) -> np.ndarray:
    """Rows per decile bin for every feature of one part file (finite values only)."""
    fs, path = storage.resolve(part_uri)
    x = pq.read_table(path, filesystem=fs, columns=names).to_pandas().to_numpy(np.float64)
    out = np.zeros((len(names), N_BINS), dtype=np.int64)
    for j, e in enumerate(edges):
        if not e:
            continue
        col = x[:, j]
        col = col[np.isfinite(col)]
        out[j] = np.bincount(np.searchsorted(np.asarray(e[1:-1]), col, side="right"), minlength=N_BINS)
    return out


def temp_dir_for(final_uri: str) -> str:
    return f"{final_uri.rstrip('/')}.tmp-{uuid.uuid4().hex}"


def finish_dir(tmp_uri: str, final_uri: str) -> None:
    """Move the finished directory into place (a rename on local disk: readers never see a partial set)."""
    fs, tmp = storage.resolve(tmp_uri)
    _, final = storage.resolve(final_uri)
    storage.delete(final_uri)
    fs.move(tmp, final)


def materialize_to(
    uri: str,
    definition: FeatureSetDefinition,
    out_uri: str,
    *,
    engine: str = "ray",
    num_cpus: int | None = None,
    progress: Progress | None = None,
) -> WriteResult:
    """Compute ``definition`` for the OHLCV Parquet at ``uri`` into the directory ``out_uri`` (part files).

    The directory appears whole or not at all: parts go to a temporary sibling that is moved into place last.
    """
    from qmlops.exceptions import ValidationError
    from qmlops.features._engine import (
        ENGINES,
        _index_of,
        _read_instruments,
        compute_batch,
        compute_features,
        configure_ray_data,
        plan_batches,
    )

    if engine not in ENGINES:
        raise ValidationError(f"unknown engine {engine!r}; use one of {', '.join(ENGINES)}", field="engine")
    names = definition.feature_names()
    tmp = temp_dir_for(out_uri)
    try:
        if engine == "ray":
            import ray
            import ray.data

            from qmlops.ray_utils import init_ray

            init_ray()
            instruments, calendar = _index_of(uri)
            cpus = num_cpus or max(1, int(ray.cluster_resources().get("CPU", 1)))
            chunks = plan_batches(instruments, cpus)
            per_batch = max(1, SAMPLE_ROWS // len(chunks))
            cal_values = calendar.to_numpy()
            configure_ray_data()

            def run(batch: dict[str, Any]) -> dict[str, Any]:
                out = []
                for part, chunk in zip(batch["part"], batch["instruments"], strict=True):
                    frame = compute_batch(
                        _read_instruments(uri, list(chunk)), definition, pd.DatetimeIndex(cal_values)
                    )
                    out.append(write_part(frame, tmp, int(part), names, per_batch))
                return {"summary": np.array(out, dtype=object)}

            items = [{"part": k, "instruments": c} for k, c in enumerate(chunks)]
            ds = ray.data.from_items(items, override_num_blocks=len(items))
            summaries = []
            mapped = ds.map_batches(run, batch_size=1, num_cpus=1, batch_format="numpy", zero_copy_batch=True)
            for row in mapped.iter_rows():
                summaries.append(pickle.loads(row["summary"]))
                if progress:
                    progress(len(summaries), len(chunks))
        else:
            frame = compute_features(uri, definition, engine=engine, num_cpus=num_cpus, progress=progress)
            summaries = [pickle.loads(write_part(frame, tmp, 0, names, SAMPLE_ROWS))]
        result, _ = merge_summaries(summaries, names)
        edges = [s.bin_edges for s in result.stats]
        fs, tmp_path = storage.resolve(tmp)
        parts = sorted(
            i.path for i in fs.get_file_info(pafs_selector(tmp_path)) if i.path.endswith(".parquet")
        )
        counts = np.zeros((len(names), N_BINS), dtype=np.int64)
        for part_path in parts:
            counts += count_bins(_with_scheme(tmp, tmp_path, part_path), names, edges)
        result.stats = [
            FeatureStat(
                s.feature,
                s.position,
                s.dtype,
                s.null_ratio,
                s.mean,
                s.std,
                s.bin_edges,
                [int(c) for c in counts[j]] if s.bin_edges else [],
            )  # fmt: skip
            for j, s in enumerate(result.stats)
        ]
        finish_dir(tmp, out_uri)
    except BaseException:
        storage.delete(tmp)
        raise
    return result


def pafs_selector(path: str) -> Any:
    import pyarrow.fs as pafs

    return pafs.FileSelector(path, recursive=False)


def _with_scheme(base_uri: str, base_path: str, path: str) -> str:
    """Turn a filesystem path under ``base_path`` back into a URI like ``base_uri``."""
    return base_uri + path[len(base_path) :] if "://" in base_uri else path
