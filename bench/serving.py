"""Serving benchmark: single-row POSTs at concurrency 16 from a separate process, same LightGBM on 158 features.

(a) plain FastAPI under uvicorn (one worker, the registry predictor in-process);
(b) a bare single Ray Serve deployment (FastAPI ingress, the same predictor, no batching);
(c) the qmlops gateway -> model server (multiplexed, batched) with a 50/50 sticky A/B split of two versions;
(d) Serve's second hop alone: an ingress that does nothing but pass each row to the same model server, one
    call per request (no validation, routing, logging, or batching in the ingress).
Prints requests/s, p50 and p99 per setup and the ratios c/b, d/b and c/a. Goals (issue): c >= 0.9x b in
throughput with p99 <= 1.2x b's, and with batching at least a.

(b), (c) and (d) run side by side on one Serve instance and are measured in alternating rounds (b, c, d, b, c,
d, ...); the figures are the medians over rounds, because one round on this 2-core machine moves by 10-20%. All
Serve replicas run with the gateway's replica settings (no per-request access log, user code on the replica's
event loop), so the comparison isolates the gateway's own cost.

    python bench/serving.py [--seconds 10] [--rounds 3] [--concurrency 16]
"""

import argparse
import asyncio
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from typing import Any

PLAIN_APP = """
import os, sys, numpy as np
from fastapi import FastAPI, Request
os.environ["QMLOPS_METADATA_MODE"] = "local"
from qmlops.registry import ModelRegistry
predictor = ModelRegistry().load_predictor(sys.argv[1], int(sys.argv[2]))
names = predictor.signature.feature_names
app = FastAPI()
@app.post("/v1/predict")
async def predict(request: Request):
    body = await request.json()
    x = np.array([[float(body["features"][n]) for n in names]])
    return {"prediction": float(predictor.predict_array(x)[0])}
import uvicorn
uvicorn.run(app, host="127.0.0.1", port=int(sys.argv[3]), log_level="warning")
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _ray_cpu_seconds(extra: dict[str, int] | None = None) -> dict[str, float]:
    """CPU seconds (user + system) so far of every Ray worker process, keyed by its process title, and of the
    ``extra`` processes (label -> pid)."""
    out: dict[str, float] = {}
    names = {str(pid): label for label, pid in (extra or {}).items()}
    tick = os.sysconf("SC_CLK_TCK")
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{pid}/cmdline") as f:
                title = f.read().split("\0")[0]
            with open(f"/proc/{pid}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        name = names.get(pid) or (
            title.removeprefix("ray::").split(".")[0] if title.startswith("ray::") else None
        )
        if name:
            out[name] = out.get(name, 0.0) + (int(fields[11]) + int(fields[12])) / tick
    return out


def load(
    url: str,
    bodies: list[dict[str, Any]],
    seconds: float,
    concurrency: int,
    extra: dict[str, int] | None = None,
) -> dict[str, Any]:
    """Run the load generator in its own process (so it does not share this interpreter) and return its figures,
    with the CPU milliseconds per answered request that each Ray process and the load generator spent (over the
    whole run, warm-up included, divided by the requests of the whole run at the measured rate)."""
    import resource

    with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False) as f:
        json.dump({"url": url, "bodies": bodies, "seconds": seconds, "concurrency": concurrency}, f)
    before, child = _ray_cpu_seconds(extra), resource.getrusage(resource.RUSAGE_CHILDREN)
    out = subprocess.run(
        [sys.executable, __file__, "--load", f.name], capture_output=True, text=True, check=True
    )
    after, child_after = _ray_cpu_seconds(extra), resource.getrusage(resource.RUSAGE_CHILDREN)
    os.unlink(f.name)
    result: dict[str, Any] = dict(json.loads(out.stdout.strip().splitlines()[-1]))
    n = result["rps"] * (seconds + 2.0)
    if n > 0:
        cpu = {k: 1000 * (v - before.get(k, 0.0)) / n for k, v in after.items()}
        cpu["load generator"] = (
            1000 * (child_after.ru_utime + child_after.ru_stime - child.ru_utime - child.ru_stime) / n
        )
        result["cpu_ms"] = {
            k: round(v, 2) for k, v in sorted(cpu.items(), key=lambda kv: -kv[1]) if v >= 0.05
        }
    return result


async def _generate(spec: dict[str, Any]) -> dict[str, float]:
    import httpx

    latencies: list[float] = []
    errors = 0
    first_error = ""
    bodies, url = spec["bodies"], spec["url"]
    async with httpx.AsyncClient(
        timeout=30.0, limits=httpx.Limits(max_connections=spec["concurrency"])
    ) as client:
        warm_until = time.perf_counter() + 2.0
        stop_at = warm_until + spec["seconds"]

        async def worker(i: int) -> None:
            nonlocal errors, first_error
            n = i
            while True:
                now = time.perf_counter()
                if now >= stop_at:
                    return
                t0 = time.perf_counter()
                r = await client.post(url, json=bodies[n % len(bodies)])
                n += spec["concurrency"]
                if t0 >= warm_until:
                    if r.status_code == 200:
                        latencies.append((time.perf_counter() - t0) * 1000)
                    else:
                        errors += 1
                        first_error = first_error or f"{r.status_code} {r.text[:300]}"

        await asyncio.gather(*(worker(i) for i in range(spec["concurrency"])))
    import numpy as np

    if not latencies:
        return {
            "rps": 0.0,
            "p50": float("nan"),
            "p99": float("nan"),
            "errors": errors,
            "first_error": first_error,
        }
    return {"rps": len(latencies) / spec["seconds"], "p50": float(np.percentile(latencies, 50)),
            "p99": float(np.percentile(latencies, 99)), "errors": errors, "first_error": first_error}  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--load", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.load:
        with open(args.load) as f:
            print(json.dumps(asyncio.run(_generate(json.load(f)))))
        return

    home = tempfile.mkdtemp(prefix="qmlops-bench-serve-")
    os.environ.update(QMLOPS_HOME=home, RAY_AUTH_MODE="disabled", RAY_USAGE_STATS_ENABLED="0")
    os.environ["QMLOPS_METADATA_MODE"] = "local"
    from qmlops.data import ingest
    from qmlops.features import load_features, materialize
    from qmlops.metadata import get_store
    from qmlops.training import TrainConfig, train

    ds = ingest("sp500").record
    materialize(ds.id, "alpha158", engine="local")
    light = {"lambda_l1": 1.0, "lambda_l2": 1.0, "num_leaves": 31, "learning_rate": 0.05}
    train(TrainConfig("lightgbm", dataset=ds.id, params=light, register_as="bench", report=False))
    train(
        TrainConfig(
            "lightgbm", dataset=ds.id, params={**light, "num_leaves": 15}, register_as="bench", report=False
        )
    )
    frame = load_features(ds.id, "alpha158", start="2010-07-01")["feature"].fillna(0.0).head(500)
    rows = [{k: float(v) for k, v in r.items()} for r in frame.to_dict(orient="records")]
    get_store().close()  # hand the file over: the plain server opens it, then Ray's metadata actor does

    results: dict[str, dict[str, float]] = {}
    plain_port = free_port()
    plain = subprocess.Popen([sys.executable, "-c", PLAIN_APP, "bench", "1", str(plain_port)])
    try:
        import httpx

        for _ in range(300):
            try:
                httpx.post(f"http://127.0.0.1:{plain_port}/v1/predict", json={"features": rows[0]}, timeout=2)
                break
            except httpx.HTTPError:
                time.sleep(0.1)
        results["(a) plain FastAPI + uvicorn"] = load(f"http://127.0.0.1:{plain_port}/v1/predict",
                                                      [{"features": r} for r in rows], args.seconds, args.concurrency,
                                                      extra={"uvicorn": plain.pid})  # fmt: skip
    finally:
        plain.terminate()
        plain.wait(timeout=30)

    os.environ["QMLOPS_METADATA_MODE"] = "ray"
    import ray
    from ray import serve

    from qmlops.ray_utils import init_ray
    from qmlops.serving import RouteEntry, RoutingTable, ServeOptions, ServeService

    init_ray(num_cpus=2, object_store_memory=400 * 1024 * 1024, include_dashboard=False, log_to_driver=False)
    port = free_port()
    service = ServeService()
    service.start(ServeOptions(port=port, max_ongoing_requests=64))
    store = get_store()
    v1, v2 = store.models.get_version("bench", 1), store.models.get_version("bench", 2)
    service.set_table(
        RoutingTable("bench", (RouteEntry(v1.id, 1, 50.0, "stable"), RouteEntry(v2.id, 2, 50.0, "variant")))
    )

    from fastapi import FastAPI, Request

    bare_api = FastAPI()

    from qmlops.serving._service import REPLICA_LOGGING, REPLICA_RUNTIME_ENV

    replica = {"max_ongoing_requests": 64, "logging_config": REPLICA_LOGGING,
               "ray_actor_options": {"num_cpus": 0.5, "runtime_env": REPLICA_RUNTIME_ENV}}  # fmt: skip

    @serve.deployment(**replica)
    @serve.ingress(bare_api)
    class Bare:
        def __init__(self, settings: Any) -> None:
            from qmlops.metadata import get_store
            from qmlops.registry import ModelRegistry

            self.predictor = ModelRegistry(get_store(settings), settings).load_predictor("bench", 1)
            self.names = self.predictor.signature.feature_names

        @bare_api.post("/v1/predict")
        async def predict(self, request: Request) -> dict[str, float]:
            import numpy as np

            body = await request.json()
            x = np.array([[float(body["features"][n]) for n in self.names]])
            return {"prediction": float(self.predictor.predict_array(x)[0])}

    from qmlops.config import get_settings

    serve.run(Bare.bind(get_settings()), name="bare", route_prefix="/bare")  # type: ignore[attr-defined]

    floor_api = FastAPI()

    @serve.deployment(**replica)
    @serve.ingress(floor_api)
    class Floor:
        def __init__(self, names: list[str], model_id: str) -> None:
            self.names, self.model_id, self.server = names, model_id, None

        @floor_api.post("/v1/predict")
        async def predict(self, request: Request) -> dict[str, float]:
            import numpy as np

            if self.server is None:  # the gateway's transport: gRPC, router on this replica's loop
                handle = serve.get_deployment_handle("ModelServer", app_name="qmlops")
                handle._init(_run_router_in_separate_loop=False)
                self.server = handle.options(multiplexed_model_id=self.model_id, _by_reference=False)
            body = await request.json()
            x = np.array([[float(body["features"][n]) for n in self.names]])
            return {"prediction": float((await self.server.predict.remote(x))[0])}

    names = list(v1.signature["feature_names"])
    serve.run(Floor.bind(names, v1.id), name="floor", route_prefix="/floor")  # type: ignore[attr-defined]
    bodies = [{"model": "bench", "user_id": f"user-{i}", "features": r} for i, r in enumerate(rows)]
    plain_bodies = [{"features": r} for r in rows]
    setups = {"b": ("(b) bare Serve deployment", "/bare/v1/predict", plain_bodies),
              "c": ("(c) qmlops gateway, 50/50 sticky A/B", "/v1/predict", bodies),
              "d": ("(d) two hops, nothing else", "/floor/v1/predict", plain_bodies)}  # fmt: skip
    rounds: dict[str, list[dict[str, float]]] = {key: [] for key in setups}
    for _ in range(args.rounds):
        for key, (_, path, payloads) in setups.items():
            rounds[key].append(
                load(f"http://127.0.0.1:{port}{path}", payloads, args.seconds, args.concurrency)
            )
    for key, (name, _, _) in setups.items():
        runs = rounds[key]
        results[name] = {k: statistics.median(r[k] for r in runs) for k in ("rps", "p50", "p99")}
        results[name]["errors"] = sum(r["errors"] for r in runs)
        results[name]["first_error"] = next((r["first_error"] for r in runs if r["first_error"]), "")
        results[name]["rounds"] = " ".join(f"{r['rps']:.0f}" for r in runs)  # type: ignore[assignment]
        keys = {k for r in runs for k in r.get("cpu_ms", {})}
        results[name]["cpu_ms"] = {
            k: statistics.median(r.get("cpu_ms", {}).get(k, 0.0) for r in runs) for k in keys
        }  # type: ignore[assignment]
    serve.shutdown()
    ray.shutdown()

    print(f"single-row POSTs, concurrency {args.concurrency}, {args.seconds:g} s each after 2 s warm-up, 2 CPUs; "
          f"(b), (c), (d): medians of {args.rounds} alternating rounds")  # fmt: skip
    print(f"{'setup':<40}{'req/s':>9}{'p50 ms':>9}{'p99 ms':>9}{'errors':>8}")
    for name, r in results.items():
        print(
            f"{name:<40}{r['rps']:>9.1f}{r['p50']:>9.1f}{r['p99']:>9.1f}{int(r['errors']):>8}"
            f"  {('rounds ' + str(r['rounds'])) if 'rounds' in r else ''} {r.get('first_error', '')}"
        )
    print("CPU milliseconds per request by process (medians over rounds; warm-up included):")
    for name, r in results.items():
        split = sorted(dict(r.get("cpu_ms") or {}).items(), key=lambda kv: -kv[1])[:5]  # type: ignore[arg-type]
        total = sum(dict(r.get("cpu_ms") or {}).values())  # type: ignore[arg-type]
        print(f"  {name:<38} total {total:5.2f}: " + ", ".join(f"{k} {v:.2f}" for k, v in split))
    a, b, c, d = results.values()
    print(f"c/b throughput {c['rps'] / b['rps']:.2f}x (goal >= 0.9), p99 {c['p99'] / b['p99']:.2f}x (goal <= 1.2); "
          f"c/a throughput {c['rps'] / a['rps']:.2f}x (goal >= 1.0)")  # fmt: skip
    print(f"d/b throughput {d['rps'] / b['rps']:.2f}x, p99 {d['p99'] / b['p99']:.2f}x: the cost of Serve's second hop "
          f"at one call per request, before the gateway's batching wins any of it back")  # fmt: skip


if __name__ == "__main__":
    main()
