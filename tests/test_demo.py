"""``qmlops demo`` end to end on the session's Ray cluster: every stage leaves its records, the report covers
each stage, and the Serve app with the web page is still up at the end (``--keep-serving``).

The slowest test of the suite (the whole pipeline on all 524 instruments: about 3 minutes here); it runs after
the serving package, whose Serve instance is shut down by then (Serve is one per cluster).
"""

from __future__ import annotations

import uuid
from pathlib import Path

import httpx
import pytest
from typer.testing import CliRunner


@pytest.mark.slow
def test_demo_runs_every_stage_and_keeps_serving(
    ray_cluster: object, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from ray import serve

    from qmlops.cli import app
    from qmlops.metadata import get_store, shutdown_remote
    from qmlops.monitoring._resources import stop_resource_monitors
    from qmlops.serving import ServeService

    home = tmp_path / "demo-home"
    monkeypatch.setenv("QMLOPS_HOME", str(home))
    monkeypatch.setenv("QMLOPS_METADATA_MODE", "ray")
    monkeypatch.setenv("QMLOPS_METADATA_ACTOR", f"qmlops-metadata-demo-{uuid.uuid4().hex[:8]}")
    try:
        result = CliRunner().invoke(app, ["demo", "--keep-serving"])
        assert result.exit_code == 0, result.output[-3000:]
        store = get_store()

        report = (home / "reports" / "demo.html").read_text()
        for heading in ("1. Data", "2. Features", "3. Training", "5. Tuning", "Deployments", "Drift and alerts",
                        "10. Experiment", "11. Explanations"):  # fmt: skip
            assert heading in report, heading
        assert report.count("<img") >= 3  # training curves, tuning and explanation plots

        assert {m.status for m in store.features.list()} == {"complete"}
        runs = store.runs.list(limit=200)
        assert {"lightgbm", "linear", "mlp"} <= {r.model_type for r in runs if r.kind == "train"}
        tuned = [r for r in runs if r.kind == "tune"]
        assert tuned and tuned[0].status == "finished"

        rollouts = store.serving.list_rollouts(model="sp500-alpha", limit=50)
        by_state = {(r["strategy"], r["state"]) for r in rollouts}
        assert ("blue_green", "succeeded") in by_state and ("canary", "succeeded") in by_state
        failed = [r for r in rollouts if r["state"] == "rolled_back"]
        assert len(failed) == 1 and "error rate" in failed[0]["reason"]
        assert store.models.get(failed[0]["to_version"]).state == "rolled_back"
        assert [a for a in store.monitoring.alerts(source="rollout") if a["subject"] == "sp500-alpha"]

        drift = store.monitoring.drift(model_name="sp500-alpha", limit=50)
        assert drift and max(d["drift_share"] for d in drift) > 0.2  # the planted volume shift is seen

        (exp,) = store.experiments.list()
        assert exp["state"] == "stopped" and len(store.experiments.units(exp["id"])) > 100
        versions = [v for v in store.models.search([], limit=100) if v.name == "sp500-alpha"]
        assert [v for v in versions if v.state == "production"]
        explained = [v for v in versions if store.experiments.get_explanation(v.id) is not None]
        assert explained and explained[0].model_type in ("lightgbm", "xgboost")  # the tuned one

        port = ServeService().options().port  # left running: the page and the API answer
        page = httpx.get(f"http://127.0.0.1:{port}/ui", timeout=30)
        assert page.status_code == 200 and "/ui/app.js" in page.text
        models = httpx.get(f"http://127.0.0.1:{port}/v1/registry/models", timeout=30).json()["models"]
        assert "sp500-alpha" in {m["name"] for m in models}
        assert f"http://127.0.0.1:{port}/ui" in result.output.replace("\n", "")
    finally:
        serve.shutdown()
        stop_resource_monitors()
        shutdown_remote()
