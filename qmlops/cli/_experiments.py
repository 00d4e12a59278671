"""``qmlops experiments ...`` and ``qmlops explain ...``."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import typer

from qmlops.cli._common import JSON_OPTION, console, handle_errors, print_json, print_record, print_records
from qmlops.exceptions import ValidationError, reject_unknown

experiments_app = typer.Typer(no_args_is_help=True)


def _service() -> Any:
    from qmlops.experiments import ExperimentService

    return ExperimentService()


def _spec(path: Path) -> dict[str, Any]:
    import yaml

    if not path.exists():
        raise ValidationError(f"{path} does not exist", field="file")
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        raise ValidationError(f"{path} is not valid YAML/JSON: {exc}", field="file") from None
    if not isinstance(data, dict):
        raise ValidationError("the spec must be an object", field="file")
    reject_unknown(data, ("name", "model", "variants", "metrics", "layer", "traffic", "targeting", "start_at",
                          "stop_at"), "experiment field")  # fmt: skip
    for key in ("name", "model", "variants", "metrics"):
        if key not in data:
            raise ValidationError("required", field=key)
    return data


@experiments_app.command("create")
@handle_errors
def create(spec: Path = typer.Argument(..., help="YAML/JSON: name, model, variants, metrics, layer, traffic, targeting"),
           start: bool = typer.Option(False, "--start", help="start it right away"),
           as_json: bool = JSON_OPTION) -> None:  # fmt: skip
    """Create an experiment (a draft until started)."""
    data = _spec(spec)
    service = _service()
    if start:
        from qmlops.cli._common import init_cluster

        init_cluster()
    exp = service.create(
        data.pop("name"), data.pop("model"), data.pop("variants"), metrics=data.pop("metrics"), **data
    )
    if start:
        exp = service.start(exp["id"])
    print_record(exp, as_json=as_json)


@experiments_app.command("start")
@handle_errors
def start(experiment: str, as_json: bool = JSON_OPTION) -> None:
    """Start an experiment: the gateway begins assigning users to its variants."""
    from qmlops.cli._common import init_cluster

    init_cluster()
    print_record(_service().start(experiment), as_json=as_json)


@experiments_app.command("stop")
@handle_errors
def stop(experiment: str, as_json: bool = JSON_OPTION) -> None:
    """Stop an experiment (its data stays for analysis)."""
    from qmlops.cli._common import init_cluster

    init_cluster()
    print_record(_service().stop(experiment), as_json=as_json)


@experiments_app.command("list")
@handle_errors
def list_(state: str | None = typer.Option(None, "--state"), as_json: bool = JSON_OPTION) -> None:
    """Experiments and their state."""
    rows = _service().store.experiments.list(state=state)
    print_records(
        rows,
        as_json=as_json,
        columns=["id", "name", "model", "layer", "traffic", "state", "start_at", "stop_at"],
    )


@experiments_app.command("results")
@handle_errors
def results(experiment: str, alpha: float = typer.Option(0.05, "--alpha"),
            ci: str = typer.Option("analytic", "--ci", help="analytic or bootstrap intervals"),
            html_out: Path | None = typer.Option(None, "--html", help="also write the HTML report here"),
            as_json: bool = JSON_OPTION) -> None:  # fmt: skip
    """Per metric and variant against control: lift with CI, p-values (raw, Holm, always-valid), SRM."""
    if not 0 < alpha < 1:
        raise ValidationError("--alpha must lie in (0, 1)", field="alpha")
    service = _service()
    res = service.results(experiment, alpha=alpha, ci=ci)
    if html_out is not None:
        html_out.write_text(service.report_html(experiment, alpha=alpha))
    if as_json:
        print_json(res)
        return
    console.print(f"units per variant: {res['units']}; SRM: {res.get('srm')}")
    print_records([{k: m[k] for k in ("metric", "variant", "control_mean", "variant_mean", "relative_lift", "relative_ci",
                                      "test", "p_value", "adjusted_p_value", "significant")}
                   | {"always_valid_p": m.get("always_valid_p_value")} for m in res["metrics"]], as_json=False)  # fmt: skip


@handle_errors
def explain_command(
    model: str = typer.Argument(..., help="model name"),
    version: str = typer.Argument("latest", help="version number, alias or mv- id"),
    global_: bool = typer.Option(
        False, "--global", help="global importance + indicator impact report (stored)"
    ),
    row: str | None = typer.Option(None, "--row", help="JSON object of feature -> value to explain"),
    instrument: str | None = typer.Option(
        None, "--instrument", help="explain the point-in-time row of this instrument"
    ),
    date: str | None = typer.Option(None, "--date"),
    top: int = typer.Option(10, "--top"),
    as_json: bool = JSON_OPTION,
) -> None:
    """SHAP for a registry version: one row (--row or --instrument/--date) or the global report (--global)."""
    import numpy as np
    import pandas as pd

    from qmlops.explain import ModelExplainer, explain_global
    from qmlops.metadata import get_store
    from qmlops.registry import ModelRegistry

    ref: int | str = int(version) if version.isdigit() else version
    if global_:
        report, uri = explain_global(model, ref)
        out = report.to_dict(top=top) | {"report_uri": uri}
        if as_json:
            print_json(out)
            return
        print_records(
            report.families.reset_index().to_dict(orient="records"), as_json=False, title="families"
        )
        console.print(f"report: {uri}")
        return
    registry = ModelRegistry(get_store())
    explainer = ModelExplainer(registry, model, ref)
    if row is not None:
        try:
            values = json.loads(row)
        except json.JSONDecodeError as exc:
            raise ValidationError(f"--row is not JSON: {exc}", field="row") from None
        if not isinstance(values, dict):
            raise ValidationError("--row must be a JSON object of feature -> value", field="row")
        missing = [n for n in explainer.feature_names if n not in values]
        if missing:
            raise ValidationError(
                f"missing {len(missing)} feature(s), e.g. {missing[:3]}", field=f"row.{missing[0]}"
            )
        x = np.array([[float(values[n]) for n in explainer.feature_names]])
    elif instrument and date:
        from qmlops.features import get_features

        parents = [n for n in registry.store.lineage.upstream(explainer.record.id) if n.kind == "feature_set"]
        frame = get_features(
            [instrument.upper()], pd.Timestamp(date), materialization=parents[0].id if parents else None
        )
        if frame.empty:
            raise ValidationError(f"no feature row for {instrument} on or before {date}", field="instrument")
        x = frame[explainer.feature_names].to_numpy(dtype=np.float64)
    else:
        raise ValidationError("give --global, --row JSON, or --instrument and --date", field="row")
    result = explainer.explain(x).row(0, top=top) | {
        "method": explainer.method,
        "model_version": explainer.record.id,
    }
    if as_json:
        print_json(result)
        return
    console.print(f"prediction {result['prediction']:.6g} = base {result['base_value']:.6g} + contributions "
                  f"({explainer.method}; additivity error {result['additivity_error']:.1e})")  # fmt: skip
    print_records([{"feature": k, "shap": v} for k, v in result["contributions"].items()], as_json=False)


@experiments_app.command("power")
@handle_errors
def power(
    p1: float | None = typer.Option(None, "--p1", help="control conversion rate (proportion metrics)"),
    p2: float | None = typer.Option(None, "--p2", help="treatment conversion rate to detect"),
    effect_size: float | None = typer.Option(None, "--effect-size", help="Cohen's d (mean metrics)"),
    n: int | None = typer.Option(
        None, "--n", help="users per arm: report the power instead of the sample size"
    ),
    alpha: float = typer.Option(0.05, "--alpha"),
    target: float = typer.Option(0.8, "--power", help="wanted power"),
    as_json: bool = JSON_OPTION,
) -> None:
    """Sample size per arm for a wanted power, or the power of a given sample size."""
    from qmlops.experiments import power_means, power_proportions, sample_size_means, sample_size_proportions

    if not 0 < alpha < 1 or not 0 < target < 1:
        raise ValidationError("--alpha and --power must lie in (0, 1)", field="alpha")
    if (p1 is None) == (effect_size is None):
        raise ValidationError("give --p1 and --p2 (proportions) or --effect-size (means)", field="p1")
    if p1 is not None:
        if p2 is None:
            raise ValidationError("--p2 is required with --p1", field="p2")
        out = {"metric": "proportion", "p1": p1, "p2": p2, "alpha": alpha}
        if n is not None:
            out |= {"n_per_arm": n, "power": power_proportions(n, p1, p2, alpha)}
        else:
            out |= {"power": target, "n_per_arm": sample_size_proportions(p1, p2, alpha, target)}
    else:
        assert effect_size is not None
        out = {"metric": "mean", "effect_size": effect_size, "alpha": alpha}
        if n is not None:
            out |= {"n_per_arm": n, "power": power_means(n, effect_size, alpha)}
        else:
            out |= {"power": target, "n_per_arm": sample_size_means(effect_size, alpha, target)}
    print_record(out, as_json=as_json)
