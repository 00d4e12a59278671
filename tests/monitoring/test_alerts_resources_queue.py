"""Alert rules and channels against real receivers on loopback (HTTP webhook, SMTP), cooldown and dedup;
resource samples from every node of the session cluster; the job admission queue over the Ray Jobs API."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from qmlops.exceptions import ValidationError
from qmlops.metadata import get_store
from qmlops.monitoring import AlertChannel, AlertManager, AlertRule, install_defaults

from .receivers import SmtpReceiver, WebhookReceiver, wait_for


def test_rule_and_channel_validation_names_the_field(tmp_home: Path) -> None:
    for bad, field in [({"name": "x", "metric": "nope", "comparator": ">", "threshold": 1}, "metric"),
                       ({"name": "x", "metric": "p99_ms", "comparator": "=>", "threshold": 1}, "comparator"),
                       ({"name": "x", "metric": "p99_ms", "comparator": ">", "threshold": float("nan")}, "threshold"),
                       ({"name": "x", "metric": "p99_ms", "comparator": ">", "threshold": 1, "colour": 1}, "colour"),
                       ({"name": "x", "metric": "p99_ms", "comparator": ">", "threshold": 1, "severity": "loud"},
                        "severity")]:  # fmt: skip
        with pytest.raises(ValidationError) as err:
            AlertRule.from_dict(bad)
        assert err.value.field == field
    with pytest.raises(ValidationError) as err:
        AlertChannel("w", "webhook", {"url": "ftp://x"}).validate()
    assert err.value.field == "config.url"
    with pytest.raises(ValidationError) as err:
        AlertChannel("m", "email", {"host": "127.0.0.1", "to": "a@b"}).validate()
    assert err.value.field == "config.from"
    store = get_store()
    assert set(install_defaults(store)) == {r["name"] for r in store.monitoring.rules()}
    assert install_defaults(store) == []  # idempotent, user edits kept


def test_alert_reaches_webhook_and_smtp_with_retries_cooldown_and_dedup(tmp_home: Path) -> None:
    store = get_store()
    with WebhookReceiver(fail_first=2) as hook, SmtpReceiver() as smtp:
        store.monitoring.put_rule(
            AlertRule("lat", "p99_ms", ">", 100.0, 60, "critical", cooldown_s=600).to_dict()
        )
        store.monitoring.put_channel(AlertChannel("hook", "webhook", {"url": hook.url, "retries": 3,
                                                                      "backoff_s": 0.05}).validate().to_dict())  # fmt: skip
        store.monitoring.put_channel(AlertChannel("mail", "email", {"host": "127.0.0.1", "port": smtp.port,
                                                                    "from": "qmlops@localhost",
                                                                    "to": ["oncall@localhost"]}).to_dict())  # fmt: skip
        store.monitoring.put_channel(
            AlertChannel("quiet", "log", {}, min_severity="critical", enabled=False).to_dict()
        )
        manager = AlertManager(store, refresh_s=0)

        assert manager.evaluate("performance", "alpha v1", {"p99_ms": 80.0}) == []  # not breached
        fired = manager.evaluate("performance", "alpha v1", {"p99_ms": 250.0})
        assert len(fired) == 1 and fired[0]["severity"] == "critical" and fired[0]["rule"] == "lat"
        # the webhook failed twice (503) and got it on the third attempt; the e-mail went out once
        assert len(hook.bodies) == 1 and hook.attempts == 3
        assert (
            hook.bodies[0]["alert"]["id"] == fired[0]["id"]
            and hook.bodies[0]["alert"]["details"]["value"] == 250.0
        )
        assert len(smtp.messages) == 1 and "[qmlops critical]" in smtp.messages[0]["Subject"]
        assert smtp.messages[0]["To"] == "oncall@localhost"
        deliveries = {d["channel"]: d for d in store.monitoring.get_alert(fired[0]["id"])["deliveries"]}
        assert deliveries["hook"]["ok"] and deliveries["hook"]["attempts"] == 3 and deliveries["mail"]["ok"]
        assert "quiet" not in deliveries  # disabled channel

        # within the cooldown: the same (rule, subject) is a repeat, sent nowhere; another subject is new
        assert manager.evaluate("performance", "alpha v1", {"p99_ms": 300.0}) == []
        assert store.monitoring.get_alert(fired[0]["id"])["repeats"] == 1
        other = manager.evaluate("performance", "beta v2", {"p99_ms": 300.0})
        assert len(other) == 1 and len(hook.bodies) == 2
        # acknowledging ends the deduplication: the next breach is a new alert
        acked = store.monitoring.acknowledge(fired[0]["id"], "tester")
        assert acked["acknowledged_by"] == "tester" and acked["acknowledged_at"]
        again = manager.evaluate("performance", "alpha v1", {"p99_ms": 300.0})
        assert len(again) == 1 and again[0]["id"] != fired[0]["id"]
        # a rule with no cooldown fires every time
        store.monitoring.put_rule(
            AlertRule("lat", "p99_ms", ">", 100.0, 60, "critical", cooldown_s=0).to_dict()
        )
        assert len(manager.evaluate("performance", "alpha v1", {"p99_ms": 300.0})) == 1
        assert len(hook.bodies) == 4 and len(smtp.messages) == 4


def test_unreachable_webhook_is_recorded_not_raised(tmp_home: Path) -> None:
    store = get_store()
    store.monitoring.put_rule(AlertRule("err", "error_rate", ">", 0.1, 60, "warning", 0).to_dict())
    store.monitoring.put_channel({"name": "dead", "kind": "webhook", "config": {"url": "http://127.0.0.1:9/x",
                                  "retries": 1, "backoff_s": 0.01, "timeout_s": 1}})  # fmt: skip
    fired = AlertManager(store, refresh_s=0).evaluate("performance", "m", {"error_rate": 0.5})
    outcome = store.monitoring.get_alert(fired[0]["id"])["deliveries"][0]
    assert outcome["ok"] is False and outcome["attempts"] == 2 and "Error" in outcome["error"]


def test_resource_monitor_reports_every_node(ray_home: Path) -> None:
    import ray

    from qmlops.monitoring._resources import (
        sample_all_nodes,
        start_resource_monitors,
        stop_resource_monitors,
    )

    store = get_store()
    store.monitoring.put_rule(AlertRule("cpu-any", "cpu_percent", ">=", 0.0, 0, "info", 3600).to_dict())
    try:
        handles = start_resource_monitors(interval_s=0.5)
        nodes = {n["NodeID"] for n in ray.nodes() if n["Alive"]}
        assert set(handles) == nodes
        samples = sample_all_nodes()
        assert {s["node_id"] for s in samples} == nodes
        for s in samples:
            assert 0 <= s["cpu_percent"] <= 100 and 0 < s["memory_percent"] < 100 and s["memory_used"] > 0
            assert 0 < s["disk_percent"] < 100 and s["net_recv"] >= 0
            assert s["gpus"] == []  # no GPU on this machine: reported as none, not an error, and why
            assert s["gpu_note"].startswith("no GPU: NVML unavailable"), s["gpu_note"]
        # the background loop keeps writing: more rows per node over time
        assert wait_for(lambda: all(len(store.monitoring.samples(node_id=n)) >= 3 for n in nodes), 20)
        latest = store.monitoring.latest_samples()
        assert {r["node_id"] for r in latest} == nodes
        assert all(
            r["gpus"] == [] and r["gpu_note"].startswith("no GPU") for r in latest
        )  # the reason is stored
        # the resource rule fired once per node (cooldown 1 h: later samples only count repeats)
        alerts = store.monitoring.alerts(source="resources")
        assert {a["subject"] for a in alerts} == nodes and all(a["repeats"] >= 1 for a in alerts)
    finally:
        assert stop_resource_monitors() == len(nodes)


def test_job_queue_admits_by_priority_within_resource_limits(ray_home: Path) -> None:
    from qmlops.monitoring._queue import JobQueue

    queue = JobQueue(max_cpus=1.0)
    with pytest.raises(ValidationError) as err:
        queue.submit("python -c 'print(1)'", num_cpus=64)
    assert err.value.field == "num_cpus"
    with pytest.raises(ValidationError) as err:
        queue.submit("  ", num_cpus=0.5)
    assert err.value.field == "entrypoint"
    sleep = "python -c \"import time; time.sleep(2); print('job {} done')\""
    low = queue.submit(sleep.format("low"), name="low", num_cpus=1.0, priority=1)
    mid = queue.submit(sleep.format("mid"), name="mid", num_cpus=1.0, priority=5)
    high_a = queue.submit(sleep.format("high-a"), name="high-a", num_cpus=0.5, priority=9)
    high_b = queue.submit(sleep.format("high-b"), name="high-b", num_cpus=0.5, priority=9)
    dropped = queue.submit(sleep.format("dropped"), name="dropped", num_cpus=0.5, priority=0)
    assert queue.cancel(dropped["id"])["state"] == "cancelled"

    peak = 0.0
    deadline = time.time() + 240
    while time.time() < deadline:
        queue.tick()
        jobs = {j["name"]: j for j in queue.list_jobs()}
        active = [j for j in jobs.values() if j["state"] in ("admitted", "running")]
        peak = max(peak, sum(j["num_cpus"] for j in active))
        if all(jobs[n]["state"] in ("succeeded", "failed") for n in ("low", "mid", "high-a", "high-b")):
            break
        time.sleep(0.5)
    jobs = {j["name"]: j for j in queue.list_jobs()}
    assert all(jobs[n]["state"] == "succeeded" for n in ("low", "mid", "high-a", "high-b")), jobs
    assert peak <= 1.0  # the cap was never exceeded
    admitted = sorted(("high-a", "high-b", "mid", "low"), key=lambda n: jobs[n]["admitted_at"])
    assert admitted[:2] == ["high-a", "high-b"] and admitted[2:] == ["mid", "low"]
    # the two half-CPU jobs ran together; mid waited for both, low for mid
    assert jobs["mid"]["admitted_at"] >= max(jobs["high-a"]["ended_at"], jobs["high-b"]["ended_at"])
    assert jobs["low"]["admitted_at"] >= jobs["mid"]["ended_at"]
    assert jobs["dropped"]["state"] == "cancelled" and jobs["dropped"]["admitted_at"] is None
    assert "job mid done" in queue.logs(mid["id"])
    assert {high_a["id"], high_b["id"], low["id"]} <= {j["id"] for j in queue.list_jobs(["succeeded"])}


def test_cli_rules_channels_alerts_and_monitor(tmp_home: Path, tmp_path: Path) -> None:
    import json

    from typer.testing import CliRunner

    from qmlops.cli import app

    runner = CliRunner()
    rules = runner.invoke(app, ["alerts", "rules", "--defaults", "--json"])
    assert rules.exit_code == 0 and "drift-share" in {r["name"] for r in json.loads(rules.stdout)}
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: hook\nkind: webhook\nconfig: {url: 'ftp://example'}\n")
    refused = runner.invoke(app, ["alerts", "channels", "--set", str(bad)])
    assert refused.exit_code == 2 and "config.url" in refused.output
    store = get_store()
    assert store.monitoring.channels() == []  # nothing stored from a refused file
    good = tmp_path / "good.json"
    good.write_text(json.dumps([{"name": "mail", "kind": "email", "config": {"host": "127.0.0.1", "from": "a@b",
                                 "to": "c@d", "password": "hunter2"}}]))  # fmt: skip
    listed = runner.invoke(app, ["alerts", "channels", "--set", str(good), "--json"])
    assert listed.exit_code == 0 and json.loads(listed.stdout)[0]["config"]["password"] == "***"
    store.monitoring.delete_channel("mail")
    fired = AlertManager(store, refresh_s=0).evaluate("performance", "m v1", {"error_rate": 0.9})
    assert [a["rule"] for a in fired] == ["error-rate"]
    shown = json.loads(runner.invoke(app, ["alerts", "list", "--open", "--json"]).stdout)
    assert [a["id"] for a in shown] == [fired[0]["id"]]
    acked = runner.invoke(app, ["alerts", "ack", fired[0]["id"], "--by", "me", "--json"])
    assert acked.exit_code == 0 and json.loads(acked.stdout)["acknowledged_by"] == "me"
    assert json.loads(runner.invoke(app, ["alerts", "list", "--open", "--json"]).stdout) == []
    missing = runner.invoke(app, ["alerts", "ack", "al-nope"])
    assert missing.exit_code != 0 and "al-nope" in missing.output
    assert json.loads(runner.invoke(app, ["monitor", "models", "--json"]).stdout) == []
    assert runner.invoke(app, ["monitor", "models", "--window", "0"]).exit_code == 2
