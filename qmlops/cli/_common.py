"""What every CLI command shares: turning results into tables or JSON, and errors into one-line messages."""

from __future__ import annotations

import json
import sys
from collections.abc import Callable, Iterable, Mapping, Sequence
from functools import wraps
from typing import Any, TypeVar

import typer
from rich.console import Console
from rich.table import Table

from qmlops.exceptions import QmlopsError

__all__ = [
    "console",
    "err_console",
    "handle_errors",
    "print_records",
    "print_record",
    "print_json",
    "JSON_OPTION",
    "init_cluster",
]

# Output that is piped or captured keeps full-width tables instead of rich's 80-column default.
console = Console(width=None if sys.stdout.isatty() else 200)
err_console = Console(stderr=True, width=None if sys.stderr.isatty() else 200)

F = TypeVar("F", bound=Callable[..., Any])

JSON_OPTION = typer.Option(False, "--json", help="Print JSON for scripts instead of a table.")


def handle_errors(func: F) -> F:
    """Map the qmlops exception tree to ``error: <field>: <message>`` on stderr and the class's exit code."""

    @wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return func(*args, **kwargs)
        except QmlopsError as exc:
            err_console.print(f"[red]error:[/red] {exc}", highlight=False, markup=True, soft_wrap=True)
            if exc.details:
                for line in exc.details if isinstance(exc.details, list) else [exc.details]:
                    err_console.print(f"  {line}", highlight=False, markup=False, soft_wrap=True)
            raise typer.Exit(exc.exit_code) from None

    return wrapper  # type: ignore[return-value]


def _plain(value: Any) -> Any:
    if hasattr(value, "to_dict"):
        return value.to_dict()
    return value


def print_json(value: Any) -> None:
    """``value`` as strict JSON on stdout: NaN and infinities (an undefined lift, a loss that blew up) become null,
    which every JSON parser reads; Python's own ``NaN`` token is not JSON."""
    from qmlops.ui import clean

    sys.stdout.write(json.dumps(clean(value), default=str, indent=2, allow_nan=False) + "\n")


def print_records(
    records: Iterable[Any], *, as_json: bool, columns: Sequence[str] | None = None, title: str | None = None
) -> None:
    """A list of records as a table (the given columns) or, with ``--json``, as a JSON array of objects."""
    rows = [_plain(r) for r in records]
    if as_json:
        print_json(rows)
        return
    if not rows:
        console.print("(none)")
        return
    cols = list(columns or rows[0].keys())
    table = Table(title=title)
    for c in cols:
        table.add_column(c)
    for r in rows:
        table.add_row(*[_cell(r.get(c)) for c in cols])
    console.print(table)


def print_record(record: Any, *, as_json: bool) -> None:
    data = _plain(record)
    if as_json:
        print_json(data)
        return
    table = Table(show_header=False)
    table.add_column("field", style="bold")
    table.add_column("value")
    for key, value in data.items() if isinstance(data, Mapping) else []:
        table.add_row(str(key), _cell(value))
    console.print(table)


def _cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, dict | list):
        return json.dumps(value, default=str)
    return str(value)


def init_cluster(**kwargs: Any) -> Any:
    """Join the Ray cluster as Ray's own CLI finds it (``RAY_ADDRESS``, else the local ``ray start`` cluster, else
    a new local one) without streaming the workers' logs here: a command prints its own events."""
    from qmlops.ray_utils import init_ray

    return init_ray(log_to_driver=False, logging_level="WARNING", **kwargs)
