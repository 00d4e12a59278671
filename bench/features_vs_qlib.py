"""Feature engine benchmark: Qlib's Alpha158 handler (kernels=N) vs the qmlops Ray Data engine (num_cpus=N).

Same data (the bundled S&P 500 set), same machine, one run. Both are timed end to end from their stored data
to the 158-column frame: Qlib from its binary format (written by ``export_qlib`` beforehand, not timed), qmlops
from the dataset's Parquet. Ray's cluster start-up is not in the timed region (printed separately), and the
first Ray Data run (worker start, imports) is reported apart from the warm runs. Then a scale run on synthetic
data (instruments x 1000 days) shows how time and memory grow.

Run: ``.venv/bin/python bench/features_vs_qlib.py [--cpus 2] [--scale 250,500,1000,2000] [--repeat 3]``
"""

from __future__ import annotations

import argparse
import os
import tempfile
import threading
import time
from pathlib import Path

os.environ.setdefault("RAY_AUTH_MODE", "disabled")
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")

import numpy as np
import pandas as pd
import psutil
import pyarrow as pa

from qmlops import storage
from qmlops.data import Sp500Source, export_qlib, generate_synthetic, resolve_source
from qmlops.data._versions import _canonical
from qmlops.features import builtin_set, compute_features
from qmlops.features._write import materialize_to


class PeakMemory:
    """Peak resident memory (GiB) of this process plus every Ray process on the machine, sampled every 50 ms."""

    def __init__(self) -> None:
        self.peak = 0.0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _total(self) -> float:
        total = psutil.Process().memory_info().rss
        for proc in psutil.process_iter(["name", "cmdline"]):
            try:
                cmd = " ".join(proc.info["cmdline"] or [])
                if proc.pid != os.getpid() and ("ray::" in cmd or "default_worker.py" in cmd):
                    total += proc.memory_info().rss
            except (psutil.NoSuchProcess, psutil.AccessDenied):
                continue
        return total / 2**30

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, self._total())
            time.sleep(0.05)

    def __enter__(self) -> PeakMemory:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, self._total())


def qlib_alpha158(provider: str, start: str, end: str, kernels: int) -> pd.DataFrame:
    import qlib
    from qlib.contrib.data.handler import Alpha158

    qlib.init(provider_uri=provider, region="us", kernels=kernels)
    handler = Alpha158(instruments="all", start_time=start, end_time=end, fit_start_time=start, fit_end_time=end,
                       infer_processors=[], learn_processors=[])  # fmt: skip
    return handler.fetch(col_set="feature")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--cpus", type=int, default=2)
    parser.add_argument("--scale", default="250,500,1000,2000")
    parser.add_argument("--days", type=int, default=1000)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    n = args.cpus
    definition = builtin_set("alpha158")
    work = Path(tempfile.mkdtemp(prefix="qmlops-bench-"))
    frame, _, _ = _canonical(resolve_source(Sp500Source.name), "fail")
    uri = str(work / "sp500.parquet")
    storage.write_parquet(pa.Table.from_pandas(frame, preserve_index=False), uri)
    export_qlib(frame, work / "qlib")
    start, end = frame["date"].min().strftime("%Y-%m-%d"), frame["date"].max().strftime("%Y-%m-%d")
    print(
        f"data: S&P 500, {len(frame):,} rows, {frame['instrument'].nunique()} instruments, {start} .. {end}"
    )

    with PeakMemory() as mem:
        t0 = time.perf_counter()
        theirs = qlib_alpha158(str(work / "qlib"), start, end, kernels=n)
        qlib_s = time.perf_counter() - t0
    qlib_mem = mem.peak

    import ray

    t0 = time.perf_counter()
    ray.init(num_cpus=n, object_store_memory=1 << 30, include_dashboard=False, log_to_driver=False)
    ray_start_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    compute_features(uri, definition, engine="ray")
    cold_s = time.perf_counter() - t0
    warm = []
    with PeakMemory() as mem:
        for _ in range(args.repeat):
            t0 = time.perf_counter()
            ours = compute_features(uri, definition, engine="ray")
            warm.append(time.perf_counter() - t0)
    ours_mem = mem.peak
    t0 = time.perf_counter()
    compute_features(uri, definition, engine="local")
    local_s = time.perf_counter() - t0

    feats = ours[definition.feature_names()]
    theirs = theirs["feature"] if isinstance(theirs.columns, pd.MultiIndex) else theirs
    assert feats.index.equals(theirs.index), "row sets differ"
    a, b = feats.to_numpy(np.float64), theirs.to_numpy(np.float64)
    same_nan = bool((np.isnan(a) == np.isnan(b)).all())
    both = ~np.isnan(a) & ~np.isnan(b)
    dev = np.abs(a[both] - b[both])
    rel = dev / np.maximum(np.abs(b[both]), 1e-12)
    within = np.mean((dev <= 1e-6) | (dev <= 1e-4 * np.abs(b[both])))
    best = min(warm)
    rows = len(frame)
    print()
    print(f"{'engine':<34}{'time s':>9}{'rows/s':>12}{'peak GiB':>10}")
    print(
        f"{f'Qlib Alpha158 handler, kernels={n}':<34}{qlib_s:>9.2f}{rows / qlib_s:>12,.0f}{qlib_mem:>10.2f}"
    )
    print(f"{f'qmlops Ray Data, num_cpus={n} (warm)':<34}{best:>9.2f}{rows / best:>12,.0f}{ours_mem:>10.2f}")
    print(f"{'qmlops Ray Data, first run (cold)':<34}{cold_s:>9.2f}{rows / cold_s:>12,.0f}{'':>10}")
    print(f"{'qmlops in-process, 1 core':<34}{local_s:>9.2f}{rows / local_s:>12,.0f}{'':>10}")
    print(f"speed-up vs Qlib: {qlib_s / best:.1f}x warm (median of {args.repeat}: {qlib_s / np.median(warm):.1f}x), "
          f"{qlib_s / cold_s:.1f}x cold; Ray start-up {ray_start_s:.1f} s (not timed)")  # fmt: skip
    print(f"parity: same rows, NaN cells identical={same_nan}, cells within 1e-4 rel/1e-6 abs: {within:.6f}, "
          f"max abs dev {dev.max():.2e}, max rel dev {rel.max():.2e}")  # fmt: skip

    print()
    print(f"scale (synthetic, {args.days} days, Ray Data num_cpus={n}, streaming materialisation: each worker "
          "writes its batch, the driver merges summaries):")  # fmt: skip
    print(f"{'instruments':>12}{'rows':>12}{'time s':>9}{'rows/s':>12}{'s per 1k inst':>15}{'peak GiB':>10}")
    for count in [int(x) for x in args.scale.split(",") if x]:
        syn = generate_synthetic(count, args.days, seed=1)
        syn_uri = str(work / f"syn{count}.parquet")
        storage.write_parquet(pa.Table.from_pandas(syn, preserve_index=False), syn_uri)
        with PeakMemory() as mem:
            t0 = time.perf_counter()
            written = materialize_to(syn_uri, definition, str(work / f"features-{count}"), engine="ray")
            took = time.perf_counter() - t0
        assert written.n_rows >= len(syn)
        print(f"{count:>12,}{len(syn):>12,}{took:>9.2f}{len(syn) / took:>12,.0f}{took / count * 1000:>15.2f}"
              f"{mem.peak:>10.2f}")  # fmt: skip
    ray.shutdown()


if __name__ == "__main__":
    main()
