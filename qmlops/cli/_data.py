"""``qmlops data ...``: ingest, list, show, lineage, export (a thin shell over ``qmlops.data``)."""

from __future__ import annotations

from pathlib import Path

import typer

from qmlops.cli._common import JSON_OPTION, console, handle_errors, print_record, print_records
from qmlops.exceptions import ValidationError

app = typer.Typer(no_args_is_help=True)

_VERSION_COLUMNS = ["id", "name", "source", "n_rows", "n_instruments", "start_date", "end_date", "n_quarantined",
                    "created_at"]  # fmt: skip


def _parse_mapping(items: list[str]) -> dict[str, str]:
    out = {}
    for item in items:
        canonical, sep, column = item.partition("=")
        if not sep or not canonical or not column:
            raise ValidationError(f"expected canonical=SourceColumn, got {item!r}", field="--map")
        out[canonical.strip()] = column.strip()
    return out


@app.command("ingest")
@handle_errors
def ingest_command(
    source: str = typer.Argument(..., help="sp500, bokeh5, synthetic, or a path to a .csv/.parquet file"),
    name: str | None = typer.Option(None, "--name", help="dataset name (default: the source's)"),
    on_error: str = typer.Option("fail", "--on-error", help="fail (default) or quarantine bad rows"),
    mapping: list[str] = typer.Option([], "--map", help="column mapping canonical=SourceColumn (repeatable)"),
    instruments: int = typer.Option(100, "--instruments", help="synthetic: number of instruments"),
    days: int = typer.Option(250, "--days", help="synthetic: number of business days"),
    seed: int = typer.Option(0, "--seed", help="synthetic: random seed"),
    features: bool = typer.Option(
        True,
        "--features/--no-features",
        help="materialise the default feature sets for a new version (data-sync)",
    ),
    append: bool = typer.Option(
        False, "--append", help="append SOURCE's rows (a file of new days) to the latest version of --name"
    ),
    as_json: bool = JSON_OPTION,
) -> None:
    """Validate and store SOURCE as a dataset version (identical content returns the stored version).

    With --append, SOURCE holds new days for dataset --name: the new version holds the previous one's rows plus
    these, its hash chained from the previous version's and the new rows' (bad rows: --on-error).

    A new version notifies the data-sync subscribers; unless --no-features, the feature store is one of them
    and materialises the default feature sets (QMLOPS_DEFAULT_FEATURE_SETS, default alpha158) in-process.
    """
    from qmlops.data import ingest

    if append and not name:
        raise ValidationError("--append needs --name (the dataset to append to)", field="--name")
    options = {"n_instruments": instruments, "n_days": days, "seed": seed} if source == "synthetic" else {}
    if features:
        from qmlops.features import default_feature_sets, disable_auto_materialize, enable_auto_materialize

        enable_auto_materialize(default_feature_sets(), engine="local")
    try:
        if append:
            from qmlops.data import FileSource, append_bars

            src = FileSource(source, _parse_mapping(mapping))
            result, _ = append_bars(name or "", src, on_error=on_error)  # type: ignore[arg-type]
        else:
            result = ingest(source, name=name, on_error=on_error, mapping=_parse_mapping(mapping), **options)  # type: ignore[arg-type]
    finally:
        if features:
            disable_auto_materialize()
    if as_json:
        print_record(result, as_json=True)
        return
    rec = result.record
    state = "new version" if result.created else "already stored (same content)"
    console.print(f"dataset version [bold cyan]{rec.id}[/] ({state})")
    console.print(f"  name {rec.name}, {rec.n_rows:,} rows, {rec.n_instruments} instruments, "
                  f"{rec.start_date} .. {rec.end_date}")  # fmt: skip
    if rec.n_quarantined:
        console.print(f"  [yellow]{rec.n_quarantined} rows quarantined[/] -> {rec.quarantine_uri}")
    if result.report is not None and result.report.warnings:
        console.print(f"  {len(result.report.warnings)} warnings: {result.report.counts()}")
    if rec.diff and result.created:
        d = rec.diff
        console.print(f"  diff against {rec.parent_id}: +{d['rows_added']} -{d['rows_removed']} "
                      f"~{d['rows_changed']} rows")  # fmt: skip
    for note in result.notifications:
        console.print(
            f"  subscriber {note.subscriber}: {'ok' if note.ok else '[red]failed[/] ' + str(note.error)}"
        )


@app.command("versions")
@handle_errors
def versions_command(
    name: str | None = typer.Option(None, "--name", help="only versions of this dataset name"),
    limit: int = typer.Option(100, "--limit"),
    as_json: bool = JSON_OPTION,
) -> None:
    """List dataset versions, newest first."""
    from qmlops.metadata import get_store

    print_records(
        get_store().datasets.list(name=name, limit=limit), as_json=as_json, columns=_VERSION_COLUMNS
    )


@app.command("show")
@handle_errors
def show_command(ref: str = typer.Argument(..., help="version id, id prefix, or dataset name"),
                 as_json: bool = JSON_OPTION) -> None:  # fmt: skip
    """Show one dataset version (with its diff against the previous version of the same name)."""
    from qmlops.metadata import get_store

    print_record(get_store().datasets.resolve(ref), as_json=as_json)


@app.command("lineage")
@handle_errors
def lineage_command(
    ref: str = typer.Argument(..., help="version id, id prefix, or dataset name"),
    impact: bool = typer.Option(False, "--impact", help="everything derived from it, grouped by kind"),
    upstream: bool = typer.Option(False, "--upstream", help="what it was derived from"),
    as_json: bool = JSON_OPTION,
) -> None:
    """Lineage of a dataset version: downstream (default), upstream, or impact."""
    from qmlops.metadata import get_store

    store = get_store()
    node = store.datasets.resolve(ref).id
    if impact:
        groups = store.lineage.impact(node)
        rows = [{"kind": k, **n.to_dict()} for k, nodes in groups.items() for n in nodes]
        print_records(
            rows, as_json=as_json, columns=["kind", "id", "label", "depth"], title=f"impact of {node}"
        )
        return
    nodes = store.lineage.upstream(node) if upstream else store.lineage.downstream(node)
    direction = "upstream" if upstream else "downstream"
    print_records(
        nodes, as_json=as_json, columns=["id", "kind", "label", "depth"], title=f"{direction} of {node}"
    )


@app.command("export-qlib")
@handle_errors
def export_qlib_command(
    ref: str = typer.Argument(..., help="version id, id prefix, or dataset name"),
    target: Path = typer.Argument(..., help="directory to write Qlib's binary format into"),
) -> None:
    """Write a dataset version in Qlib's binary format (qlib.init(provider_uri=DIR) reads it)."""
    from qmlops.data import export_qlib, load_dataset

    frame = load_dataset(ref)
    out = export_qlib(frame, target)
    console.print(
        f"wrote {frame['instrument'].nunique()} instruments, {frame['date'].nunique()} days to {out}"
    )


@app.command("sources")
@handle_errors
def sources_command(as_json: bool = JSON_OPTION) -> None:
    """List the data sources ingest understands."""
    from qmlops.data import list_sources

    print_records(list_sources(), as_json=as_json)
