"""The durable prediction log as a gateway replica writes it: buffered, appended in batches, loss counted.

On the request path ``add`` appends a tuple to a list and bumps a counter: O(1), no serialisation. Every
``flush_interval_s`` (or when the buffer reaches ``max_buffer`` rows) ``flush`` serialises the buffered rows
and appends them in one call through the metadata client. A graceful shutdown flushes everything.

Loss accounting. Each replica keeps two counters, *answered* and *flushed*, in a small memory-mapped file
(``QMLOPS_HOME/run/predlog/<host>__<pid>__<replica>.cnt``). A write to a shared mapping lands in the kernel's
page cache at once, so the counters survive a SIGKILL of the process. A later replica on the same host finds
the files of processes that are gone and records ``answered - flushed`` as that replica's loss
(``prediction_log_loss``), so what a kill cost is counted rather than guessed.

Spool. Before a prediction's response is sent, ``add`` appends its rows as one JSON line to an append-only file
(``run/predlog/spool/<host>__<pid>__<replica>.<segment>.jsonl``, one ``os.write``). The write is in the kernel's
page cache when ``add`` returns, so a SIGKILL of the replica loses nothing: the next replica on the host replays
a dead process's spool (rows whose sequence number the log lacks) before it counts the loss. Only a crash of
the machine itself can lose the last moments not yet written back to disk. Each flush starts a new segment and
removes the segments whose rows are all in the log.

Poison rows. One row the store cannot take (text UTF-8 cannot encode, a timestamp out of range, ...) must not
block the others. A row that fails to serialise, or that fails to append on its own while its neighbours
append, is *quarantined*: written as an escaped JSON line to ``run/predlog/quarantine/`` and counted
(``quarantined``), and the rest of the batch is flushed. A batch in which nothing appends is an unavailable
store, not a poison row: it stays buffered for the next flush.
"""

from __future__ import annotations

import hashlib
import json
import logging
import mmap
import os
import random
import socket
import struct
import threading
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from qmlops.exceptions import ValidationError

__all__ = ["PredictionLog", "LogOptions", "reconcile_losses", "replay_spool"]

log = logging.getLogger("qmlops.predlog")
_COUNTER = struct.Struct("<qqq")  # pid, answered, flushed (or quarantined)
MAX_PROBES = 64  # store calls one flush may spend isolating poison rows


class LogOptions:
    """``inputs``: ``"hash"`` (the default: a digest of every row, plus the full row for a ``sample_share`` of
    5% of requests) or ``"full"`` (every feature value of every row). ``flush_interval_s`` bounds what a killed
    replica can lose."""

    def __init__(self, *, enabled: bool = True, inputs: str = "hash", sample_share: float = 0.05,
                 flush_interval_s: float = 1.0, max_buffer: int = 5000) -> None:  # fmt: skip
        if inputs not in ("full", "hash"):
            raise ValidationError("monitoring.inputs must be 'full' or 'hash'", field="monitoring.inputs")
        if not 0.0 <= float(sample_share) <= 1.0:
            raise ValidationError(
                "monitoring.sample_share must be in [0, 1]", field="monitoring.sample_share"
            )
        if float(flush_interval_s) <= 0 or int(max_buffer) < 1:
            raise ValidationError("monitoring.flush_interval_s must be > 0 and max_buffer >= 1",
                                  field="monitoring.flush_interval_s")  # fmt: skip
        self.enabled, self.inputs, self.sample_share = bool(enabled), inputs, float(sample_share)
        self.flush_interval_s, self.max_buffer = float(flush_interval_s), int(max_buffer)

    @classmethod
    def from_dict(cls, data: dict[str, Any] | None) -> LogOptions:
        data = dict(data or {})
        keys = ("enabled", "inputs", "sample_share", "flush_interval_s", "max_buffer")
        return cls(**{k: data[k] for k in keys if k in data})


