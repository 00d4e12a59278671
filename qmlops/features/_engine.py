"""Feature engines behind one call: ``ray`` (Ray Data, native code), ``local`` (this process), ``qlib``.

The ``ray`` engine is a Ray Data pipeline: the dataset's instruments are split into batches that keep each
instrument's whole history together (the canonical Parquet is sorted by instrument, so a batch reads one
contiguous range with predicate pushdown), each batch is computed by the same vectorised code as
:func:`compute_alpha158` against the dataset's full market calendar (so calendar gaps land where Qlib puts
them), and the results are collected as Arrow tables. Batches of whole instruments rather than
``groupby("instrument").map_groups`` because a per-instrument call costs ~10 ms of fixed overhead, 500 times;
a few multi-instrument batches are vectorised once each and keep both CPUs busy.

The ``qlib`` engine exports the data to Qlib's binary format and runs Qlib's own Alpha158 handler as Ray tasks
over instrument chunks, so users can always check the native engine against Qlib.
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from qmlops import storage
from qmlops.exceptions import ValidationError
from qmlops.features._alpha158 import LABEL_NAME, alpha158_from_panel, label_from_panel
from qmlops.features._indicators import IndicatorParams, compute_indicators
from qmlops.features._panel import to_panel
from qmlops.features._sets import FeatureSetDefinition

__all__ = ["compute_features", "compute_batch", "ENGINES", "Progress"]

ENGINES = ("ray", "local", "qlib")
Progress = Callable[[int, int], None]  # (batches done, batches total)


def compute_batch(
    ohlcv: pd.DataFrame, definition: FeatureSetDefinition, calendar: pd.DatetimeIndex
) -> pd.DataFrame:
    """Features and label for whole instruments, indexed (datetime, instrument), columns features + label."""
    panel = to_panel(ohlcv, calendar)
    columns = alpha158_from_panel(panel) if definition.uses_alpha158 else {}
    columns[LABEL_NAME] = label_from_panel(panel)
    out = panel.to_long(columns)  # one stack for features and label: the panel is built once
    if definition.uses_indicators:
        ind = compute_indicators(ohlcv, IndicatorParams(**_params(definition)))
        # Alpha158 has a row for every calendar day in an instrument's span; indicators only for its rows.
        out = out.join(ind, how="left") if definition.uses_alpha158 else ind.join(out, how="left")
    names = [*definition.feature_names(), LABEL_NAME]
    return out[names]


def _params(definition: FeatureSetDefinition) -> dict[str, Any]:
    return {
        k: tuple(v) if isinstance(v, list) else v for k, v in definition.to_dict()["indicator_params"].items()
    }


def _read_instruments(uri: str, instruments: list[str]) -> pd.DataFrame:
    fs, path = storage.resolve(uri)
    table = pq.read_table(path, filesystem=fs, filters=[("instrument", "in", instruments)])
    frame = table.to_pandas()
    frame["date"] = frame["date"].astype("datetime64[ns]")
    return frame


def _batches(names: np.ndarray, n_batches: int) -> list[list[str]]:
    return [list(map(str, c)) for c in np.array_split(names, n_batches) if len(c)]


def plan_batches(names: np.ndarray, cpus: int, batches: int | None = None) -> list[list[str]]:
    """Whole-instrument batches: two per CPU (one computes while the other's result moves), more when needed so a
    batch holds at most ~200 instruments (a worker's memory stays bounded)."""
    n = batches or max(2 * cpus, -(-len(names) // 200))
    return _batches(names, max(1, min(n, len(names))))


def configure_ray_data() -> None:
    """Ray Data settings for these short, CPU-bound pipelines.

    Ray Data reserves a share of the cluster for each operator (``op_resource_reservation_ratio`` = 0.5); with
    one map operator on a 2-CPU node that admitted one task at a time, so the batches ran one after another
    (measured: 1.4 s instead of 0.9 s for the S&P set). Without the reservation both CPUs work at once.
    Ray Data spreads the batches over the nodes itself (its default for tasks with small arguments, such as these
    instrument lists; ``tests/cluster/test_multinode.py`` checks it). Ray Data 2.60 deprecates setting a
    scheduling strategy, per call or in the context, so none is set here.
    """
    import ray.data

    ctx = ray.data.DataContext.get_current()
    ctx.enable_progress_bars = False
    ctx.op_resource_reservation_enabled = False


def _index_of(uri: str) -> tuple[np.ndarray, pd.DatetimeIndex]:
    fs, path = storage.resolve(uri)
    keys = pq.read_table(path, filesystem=fs, columns=["instrument", "date"])
    names = np.unique(keys.column("instrument").to_numpy(zero_copy_only=False).astype(str))
    calendar = pd.DatetimeIndex(np.unique(keys.column("date").to_numpy()).astype("datetime64[ns]"))
    return names, calendar


def _to_arrow(frame: pd.DataFrame) -> pa.Table:
    return pa.Table.from_pandas(frame.reset_index(), preserve_index=False)


def _from_arrow(tables: list[pa.Table]) -> pd.DataFrame:
    frame = pa.concat_tables(tables).to_pandas()
    frame["datetime"] = frame["datetime"].astype("datetime64[ns]")
    return frame.set_index(["datetime", "instrument"]).sort_index()


def compute_features(
    uri: str,
    definition: FeatureSetDefinition,
    *,
    engine: str = "ray",
    num_cpus: int | None = None,
    batches: int | None = None,
    progress: Progress | None = None,
) -> pd.DataFrame:
    """Compute ``definition`` for the canonical OHLCV Parquet at ``uri`` with the chosen engine."""
    if engine not in ENGINES:
        raise ValidationError(f"unknown engine {engine!r}; use one of {', '.join(ENGINES)}", field="engine")
    names, calendar = _index_of(uri)
    if engine == "local":
        out = compute_batch(_read_instruments(uri, list(names)), definition, calendar)
        if progress:
            progress(1, 1)
        return out
    import ray

    if not ray.is_initialized():
        from qmlops.ray_utils import init_ray

        init_ray()
    cpus = num_cpus or max(1, int(ray.cluster_resources().get("CPU", 1)))
    chunks = plan_batches(names, cpus, batches)
    if engine == "qlib":
        return _compute_with_qlib(uri, definition, chunks, progress)

    import ray.data

    configure_ray_data()
    items = [{"instruments": c} for c in chunks]
    ds = ray.data.from_items(items, override_num_blocks=len(items))
    cal_values = calendar.to_numpy()

    def run(batch: dict[str, Any]) -> pa.Table:
        tables = []
        for instruments in batch["instruments"]:
            frame = _read_instruments(uri, list(instruments))
            tables.append(_to_arrow(compute_batch(frame, definition, pd.DatetimeIndex(cal_values))))
        return pa.concat_tables(tables)

    out = ds.map_batches(run, batch_size=1, num_cpus=1, batch_format="numpy", zero_copy_batch=True)
    tables = []
    refs = out.to_arrow_refs()
    for done, ref in enumerate(refs, start=1):
        tables.append(ray.get(ref))
        if progress:
            progress(done, len(refs))
    return _from_arrow(tables)


def _compute_with_qlib(
    uri: str, definition: FeatureSetDefinition, chunks: list[list[str]], progress: Progress | None
) -> pd.DataFrame:
    """Qlib's Alpha158 handler on the data exported to Qlib's format, one Ray task per instrument chunk."""
    import ray

    if definition.uses_indicators:
        raise ValidationError("the qlib engine computes Alpha158 only; use --set alpha158", field="engine")
    from qmlops.data import export_qlib

    frame = storage.read_parquet(uri).to_pandas()
    frame["date"] = frame["date"].astype("datetime64[ns]")
    workdir = tempfile.TemporaryDirectory(prefix="qmlops-qlib-")  # removed when the tasks are done
    target = workdir.name
    export_qlib(frame, target)
    start, end = frame["date"].min().strftime("%Y-%m-%d"), frame["date"].max().strftime("%Y-%m-%d")

    # The export is on this machine's disk: run the handler tasks on this node.
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    here = NodeAffinitySchedulingStrategy(ray.get_runtime_context().get_node_id(), soft=False)

    def handler_chunk(instruments: list[str]) -> pa.Table:
        import qlib
        from qlib.contrib.data.handler import Alpha158

        qlib.init(provider_uri=target, region="us", kernels=1)
        h = Alpha158(instruments=instruments, start_time=start, end_time=end, fit_start_time=start,
                     fit_end_time=end, infer_processors=[], learn_processors=[])  # fmt: skip
        df = h.fetch(col_set=["feature", "label"])
        df.columns = [c[1] for c in df.columns]
        return _to_arrow(df)

    task = ray.remote(handler_chunk).options(num_cpus=1, scheduling_strategy=here)
    with workdir:
        refs = [task.remote(c) for c in chunks]
        tables = []
        for done, ref in enumerate(refs, start=1):
            tables.append(ray.get(ref))
            if progress:
                progress(done, len(refs))
    out = _from_arrow(tables)
    return out[[*definition.feature_names(), LABEL_NAME]]
