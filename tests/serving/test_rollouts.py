"""Rollouts end to end on the real Serve app: immediate, blue-green, canary (success, rollback on errors, rollback
on doubled latency), rolling; the validator's refusal; the admin API with its bearer token; the CLI."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from qmlops.deploy import RolloutController
from qmlops.exceptions import ConflictError, ValidationError
from qmlops.features import load_features
from qmlops.metadata import get_store
from qmlops.registry import ModelRegistry
from qmlops.serving import ServeService
from qmlops.serving._drills import register_drill_model

from .conftest import Served, Traffic

FAST_CANARY = {"steps": [30, 100], "dwell_seconds": 2.0, "min_requests": 15, "max_wait_seconds": 60.0}


def _rows(served: Served) -> list[dict[str, float]]:
    frame = load_features("sub", "alpha158", start=served.test_day)["feature"].dropna().head(10)
    return [{k: float(v) for k, v in row.items()} for row in frame.to_dict(orient="records")]


def _reset(served: Served) -> None:
    ServeService().deploy_model("alpha", 1)


def _state(version_id: str) -> str:
    return get_store().models.get(version_id).state


def test_canary_succeeds_under_traffic_then_operator_rolls_back(served: Served) -> None:
    controller = RolloutController()
    v1, v2 = served.versions["alpha1"]["id"], served.versions["alpha2"]["id"]
    try:
        rollout = controller.start("alpha", 2, "canary", FAST_CANARY)
        assert rollout["state"] == "pending" and rollout["from_version"] == v1
        with pytest.raises(ConflictError):  # one rollout per model at a time
            controller.start("alpha", 2, "immediate")
        with Traffic(served.url, "alpha", _rows(served)) as traffic:
            done = controller.run(rollout["id"], timeout=300)
        assert done["state"] == "succeeded", (
            done["reason"],
            controller.describe(rollout["id"])["events"][-4:],
        )
        assert set(traffic.status) == {200} and traffic.versions[v2] > 0
        described = controller.describe(rollout["id"])
        kinds = [e["kind"] for e in described["events"]]
        assert kinds[:2] == ["created", "started"] and "analysis" in kinds and kinds[-1] == "succeeded"
        analysis = [e for e in described["events"] if e["kind"] == "analysis"]
        assert all(e["detail"]["verdict"] == "pass" for e in analysis)
        assert {g["name"] for g in analysis[0]["detail"]["gates"]} == {"error_rate", "p99_latency_ratio"}
        assert any(c["kind"] == "health" and c["ok"] for c in described["checks"])
        assert _state(v2) == "production"
        table = ServeService().table("alpha")
        assert {(e.model_version, e.weight, e.role) for e in table.entries} == {
            (v2, 100.0, "stable"),
            (v1, 0.0, "standby"),
        }
        back = controller.rollback(rollout["id"])
        assert back["state"] == "rolled_back" and ServeService().table("alpha").route("x").model_version == v1
        assert _state(v2) == "rolled_back"
    finally:
        _reset(served)


@pytest.mark.parametrize(("fault", "reason"), [({"error_rate": 1.0}, "error rate"),
                                               ({"extra_latency_ms": 150.0}, "p99 latency")])  # fmt: skip
def test_canary_rolls_back_by_itself(served: Served, fault: dict, reason: str) -> None:
    registry = ModelRegistry(get_store())
    # healthy for the 5 sequential health probes of the staged version, failing once real traffic arrives
    drill = register_drill_model(registry, "alpha", 1, healthy_calls=5, **fault)
    controller = RolloutController()
    try:
        rollout = controller.start("alpha", drill.version, "canary", {**FAST_CANARY, "steps": [50, 100]})
        with Traffic(served.url, "alpha", _rows(served)) as traffic:
            done = controller.run(rollout["id"], timeout=300)
        analysis = [
            e["detail"] for e in controller.describe(rollout["id"])["events"] if e["kind"] == "analysis"
        ]
        assert done["state"] == "rolled_back" and reason in done["reason"], (done["reason"], analysis)
        assert _state(drill.id) == "rolled_back"
        table = ServeService().table("alpha")
        assert table.entry_for(drill.id) is None and table.route("anyone").version == 1
        alerts = get_store().monitoring.alerts(source="rollout", subject="alpha")
        assert (
            alerts
            and alerts[0]["details"]["rollout_id"] == rollout["id"]
            and alerts[0]["severity"] == "critical"
        )
        if "error_rate" in fault:  # the failing canary's errors were real 5xx answers, nothing else failed
            assert traffic.status[200] > 0 and set(traffic.status) <= {200, 500}
    finally:
        _reset(served)


def test_blue_green_switches_at_once_and_keeps_the_old_warm(served: Served) -> None:
    controller = RolloutController()
    v1, v2 = served.versions["alpha1"]["id"], served.versions["alpha2"]["id"]
    try:
        rollout = controller.start("alpha", 2, "blue_green", {"perf_requests": 40, "perf_concurrency": 4})
        done = controller.run(rollout["id"], timeout=300)
        assert done["state"] == "succeeded", done
        checks = {c["kind"]: c for c in get_store().serving.checks(rollout_id=rollout["id"])}
        assert checks["performance"]["ok"] and checks["performance"]["result"]["requests"] == 40
        assert checks["performance"]["result"]["p99_ms"] > 0
        weights = [e for e in controller.describe(rollout["id"])["events"] if e["kind"] == "weights"]
        assert weights[0]["detail"][v2] == [0.0, "standby"]  # green came up at 0%
        assert weights[-1]["detail"] == {v2: [100.0, "stable"], v1: [0.0, "standby"]}  # then 100% at once
        served.client.get("/readyz").raise_for_status()
        assert set(served.client.get("/readyz").json()["models"]) == {v1, v2} | {
            served.versions["lin1"]["id"]
        }
    finally:
        _reset(served)


def test_rolling_replaces_server_replicas_and_moves_traffic_in_batches(served: Served) -> None:
    controller = RolloutController()
    v2 = served.versions["alpha2"]["id"]
    try:
        rollout = controller.start("alpha", 2, "rolling", {"batches": 2})
        done = controller.run(rollout["id"], timeout=300)
        assert done["state"] == "succeeded", done
        events = controller.describe(rollout["id"])["events"]
        assert any(e["kind"] == "replicas_rolled" for e in events)
        assert v2 in ServeService().options().preload
        steps = [e["detail"][v2][0] for e in events if e["kind"] == "weights"]
        assert steps == [0.0, 50.0, 100.0]  # staged at 0% (loaded, health-checked), then two batches
    finally:
        _reset(served)


def test_incompatible_or_bad_requests_are_refused_before_anything_changes(served: Served) -> None:
    controller = RolloutController()
    before = ServeService().table("alpha").to_dict()
    with pytest.raises(ValidationError) as bad:
        controller.start("alpha", 2, "sideways")
    assert bad.value.field == "strategy"
    with pytest.raises(ValidationError) as bad_opt:
        controller.start("alpha", 2, "canary", {"steps": [50, 20]})
    assert bad_opt.value.field == "options.steps"
    with pytest.raises(ConflictError):
        controller.start("alpha", 1, "canary")  # already the stable version
    # a linear model's registry lineage is the same feature set, but register one with a foreign signature
    registry = ModelRegistry(get_store())
    import numpy as np

    class Tiny:
        coef_ = np.ones(3)
        intercept_ = 0.0

    import pandas as pd

    foreign = registry.register("alpha", Tiny(), signature=pd.DataFrame({"a": [1.0], "b": [1.0], "c": [1.0]}))
    with pytest.raises(ConflictError) as incompatible:
        controller.start("alpha", foreign.version, "canary")
    assert "compatibility" in str(incompatible.value)
    assert ServeService().table("alpha").to_dict()["entries"] == before["entries"]


def test_admin_api_needs_the_bearer_token(served: Served) -> None:
    c = served.client
    body = {"model": "alpha", "version": 2, "strategy": "immediate"}
    assert c.post("/v1/admin/rollouts", json=body).status_code == 401
    r = c.post("/v1/admin/rollouts", json=body, headers={"authorization": "Bearer wrong"})
    assert r.status_code == 401 and r.json()["error"]["field"] == "authorization"
    auth = {"authorization": "Bearer s3cret-token"}
    bad = c.post("/v1/admin/rollouts", json={**body, "strategy": "sideways"}, headers=auth)
    assert bad.status_code == 422 and bad.json()["error"]["field"] == "strategy"
    assert (
        c.post("/v1/admin/rollouts", json={"model": "alpha"}, headers=auth).json()["error"]["field"]
        == "version"
    )
    try:
        created = c.post("/v1/admin/rollouts", json=body, headers=auth)
        assert created.status_code == 201, created.text
        rollout_id = created.json()["id"]
        import time

        deadline = time.time() + 120
        state = "pending"
        while time.time() < deadline and state in ("pending", "running"):
            time.sleep(0.5)
            got = c.get(f"/v1/admin/rollouts/{rollout_id}", headers=auth)
            assert got.status_code == 200, got.text
            state = got.json()["state"]
        assert state == "succeeded", got.json()
        assert c.post(f"/v1/admin/rollouts/{rollout_id}/pause", headers=auth).status_code == 409
        assert c.post(f"/v1/admin/rollouts/{rollout_id}/explode", headers=auth).status_code == 404
        assert c.get("/v1/admin/rollouts/ro-nothing", headers=auth).status_code == 404
        assert (
            c.post(f"/v1/admin/rollouts/{rollout_id}/rollback", headers=auth).json()["state"] == "rolled_back"
        )
    finally:
        _reset(served)


def test_deploy_cli(served: Served) -> None:
    from qmlops.cli import app

    runner = CliRunner()
    try:
        out = runner.invoke(app, ["deploy", "start", "alpha", "2", "--strategy", "immediate", "--json"])
        assert out.exit_code == 0, out.output
        described = json.loads(out.stdout)
        assert described["state"] == "succeeded" and any(c["kind"] == "health" for c in described["checks"])
        listing = json.loads(runner.invoke(app, ["deploy", "list", "--model", "alpha", "--json"]).stdout)
        assert listing[0]["id"] == described["id"]
        checks = json.loads(
            runner.invoke(app, ["deploy", "checks", "--rollout", described["id"], "--json"]).stdout
        )
        assert checks and checks[0]["requests"] == 5
        routes = json.loads(runner.invoke(app, ["serve", "routes", "--json"]).stdout)
        assert {r["model"] for r in routes} == {"alpha", "lin"}
        bad = runner.invoke(
            app, ["deploy", "start", "alpha", "2", "--strategy", "canary", "-o", "steps=[5,1]"]
        )
        assert bad.exit_code == 2 and "options.steps" in bad.output
    finally:
        _reset(served)


def test_a_restarted_controller_resumes_and_pause_holds(served: Served) -> None:
    """The rollout's state lives in the store: a new controller (a restarted process) carries it on."""
    first = RolloutController()
    v2 = served.versions["alpha2"]["id"]
    try:
        rollout = first.start("alpha", 2, "canary", {**FAST_CANARY, "steps": [20, 100], "dwell_seconds": 1.0})
        r = first.tick(rollout["id"])  # pending -> running, staged and at 20%
        assert r["state"] == "running" and r["step"] == 1
        assert ServeService().table("alpha").entry_for(v2).weight == 20.0
        del first  # the process that started it is gone
        second = RolloutController()
        assert second.pause(rollout["id"])["state"] == "paused"
        import time

        time.sleep(1.5)
        assert second.tick(rollout["id"])["step"] == 1  # paused: the dwell may be over, nothing moves
        assert [e for e in second.resume_all() if e == rollout["id"]] == [rollout["id"]]
        second.resume(rollout["id"])
        with Traffic(served.url, "alpha", _rows(served)):
            done = second.run(rollout["id"], timeout=300)
        assert done["state"] == "succeeded", done["reason"]
        kinds = [e["kind"] for e in second.describe(rollout["id"])["events"]]
        assert kinds.index("paused") < kinds.index("resumed") < kinds.index("succeeded")
    finally:
        _reset(served)


