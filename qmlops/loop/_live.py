"""The loop on new data: day files dropped in a directory (local or a ``pyarrow.fs`` URI), or days appended to the
loop's dataset with ``qmlops data ingest --append``; in this process or in a named, detached Ray actor.

A day file is a CSV or Parquet of one or more days' bars (column names as at ingest). Files are taken in name
order; a file whose days are all processed is skipped, so re-scanning a directory never repeats a day.
"""

from __future__ import annotations

import io
import threading
import time
import traceback
from typing import Any

import pandas as pd
import pyarrow.fs as pafs

from qmlops import storage
from qmlops.config import Settings, get_settings
from qmlops.exceptions import ValidationError
from qmlops.loop._controller import LoopController
from qmlops.loop._policy import LoopPolicy, load_policy
from qmlops.metadata import get_store

__all__ = ["open_live", "scan_once", "run_live", "loop_actor"]

_SUFFIXES = (".csv", ".parquet", ".pq")


def open_live(name: str, dataset: str, *, policy: LoopPolicy | dict[str, Any] | str | None = None,
              settings: Settings | None = None) -> LoopController:  # fmt: skip
    """A live loop over dataset ``dataset`` (its latest version is the history; new days are appended to it)."""
    settings = settings or get_settings()
    store = get_store(settings)
    pol = policy if isinstance(policy, LoopPolicy) else load_policy(policy)
    record = store.datasets.resolve(dataset)
    loop = store.loops.create(name, dataset=record.name, source=None, mode="live",
                              policy=pol.model_dump(mode="json"), model=f"loop-{name}")  # fmt: skip
    return LoopController(loop, store=store, settings=settings)


def _read_day_file(uri: str) -> pd.DataFrame:
    data = storage.read_bytes(uri)
    try:
        if uri.lower().endswith(".csv"):
            frame = pd.read_csv(io.BytesIO(data))
        else:
            frame = pd.read_parquet(io.BytesIO(data))
    except (ValueError, OSError) as exc:
        raise ValidationError(f"cannot read {uri}: {exc}", field="watch") from None
    return frame


def scan_once(ctl: LoopController, watch: str | None = None) -> list[str]:
    """Process every new day: those appended to the loop's dataset by others, then those in ``watch``'s files.

    Returns the days processed, in order.
    """
    done: list[str] = []
    ctl._load_table()
    last = ctl.store.loops.get(ctl.id)["last_day"]
    for day in ctl.calendar:  # appended by `qmlops data ingest --append`
        if last is None or day > pd.Timestamp(last):
            if last is None and len(ctl.calendar) and day != ctl.calendar[-1]:
                continue  # a new loop starts at the dataset's last day
            ctl.run_day(day)
            done.append(str(day.date()))
    if watch is None:
        return done
    fs, path = storage.resolve(watch)
    infos = fs.get_file_info(pafs.FileSelector(path, recursive=False, allow_not_found=True))
    files = sorted(
        i.path for i in infos if i.type == pafs.FileType.File and i.path.lower().endswith(_SUFFIXES)
    )
    for file in files:
        uri = watch.rstrip("/") + "/" + file.rsplit("/", 1)[-1]
        frame = _read_day_file(uri)
        dates = pd.to_datetime(frame[[c for c in frame.columns if c.lower() in ("date", "datetime")][0]])
        last_day = ctl.calendar[-1] if len(ctl.calendar) else None
        for day in sorted(dates.dt.normalize().unique()):
            if last_day is not None and day <= last_day:
                continue  # stored already: processed (or about to be, by the scan above)
            ctl.run_day(day, rows=frame[dates.dt.normalize() == day])
            done.append(str(pd.Timestamp(day).date()))
    return done


def run_live(
    ctl: LoopController, watch: str | None, *, poll_s: float = 5.0, stop: threading.Event | None = None
) -> dict[str, Any]:
    """Scan, sleep, repeat until the loop is asked to stop (``qmlops loop stop``) or ``stop`` is set."""
    ctl.store.loops.update(ctl.id, state="running", error=None)
    while not (stop is not None and stop.is_set()):
        if ctl.store.loops.get(ctl.id)["state"] == "stopping":
            break
        try:
            scan_once(ctl, watch)
        except Exception as exc:  # recorded; the next scan tries again
            ctl.store.loops.update(ctl.id, error=f"{type(exc).__name__}: {exc}"[:2000])
            traceback.print_exc()
        time.sleep(poll_s)
    return ctl.store.loops.update(ctl.id, state="stopped")


class _LoopActor:
    """Named, detached: runs one live loop in a thread; survives the CLI that started it."""

    def __init__(self, name: str, dataset: str, policy: dict[str, Any], watch: str | None, poll_s: float,
                 settings: Settings) -> None:  # fmt: skip
        self.stop_event = threading.Event()
        self.ctl = open_live(name, dataset, policy=policy, settings=settings)
        self.thread = threading.Thread(target=run_live, args=(self.ctl, watch), kwargs={"poll_s": poll_s,
                                       "stop": self.stop_event}, name=f"loop-{name}", daemon=True)  # fmt: skip
        self.thread.start()

    def alive(self) -> bool:
        return self.thread.is_alive()

    def shutdown(self) -> None:
        self.stop_event.set()


def loop_actor(name: str, dataset: str, policy: LoopPolicy, watch: str | None, poll_s: float = 5.0,
               settings: Settings | None = None) -> Any:  # fmt: skip
    """Start (or find) the loop's actor ``<metadata actor name>-loop-<name>``; it appears in the Ray dashboard."""
    import ray

    settings = settings or get_settings()
    return ray.remote(_LoopActor).options(
        name=f"{settings.metadata_actor_name}-loop-{name}", namespace=settings.metadata_namespace,
        lifetime="detached", get_if_exists=True, num_cpus=0, max_concurrency=4,
    ).remote(name, dataset, policy.model_dump(mode="json"), watch, poll_s, settings)  # fmt: skip
