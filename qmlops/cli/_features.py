"""``qmlops features ...``: build (materialise), list, show (a thin shell over ``qmlops.features``)."""

from __future__ import annotations

import typer
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

from qmlops.cli._common import JSON_OPTION, console, err_console, handle_errors, print_record, print_records

app = typer.Typer(no_args_is_help=True)

_COLUMNS = ["id", "dataset_id", "feature_set_id", "status", "engine", "n_rows", "n_instruments", "compute_seconds",
            "computations", "created_at"]  # fmt: skip


@app.command("build")
@handle_errors
def build_command(
    dataset: str = typer.Argument(..., help="dataset version id, id prefix, or name"),
    feature_set: str = typer.Option("alpha158", "--set", help="alpha158, indicators or all"),
    engine: str = typer.Option("ray", "--engine", help="ray (Ray Data, default), local, or qlib"),
    num_cpus: int | None = typer.Option(
        None, "--num-cpus", help="CPUs for a local Ray cluster (default: all)"
    ),
    as_json: bool = JSON_OPTION,
) -> None:
    """Materialise a feature set for a dataset version (a cache hit if it is already built)."""
    from qmlops.features import materialize

    if engine in ("ray", "qlib"):
        from qmlops.cli._common import init_cluster

        init_cluster(num_cpus=num_cpus)
    with Progress(TextColumn("[bold]features[/] {task.description}"), BarColumn(), TextColumn("{task.completed}/"
                  "{task.total} batches"), TimeElapsedColumn(), console=err_console, transient=True) as bar:  # fmt: skip
        task = bar.add_task(f"{feature_set} ({engine})", total=None)

        def progress(done: int, total: int) -> None:
            bar.update(task, completed=done, total=total)

        result = materialize(dataset, feature_set, engine=engine, progress=progress)
    if as_json:
        print_record(result, as_json=True)
        return
    rec = result.record
    how = "cache hit, nothing computed" if result.cache_hit else f"computed in {rec.compute_seconds:.2f} s"
    console.print(f"feature materialisation [bold cyan]{rec.id}[/] ({how})")
    console.print(f"  set {result.feature_set.name} ({rec.feature_set_id}), {len(result.feature_set.feature_names())} "
                  f"features, {rec.n_rows:,} rows, {rec.n_instruments} instruments, {rec.start_date} .. {rec.end_date}")  # fmt: skip


@app.command("list")
@handle_errors
def list_command(dataset: str | None = typer.Option(None, "--dataset"), as_json: bool = JSON_OPTION) -> None:
    """List feature materialisations, newest first."""
    from qmlops.metadata import get_store

    store = get_store()
    ds = store.datasets.resolve(dataset).id if dataset else None
    print_records(store.features.list(ds), as_json=as_json, columns=_COLUMNS)


@app.command("show")
@handle_errors
def show_command(
    mat_id: str = typer.Argument(..., help="materialisation id or id prefix"),
    stats: bool = typer.Option(False, "--stats", help="also the per-feature reference statistics"),
    as_json: bool = JSON_OPTION,
) -> None:
    """Show a materialisation (and with --stats its per-feature reference statistics)."""
    from qmlops.metadata import get_store

    store = get_store()
    rec = store.features.get(mat_id)
    fs = store.features.get_set(rec.feature_set_id)
    data = {**rec.to_dict(), "feature_set": fs.name, "n_features": len(fs.feature_names)}
    if stats:
        data["stats"] = [s.to_dict() for s in store.features.stats(rec.id)]
    if as_json or not stats:
        print_record(data, as_json=as_json)
        return
    print_record({k: v for k, v in data.items() if k != "stats"}, as_json=False)
    print_records(data["stats"], as_json=False, columns=["feature", "dtype", "null_ratio", "mean", "std"])
