"""Routing tables: which model version answers a request, sticky per user.

A table per model name holds entries (model version id, weight, role ``stable`` | ``canary`` | ``variant`` |
``standby`` | ``shadow``) and a salt. A sticky key (a user id from the body or a header) is hashed with the salt into 10,000
buckets; entries own consecutive bucket ranges in the order ``canary``/``variant`` entries first, then ``stable``,
sized by weight (largest-remainder rounding, so the ranges always cover all 10,000 buckets). A user keeps their
version while weights stay put; when a canary's weight grows from 5% to 25% its range grows from [0, 500) to
[0, 2500): only users in [500, 2500) move, and all of them move to the canary (minimal movement). Requests
without a key get a uniformly random bucket, so they are split by weight. ``standby`` entries (blue-green's warm
old version) have weight 0 and receive nothing until a switch. ``shadow`` entries also have weight 0: they never
answer a request, the gateway scores a mirrored copy of each routed request with them off the response path.
"""

from __future__ import annotations

import random
import secrets
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from qmlops.exceptions import ValidationError
from qmlops.experiments import bucket_of

__all__ = ["BUCKETS", "ROLES", "RouteEntry", "RoutingTable"]

BUCKETS = 10_000
ROLES = ("stable", "canary", "variant", "standby", "shadow")
_ORDER = {"canary": 0, "variant": 1, "stable": 2, "standby": 3, "shadow": 4}


@dataclass(frozen=True)
class RouteEntry:
    model_version: str  # mv-... id
    version: int
    weight: float
    role: str = "stable"

    def __post_init__(self) -> None:
        if self.role not in ROLES:
            raise ValidationError(f"role must be one of {', '.join(ROLES)}; got {self.role!r}", field="role")
        if not (0.0 <= float(self.weight) <= 100.0):
            raise ValidationError(f"weight must be in [0, 100], got {self.weight}", field="weight")


@dataclass(frozen=True)
class RoutingTable:
    model: str
    entries: tuple[RouteEntry, ...]
    salt: str = field(default_factory=lambda: secrets.token_hex(8))
    sticky_field: str = "user_id"
    revision: int = 0

    def __post_init__(self) -> None:
        live = [e for e in self.entries if e.weight > 0]
        if not live:
            raise ValidationError(
                f"routing table for {self.model!r} needs an entry with weight > 0", field="entries"
            )
        ids = [e.model_version for e in self.entries]
        if len(set(ids)) != len(ids):
            raise ValidationError("a model version may appear once per table", field="entries")

    # -- assignment ---------------------------------------------------------------------------------------
    def ranges(self) -> list[tuple[RouteEntry, int, int]]:
        """(entry, first bucket, end bucket) for entries with weight, in bucket order."""
        ordered = sorted((e for e in self.entries if e.weight > 0), key=lambda e: (_ORDER[e.role], e.version))
        total = sum(e.weight for e in ordered)
        exact = [e.weight / total * BUCKETS for e in ordered]
        sizes = [int(x) for x in exact]
        for i in sorted(range(len(exact)), key=lambda i: exact[i] - sizes[i], reverse=True)[
            : BUCKETS - sum(sizes)
        ]:
            sizes[i] += 1
        out, start = [], 0
        for entry, size in zip(ordered, sizes, strict=True):
            out.append((entry, start, start + size))
            start += size
        return out

    def bucket(self, key: str | None) -> int:
        return bucket_of(str(key), self.salt, BUCKETS) if key else random.randrange(BUCKETS)

    def route(self, key: str | None) -> RouteEntry:
        b = self.bucket(key)
        for entry, lo, hi in self.ranges():
            if lo <= b < hi:
                return entry
        raise AssertionError("bucket ranges cover [0, BUCKETS)")  # pragma: no cover

    def entry_for(self, version: int | str) -> RouteEntry | None:
        for e in self.entries:
            if str(e.version) == str(version) or e.model_version == str(version):
                return e
        return None

    # -- changes ------------------------------------------------------------------------------------------
    def with_weights(
        self, weights: Mapping[str, float], roles: Mapping[str, str] | None = None
    ) -> RoutingTable:
        """A new revision with the given weights (by model version id); entries not named keep theirs."""
        roles = roles or {}
        entries = tuple(
            RouteEntry(e.model_version, e.version, float(weights.get(e.model_version, e.weight)),
                       roles.get(e.model_version, e.role))
            for e in self.entries
        )  # fmt: skip
        return RoutingTable(self.model, entries, self.salt, self.sticky_field, self.revision + 1)

    def with_entry(self, entry: RouteEntry) -> RoutingTable:
        others = tuple(e for e in self.entries if e.model_version != entry.model_version)
        return RoutingTable(self.model, (*others, entry), self.salt, self.sticky_field, self.revision + 1)

    def without(self, model_version: str) -> RoutingTable:
        others = tuple(e for e in self.entries if e.model_version != model_version)
        return RoutingTable(self.model, others, self.salt, self.sticky_field, self.revision + 1)

    def to_dict(self) -> dict[str, Any]:
        return {"model": self.model, "salt": self.salt, "sticky_field": self.sticky_field, "revision": self.revision,
                "entries": [asdict(e) for e in self.entries],
                "buckets": [{"model_version": e.model_version, "from": lo, "to": hi} for e, lo, hi in self.ranges()]}  # fmt: skip

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> RoutingTable:
        entries = tuple(RouteEntry(str(e["model_version"]), int(e["version"]), float(e["weight"]), str(e.get("role", "stable")))
                        for e in data["entries"])  # fmt: skip
        return cls(str(data["model"]), entries, str(data["salt"]), str(data.get("sticky_field", "user_id")),
                   int(data.get("revision", 0)))  # fmt: skip

    @classmethod
    def single(
        cls, model: str, model_version: str, version: int, *, sticky_field: str = "user_id"
    ) -> RoutingTable:
        return cls(model, (RouteEntry(model_version, version, 100.0, "stable"),), sticky_field=sticky_field)


def versions_in(tables: Sequence[RoutingTable]) -> list[str]:
    return sorted({e.model_version for t in tables for e in t.entries})
