"""Ray Tune over the training engine: a combined (algorithm x hyperparameter) search with ASHA and Optuna TPE on
real data, trials and their progress in the store, the best retrained and registered with lineage; space
validation; the recommender on the bundled data."""

from __future__ import annotations

from pathlib import Path

import pytest

from qmlops.exceptions import ValidationError
from qmlops.features import load_features
from qmlops.metadata import get_store
from qmlops.tuning import TuneConfig, meta_features, recommend, tune_models

from ..features.test_store import _subset_csv


def _dataset(tmp_path: Path) -> str:
    from qmlops.data import ingest
    from qmlops.features import materialize

    ds = ingest(str(_subset_csv(tmp_path, n=8)), name="sub").record
    materialize(ds.id, "alpha158", engine="local")
    return ds.id


def test_combined_search_with_asha_and_tpe(ray_home: Path, tmp_path: Path) -> None:
    _dataset(tmp_path)
    config = TuneConfig(model_types=["lightgbm", "linear"], dataset="sub", num_samples=6, searcher="tpe",
                        scheduler="asha", grace_period=1, reduction_factor=2, progress_every=5,
                        early_stopping="patience=10", max_concurrent=2, register_as="sub-tuned",
                        fixed_params={"lightgbm": {"num_boost_round": 60}})  # fmt: skip
    result = tune_models(config)
    store = get_store()
    assert len(result.trials) == 6 and all(t["error"] is None for t in result.trials)
    assert {t["model_type"] for t in result.trials} <= {"lightgbm", "linear"}
    children = store.runs.list(kind="trial", parent_id=result.run_id, limit=100)
    assert len(children) == 6 and all(store.runs.metrics(c.id) for c in children)
    # A trial ASHA stopped is "stopped" (by the scheduler, with the step), never "failed".
    stopped = [c for c in children if c.status == "stopped"]
    assert {c.status for c in children} <= {"finished", "stopped"}
    assert len(stopped) == sum(t["stopped_early"] for t in result.trials)
    assert all(c.stopped_by == "scheduler" and "after step" in (c.stop_reason or "") for c in stopped)
    finite = [t for t in result.trials if t["valid_loss"] is not None]
    assert result.best["valid_loss"] == min(t["valid_loss"] for t in finite)
    run = store.runs.get(result.run_id)
    assert run.kind == "tune" and run.status == "finished" and run.metrics["trials"] == 6
    assert result.model_version is not None and run.model_version == result.model_version["id"]
    upstream = {n.id: n.kind for n in store.lineage.upstream(result.model_version["id"])}
    assert upstream[result.run_id] == "tuning_run"
    mv = store.models.get(result.model_version["id"])
    assert mv.model_type == result.best["model_type"]


def test_invalid_spaces_are_refused_before_any_trial(ray_home: Path, tmp_path: Path) -> None:
    store = get_store()
    for overrides, field in [({"lightgbm": {"num_leafs": {"type": "int", "low": 2, "high": 9}}}, "search_space.num_leafs"),
                             ({"lightgbm": {"learning_rate": {"type": "float", "low": 0.3, "high": 0.1}}},
                              "search_space.learning_rate"),
                             ({"xgboost": {"eta": {"type": "float", "low": 0.1, "high": 0.3}}}, "space_overrides")]:  # fmt: skip
        with pytest.raises(ValidationError) as err:
            tune_models(TuneConfig(model_types=["lightgbm"], dataset="sub", space_overrides=overrides))
        assert err.value.field == field
    with pytest.raises(ValidationError) as err:
        TuneConfig(objectives=["valid_ic:max", "train_seconds:min"], scheduler="asha").validate()
    assert err.value.field == "scheduler"
    assert store.runs.list(kind="tune") == []


def test_gpu_shares_go_to_the_types_that_use_a_gpu() -> None:
    config = TuneConfig(model_types=["lightgbm", "gru", "xgboost"], gpus_per_trial=0.25,
                        gpus_by_type={"xgboost": 1}).validate()  # fmt: skip
    assert [config.gpus_for(t) for t in ("lightgbm", "gru", "xgboost")] == [0.0, 0.25, 1.0]
    for kwargs, field in [({"gpus_per_trial": 1.5}, "gpus_per_trial"), ({"gpus_per_trial": -1}, "gpus_per_trial"),
                          ({"gpus_by_type": {"gru": "half"}}, "gpus_by_type.gru"),
                          ({"gpus_by_type": {"mlp": 0.5}}, "gpus_by_type"), ({"cpus_per_trial": 0}, "cpus_per_trial")]:  # fmt: skip
        with pytest.raises(ValidationError) as err:
            TuneConfig(model_types=["lightgbm", "gru"], **kwargs).validate()
        assert err.value.field == field
    from typer.testing import CliRunner

    from qmlops.cli import app

    runner = CliRunner()  # the CLI refuses them in one line, before any cluster starts
    for extra, text in [(["--gpus-by-type", "gru"], "gpus_by_type: expected TYPE=GPUS"),
                        (["--gpus-per-trial", "1.5"], "gpus_per_trial: must be 0, a fraction")]:  # fmt: skip
        bad = runner.invoke(app, ["tune", "start", "--models", "lightgbm,gru", "--no-recommend", *extra])
        assert bad.exit_code == 2 and text in bad.output and "Traceback" not in bad.output, bad.output