class _Counters:
    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            os.ftruncate(fd, _COUNTER.size)
            self._map = mmap.mmap(fd, _COUNTER.size)
        finally:
            os.close(fd)
        self.pid = os.getpid()
        self.write(0, 0)

    def write(self, answered: int, flushed: int) -> None:
        _COUNTER.pack_into(self._map, 0, self.pid, answered, flushed)

    def remove(self) -> None:
        self._map.close()
        self.path.unlink(missing_ok=True)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def reconcile_losses(store: Any, directory: Path) -> list[dict[str, Any]]:
    """Record the loss of every replica on this host whose process is gone; returns the records."""
    host = socket.gethostname()
    out = []
    for path in sorted(directory.glob(f"{host}__*.cnt")) if directory.exists() else []:
        try:
            pid, answered, flushed = _COUNTER.unpack(path.read_bytes()[: _COUNTER.size])
        except (OSError, struct.error):
            continue
        if pid == os.getpid() or _alive(pid):
            continue
        replica = path.stem.split("__", 2)[-1]
        spool = replay_spool(store, directory, pid, replica)
        # with a spool, what is lost is what it holds that the log still lacks; rows it no longer holds were
        # flushed (or quarantined) before the kill
        logged = flushed if spool is None else max(0, answered - spool[1])
        out.append(
            store.monitoring.record_loss(replica, answered, logged) | {"replayed": spool[0] if spool else 0}
        )
        path.unlink(missing_ok=True)
    return out


def _item_line(item: tuple[Any, ...]) -> bytes:
    rid, ts, name, model_id, version, variant, x, out, latency, status, index, seq = item
    return (json.dumps([rid, ts, name, model_id, version, variant, np.asarray(x, dtype=np.float64).tolist(), out,
                        latency, status, index, seq], ensure_ascii=True) + "\n").encode("ascii")  # fmt: skip


def _read_spool(path: Path) -> list[tuple[Any, ...]]:
    items = []
    for line in path.read_bytes().splitlines():
        try:
            rid, ts, name, model_id, version, variant, x, out, latency, status, index, seq = json.loads(line)
        except ValueError:  # a line torn by the kill: its response was never sent
            continue
        items.append((rid, ts, name, model_id, version, variant, np.asarray(x, dtype=np.float64), out, latency,
                      status, index, seq))  # fmt: skip
    return items


class _Spool:
    """Append-only segment files of one process; ``rotate`` starts the next one."""

    def __init__(self, directory: Path, stem: str) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        self.directory, self.stem, self.segment = directory, stem, 0
        self.done: list[tuple[Path, int]] = []  # closed segments and the last seq each holds
        self._open()

    def _open(self) -> None:
        self.path = self.directory / f"{self.stem}.{self.segment}.jsonl"
        self.fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)

    def write(self, data: bytes) -> None:
        os.write(self.fd, data)

    def rotate(self, last_seq: int) -> None:
        os.close(self.fd)
        self.done.append((self.path, last_seq))
        self.segment += 1
        self._open()

    def release(self, first_unflushed: int) -> None:
        """Remove the closed segments whose rows are all in the log (or quarantined)."""
        keep = []
        for path, last in self.done:
            if last < first_unflushed:
                path.unlink(missing_ok=True)
            else:
                keep.append((path, last))
        self.done = keep

    def remove(self) -> None:
        os.close(self.fd)
        for path, _ in self.done:
            path.unlink(missing_ok=True)
        self.path.unlink(missing_ok=True)


def replay_spool(store: Any, directory: Path, pid: int, replica: str) -> tuple[int, int] | None:
    """Append a dead process's spooled rows that the log lacks: (rows replayed, rows still missing), or None
    when it left no spool. Its spool files go."""
    host = socket.gethostname()
    paths = sorted((directory / "spool").glob(f"{host}__{pid}__{replica}.*.jsonl"))
    items = [item for path in paths for item in _read_spool(path)]
    replayed = missing_after = 0
    if not paths:
        return None
    if items:
        have = store.predictions.replica_seqs(replica)
        missing = [item for item in items if item[-1] not in have]
        if missing:
            log_ = PredictionLog(
                store, replica, directory, LogOptions(inputs="hash", sample_share=0.0), spool=False
            )
            log_._buffer = missing
            replayed = log_.flush()
            missing_after = len(missing) - replayed - log_.quarantined
            log_._counters.remove()
    for path in paths:
        path.unlink(missing_ok=True)
    return replayed, missing_after


