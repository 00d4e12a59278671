"""The DuckDB connection, its migrations, and the helpers every repository uses.

Only this package speaks SQL. All statements take bound parameters; identifiers (table and column names) never
come from user input.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime
from importlib import resources
from pathlib import Path
from typing import Any

import duckdb
import pyarrow as pa
import pyarrow.compute  # noqa: F401  (pa.compute)

from qmlops.exceptions import NotFoundError, SchemaVersionError

__all__ = ["Database", "MIGRATIONS", "Where", "utcnow", "dumps", "loads", "iso"]


def utcnow() -> datetime:
    """Current UTC time as a naive datetime (DuckDB TIMESTAMP has no zone)."""
    return datetime.now(UTC).replace(tzinfo=None)


def dumps(value: Any) -> str | None:
    return None if value is None else json.dumps(value, sort_keys=True, default=str)


def iso(value: datetime | None) -> str | None:
    """A stored (naive UTC) timestamp as ISO 8601 with a ``Z``; ``None`` stays ``None``."""
    return value.isoformat() + "Z" if value is not None else None


class Where:
    """A WHERE clause with bound parameters. Column names are trusted identifiers from a repository; values
    always travel as parameters. ``equal`` skips ``None`` (an absent filter)."""

    def __init__(self, prefix: str = "") -> None:
        self.prefix = prefix
        self.clauses: list[str] = []
        self.params: list[Any] = []

    def equal(self, **columns: Any) -> Where:
        for column, value in columns.items():
            if value is not None:
                self.add(f"{self.prefix}{column} = ?", value)
        return self

    def one_of(self, column: str, values: Sequence[Any]) -> Where:
        """``column IN (?, ...)`` over ``values`` (the caller handles an empty list: ``IN ()`` is not SQL)."""
        return self.add(f"{self.prefix}{column} IN ({', '.join('?' * len(values))})", *values)

    def add(self, clause: str, *params: Any) -> Where:
        self.clauses.append(clause)
        self.params.extend(params)
        return self

    @property
    def sql(self) -> str:
        return f"WHERE {' AND '.join(self.clauses)}" if self.clauses else ""


def loads(value: Any) -> Any:
    if value is None or not isinstance(value, str):
        return value
    return json.loads(value)


def _load_migrations() -> list[tuple[int, str, str]]:
    """Numbered ``NNNN_name.sql`` files shipped in ``qmlops/metadata/migrations``, in order."""
    out = []
    for entry in resources.files("qmlops.metadata").joinpath("migrations").iterdir():
        name = entry.name
        if not name.endswith(".sql"):
            continue
        number, _, rest = name.partition("_")
        out.append((int(number), rest.removesuffix(".sql"), entry.read_text(encoding="utf-8")))
    out.sort()
    numbers = [n for n, _, _ in out]
    if len(set(numbers)) != len(numbers) or (numbers and numbers[0] != 1):
        raise RuntimeError(f"metadata migrations must have distinct numbers starting at 1, found {numbers}")
    return out


MIGRATIONS = _load_migrations()


def _split_sql(script: str) -> list[str]:
    """Statements of a migration script (split on ';' at line ends; migrations keep one statement per ';')."""
    lines = [ln for ln in script.splitlines() if not ln.strip().startswith("--")]
    parts = "\n".join(lines).split(";")
    return [p.strip() for p in parts if p.strip()]


class Database:
    """One DuckDB connection, serialised by a lock, migrated to the newest schema on open."""

    def __init__(self, path: str, *, read_only: bool = False) -> None:
        self.path = path
        if path != ":memory:":
            Path(path).parent.mkdir(parents=True, exist_ok=True)
        self._con = duckdb.connect(path, read_only=read_only)
        self._lock = threading.RLock()
        if not read_only:
            self.migrate()
        else:
            self._check_not_newer()

    # -- schema -------------------------------------------------------------------------------------
    def schema_version(self) -> int:
        with self._lock:
            exists = self.query_one(
                "SELECT count(*) AS n FROM information_schema.tables WHERE table_name = 'schema_version'"
            )
            if not exists or not exists["n"]:
                return 0
            row = self.query_one("SELECT max(version) AS v FROM schema_version")
            return int(row["v"]) if row and row["v"] is not None else 0

    def _check_not_newer(self) -> int:
        current = self.schema_version()
        newest = MIGRATIONS[-1][0] if MIGRATIONS else 0
        if current > newest:
            raise SchemaVersionError(
                f"metadata database {self.path} has schema version {current}, newer than this qmlops "
                f"understands ({newest}); upgrade qmlops or point QMLOPS_HOME elsewhere",
                field="schema_version",
            )
        return current

    def migrate(self) -> list[int]:
        """Apply every shipped migration not yet recorded, in number order, each in its own transaction.

        Numbers are reserved per change and may land out of order (0010 before 0009): a database that has 10
        gets 9 when 9 ships, so applied migrations are tracked by number, not by the highest one.
        """
        applied: list[int] = []
        with self._lock:
            self._run(
                "CREATE TABLE IF NOT EXISTS schema_version ("
                "version INTEGER PRIMARY KEY, name VARCHAR NOT NULL, applied_at TIMESTAMP NOT NULL)"
            )
            self._check_not_newer()
            done = {int(r["version"]) for r in self.query("SELECT version FROM schema_version")}
            for number, name, sql in MIGRATIONS:
                if number in done:
                    continue
                self._run("BEGIN TRANSACTION")
                try:
                    for statement in _split_sql(sql):
                        self._run(statement)
                    self._run("INSERT INTO schema_version VALUES (?, ?, ?)", [number, name, utcnow()])
                    self._run("COMMIT")
                except Exception:
                    self._run("ROLLBACK")
                    raise
                applied.append(number)
        return applied

    # -- statements ---------------------------------------------------------------------------------
    def _run(self, sql: str, params: Sequence[Any] | None = None) -> None:
        """Execute and drain the result: DuckDB refuses further work on a connection with a pending result."""
        cur = self._con.execute(sql, list(params) if params is not None else None)
        cur.fetchall()

    def execute(self, sql: str, params: Sequence[Any] = ()) -> None:
        with self._lock:
            self._run(sql, params)

    def query(self, sql: str, params: Sequence[Any] = ()) -> list[dict[str, Any]]:
        with self._lock:
            cur = self._con.execute(sql, list(params))
            cols = [d[0] for d in cur.description or []]
            return [dict(zip(cols, row, strict=True)) for row in cur.fetchall()]

    def query_one(self, sql: str, params: Sequence[Any] = ()) -> dict[str, Any] | None:
        rows = self.query(sql, params)
        return rows[0] if rows else None

    def query_required(self, sql: str, params: Sequence[Any], *, missing: str, field: str) -> dict[str, Any]:
        """The first row of ``sql``; ``NotFoundError(missing, field)`` when there is none."""
        row = self.query_one(sql, params)
        if row is None:
            raise NotFoundError(missing, field=field)
        return row

    def query_arrow(self, sql: str, params: Sequence[Any] = ()) -> pa.Table:
        with self._lock:
            return self._con.execute(sql, list(params)).to_arrow_table()

    @contextmanager
    def locked(self) -> Iterator[None]:
        """Hold the connection: no statement of this process runs until the block ends."""
        with self._lock:
            yield

    @contextmanager
    def transaction(self) -> Iterator[None]:
        with self._lock:
            self._run("BEGIN TRANSACTION")
            try:
                yield
            except BaseException:
                self._run("ROLLBACK")
                raise
            self._run("COMMIT")

    def append_arrow(
        self,
        table: str,
        batch: pa.Table,
        *,
        key: tuple[str, str] | None = None,
        ignore_duplicates: bool = False,
    ) -> int:
        """Insert an Arrow table in one statement and one transaction; returns the number of rows inserted.

        ``table`` is a trusted identifier from a repository, never user input. Columns are matched by name.
        ``key`` (a writer and its sequence number, e.g. ``("replica", "seq")``) makes the append idempotent: rows
        whose key is stored already are skipped, so a batch sent again after a lost answer is not duplicated.
        The lookup is bounded to sequence numbers at or above the batch's lowest one.
        ``ignore_duplicates`` skips rows whose primary key is stored already (``INSERT OR IGNORE``).
        """
        if batch.num_rows == 0:
            return 0
        cols = ", ".join(f'"{c}"' for c in batch.column_names)
        with self._lock:
            view = f"_append_{threading.get_ident()}"
            self._con.register(view, batch)
            try:
                verb = "INSERT OR IGNORE INTO" if ignore_duplicates else "INSERT INTO"
                sql = f'{verb} "{table}" ({cols}) SELECT {cols} FROM "{view}" v'
                params: list[Any] = []
                if key is not None:
                    writer, seq = key
                    sql += (f' WHERE NOT EXISTS (SELECT 1 FROM "{table}" t WHERE t."{seq}" >= ? '
                            f'AND t."{writer}" = v."{writer}" AND t."{seq}" = v."{seq}")')  # fmt: skip
                    params.append(pa.compute.min(batch[seq]).as_py())
                row = self._con.execute(sql, params).fetchall()
            finally:
                self._con.unregister(view)
        return int(row[0][0]) if row else batch.num_rows

    def close(self) -> None:
        with self._lock:
            self._con.close()
