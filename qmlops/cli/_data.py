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


def _signal_option(text: str, where: str) -> dict[str, object]:
    """A signal given as a YAML/JSON file ({weights: {term: w}, strength: x}) or inline ``term=w,...,strength=x``."""
    from qmlops.data import SignalSpec, parse_signal

    path = Path(text)
    if path.suffix.lower() in (".yaml", ".yml", ".json"):
        import yaml

        if not path.is_file():
            raise ValidationError(f"no such file {text!r}", field=where)
        try:
            data = yaml.safe_load(path.read_text())
        except yaml.YAMLError as exc:
            raise ValidationError(f"cannot parse {path.name}: {exc}", field=where) from None
        return SignalSpec.from_dict(data, where=where).to_dict()
    return parse_signal(text, where=where).to_dict()


def _planted_options(signal: str | None, regimes: list[str], strength: float | None) -> dict[str, object]:
    from qmlops.data import SignalSpec

    out: dict[str, object] = {}
    signal_dict = _signal_option(signal, "--signal") if signal is not None else None
    if strength is not None:
        signal_dict = {**(signal_dict or SignalSpec().to_dict()), "strength": strength}
    if signal_dict is not None:
        out["signal"] = signal_dict
    parsed = []
    for item in regimes:
        day, sep, spec = item.partition(":")
        if not sep or not day.strip().isdigit() or not spec.strip():
            raise ValidationError(
                f"expected DAY:SIGNAL (e.g. 250:momentum_20=1), got {item!r}", field="--regime"
            )
        parsed.append({"start_day": int(day), "signal": _signal_option(spec.strip(), "--regime")})
    if parsed:
        out["regimes"] = parsed
    return out


@app.command("ingest")
@handle_errors
def ingest_command(
    source: str = typer.Argument(
        ..., help="sp500, bokeh5, synthetic, planted, or a path to a .csv/.parquet file"
    ),
    name: str | None = typer.Option(None, "--name", help="dataset name (default: the source's)"),
    on_error: str = typer.Option("fail", "--on-error", help="fail (default) or quarantine bad rows"),
    mapping: list[str] = typer.Option([], "--map", help="column mapping canonical=SourceColumn (repeatable)"),
    instruments: int = typer.Option(100, "--instruments", help="synthetic/planted: number of instruments"),
    days: int = typer.Option(250, "--days", help="synthetic/planted: number of business days"),
    seed: int = typer.Option(0, "--seed", help="synthetic/planted: random seed"),
    signal: str | None = typer.Option(
        None,
        "--signal",
        help="planted: the signal, a YAML file {weights: {term: w}, strength: ic} or term=w,...,strength=ic "
        "(terms: reversal_5, momentum_20, volume_shock_5)",
    ),
    strength: float | None = typer.Option(None, "--strength", help="planted: target daily IC of the signal"),
    regime: list[str] = typer.Option(
        [], "--regime", help="planted: DAY:SIGNAL, the signal from output day DAY on (repeatable)"
    ),
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
    options: dict[str, object] = {}
    if source in ("synthetic", "planted"):
        options = {"n_instruments": instruments, "n_days": days, "seed": seed}
    if source == "planted":
        options.update(_planted_options(signal, regime, strength))
    elif signal is not None or regime or strength is not None:
        raise ValidationError(
            "--signal, --strength and --regime are options of the planted source", field="source"
        )
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
    _print_oracle(rec.config)
    for note in result.notifications:
        console.print(
            f"  subscriber {note.subscriber}: {'ok' if note.ok else '[red]failed[/] ' + str(note.error)}"
        )


def _print_oracle(config: dict[str, object] | None) -> None:
    """A planted market's oracle IC per regime (what a perfect model would score), if the version has one."""
    rows = (config or {}).get("oracle")
    if not isinstance(rows, list):
        return
    for r in rows:
        weights = ", ".join(f"{k}={v:g}" for k, v in r.get("weights", {}).items())
        console.print(
            f"  oracle regime {r['regime']} ({r['first_date']} .. {r['last_date']}, {r['days']} days, "
            f"{weights}): mean IC {r['oracle_ic']:.4f} (target {r.get('strength', float('nan')):g}), "
            f"Rank IC {r['oracle_rank_ic']:.4f}",
            highlight=False,
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

    record = get_store().datasets.resolve(ref)
    print_record(record, as_json=as_json)
    if not as_json:
        _print_oracle(record.config)


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
