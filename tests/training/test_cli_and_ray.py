"""Training from the CLI (progress bar, JSON summary, one-line errors), as a Ray task with resources, and through
``jobs.train`` (the ``ray job submit`` entry point); the model catalogue listing."""

from __future__ import annotations

import json
import time
from pathlib import Path

import ray
from typer.testing import CliRunner

from qmlops.cli import app
from qmlops.data import ingest
from qmlops.features import materialize
from qmlops.metadata import get_store

from ..features.test_store import _subset_csv

runner = CliRunner()


def _dataset(tmp_path: Path, n: int = 12) -> str:
    ds = ingest(str(_subset_csv(tmp_path, n=n)), name="sub").record
    materialize(ds.id, "alpha158", engine="local")
    return ds.id


def test_models_types_lists_the_catalogue() -> None:
    out = runner.invoke(app, ["models", "types", "--json"])
    assert out.exit_code == 0, out.output
    types = {t["name"]: t for t in json.loads(out.output)}
    for name in ("lightgbm", "xgboost", "catboost", "linear", "mlp", "tabnet", "gru", "lstm", "alstm",
                 "transformer", "localformer", "tcn", "gats", "informer"):  # fmt: skip
        assert types[name]["available"], name
        assert types[name]["family"] in ("tree", "linear", "nn", "sequence")
    assert (
        types["gru"]["data"] == "ts"
        and types["lightgbm"]["gpu"] == "no"
        and types["mlp"]["gpu"] == "optional"
    )
    assert types["lightgbm"]["search_space"]["learning_rate"] == {"type": "float", "low": 0.01, "high": 0.3,
                                                                  "log": True}  # fmt: skip
    assert not types["hist"]["available"] and "concept" in types["hist"]["reason"]
    table = runner.invoke(app, ["models", "types", "--family", "sequence"])
    assert table.exit_code == 0 and "informer" in table.output and "lightgbm" not in table.output


def test_cli_train_run_show_and_errors(tmp_home: Path, tmp_path: Path) -> None:
    _dataset(tmp_path)
    out = runner.invoke(app, ["train", "run", "linear", "--dataset", "sub", "--param", "alpha=5.0", "--json"])
    assert out.exit_code == 0, out.output
    summary = json.loads(out.output[out.output.index("{") :])
    assert summary["stopped_by"] == "closed_form" and summary["model_version"]["name"] == "alpha158-linear"
    assert set(summary["metrics"]) >= {
        "ic",
        "icir",
        "rank_ic",
        "rank_icir",
        "mse",
        "annual_return",
        "turnover",
    }
    shown = json.loads(runner.invoke(app, ["train", "show", summary["run_id"], "--json"]).output)
    assert shown["status"] == "finished" and shown["params"]["alpha"] == 5.0
    metrics = json.loads(runner.invoke(app, ["train", "metrics", summary["run_id"], "--json"]).output)
    assert [m["step"] for m in metrics] == [0]
    table = runner.invoke(app, ["train", "run", "lightgbm", "--dataset", "sub", "--early-stop", "patience=3",
                                "--no-register", "--param", "num_leaves=7"])  # fmt: skip
    assert table.exit_code == 0, table.output
    assert (
        "train lightgbm" in table.output
        and "test IC" in table.output
        and "stopped by stopper" in table.output
    )
    assert (
        "device cpu: torch sees no CUDA device" in table.output
    )  # the choice and its reason, in the summary
    runs = json.loads(runner.invoke(app, ["train", "runs", "--json"]).output)
    assert len(runs) == 2 and {r["status"] for r in runs} == {"finished"}
    # bad input: a one-line error naming the field, a non-zero exit, no traceback, no run recorded
    for args, code, text in [
        (["train", "run", "gbm9000", "--dataset", "sub"], 3, "unknown model type 'gbm9000'"),
        (["train", "run", "lightgbm", "--dataset", "sub", "--param", "num_leafs=3"], 2, "params.num_leafs"),
        (["train", "run", "lightgbm", "--dataset", "sub", "--param", "oops"], 2, "expected NAME=VALUE"),
        (["train", "run", "lightgbm", "--dataset", "sub", "--early-stop", "patience=0"], 2, "patience"),
        (["train", "run", "lightgbm", "--dataset", "sub", "--split", "0.5,0.5"], 2, "split"),
        (["train", "run", "hist", "--dataset", "sub"], 2, "cannot run here"),
        (
            ["train", "run", "mlp", "--dataset", "sub", "--device", "cuda"],
            2,
            "cuda requested but torch sees no CUDA device",
        ),
        (
            ["train", "run", "mlp", "--dataset", "sub", "--device", "tpu"],
            2,
            "device must be auto, cpu or cuda",
        ),
        (["train", "run", "linear", "--dataset", "nope"], 3, "no dataset version or name 'nope'"),
        (["train", "show", "run-none"], 3, "no run"),
    ]:
        result = runner.invoke(app, args)
        assert result.exit_code == code, (args, result.output)
        assert text in result.output and "Traceback" not in result.output, (args, result.output)
    assert len(json.loads(runner.invoke(app, ["train", "runs", "--json"]).output)) == 2


