"""Model registry tables: versions, metrics, tags, lifecycle history and aliases.

Search takes already-validated clauses (see ``qmlops.registry``): field and key names are checked against
whitelists / a strict pattern there and again here, and every value is a bound parameter.
"""

from __future__ import annotations

import builtins
import re
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from datetime import datetime
from typing import Any

from qmlops.exceptions import ConflictError, NotFoundError, ValidationError
from qmlops.metadata._db import Database, Where, dumps, loads, utcnow

__all__ = [
    "ModelVersionRecord",
    "TransitionRecord",
    "AliasEvent",
    "ModelRepository",
    "Clause",
    "SEARCH_FIELDS",
]

SEARCH_FIELDS = ("name", "version", "model_type", "flavor", "state", "created_at", "created_by", "id")
_OPS = {"=": "=", "!=": "<>", ">": ">", ">=": ">=", "<": "<", "<=": "<="}
_KEY = re.compile(r"^[A-Za-z_][A-Za-z0-9_.-]{0,63}$")


@dataclass(frozen=True)
class Clause:
    """One validated filter term: kind is field | metric | tag | alias."""

    kind: str
    key: str
    op: str
    value: Any


@dataclass(frozen=True)
class ModelVersionRecord:
    id: str
    name: str
    version: int
    model_type: str
    flavor: str
    state: str
    params: dict[str, Any]
    signature: dict[str, Any]
    environment: dict[str, Any]
    code_version: str | None
    description: str | None
    artifact_sha256: str
    artifact_uri: str
    artifact_bytes: int
    validation: dict[str, Any] | None
    created_at: datetime
    created_by: str | None
    metrics: dict[str, float] = field(default_factory=dict)
    tags: dict[str, str] = field(default_factory=dict)
    aliases: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["created_at"] = self.created_at.isoformat()
        return out


@dataclass(frozen=True)
class TransitionRecord:
    model_id: str
    name: str
    version: int
    from_state: str | None
    to_state: str
    changed_at: datetime
    seq: int
    actor: str | None
    reason: str | None

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["changed_at"] = self.changed_at.isoformat()
        return out


@dataclass(frozen=True)
class AliasEvent:
    name: str
    alias: str
    model_id: str | None
    action: str
    changed_at: datetime
    seq: int
    actor: str | None

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["changed_at"] = self.changed_at.isoformat()
        return out


