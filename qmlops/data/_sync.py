"""Data-sync callbacks: stages that want to react to a new dataset version subscribe here.

A subscriber is called once per *new* version, after the version is stored. A failing subscriber is reported
(and logged) and never undoes the ingest.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass

from qmlops.metadata import DatasetRecord

__all__ = ["Notification", "subscribe", "unsubscribe", "subscribers", "notify"]

log = logging.getLogger(__name__)

Subscriber = Callable[[DatasetRecord], object]


@dataclass(frozen=True)
class Notification:
    subscriber: str
    ok: bool
    error: str | None = None

    def to_dict(self) -> dict[str, object]:
        return {"subscriber": self.subscriber, "ok": self.ok, "error": self.error}


_SUBSCRIBERS: dict[str, Subscriber] = {}
_LOCK = threading.Lock()


def subscribe(name: str, callback: Subscriber) -> None:
    """Call ``callback(record)`` for every new dataset version; a second subscribe under a name replaces it."""
    with _LOCK:
        _SUBSCRIBERS[name] = callback


def unsubscribe(name: str) -> None:
    with _LOCK:
        _SUBSCRIBERS.pop(name, None)


def subscribers() -> list[str]:
    with _LOCK:
        return sorted(_SUBSCRIBERS)


def notify(record: DatasetRecord) -> list[Notification]:
    with _LOCK:
        targets = list(_SUBSCRIBERS.items())
    out = []
    for name, callback in targets:
        try:
            callback(record)
        except Exception as exc:  # reported, never raised: the ingest already happened
            log.warning("data-sync subscriber %s failed for %s: %s", name, record.id, exc)
            out.append(Notification(name, False, f"{type(exc).__name__}: {exc}"))
        else:
            out.append(Notification(name, True))
    return out