def test_train_as_a_ray_task_reports_progress_while_running(ray_home: Path, tmp_path: Path) -> None:
    from qmlops.training import TrainConfig, train_remote

    _dataset(tmp_path)
    store = get_store()
    config = TrainConfig("mlp", dataset="sub", params={"max_steps": 120, "eval_steps": 10, "batch_size": 256},
                         early_stopping="none", register_as="sub-mlp-ray", report=False)  # fmt: skip
    run_id, ref = train_remote(config, num_cpus=1)
    seen_while_running: list[int] = []
    while not ray.wait([ref], timeout=0.05)[0]:
        try:
            run = store.runs.get(run_id)
        except Exception:  # the task has not started the run yet
            continue
        rows = store.runs.metrics(run_id)
        if run.status == "running" and rows:
            seen_while_running.append(rows[-1].step)
        time.sleep(0.05)
    summary = ray.get(ref)
    assert summary["run_id"] == run_id and summary["stopped_by"] == "max_epochs" and summary["n_steps"] == 12
    assert seen_while_running and seen_while_running[0] < 11  # rows arrived before training ended
    run = store.runs.get(run_id)
    assert run.status == "finished" and run.total_steps == 12 and run.config["device"] == "cpu"
    assert run.config["device_choice"]["reason"] == "Ray assigned no GPU to this task"
    assert run.config["device_choice"]["ray_gpu_ids"] == []
    assert len(store.runs.metrics(run_id)) == 12
    assert store.models.latest("sub-mlp-ray").id == summary["model_version"]["id"]


def test_job_entry_point(ray_home: Path, tmp_path: Path, capsys) -> None:
    from jobs.train import main

    _dataset(tmp_path, n=8)
    assert main(["xgboost", "--dataset", "sub", "--param", "num_boost_round=30", "--early-stop", "none",
                 "--no-register", "--num-cpus", "1"]) == 0  # fmt: skip
    printed = capsys.readouterr().out
    assert "train: run run-" in printed and "train: step 9 " in printed
    summary = json.loads(printed[printed.index("{\n") :])
    assert summary["stopped_by"] == "max_epochs" and summary["model_version"] is None
    assert main(["xgboost", "--dataset", "sub", "--param", "bogus=1"]) == 2
    assert "params.bogus" in capsys.readouterr().err


def test_progress_reaches_ray_tune_inside_a_trial(ray_home: Path, tmp_path: Path) -> None:
    """Inside a Tune trial every progress step is also a tune.report (what ASHA's early stopping reads)."""
    from ray import tune

    from qmlops.config import get_settings
    from qmlops.training import TrainConfig, train

    _dataset(tmp_path, n=8)
    store, settings = get_store(), get_settings()

    def trainable(config: dict) -> None:
        train(TrainConfig("lightgbm", dataset="sub", params={"num_leaves": config["leaves"], "lambda_l1": 1.0,
                                                              "lambda_l2": 1.0}, early_stopping="patience=12",
                          progress_every=5, register_as="", report=False), store=store, settings=settings)  # fmt: skip

    tuner = tune.Tuner(
        tune.with_resources(trainable, {"cpu": 1}),
        param_space={"leaves": 7},
        tune_config=tune.TuneConfig(num_samples=1),
        run_config=tune.RunConfig(name="progress", storage_path=str(tmp_path / "tune"), verbose=0),
    )
    result = tuner.fit()[0]
    assert result.error is None, result.error
    history = result.metrics_dataframe
    run = store.runs.list(kind="train", limit=1)[0]
    steps = [m.step for m in store.runs.metrics(run.id)]
    assert list(history["step"]) == steps and len(steps) >= 2  # one tune.report per progress step
    assert history["valid_loss"].notna().all() and result.metrics["training_iteration"] == len(steps)
