"""``qmlops models ...``: list, show, search, transition, alias, tag, validate, history."""

from __future__ import annotations

import typer

from qmlops.cli._common import JSON_OPTION, console, handle_errors, print_record, print_records
from qmlops.exceptions import ValidationError
from qmlops.registry import ModelRegistry

app = typer.Typer(no_args_is_help=True)

_COLUMNS = ["id", "name", "version", "model_type", "flavor", "state", "metrics", "aliases", "created_at"]


def _registry() -> ModelRegistry:

    return ModelRegistry()


def _ref(ref: str) -> int | str:
    return int(ref) if ref.isdigit() else ref


@app.command("list")
@handle_errors
def list_command(name: str | None = typer.Argument(None), limit: int = typer.Option(100, "--limit"),
                 as_json: bool = JSON_OPTION) -> None:  # fmt: skip
    """List model versions (of NAME, or of every model), newest first."""
    print_records(_registry().list_versions(name, limit=limit), as_json=as_json, columns=_COLUMNS)


@app.command("show")
@handle_errors
def show_command(name: str, ref: str = typer.Argument("latest", help="version, latest, production, alias, mv-id"),
                 as_json: bool = JSON_OPTION) -> None:  # fmt: skip
    """Show one version, with its validation report."""
    print_record(_registry().get(name, _ref(ref)), as_json=as_json)


@app.command("search")
@handle_errors
def search_command(
    filter: str | None = typer.Argument(
        None, help="e.g. \"state = 'production' and metrics.test_ic > 0.02\""
    ),
    sort: str = typer.Option("created_at", "--sort", help="a field or metrics.NAME"),
    ascending: bool = typer.Option(False, "--asc", help="ascending (default descending)"),
    limit: int = typer.Option(50, "--limit"),
    offset: int = typer.Option(0, "--offset"),
    as_json: bool = JSON_OPTION,
) -> None:
    """Search versions by fields, metrics, tags and aliases."""
    found = _registry().search(filter, sort=sort, descending=not ascending, limit=limit, offset=offset)
    print_records(found, as_json=as_json, columns=_COLUMNS)


@app.command("transition")
@handle_errors
def transition_command(
    name: str,
    ref: str,
    state: str,
    reason: str | None = typer.Option(None, "--reason"),
    previous_to: str = typer.Option("archived", "--previous-to", help="where the old production goes"),
    skip_validation: str | None = typer.Option(
        None, "--skip-validation", help="reason to skip the validator"
    ),
    as_json: bool = JSON_OPTION,
) -> None:
    """Move a version to STATE (registered, staging, canary, production, archived, rolled_back, failed)."""
    rec = _registry().transition(name, _ref(ref), state, reason=reason, previous_to=previous_to,
                                 skip_validation=skip_validation)  # fmt: skip
    if as_json:
        print_record(rec, as_json=True)
    else:
        console.print(f"{rec.name} v{rec.version} is now [bold]{rec.state}[/]")


@app.command("alias")
@handle_errors
def alias_command(
    name: str,
    alias: str,
    ref: str | None = typer.Argument(None, help="version to point at (omit with --remove)"),
    remove: bool = typer.Option(False, "--remove"),
    history: bool = typer.Option(False, "--history", help="show the alias's history"),
    as_json: bool = JSON_OPTION,
) -> None:
    """Point ALIAS (e.g. champion) at a version, remove it, or show its history."""
    reg = _registry()
    if history:
        print_records(reg.alias_history(name, alias), as_json=as_json)
        return
    if remove:
        reg.remove_alias(name, alias)
        console.print(f"removed alias {alias} of {name}")
        return
    if ref is None:
        raise ValidationError("give the version to point the alias at", field="ref")
    rec = reg.set_alias(name, alias, _ref(ref))
    console.print(f"{name}@{alias} -> v{rec.version}")


@app.command("tag")
@handle_errors
def tag_command(
    name: str,
    ref: str,
    tags: list[str] = typer.Argument(None, help="key=value ... (key alone with --remove)"),
    remove: bool = typer.Option(False, "--remove"),
    description: str | None = typer.Option(None, "--description"),
) -> None:
    """Set or remove tags, or set the description, of a version."""
    reg = _registry()
    rec = reg.get(name, _ref(ref))
    for item in tags or []:
        if remove:
            rec = reg.remove_tag(name, rec.id, item)
            continue
        key, sep, value = item.partition("=")
        if not sep:
            raise ValidationError(f"expected key=value, got {item!r}", field="tags")
        rec = reg.set_tags(name, rec.id, {key: value})
    if description is not None:
        rec = reg.set_description(name, rec.id, description)
    console.print(
        f"{name} v{rec.version}: tags {rec.tags}"
        + (f", description {rec.description!r}" if rec.description else "")
    )


@app.command("validate")
@handle_errors
def validate_command(name: str, ref: str = typer.Argument("latest"), as_json: bool = JSON_OPTION) -> None:
    """Run the compatibility validator and store its report."""
    report = _registry().validate(name, _ref(ref))
    if as_json:
        print_record(report, as_json=True)
    else:
        console.print("[green]compatible[/]" if report.ok else "[red]incompatible[/]")
        for e in report.errors:
            console.print(f"  error: {e}", markup=False)
        for w in report.warnings:
            console.print(f"  warning: {w}", markup=False)
    if not report.ok:
        raise typer.Exit(5)


@app.command("history")
@handle_errors
def history_command(name: str, ref: str | None = typer.Argument(None), as_json: bool = JSON_OPTION) -> None:
    """Lifecycle history of a model (or of one version)."""
    reg = _registry()
    rows = reg.history(name, _ref(ref) if ref else None)
    print_records(
        rows, as_json=as_json, columns=["version", "from_state", "to_state", "changed_at", "actor", "reason"]
    )