# a mirrored copy is scored while the gateway answers the next live request: on two busy cores its p90 runs up to
# twice production's, so these tests allow 3x (the latency gate itself is the canary tests' subject)
SHADOW = {"observe_seconds": 2.0, "min_requests": 15, "max_wait_seconds": 60.0, "min_labels": 20,
          "max_latency_ratio": 3.0}  # fmt: skip


def _logged(request_ids: set[str], variant: str, want: int) -> list[dict]:
    """The prediction log's rows of ``variant`` for these requests, once the gateway's log has flushed them."""
    import time

    deadline = time.time() + 60
    while True:
        rows = [r for r in get_store().predictions.query(model_name="alpha", since_s=600, limit=5000)
                if r["variant"] == variant and r["request_id"] in request_ids]  # fmt: skip
        if len(rows) >= want or time.time() > deadline:
            return rows
        time.sleep(0.5)


def test_shadow_scores_a_mirror_then_is_promoted_and_rollback_works(served: Served) -> None:
    controller = RolloutController()
    v1, v2 = served.versions["alpha1"]["id"], served.versions["alpha2"]["id"]
    try:
        rollout = controller.start("alpha", 2, "shadow", SHADOW)
        r = controller.tick(rollout["id"])  # staged as shadow, loaded, health-checked
        assert r["state"] == "running" and r["step"] == 1, r
        table = ServeService().table("alpha")
        assert {(e.model_version, e.weight, e.role) for e in table.entries} == {
            (v1, 100.0, "stable"),
            (v2, 0.0, "shadow"),
        }
        rows = _rows(served)
        answers = []
        for i in range(40):
            response = served.client.post(
                "/v1/predict", json={"model": "alpha", "user_id": f"s{i}", "features": rows[i % len(rows)]}
            )
            assert response.status_code == 200, response.text
            answers.append(response.json())
        # every answer came from production; the shadow never answers
        assert {(a["model_version"], a["variant"]) for a in answers} == {(v1, "stable")}
        ids = {a["request_id"] for a in answers}
        shadow_rows = _logged(ids, "shadow", len(ids))
        assert {r["request_id"] for r in shadow_rows} == ids and {r["model_id"] for r in shadow_rows} == {v2}
        assert all(r["status"] == "ok" for r in shadow_rows)
        live = {a["request_id"]: a["prediction"] for a in answers}
        shadow = {r["request_id"]: r["output"] for r in shadow_rows}
        assert any(abs(live[i] - shadow[i]) > 1e-9 for i in ids)  # the shadow's own scores, not a copy
        # outcomes that the candidate ranks better than production: the online IC gate compares both
        feedback = served.client.post(
            "/v1/feedback", json={"items": [{"request_id": i, "value": shadow[i]} for i in ids]}
        )
        assert feedback.status_code == 202 and feedback.json()["accepted"] == len(ids), feedback.text
        done = controller.run(rollout["id"], timeout=300)
        described = controller.describe(rollout["id"])
        analysis = [e["detail"] for e in described["events"] if e["kind"] == "analysis"]
        assert done["state"] == "succeeded", (done["reason"], analysis)
        gates = {g["name"]: g for g in analysis[-1]["gates"]}
        assert {"error_rate", "p99_latency_ratio", "online_ic"} <= set(gates)
        assert gates["online_ic"]["new"] > gates["online_ic"]["stable"]
        assert _state(v2) == "production"
        table = ServeService().table("alpha")
        assert {(e.model_version, e.weight, e.role) for e in table.entries} == {
            (v2, 100.0, "stable"),
            (v1, 0.0, "standby"),
        }
        back = controller.rollback(rollout["id"])
        assert back["state"] == "rolled_back" and ServeService().table("alpha").route("x").model_version == v1
    finally:
        _reset(served)


