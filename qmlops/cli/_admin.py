"""``qmlops admin ...``: backup, restore and check of the metadata store."""

from __future__ import annotations

import typer

from qmlops.cli._common import JSON_OPTION, console, handle_errors, print_json, print_records
from qmlops.exceptions import IntegrityError

app = typer.Typer(no_args_is_help=True)


@app.command("backup")
@handle_errors
def backup_command(
    dest: str = typer.Argument(..., help="a file path or a pyarrow.fs URI (s3://..., gs://..., file:///...)"),
    as_json: bool = JSON_OPTION,
) -> None:
    """A consistent copy of the metadata store, taken by its writer (also while a cluster runs)."""
    from qmlops.metadata import backup_store

    info = backup_store(dest)
    if as_json:
        print_json(info)
        return
    rows = sum(info["tables"].values())
    console.print(f"backed up {info['path']} -> {info['dest']}: {info['bytes']:,} bytes, schema "
                  f"v{info['schema_version']}, {len(info['tables'])} tables, {rows:,} rows, sha256 {info['sha256'][:16]}")  # fmt: skip


@app.command("restore")
@handle_errors
def restore_command(
    src: str = typer.Argument(..., help="a backup: file path or pyarrow.fs URI"), as_json: bool = JSON_OPTION
) -> None:
    """Make a backup this QMLOPS_HOME's store (a fresh home only: nothing is overwritten)."""
    from qmlops.metadata import restore_store

    info = restore_store(src)
    if as_json:
        print_json(info)
        return
    console.print(f"restored {info['src']} -> {info['path']}: schema v{info['schema_version']}, "
                  f"{len(info['tables'])} tables, {sum(info['tables'].values()):,} rows")  # fmt: skip


@app.command("check")
@handle_errors
def check_command(as_json: bool = JSON_OPTION) -> None:
    """Schema version, row counts per table, and every registry artifact against its checksum."""
    from qmlops.metadata import check_store

    info = check_store()
    if as_json:
        print_json(info)
    else:
        console.print(f"{info['path']}: schema v{info['schema_version']} (this qmlops: "
                      f"v{info['newest_schema_version']}); artifacts {info['artifacts_ok']}/{info['artifacts']} ok")  # fmt: skip
        print_records([{"table": t, "rows": n} for t, n in info["tables"].items()], as_json=False)
    if info["problems"]:
        raise IntegrityError(f"{len(info['problems'])} problem(s) in the metadata store", field="check",
                             details=info["problems"])  # fmt: skip
