"""The lineage graph: nodes are versioned things, edges say which was made from which.

Traversals are recursive SQL (``WITH RECURSIVE ... UNION``), which terminates on cycles because UNION drops
rows already produced; a depth cap guards against pathological graphs.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from qmlops.exceptions import NotFoundError, ValidationError
from qmlops.metadata._db import Database, dumps, loads, utcnow

__all__ = ["LineageNode", "LineageEdge", "LineageRepository", "NODE_KINDS"]

NODE_KINDS = ("dataset", "feature_set", "training_run", "model_version", "tuning_run", "deployment")
_MAX_DEPTH = 64


@dataclass(frozen=True)
class LineageNode:
    id: str
    kind: str
    label: str | None
    created_at: datetime
    depth: int = 0

    def to_dict(self) -> dict[str, Any]:
        return {"id": self.id, "kind": self.kind, "label": self.label,
                "created_at": self.created_at.isoformat(), "depth": self.depth}  # fmt: skip


@dataclass(frozen=True)
class LineageEdge:
    src: str
    dst: str
    relation: str
    config: dict[str, Any] | None
    created_at: datetime

    def to_dict(self) -> dict[str, Any]:
        return {"src": self.src, "dst": self.dst, "relation": self.relation, "config": self.config,
                "created_at": self.created_at.isoformat()}  # fmt: skip


_TRAVERSE = """
WITH RECURSIVE walk(id, depth) AS (
    SELECT {next}, 1 FROM lineage_edges WHERE {this} = ?
    UNION
    SELECT e.{next}, w.depth + 1 FROM lineage_edges e JOIN walk w ON e.{this} = w.id WHERE w.depth < ?
)
SELECT n.id, n.kind, n.label, n.created_at, min(w.depth) AS depth
FROM walk w JOIN lineage_nodes n ON n.id = w.id
WHERE n.id <> ?
GROUP BY n.id, n.kind, n.label, n.created_at
ORDER BY depth, n.kind, n.id
"""


class LineageRepository:
    def __init__(self, db: Database) -> None:
        self._db = db

    def add_node(self, node_id: str, kind: str, label: str | None = None) -> None:
        if kind not in NODE_KINDS:
            raise ValidationError(f"must be one of {', '.join(NODE_KINDS)}; got {kind!r}", field="kind")
        self._db.execute(
            "INSERT INTO lineage_nodes VALUES (?, ?, ?, ?) ON CONFLICT (id) DO NOTHING",
            [node_id, kind, label, utcnow()],
        )

    def add_edge(self, src: str, dst: str, relation: str, config: dict[str, Any] | None = None) -> None:
        """Record that ``dst`` was produced from ``src``. Both nodes must exist."""
        if src == dst:
            raise ValidationError("a node cannot be derived from itself", field="dst")
        for ref, field_name in ((src, "src"), (dst, "dst")):
            if self._db.query_one("SELECT 1 AS x FROM lineage_nodes WHERE id = ?", [ref]) is None:
                raise NotFoundError(f"no lineage node {ref!r}", field=field_name)
        self._db.execute(
            "INSERT INTO lineage_edges VALUES (?, ?, ?, ?, ?) ON CONFLICT DO NOTHING",
            [src, dst, relation, dumps(config), utcnow()],
        )

    def get_node(self, node_id: str) -> LineageNode:
        row = self._db.query_required(
            "SELECT id, kind, label, created_at FROM lineage_nodes WHERE id = ?",
            [node_id],
            missing=f"no lineage node {node_id!r}",
            field="node",
        )
        return LineageNode(**row)

    def _walk(self, node_id: str, direction: str) -> list[LineageNode]:
        self.get_node(node_id)
        this, nxt = ("src", "dst") if direction == "down" else ("dst", "src")
        rows = self._db.query(_TRAVERSE.format(this=this, next=nxt), [node_id, _MAX_DEPTH, node_id])
        return [LineageNode(**r) for r in rows]

    def upstream(self, node_id: str) -> list[LineageNode]:
        """Every node ``node_id`` was derived from, nearest first."""
        return self._walk(node_id, "up")

    def downstream(self, node_id: str) -> list[LineageNode]:
        """Every node derived from ``node_id``, nearest first."""
        return self._walk(node_id, "down")

    def impact(self, node_id: str) -> dict[str, list[LineageNode]]:
        """What a change to ``node_id`` reaches, grouped by kind (feature sets, models, deployments, ...)."""
        out: dict[str, list[LineageNode]] = {}
        for node in self.downstream(node_id):
            out.setdefault(node.kind, []).append(node)
        return out

    def edges(self, node_id: str) -> list[LineageEdge]:
        rows = self._db.query(
            "SELECT * FROM lineage_edges WHERE src = ? OR dst = ? ORDER BY created_at, src, dst",
            [node_id, node_id],
        )
        return [LineageEdge(**{**r, "config": loads(r["config"])}) for r in rows]