def test_a_failing_shadow_is_ended_and_production_never_moves(served: Served) -> None:
    registry = ModelRegistry(get_store())
    drill = register_drill_model(registry, "alpha", 1, healthy_calls=5, error_rate=1.0)
    controller = RolloutController()
    v1 = served.versions["alpha1"]["id"]
    try:
        rollout = controller.start("alpha", drill.version, "shadow", SHADOW)
        with Traffic(served.url, "alpha", _rows(served), keep_answers=True) as traffic:
            done = controller.run(rollout["id"], timeout=300)
        assert done["state"] == "rolled_back" and "error rate" in done["reason"], done["reason"]
        # the shadow failed every mirrored request, the clients saw none of it
        assert traffic.sent > 0 and set(traffic.status) == {200} and set(traffic.versions) == {v1}
        assert {a["variant"] for a in traffic.answers} == {"stable"}
        errors = _logged({a["request_id"] for a in traffic.answers}, "shadow", 15)
        assert (
            errors
            and {r["status"] for r in errors} == {"error"}
            and {r["model_id"] for r in errors} == {drill.id}
        )
        assert _state(drill.id) == "rolled_back"
        table = ServeService().table("alpha")
        assert {(e.model_version, e.weight, e.role) for e in table.entries} == {(v1, 100.0, "stable")}
    finally:
        _reset(served)