def test_recommender_ranks_every_available_type_with_a_reason(tmp_home: Path, tmp_path: Path) -> None:
    _dataset(tmp_path)
    meta = meta_features(load_features("sub", "alpha158"), gpu=False)
    assert meta["instruments"] == 8 and meta["features"] == 158 and 0 <= meta["missing_ratio"] < 1
    assert 0 <= meta["label_noise"] <= 1 and meta["gpu"] is False
    ranked = recommend(meta)
    assert ranked[0].model_type == "lightgbm" and all(r.reason for r in ranked)
    assert [r.score for r in ranked] == sorted((r.score for r in ranked), reverse=True)
    with_gpu = {r.model_type: r.score for r in recommend({**meta, "gpu": True, "days": 1000})}
    without = {r.model_type: r.score for r in ranked}
    assert with_gpu["transformer"] > without["transformer"]


def test_killed_driver_resumes_without_rerunning_finished_trials(ray_home: Path, tmp_path: Path) -> None:
    """The tuning driver (``python -m jobs.tune`` on this cluster) is SIGKILLed after two trials finished;
    ``resume`` completes the run from the stored trials: all trials, the finished ones not run again."""
    import os
    import signal
    import subprocess
    import sys
    import time

    import ray

    from qmlops.tuning import resume_tuning

    _dataset(tmp_path)
    store = get_store()
    run_id = "tune-killtest01"
    env = {
        **os.environ,
        "RAY_ADDRESS": ray.get_runtime_context().gcs_address,
        "TUNE_GLOBAL_CHECKPOINT_S": "0",
    }
    driver = subprocess.Popen(
        [sys.executable, "-m", "jobs.tune", "--models", "lightgbm", "--dataset", "sub", "--trials", "5",
         "--scheduler", "fifo", "--max-concurrent", "1", "--run-id", run_id, "--no-register",
         "--fixed", '{"lightgbm": {"num_boost_round": 40}}'],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
    )  # fmt: skip
    try:
        deadline = time.time() + 300
        finished: list[str] = []
        while time.time() < deadline:
            try:
                finished = [t.id for t in store.runs.list(kind="trial", parent_id=run_id, status="finished")]
            except Exception:
                finished = []
            if len(finished) >= 2:
                break
            assert driver.poll() is None, "the driver ended before it could be interrupted"
            time.sleep(0.2)
        assert len(finished) >= 2
    finally:
        os.killpg(driver.pid, signal.SIGKILL)
        driver.wait(timeout=30)
    done_before = {t.id for t in store.runs.list(kind="trial", parent_id=run_id, status="finished")}
    result = resume_tuning(run_id)
    assert len(result.trials) == 5  # the same trial count as an uninterrupted run
    finished_after = [
        t for t in store.runs.list(kind="trial", parent_id=run_id, status="finished", limit=100)
    ]
    # every trial finished exactly once overall: none of the finished ones ran again
    assert len(finished_after) == 5 and done_before <= {t.id for t in finished_after}
    assert {t["trial_run_id"] for t in result.trials} == {t.id for t in finished_after}
    assert store.runs.get(run_id).status == "finished"


def test_nsga2_pareto_cmaes_and_the_cli(ray_home: Path, tmp_path: Path) -> None:
    import json

    from typer.testing import CliRunner

    from qmlops.cli import app

    _dataset(tmp_path)
    multi = tune_models(TuneConfig(model_types=["linear"], dataset="sub", num_samples=4, searcher="nsga2",
                                   scheduler="fifo", objectives=["valid_ic:max", "train_seconds:min"],
                                   register_as=""))  # fmt: skip
    assert len(multi.trials) == 4 and multi.pareto
    for a in multi.pareto:  # nothing in the front is dominated by another trial
        assert not any(b["valid_ic"] >= a["valid_ic"] and b["train_seconds"] <= a["train_seconds"]
                       and (b["valid_ic"], b["train_seconds"]) != (a["valid_ic"], a["train_seconds"])
                       for b in multi.trials)  # fmt: skip
    cma = tune_models(TuneConfig(model_types=["lightgbm"], dataset="sub", num_samples=3, searcher="cmaes",
                                 scheduler="fifo", register_as="", early_stopping="patience=5",
                                 fixed_params={"lightgbm": {"num_boost_round": 30}}))  # fmt: skip
    assert len(cma.trials) == 3 and len({json.dumps(t["params"], sort_keys=True) for t in cma.trials}) == 3
    runner = CliRunner()
    status = json.loads(runner.invoke(app, ["tune", "status", cma.run_id, "--json"]).stdout)
    assert status["kind"] == "tune" and len(status["trials"]) == 3
    best = json.loads(runner.invoke(app, ["tune", "best", cma.run_id, "--json"]).stdout)
    assert best["model_type"] == "lightgbm" and best["value"] == min(t["valid_loss"] for t in cma.trials)
    bad = runner.invoke(
        app, ["tune", "start", "--models", "lightgbm", "--dataset", "sub", "--searcher", "grid"]
    )
    assert bad.exit_code == 2 and "searcher" in bad.output