# A replica that restarts its monitor (new monitoring options) keeps numbering its rows where the closed log
# stopped: the log's appends are keyed by (replica, seq), so a restart at 1 would have its rows skipped as resent.
_CARRIED: dict[str, tuple[int, int, int]] = {}


class PredictionLog:
    """One replica's buffer of prediction rows."""

    def __init__(self, store: Any, replica: str, directory: Path, options: LogOptions | None = None, *,
                 spool: bool = True) -> None:  # fmt: skip
        self.store = store
        self.replica = replica
        self.options = options or LogOptions()
        self.directory = directory
        self._buffer: list[tuple[Any, ...]] = []
        self._lock = threading.Lock()
        self._flush_lock = threading.Lock()
        self.flushed = 0
        self.failed_flushes = 0
        self.quarantined = 0
        self.seq = 0  # rows answered so far; also each row's sequence number in the log
        if spool:
            self.seq, self.flushed, self.quarantined = _CARRIED.pop(replica, (0, 0, 0))
        self.last_flush = time.time()
        stem = f"{socket.gethostname()}__{os.getpid()}__{replica}"
        self._counters = _Counters(directory / (f"{stem}.cnt" if spool else f"replay-{stem}.cnt"))
        self._spool = _Spool(directory / "spool", stem) if spool else None

    # -- request path -------------------------------------------------------------------------------------
    def add(self, request_id: str, ts: float, model_name: str, model_id: str, version: int, variant: str,
            rows: np.ndarray, outputs: list[float] | None, latency_ms: float, status: str) -> None:  # fmt: skip
        """Buffer one log row per input row (``request_id`` gets ``/i`` for the i-th row of a batch request, and
        ``batch_index`` i, so the log counts the request once and its rows apart)."""
        n = len(rows)
        with self._lock:
            lines = []
            for i in range(n):
                self.seq += 1
                rid = request_id if n == 1 else f"{request_id}/{i}"
                out = outputs[i] if outputs is not None else None
                item = (
                    rid,
                    ts,
                    model_name,
                    model_id,
                    version,
                    variant,
                    rows[i],
                    out,
                    latency_ms,
                    status,
                    i,
                    self.seq,
                )
                self._buffer.append(item)
                if self._spool is not None:
                    lines.append(_item_line(item))
            if self._spool is not None:
                self._spool.write(b"".join(lines))  # before the response: a SIGKILL cannot lose the rows
            self._counters.write(self.seq, self.flushed + self.quarantined)

    def due(self) -> bool:
        return len(self._buffer) >= self.options.max_buffer or (
            bool(self._buffer) and time.time() - self.last_flush >= self.options.flush_interval_s
        )

    # -- off the request path -----------------------------------------------------------------------------
    def _serialise(
        self, items: list[tuple[Any, ...]]
    ) -> tuple[list[tuple[Any, dict[str, Any]]], list[tuple[Any, str]]]:
        """(item, row) pairs the store should take, and (item, reason) for rows that cannot even be built."""
        good: list[tuple[Any, dict[str, Any]]] = []
        bad: list[tuple[Any, str]] = []
        full, share = self.options.inputs == "full", self.options.sample_share
        for item in items:
            rid, ts, name, model_id, version, variant, x, out, latency, status, index, seq = item
            try:
                values = np.asarray(x, dtype=np.float64)
                keep = full or (share > 0 and random.random() < share)
                row = {"request_id": rid, "ts": datetime.fromtimestamp(ts, UTC).replace(tzinfo=None),
                       "model_name": name, "model_version": version, "variant": variant,
                       "inputs": json.dumps(np.where(np.isfinite(values), values, np.nan).tolist()).replace(
                           "NaN", "null") if keep else None,
                       "input_hash": hashlib.blake2b(values.tobytes(), digest_size=12).hexdigest(),
                       "output": out, "latency_ms": latency, "status": status, "model_id": model_id,
                       "replica": self.replica, "seq": seq, "batch_index": index}  # fmt: skip
                for key in ("request_id", "model_name", "variant", "status", "model_id"):
                    if isinstance(row[key], str):
                        row[key].encode("utf-8")  # a lone surrogate fails here, not in the batch append
            except Exception as exc:  # noqa: BLE001 - whatever makes a row unbuildable quarantines that row
                bad.append((item, f"{type(exc).__name__}: {exc}"))
                continue
            good.append((item, row))
        return good, bad

    def _append(
        self, pairs: list[tuple[Any, dict[str, Any]]]
    ) -> tuple[list[Any], list[tuple[Any, str]], list[Any]]:
        """Append by halves until each failing row stands alone: (written, poison with reason, not tried)."""
        written: list[Any] = []
        poison: list[tuple[Any, str]] = []
        untried: list[Any] = []
        budget = [MAX_PROBES]

        def attempt(chunk: list[tuple[Any, dict[str, Any]]]) -> None:
            if budget[0] <= 0:
                untried.extend(item for item, _ in chunk)
                return
            budget[0] -= 1
            try:
                self.store.predictions.append([row for _, row in chunk])
            except Exception as exc:  # noqa: BLE001 - bisect below; a whole-store failure is told apart after
                if len(chunk) == 1:
                    poison.append((chunk[0][0], f"{type(exc).__name__}: {str(exc)[:300]}"))
                    return
                attempt(chunk[: len(chunk) // 2])
                attempt(chunk[len(chunk) // 2 :])
                return
            written.extend(item for item, _ in chunk)

        attempt(pairs)
        return written, poison, untried

    def _quarantine(self, poison: list[tuple[Any, str]]) -> None:
        """Keep what could not be stored, escaped so any text survives, and count it."""
        path = self.directory / "quarantine" / f"{socket.gethostname()}__{os.getpid()}__{self.replica}.jsonl"
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            with path.open("a", encoding="ascii") as fh:
                for item, reason in poison:
                    rid, ts, name, model_id, version, variant, x, out, latency, status, index, seq = item
                    fh.write(json.dumps({"request_id": rid, "ts": ts, "model_name": name, "model_id": model_id,
                                         "version": version, "variant": variant, "output": out, "status": status,
                                         "seq": seq, "reason": reason}, ensure_ascii=True, default=str) + "\n")  # fmt: skip
        except Exception:  # noqa: BLE001 - the count below still tells
            log.exception("could not write %d quarantined prediction rows to %s", len(poison), path)
        log.warning("quarantined %d prediction log row(s): %s", len(poison), poison[0][1])
        self.quarantined += len(poison)

    def flush(self) -> int:
        """Append the buffer; poison rows are quarantined and the rest written. When nothing could be written
        (the store is unavailable) the rows go back to the front of the buffer."""
        with self._flush_lock:
            with self._lock:
                items, self._buffer = self._buffer, []
                if items and self._spool is not None:
                    self._spool.rotate(self.seq)
            self.last_flush = time.time()
            if not items:
                return 0
            pairs, bad = self._serialise(items)
            written, poison, untried = self._append(pairs) if pairs else ([], [], [])
            if pairs and not written:  # no row went in: an unavailable store, not poison rows
                self.failed_flushes += 1
                log.warning("prediction log flush of %d rows failed (%s); kept for the next flush", len(pairs),
                            poison[0][1] if poison else "probe budget spent")  # fmt: skip
                untried = [item for item, _ in pairs]
                poison = []
            if bad or poison:
                self._quarantine(bad + poison)
            with self._lock:
                if untried:
                    self._buffer[:0] = untried
                self.flushed += len(written)
                self._counters.write(self.seq, self.flushed + self.quarantined)
                first_unflushed = min((item[-1] for item in self._buffer), default=self.seq + 1)
            if self._spool is not None:
                self._spool.release(first_unflushed)
            return len(written)

    def close(self) -> None:
        """Graceful shutdown: flush everything; the counter file goes (nothing was lost)."""
        self.flush()
        if self._spool is not None:
            _CARRIED[self.replica] = (self.seq, self.flushed, self.quarantined)
        if self.seq == self.flushed + self.quarantined:
            self._counters.remove()
            if self._spool is not None:
                self._spool.remove()

    def status(self) -> dict[str, Any]:
        return {"replica": self.replica, "pid": os.getpid(), "answered": self.seq, "flushed": self.flushed,
                "buffered": len(self._buffer), "failed_flushes": self.failed_flushes,
                "quarantined": self.quarantined}  # fmt: skip