def test_deploy_cli_shadow(served: Served) -> None:
    from qmlops.cli import app

    runner = CliRunner()
    v2 = served.versions["alpha2"]["id"]
    try:
        args = ["deploy", "start", "alpha", "2", "--strategy", "shadow", "-o", "observe_seconds=0", "-o",
                "min_requests=0", "--json"]  # fmt: skip
        out = runner.invoke(app, args)
        assert out.exit_code == 0, out.output
        described = json.loads(out.stdout)
        assert described["strategy"] == "shadow" and described["state"] == "succeeded", described["reason"]
        weights = [e["detail"] for e in described["events"] if e["kind"] == "weights"]
        assert [w[v2] for w in weights] == [[0.0, "standby"], [0.0, "shadow"], [100.0, "stable"]]
    finally:
        _reset(served)


def test_the_loops_deploying_promotion_of_a_served_model_is_a_shadow_rollout(served: Served) -> None:
    import pandas as pd

    from qmlops.config import get_settings
    from qmlops.loop import LoopController, load_policy

    store, v2 = get_store(), served.versions["alpha2"]["id"]
    policy = load_policy({"deploy": True}).model_dump(mode="json")
    loop = store.loops.create("shadow-promotion", dataset="sub", source=None, mode="live", policy=policy,
                              model="alpha")  # fmt: skip
    try:
        controller = LoopController(loop, store=store, settings=get_settings())
        controller._promote(pd.Timestamp(served.test_day), v2, "beat production over the matured days")
        decision = store.loops.decisions(loop["id"], kind="promote")[-1]
        rollout = store.serving.get_rollout(decision["details"]["rollout"])
        assert rollout["strategy"] == "shadow" and rollout["state"] == "succeeded", rollout["reason"]
        assert ServeService().table("alpha").route("anyone").model_version == v2
    finally:
        _reset(served)