class ModelRepository:
    def __init__(self, db: Database) -> None:
        self._db = db

    # -- versions -----------------------------------------------------------------------------------------
    def insert(self, values: dict[str, Any], metrics: dict[str, float], tags: dict[str, str], actor: str | None,
               initial_state: str = "registered") -> ModelVersionRecord:  # fmt: skip
        """Insert a new version of ``values["name"]`` with the next version number; returns it."""
        with self._db.transaction():
            row = self._db.query_one(
                "SELECT max(version) AS v FROM model_versions WHERE name = ?", [values["name"]]
            )
            version = (row["v"] or 0) + 1 if row else 1
            self._db.execute(
                "INSERT INTO model_versions (id, name, version, model_type, flavor, state, params, signature,"
                " environment, code_version, description, artifact_sha256, artifact_uri, artifact_bytes,"
                " validation, created_at, created_by) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                [values["id"], values["name"], version, values["model_type"], values["flavor"], initial_state,
                 dumps(values.get("params") or {}), dumps(values["signature"]), dumps(values.get("environment")),
                 values.get("code_version"), values.get("description"), values["artifact_sha256"],
                 values["artifact_uri"], values["artifact_bytes"], None, utcnow(), actor],
            )  # fmt: skip
            for key, value in metrics.items():
                self._db.execute("INSERT INTO model_metrics VALUES (?, ?, ?)", [values["id"], key, value])
            for tag, text in tags.items():
                self._db.execute("INSERT INTO model_tags VALUES (?, ?, ?)", [values["id"], tag, str(text)])
            self._add_transition(
                values["id"], values["name"], version, None, initial_state, actor, "registered"
            )
        return self.get(values["id"])

    def _add_transition(self, model_id: str, name: str, version: int, from_state: str | None, to_state: str,
                        actor: str | None, reason: str | None) -> None:  # fmt: skip
        row = self._db.query_one("SELECT coalesce(max(seq), 0) AS s FROM model_transitions")
        seq = int(row["s"]) + 1 if row else 1
        self._db.execute(
            "INSERT INTO model_transitions VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
            [model_id, name, version, from_state, to_state, utcnow(), seq, actor, reason],
        )

    def get(self, model_id: str) -> ModelVersionRecord:
        row = self._db.query_required(
            "SELECT * FROM model_versions WHERE id = ?",
            [model_id],
            missing=f"no model version {model_id!r}",
            field="model",
        )
        return self._full(row)

    def get_version(self, name: str, version: int) -> ModelVersionRecord:
        row = self._db.query_required(
            "SELECT * FROM model_versions WHERE name = ? AND version = ?",
            [name, version],
            missing=f"model {name!r} has no version {version}",
            field="version",
        )
        return self._full(row)

    def latest(self, name: str) -> ModelVersionRecord:
        row = self._db.query_required(
            "SELECT * FROM model_versions WHERE name = ? ORDER BY version DESC LIMIT 1",
            [name],
            missing=f"no model named {name!r}",
            field="model",
        )
        return self._full(row)

    def in_state(self, name: str, state: str) -> builtins.list[ModelVersionRecord]:
        rows = self._db.query(
            "SELECT * FROM model_versions WHERE name = ? AND state = ? ORDER BY version", [name, state]
        )
        return [self._full(r) for r in rows]

    def by_alias(self, name: str, alias: str) -> ModelVersionRecord:
        row = self._db.query_required(
            "SELECT model_id FROM model_aliases WHERE name = ? AND alias = ?",
            [name, alias],
            missing=f"model {name!r} has no alias {alias!r}",
            field="alias",
        )
        return self.get(row["model_id"])

    def names(self) -> builtins.list[str]:
        return [r["name"] for r in self._db.query("SELECT DISTINCT name FROM model_versions ORDER BY name")]

    def _full(self, row: dict[str, Any]) -> ModelVersionRecord:
        mid = row["id"]
        metrics = {r["key"]: r["value"] for r in self._db.query(
            "SELECT key, value FROM model_metrics WHERE model_id = ? ORDER BY key", [mid])}  # fmt: skip
        tags = {r["key"]: r["value"] for r in self._db.query(
            "SELECT key, value FROM model_tags WHERE model_id = ? ORDER BY key", [mid])}  # fmt: skip
        aliases = [r["alias"] for r in self._db.query(
            "SELECT alias FROM model_aliases WHERE model_id = ? ORDER BY alias", [mid])]  # fmt: skip
        data = dict(row)
        for key in ("params", "signature", "environment", "validation"):
            data[key] = loads(data[key])
        data["params"] = data["params"] or {}
        data["environment"] = data["environment"] or {}
        return ModelVersionRecord(**data, metrics=metrics, tags=tags, aliases=aliases)

    # -- lifecycle ----------------------------------------------------------------------------------------
    def transition(self, model_id: str, to_state: str, *, expected_from: str, actor: str | None,
                   reason: str | None, demote: dict[str, str] | None = None) -> ModelVersionRecord:  # fmt: skip
        """Move ``model_id`` to ``to_state`` (and the versions in ``demote`` to their states) atomically."""
        with self._db.transaction():
            rec = self._db.query_one(
                "SELECT name, version, state FROM model_versions WHERE id = ?", [model_id]
            )
            if rec is None:
                raise NotFoundError(f"no model version {model_id!r}", field="model")
            if rec["state"] != expected_from:
                raise ConflictError(f"{model_id} is {rec['state']}, not {expected_from}", field="state")
            for other_id, other_state in (demote or {}).items():
                other = self._db.query_one(
                    "SELECT name, version, state FROM model_versions WHERE id = ?", [other_id]
                )
                if other is None:
                    continue
                self._db.execute("UPDATE model_versions SET state = ? WHERE id = ?", [other_state, other_id])
                self._add_transition(other_id, other["name"], other["version"], other["state"], other_state, actor,
                                     f"superseded by {rec['name']} v{rec['version']}")  # fmt: skip
            self._db.execute("UPDATE model_versions SET state = ? WHERE id = ?", [to_state, model_id])
            self._add_transition(model_id, rec["name"], rec["version"], rec["state"], to_state, actor, reason)
        return self.get(model_id)

    def history(self, name: str, model_id: str | None = None) -> builtins.list[TransitionRecord]:
        if model_id is None:
            rows = self._db.query("SELECT * FROM model_transitions WHERE name = ? ORDER BY seq", [name])
        else:
            rows = self._db.query(
                "SELECT * FROM model_transitions WHERE model_id = ? ORDER BY seq", [model_id]
            )
        return [TransitionRecord(**r) for r in rows]

    def recent_history(
        self, names: Sequence[str], per_name: int = 50
    ) -> dict[str, builtins.list[TransitionRecord]]:
        """The last ``per_name`` transitions of each model name, oldest first, in one query."""
        if not names:
            return {}
        w = Where().one_of("name", names)
        rows = self._db.query(
            "SELECT * EXCLUDE (rank) FROM (SELECT *, row_number() OVER (PARTITION BY name ORDER BY seq DESC) AS rank "
            f"FROM model_transitions {w.sql}) WHERE rank <= ? ORDER BY name, seq",
            [*w.params, int(per_name)],
        )
        out: dict[str, builtins.list[TransitionRecord]] = {name: [] for name in names}
        for r in rows:
            out[r["name"]].append(TransitionRecord(**r))
        return out

    def set_validation(self, model_id: str, report: dict[str, Any]) -> None:
        self._db.execute("UPDATE model_versions SET validation = ? WHERE id = ?", [dumps(report), model_id])

    # -- aliases, tags, description --------------------------------------------------------------------------
    def set_alias(self, name: str, alias: str, model_id: str, actor: str | None) -> None:
        with self._db.transaction():
            row = self._db.query_one(
                "SELECT model_id FROM model_aliases WHERE name = ? AND alias = ?", [name, alias]
            )
            if row is not None and row["model_id"] == model_id:
                return
            action = "set" if row is None else "moved"
            self._db.execute(
                "INSERT INTO model_aliases VALUES (?, ?, ?, ?) ON CONFLICT (name, alias) DO UPDATE SET"
                " model_id = excluded.model_id, updated_at = excluded.updated_at",
                [name, alias, model_id, utcnow()],
            )
            self._alias_event(name, alias, model_id, action, actor)

    def remove_alias(self, name: str, alias: str, actor: str | None) -> None:
        with self._db.transaction():
            self._db.query_required(  # an unknown alias is the caller's error, not a no-op
                "SELECT model_id FROM model_aliases WHERE name = ? AND alias = ?",
                [name, alias],
                missing=f"model {name!r} has no alias {alias!r}",
                field="alias",
            )
            self._db.execute("DELETE FROM model_aliases WHERE name = ? AND alias = ?", [name, alias])
            self._alias_event(name, alias, None, "removed", actor)

    def _alias_event(
        self, name: str, alias: str, model_id: str | None, action: str, actor: str | None
    ) -> None:
        row = self._db.query_one("SELECT coalesce(max(seq), 0) AS s FROM model_alias_history")
        self._db.execute(
            "INSERT INTO model_alias_history VALUES (?, ?, ?, ?, ?, ?, ?)",
            [name, alias, model_id, action, utcnow(), (int(row["s"]) if row else 0) + 1, actor],
        )

    def alias_history(self, name: str, alias: str | None = None) -> builtins.list[AliasEvent]:
        if alias is None:
            rows = self._db.query("SELECT * FROM model_alias_history WHERE name = ? ORDER BY seq", [name])
        else:
            rows = self._db.query(
                "SELECT * FROM model_alias_history WHERE name = ? AND alias = ? ORDER BY seq", [name, alias]
            )
        return [AliasEvent(**r) for r in rows]

    def set_tags(self, model_id: str, tags: dict[str, str]) -> None:
        with self._db.transaction():
            for key, value in tags.items():
                self._db.execute(
                    "INSERT INTO model_tags VALUES (?, ?, ?) ON CONFLICT (model_id, key) DO UPDATE SET value ="
                    " excluded.value",
                    [model_id, key, str(value)],
                )

    def remove_tag(self, model_id: str, key: str) -> None:
        self._db.execute("DELETE FROM model_tags WHERE model_id = ? AND key = ?", [model_id, key])

    def set_description(self, model_id: str, description: str) -> None:
        self._db.execute("UPDATE model_versions SET description = ? WHERE id = ?", [description, model_id])

    # -- search -------------------------------------------------------------------------------------------
    def search(self, clauses: builtins.list[Clause], *, sort: str = "created_at", descending: bool = True,
               limit: int = 50, offset: int = 0) -> builtins.list[ModelVersionRecord]:  # fmt: skip
        where, params = [], []
        for c in clauses:
            op = _OPS.get(c.op)
            if op is None:
                raise ValidationError(f"unknown comparator {c.op!r}", field="filter")
            if c.kind == "field":
                if c.key not in SEARCH_FIELDS:
                    raise ValidationError(f"unknown field {c.key!r}", field="filter")
                where.append(f"v.{c.key} {op} ?")
                params.append(c.value)
            elif c.kind in ("metric", "tag"):
                if not _KEY.match(c.key):
                    raise ValidationError(f"bad {c.kind} key {c.key!r}", field="filter")
                table = "model_metrics" if c.kind == "metric" else "model_tags"
                where.append(
                    f"EXISTS (SELECT 1 FROM {table} t WHERE t.model_id = v.id AND t.key = ? AND t.value {op} ?)"
                )
                params += [c.key, c.value]
            elif c.kind == "alias":
                if op not in ("=",):
                    raise ValidationError("aliases compare with = only", field="filter")
                where.append("EXISTS (SELECT 1 FROM model_aliases a WHERE a.model_id = v.id AND a.alias = ?)")
                params.append(c.value)
            else:
                raise ValidationError(f"unknown filter kind {c.kind!r}", field="filter")
        order_params: builtins.list[Any] = []
        if sort.startswith("metrics."):
            key = sort.removeprefix("metrics.")
            if not _KEY.match(key):
                raise ValidationError(f"bad metric key {key!r}", field="sort")
            order = "(SELECT m.value FROM model_metrics m WHERE m.model_id = v.id AND m.key = ?)"
            order_params.append(key)
        elif sort in SEARCH_FIELDS:
            order = f"v.{sort}"
        else:
            raise ValidationError(f"cannot sort by {sort!r}; use a field ({', '.join(SEARCH_FIELDS)}) or metrics.KEY",
                                  field="sort")  # fmt: skip
        if limit < 1 or limit > 1000 or offset < 0:
            raise ValidationError("limit must be 1..1000 and offset >= 0", field="limit")
        sql = "SELECT v.* FROM model_versions v"
        if where:
            sql += " WHERE " + " AND ".join(where)
        sql += f" ORDER BY {order} {'DESC' if descending else 'ASC'} NULLS LAST, v.name, v.version LIMIT ? OFFSET ?"
        rows = self._db.query(sql, [*params, *order_params, limit, offset])
        return [self._full(r) for r in rows]
