"""``qmlops tune ...``: start, status, resume, best, recommend (a thin shell over ``qmlops.tuning``)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import typer

from qmlops.cli._common import JSON_OPTION, console, handle_errors, print_record, print_records
from qmlops.exceptions import ValidationError

app = typer.Typer(no_args_is_help=True)


def _load_space(path: Path | None) -> dict[str, Any]:
    if path is None:
        return {}
    if not path.exists():
        raise ValidationError(f"no such file: {path}", field="space")
    import yaml

    try:
        data = yaml.safe_load(path.read_text())  # YAML is a superset of JSON
    except yaml.YAMLError as exc:
        raise ValidationError(f"cannot parse {path}: {exc}", field="space") from None
    if not isinstance(data, dict) or not all(isinstance(v, dict) for v in data.values()):
        raise ValidationError(
            "the space file maps model type -> {param: {type, low, high | choices}}", field="space"
        )
    return data


def _summary(result: Any, as_json: bool) -> None:
    data = result.to_dict()
    if as_json:
        print_record(data, as_json=True)
        return
    best = data["best"]
    console.print(f"tuning run [bold cyan]{data['run_id']}[/]: {len(data['trials'])} trials in "
                  f"{data['duration_seconds']:.1f} s; best {best['model_type']} valid_loss {best['valid_loss']:.6g} "
                  f"valid_ic {best['valid_ic']}")  # fmt: skip
    if data["model_version"]:
        mv = data["model_version"]
        console.print(f"  best retrained and registered as {mv['name']} v{mv['version']} ({mv['id']})")
    if data["pareto"]:
        console.print(f"  Pareto front: {len(data['pareto'])} trials")


@app.command("start")
@handle_errors
def start_command(
    model_types: str = typer.Option(
        "lightgbm", "--models", help="comma-separated model types (several = algorithm search)"
    ),
    dataset: str = typer.Option("sp500", "--dataset"),
    feature_set: str = typer.Option("alpha158", "--feature-set"),
    num_samples: int = typer.Option(16, "--trials"),
    searcher: str = typer.Option("tpe", "--searcher", help="tpe, nsga2, cmaes or random"),
    scheduler: str = typer.Option("asha", "--scheduler", help="asha or fifo"),
    metric: str = typer.Option("valid_loss", "--metric"),
    mode: str = typer.Option("min", "--mode"),
    objectives: str | None = typer.Option(
        None, "--objectives", help="e.g. valid_ic:max,train_seconds:min (NSGA-II)"
    ),
    space: Path | None = typer.Option(None, "--space", help="YAML/JSON: model type -> parameter overrides"),
    max_concurrent: int = typer.Option(2, "--max-concurrent"),
    cpus: float = typer.Option(1.0, "--cpus-per-trial"),
    gpus: float = typer.Option(
        0.0, "--gpus-per-trial", help="GPU share of each trial of a type that can use one (trees get none)"
    ),
    gpus_by_type: str | None = typer.Option(
        None, "--gpus-by-type", help="per-type GPU shares overriding --gpus-per-trial, e.g. gru=0.5,xgboost=1"
    ),
    time_budget: float | None = typer.Option(None, "--time-budget", help="seconds for the whole search"),
    seed: int = typer.Option(0, "--seed"),
    name: str | None = typer.Option(None, "--name", help="register the best as this model name"),
    no_register: bool = typer.Option(False, "--no-register"),
    recommend_first: bool = typer.Option(
        True, "--recommend/--no-recommend", help="evaluate the recommender's picks first"
    ),
    as_json: bool = JSON_OPTION,
) -> None:
    """Search hyperparameters (and model types) on Ray Tune; register the best."""
    from qmlops.cli._common import init_cluster
    from qmlops.tuning import TuneConfig, tune_models

    types = [t.strip() for t in model_types.split(",") if t.strip()]
    config = TuneConfig(
        model_types=types, dataset=dataset, feature_set=feature_set, num_samples=num_samples, searcher=searcher,
        scheduler=scheduler, metric=metric, mode=mode, objectives=objectives.split(",") if objectives else None,
        space_overrides=_load_space(space), max_concurrent=max_concurrent, cpus_per_trial=cpus, gpus_per_trial=gpus,
        gpus_by_type=_parse_shares(gpus_by_type),
        time_budget_s=time_budget, seed=seed, register_as="" if no_register else name,
    ).validate()  # fmt: skip
    if recommend_first and len(types) > 1:
        from qmlops.features import load_features
        from qmlops.tuning import meta_features, recommend

        ranked = [
            r for r in recommend(meta_features(load_features(dataset, feature_set))) if r.model_type in types
        ]
        config.points_to_evaluate = []  # the types the recommender ranks first get their defaults tried first
        for r in ranked[:2]:
            console.print(f"recommender: {r.model_type} ({r.score:.2f}): {r.reason}")
    init_cluster()
    _summary(tune_models(config), as_json)


@app.command("resume")
@handle_errors
def resume_command(run_id: str = typer.Argument(...), as_json: bool = JSON_OPTION) -> None:
    """Continue an interrupted tuning run from its stored trials (finished trials are not rerun)."""
    from qmlops.cli._common import init_cluster
    from qmlops.tuning import resume_tuning

    init_cluster()
    _summary(resume_tuning(run_id), as_json)


@app.command("status")
@handle_errors
def status_command(run_id: str = typer.Argument(...), as_json: bool = JSON_OPTION) -> None:
    """A tuning run and its trials (state, model type, best step, stop reason)."""
    from qmlops.metadata import get_store

    store = get_store()
    run = store.runs.get(run_id)
    trials = store.runs.list(kind="trial", parent_id=run.id, limit=10_000)
    if as_json:
        print_record({**run.to_dict(), "trials": [t.to_dict() for t in trials]}, as_json=True)
        return
    print_record(run, as_json=False)
    print_records(
        trials,
        as_json=False,
        columns=["id", "model_type", "status", "best_step", "stopped_by", "duration_seconds"],
    )


@app.command("best")
@handle_errors
def best_command(run_id: str = typer.Argument(...), as_json: bool = JSON_OPTION) -> None:
    """The best trial of a tuning run by its metric, with its parameters and the registered model version."""
    from qmlops.metadata import get_store

    store = get_store()
    run = store.runs.get(run_id)
    metric, mode = run.config.get("metric", "valid_loss"), run.config.get("mode", "min")
    trials = [
        t for t in store.runs.list(kind="trial", parent_id=run.id, limit=10_000) if t.status == "finished"
    ]
    scored = []
    for t in trials:
        values = [getattr(m, metric) for m in store.runs.metrics(t.id) if getattr(m, metric) is not None]
        if values:
            scored.append((min(values) if mode == "min" else max(values), t))
    if not scored:
        raise ValidationError(f"no finished trial of {run.id} has {metric}", field="run_id")
    value, best = (min if mode == "min" else max)(scored, key=lambda p: p[0])
    data = {"run_id": run.id, "metric": metric, "value": value, "trial": best.id, "model_type": best.model_type,
            "params": best.params, "model_version": run.model_version}  # fmt: skip
    if as_json:
        print_record(data, as_json=True)
    else:
        console.print(json.dumps(data, indent=2, default=str))


def _parse_shares(text: str | None) -> dict[str, float]:
    """``gru=0.5,xgboost=1`` -> ``{"gru": 0.5, "xgboost": 1.0}``."""
    out: dict[str, float] = {}
    for item in (text or "").split(","):
        if not item.strip():
            continue
        name, sep, value = item.partition("=")
        try:
            out[name.strip()] = float(value)
        except ValueError:
            sep = ""
        if not sep or not name.strip():
            raise ValidationError(f"expected TYPE=GPUS, got {item.strip()!r}", field="gpus_by_type")
    return out
