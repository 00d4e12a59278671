"""The rollout controller: a persistent state machine per rollout, with analysis gates and automatic rollback.

A rollout's state (strategy, step, options, last gate results) is a row in the metadata store and every
transition is an event row, so a controller that restarts picks up where the last one stopped (``resume_all``).
``tick`` advances one rollout by at most one step; the controller actor (``controller_handle``) ticks every
active rollout in a loop, and ``run`` does the same for one rollout in the caller's process.

Strategies (``options`` in brackets, defaults after ``=``):

- ``immediate``: validate, switch 100% to the new version, health-check it.
- ``blue_green``: validate, bring the new version up at 0% (loaded and warm), health-check it, run a
  performance test against it (``perf_requests=200``, ``perf_concurrency=4``, ``max_p99_ms=1000``,
  ``max_error_rate=0.0``), then switch 100% at once; the old version stays loaded as ``standby`` (weight 0) so
  ``rollback`` is instant.
- ``canary``: validate, then weights ``steps=[5, 25, 50, 100]`` for the new version, each held for
  ``dwell_seconds=30``; between steps the gates compare the new version with the stable one over the step's
  window: error rate (new - stable <= ``max_error_rate_delta=0.02``), p99 latency ratio (<= ``max_latency_ratio=1.5``;
  on a short window p99 is its maximum, so the ratio is taken at the highest percentile with at least 3 answers
  above it in both windows: p99 from 300 answers, p95 from 60, p90 from 30, p75 from 12), with at least
  ``min_requests=20`` requests to the new version (waiting up to ``max_wait_seconds=300``); drift and online
  accuracy gates join when monitoring provides them: the window's figures come from the prediction
  log (all gateway replicas); a drift report on the new version within the window must show a drift share of
  at most ``max_drift_share=0.5``, and with ``min_labels=30`` feedback labels on both versions the new one's
  online IC may trail the stable one's by at most ``max_ic_drop=0.05``.
- ``rolling``: validate, roll the model server's replicas to preload the new version (Serve's rolling update,
  each new replica passing its health check), then move traffic in ``batches=4`` equal steps, health-checking
  after each.
- ``shadow``: validate, add the new version to the routing table as ``shadow`` (weight 0: it never answers a
  client; the gateway scores a mirrored copy of each routed request with it, off the response path, and logs it
  with variant ``shadow``) once it is loaded and passed its health check, then observe for ``observe_seconds=60``; the canary's gates (error
  rate, latency ratio, drift share, online IC from feedback, same options and defaults) compare the shadow with
  the stable version over the window, waiting for ``min_requests=20`` mirrored requests (up to
  ``max_wait_seconds=300``; ``min_requests=0`` passes a window without traffic, for a caller whose verdict came
  from elsewhere, such as the daily loop's matured days). Passing switches 100% to it at once, the old version
  kept warm as ``standby`` (so ``rollback`` is instant); failing removes the shadow, production never moved.

A failing gate or check rolls back: the stable version gets 100% again, the new version's registry state becomes
``rolled_back``, an alert event is written, and the rollout records why. Success promotes the new version to
``production`` in the registry.
"""

from __future__ import annotations

import secrets
import time
import traceback
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np

from qmlops.config import Settings, get_settings
from qmlops.exceptions import ConflictError, QmlopsError, ValidationError, reject_unknown
from qmlops.metadata import MetadataStore, RemoteMetadataStore, get_store
from qmlops.serving import RouteEntry, RoutingTable, ServeService

__all__ = ["RolloutController", "STRATEGIES", "DEFAULTS", "controller_handle"]

Store = MetadataStore | RemoteMetadataStore
STRATEGIES = ("immediate", "blue_green", "canary", "rolling", "shadow")
ACTIVE = ("pending", "running", "paused")
ORPHAN_SECONDS = 30.0
_ALERT_SENDER = ThreadPoolExecutor(
    max_workers=1, thread_name_prefix="qmlops-alerts"
)  # slow channels never hold a rollback  # a rollout nobody ticked for this long is adopted by the controller actor
DEFAULTS: dict[str, dict[str, Any]] = {
    "immediate": {"health_requests": 5},
    "blue_green": {"health_requests": 5, "perf_requests": 200, "perf_concurrency": 4, "max_p99_ms": 1000.0,
                   "max_error_rate": 0.0},
    "canary": {"steps": [5, 25, 50, 100], "dwell_seconds": 30.0, "max_error_rate_delta": 0.02,
               "max_latency_ratio": 1.5, "min_requests": 20, "max_wait_seconds": 300.0, "health_requests": 5,
               "max_drift_share": 0.5, "min_labels": 30, "max_ic_drop": 0.05},
    "rolling": {"batches": 4, "health_requests": 5},
    "shadow": {"observe_seconds": 60.0, "max_error_rate_delta": 0.02, "max_latency_ratio": 1.5, "min_requests": 20,
               "max_wait_seconds": 300.0, "health_requests": 5, "max_drift_share": 0.5, "min_labels": 30,
               "max_ic_drop": 0.05},
}  # fmt: skip


class RolloutController:
    def __init__(self, settings: Settings | None = None, store: Store | None = None,
                 service: ServeService | None = None) -> None:  # fmt: skip
        from qmlops.registry import ModelRegistry

        self.settings = settings or get_settings()
        self.store = store or get_store(self.settings)
        self.service = service or ServeService(self.settings, self.store)
        self.registry = ModelRegistry(self.store, self.settings)

    # -- start --------------------------------------------------------------------------------------------
    def start(
        self,
        model: str,
        version: int | str,
        strategy: str,
        options: dict[str, Any] | None = None,
        *,
        driver: str | None = None,
    ) -> dict[str, Any]:
        """Validate the request and the version (registry validator), then record a pending rollout.

        ``driver`` names who ticks it (this process by default; ``"actor"`` for the controller actor). The actor
        also adopts any rollout whose driver stopped ticking for ``ORPHAN_SECONDS`` (a process that died).
        """
        if strategy not in STRATEGIES:
            raise ValidationError(
                f"must be one of {', '.join(STRATEGIES)}; got {strategy!r}", field="strategy"
            )
        merged = self._options(strategy, options or {})
        record = self.registry.get(model, version)
        try:
            current = self.service.table(model)
            stable = next((e for e in current.entries if e.role == "stable" and e.weight > 0), None)
        except QmlopsError:
            current, stable = None, None
        if stable is not None and stable.model_version == record.id:
            raise ConflictError(f"{model} v{record.version} is already the stable version", field="version")
        if strategy in ("canary", "blue_green", "rolling", "shadow") and stable is None:
            raise ConflictError(f"{model} has no stable version to compare against; deploy it with the immediate "
                                "strategy first", field="strategy")  # fmt: skip
        report = self._validate(model, record)
        if not report.ok:
            raise ConflictError(f"{model} v{record.version} failed the compatibility check: {'; '.join(report.errors[:3])}",
                                field="version", details=report.to_dict())  # fmt: skip
        rollout_id = "ro-" + uuid.uuid4().hex[:12]
        merged["_driver"] = driver or _local_driver()
        rollout = self.store.serving.create_rollout({
            "id": rollout_id, "model": model, "strategy": strategy, "to_version": record.id,
            "from_version": stable.model_version if stable else None, "options": merged})  # fmt: skip
        self.store.serving.add_event(rollout_id, "created", {"strategy": strategy, "options": merged,
                                                             "validation": report.to_dict()})  # fmt: skip
        return rollout

    def _options(self, strategy: str, options: dict[str, Any]) -> dict[str, Any]:
        defaults = DEFAULTS[strategy]
        reject_unknown(options, defaults, f"option for {strategy}", prefix="options.")
        merged = {**defaults, **options}
        if strategy == "canary":
            steps = merged["steps"]
            if (not isinstance(steps, list) or not steps or any(not isinstance(s, int | float) for s in steps)
                    or any(not 0 < s <= 100 for s in steps) or sorted(steps) != steps or steps[-1] != 100):  # fmt: skip
                raise ValidationError("steps must be increasing percentages in (0, 100] ending at 100",
                                      field="options.steps")  # fmt: skip
        for key, value in merged.items():
            if key != "steps" and (not isinstance(value, int | float) or value < 0):
                raise ValidationError(f"must be a non-negative number, got {value!r}", field=f"options.{key}")
        return merged

    def _validate(self, model: str, record: Any) -> Any:
        from qmlops.training._export import window_feature_names

        step_len = int(record.tags.get("step_len", "1"))
        if step_len <= 1:
            return self.registry.validate(model, record.id)
        # sequence models take day windows: compare against the windowed names of their feature set
        base = [
            n.rsplit("@t-", 1)[0]
            for n in record.signature["feature_names"][-len(record.signature["feature_names"]) // step_len :]
        ]
        names = window_feature_names(base, step_len)
        import pandas as pd

        sample = pd.DataFrame(np.zeros((4, len(names)), dtype=np.float32), columns=names)
        return self.registry.validate(model, record.id, serving_features=names, serving_dtypes=["float32"] * len(names),
                                      sample=sample)  # fmt: skip

    # -- driving ------------------------------------------------------------------------------------------
    def run(self, rollout_id: str, *, poll: float = 0.2, timeout: float = 900.0,
            on_event: Callable[[dict[str, Any]], None] | None = None) -> dict[str, Any]:  # fmt: skip
        deadline = time.time() + timeout
        seen = 0
        while True:
            rollout = self.tick(rollout_id)
            if on_event is not None:
                events = self.store.serving.events(rollout_id)
                for event in events[seen:]:
                    on_event(event)
                seen = len(events)
            if rollout["state"] not in ACTIVE:
                return rollout
            if time.time() > deadline:
                raise TimeoutError(f"rollout {rollout_id} still {rollout['state']} after {timeout:.0f} s")
            time.sleep(poll)

    def tick(self, rollout_id: str) -> dict[str, Any]:
        """Advance the rollout by at most one step; failures roll back. Returns the stored rollout."""
        rollout = self.store.serving.get_rollout(rollout_id)
        if rollout["state"] not in ("pending", "running"):
            return rollout
        try:
            if rollout["state"] == "pending":
                rollout = self._begin(rollout)
            step = getattr(self, f"_step_{rollout['strategy']}")
            return step(rollout)
        except _GateFailed as failed:
            return self._rollback(rollout, str(failed), failed.details)
        except Exception as exc:  # a broken step must not leave traffic on an unchecked version
            detail = {"error": f"{type(exc).__name__}: {exc}", "trace": traceback.format_exc()[-2000:]}
            return self._rollback(rollout, f"step failed: {type(exc).__name__}: {exc}", detail)

    def _begin(self, rollout: dict[str, Any]) -> dict[str, Any]:
        record = self.store.models.get(rollout["to_version"])
        self._move(record, "canary", f"rollout {rollout['id']} ({rollout['strategy']})")
        self.store.serving.add_event(rollout["id"], "started", {})
        return self.store.serving.update_rollout(
            rollout["id"], state="running", step=0, step_started_at=_now()
        )

    # -- strategies ---------------------------------------------------------------------------------------
    def _step_immediate(self, r: dict[str, Any]) -> dict[str, Any]:
        new = self.store.models.get(r["to_version"])
        self._set_weights(r, {new.id: (100.0, "stable")}, drop_others=True)
        self._health(r, new.id)
        return self._succeed(r)

    def _step_blue_green(self, r: dict[str, Any]) -> dict[str, Any]:
        new = self.store.models.get(r["to_version"])
        if r["step"] == 0:  # bring up green at 0%: loaded and warm, no traffic
            self._stage(r)
            self._performance(r, new.id)
            return self._advance(r, 1, "green healthy and fast enough; switching")
        self._set_weights(r, {new.id: (100.0, "stable"), r["from_version"]: (0.0, "standby")})
        self._health(r, new.id)
        return self._succeed(r)

    def _step_canary(self, r: dict[str, Any]) -> dict[str, Any]:
        opts, step = r["options"], int(r["step"])
        steps = opts["steps"]
        new_id, old_id = r["to_version"], r["from_version"]
        if step == 0:
            self._stage(r)
            self._set_weights(r, {new_id: (float(steps[0]), "canary"), old_id: (100.0 - steps[0], "stable")})
            return self._advance(r, 1, f"canary at {steps[0]}%")
        started = _parse(r["step_started_at"])
        elapsed = time.time() - started
        if elapsed < float(opts["dwell_seconds"]):
            return self.store.serving.update_rollout(r["id"])  # still dwelling; the heartbeat moves
        stats = self._window_stats(started, [new_id, old_id])
        gates = self._canary_gates(stats.get(new_id), stats.get(old_id), opts)
        self._monitoring_gates(gates, new_id, old_id, started, stats, opts)
        if gates["verdict"] == "wait":
            if elapsed < float(opts["max_wait_seconds"]):
                return self.store.serving.update_rollout(r["id"])
            raise _GateFailed(f"not enough traffic to judge the canary after {elapsed:.0f} s: "
                              f"{gates['new']['requests']} of {opts['min_requests']} requests", gates)  # fmt: skip
        self.store.serving.update_rollout(r["id"], gates=gates)
        self.store.serving.add_event(r["id"], "analysis", gates)
        if gates["verdict"] == "fail":
            raise _GateFailed("; ".join(g["reason"] for g in gates["gates"] if not g["ok"]), gates)
        if step >= len(steps) or steps[step - 1] >= 100:
            self._set_weights(r, {new_id: (100.0, "stable")}, drop_others=True)
            return self._succeed(r)
        weight = float(steps[step])
        if weight >= 100:
            self._set_weights(r, {new_id: (100.0, "stable")}, drop_others=True)
            self._health(r, new_id)
            return self._succeed(r)
        self._set_weights(r, {new_id: (weight, "canary"), old_id: (100.0 - weight, "stable")})
        return self._advance(r, step + 1, f"canary at {weight:g}%")

    def _step_shadow(self, r: dict[str, Any]) -> dict[str, Any]:
        opts = r["options"]
        new_id, old_id = r["to_version"], r["from_version"]
        if int(r["step"]) == 0:  # staged (loaded, answering probes) before any live traffic is mirrored to it
            self._stage(r)
            self._set_weights(r, {new_id: (0.0, "shadow")})
            return self._advance(r, 1, "shadow receiving a mirror of live traffic")
        started = _parse(r["step_started_at"])
        elapsed = time.time() - started
        if elapsed < float(opts["observe_seconds"]):
            return self.store.serving.update_rollout(r["id"])  # observing; the heartbeat moves
        stats = self._window_stats(started, [new_id, old_id])
        new = stats.get(new_id) or {"requests": 0}
        if int(opts["min_requests"]) == 0 and not new.get("requests"):
            gates: dict[str, Any] = {"new": new, "stable": stats.get(old_id), "gates": [], "verdict": "pass",
                                     "note": "no mirrored request in the window and min_requests=0"}  # fmt: skip
        else:
            gates = self._canary_gates(stats.get(new_id), stats.get(old_id), opts)
            self._monitoring_gates(gates, new_id, old_id, started, stats, opts)
        if gates["verdict"] == "wait":
            if elapsed < float(opts["max_wait_seconds"]):
                return self.store.serving.update_rollout(r["id"])
            raise _GateFailed(f"not enough mirrored traffic to judge the shadow after {elapsed:.0f} s: "
                              f"{gates['new']['requests']} of {opts['min_requests']} requests", gates)  # fmt: skip
        self.store.serving.update_rollout(r["id"], gates=gates)
        self.store.serving.add_event(r["id"], "analysis", gates)
        if gates["verdict"] == "fail":
            raise _GateFailed("; ".join(g["reason"] for g in gates["gates"] if not g["ok"]), gates)
        self._set_weights(r, {new_id: (100.0, "stable")}, drop_others=True)
        self._health(r, new_id)
        return self._succeed(r)

    def _window_stats(self, since: float, ids: list[str]) -> dict[str, dict[str, Any]]:
        """The step window's figures per version: from the prediction log (every gateway replica's answers, with
        online accuracy) when monitoring logs, else from the gateway replica's own window."""
        monitoring = self.service.options().monitoring or {}
        if monitoring.get("enabled", True) and (monitoring.get("log") or {}).get("enabled", True):
            return dict(self.store.predictions.version_stats(since, [i for i in ids if i]))
        return self.service.stats(since=since)

    def _monitoring_gates(
        self,
        gates: dict[str, Any],
        new_id: str,
        old_id: str | None,
        since: float,
        stats: dict[str, Any],
        opts: dict[str, Any],
    ) -> None:
        """Drift and online-accuracy gates, when monitoring has a verdict for the step's window."""
        if gates.get("verdict") == "wait":
            return
        from datetime import UTC, datetime

        reports = self.store.monitoring.drift(model_version=new_id, limit=1)
        if (
            reports
            and datetime.fromisoformat(reports[0]["ts"].removesuffix("Z")).replace(tzinfo=UTC).timestamp()
            >= since
        ):
            share, limit = float(reports[0]["drift_share"]), float(opts.get("max_drift_share", 0.5))
            gates["gates"].append({"name": "drift_share", "ok": share <= limit, "new": share,
                                   "reason": f"drift share {share:.0%} of features (allowed {limit:.0%})"})  # fmt: skip
        new, old = stats.get(new_id) or {}, stats.get(old_id or "") or {}
        need = int(opts.get("min_labels", 30))
        if new.get("labelled", 0) >= need and old.get("labelled", 0) >= need and new.get("ic") is not None \
                and old.get("ic") is not None:  # fmt: skip
            drop, limit = float(old["ic"]) - float(new["ic"]), float(opts.get("max_ic_drop", 0.05))
            gates["gates"].append({"name": "online_ic", "ok": drop <= limit, "new": new["ic"], "stable": old["ic"],
                                   "reason": f"online IC {new['ic']:.3f} vs stable {old['ic']:.3f} "
                                             f"(allowed drop {limit:g})"})  # fmt: skip
        gates["verdict"] = "pass" if all(g["ok"] for g in gates["gates"]) else "fail"

    def _canary_gates(
        self, new: dict[str, Any] | None, old: dict[str, Any] | None, opts: dict[str, Any]
    ) -> dict[str, Any]:
        new = new or {"requests": 0, "errors": 0, "error_rate": None, "p99_ms": None}
        old = old or {"requests": 0, "errors": 0, "error_rate": None, "p99_ms": None}
        out: dict[str, Any] = {"new": new, "stable": old, "gates": []}
        if new["requests"] < int(opts["min_requests"]):
            out["verdict"] = "wait"
            return out
        new_rate, old_rate = float(new["error_rate"] or 0.0), float(old["error_rate"] or 0.0)
        ok = new_rate - old_rate <= float(opts["max_error_rate_delta"])
        out["gates"].append({"name": "error_rate", "ok": ok, "new": new_rate, "stable": old_rate,
                             "reason": f"error rate {new_rate:.1%} vs stable {old_rate:.1%} (allowed +"
                                       f"{float(opts['max_error_rate_delta']):.1%})"})  # fmt: skip
        if new.get("p99_ms") is not None and old.get("p99_ms"):
            # p99 of a short window is its maximum: one GC pause decides it. Compare the highest percentile
            # with at least 3 answers above it in both windows (p99 from 300 answers on, p75 at 15).
            n = min(
                int(new.get("ok_requests", new["requests"])), int(old.get("ok_requests", old["requests"]))
            )
            q = next((q for q in (99, 95, 90, 75) if n * (100 - q) / 100 >= 3 and new.get(f"p{q}_ms")), 50)
            new_ms, old_ms = (
                float(new.get(f"p{q}_ms") or new["p99_ms"]),
                float(old.get(f"p{q}_ms") or old["p99_ms"]),
            )
            ratio = new_ms / old_ms if old_ms > 0 else float("inf")
            out["gates"].append({"name": "p99_latency_ratio", "ok": ratio <= float(opts["max_latency_ratio"]),
                                 "new": new_ms, "stable": old_ms, "ratio": ratio, "percentile": q,
                                 "reason": f"p99 latency gate (compared at p{q}, {n} answers): {new_ms:.1f} ms vs "
                                           f"stable {old_ms:.1f} ms: ratio {ratio:.2f} "
                                           f"(allowed {float(opts['max_latency_ratio']):g})"})  # fmt: skip
        elif new.get("p99_ms") is None:
            out["gates"].append(
                {
                    "name": "p99_latency_ratio",
                    "ok": False,
                    "reason": "the canary answered no request successfully",
                }
            )
        out["verdict"] = "pass" if all(g["ok"] for g in out["gates"]) else "fail"
        return out

    def _step_rolling(self, r: dict[str, Any]) -> dict[str, Any]:
        opts, step = r["options"], int(r["step"])
        batches = max(1, int(opts["batches"]))
        new_id, old_id = r["to_version"], r["from_version"]
        if step == 0:  # Serve's rolling update of the model-server replicas, each passing check_health
            preload = sorted({new_id, old_id})
            self.service.set_preload(preload)
            self.store.serving.add_event(r["id"], "replicas_rolled", {"preload": preload})
            self._stage(r)
            return self._advance(r, 1, "model-server replicas replaced and healthy")
        weight = min(100.0, 100.0 * step / batches)
        if weight >= 100:
            self._set_weights(r, {new_id: (100.0, "stable")}, drop_others=True)
            self._health(r, new_id)
            return self._succeed(r)
        self._set_weights(r, {new_id: (weight, "canary"), old_id: (100.0 - weight, "stable")})
        self._health(r, new_id)
        return self._advance(r, step + 1, f"batch {step}/{batches}: {weight:g}% on the new version")

    # -- building blocks ----------------------------------------------------------------------------------
    def _advance(self, r: dict[str, Any], step: int, message: str) -> dict[str, Any]:
        self.store.serving.add_event(r["id"], "step", {"step": step, "message": message})
        return self.store.serving.update_rollout(r["id"], step=step, step_started_at=_now())

    def _set_weights(
        self, r: dict[str, Any], changes: dict[str, tuple[float, str]], drop_others: bool = False
    ) -> None:
        model = r["model"]
        try:
            table = self.service.table(model)
        except QmlopsError:
            table = None
        entries: dict[str, RouteEntry] = (
            {} if table is None or drop_others else {e.model_version: e for e in table.entries}
        )
        if (
            drop_others and table is not None
        ):  # keep the previous stable warm as standby for an instant rollback
            for e in table.entries:
                if e.model_version not in changes and e.model_version == r.get("from_version"):
                    entries[e.model_version] = RouteEntry(e.model_version, e.version, 0.0, "standby")
        for model_id, (weight, role) in changes.items():
            record = self.store.models.get(model_id)
            entries[model_id] = RouteEntry(model_id, record.version, weight, role)
        revision = table.revision + 1 if table else 0
        new_table = RoutingTable(model, tuple(entries.values()), table.salt if table else secrets.token_hex(8),
                                 table.sticky_field if table else "user_id", revision)  # fmt: skip
        self.service.set_table(new_table)
        self.store.serving.add_event(
            r["id"], "weights", {e.model_version: [e.weight, e.role] for e in new_table.entries}
        )

    def _stage(self, r: dict[str, Any]) -> None:
        """The new version in the table at 0% (standby), loaded, and answering health probes."""
        self._set_weights(r, {r["to_version"]: (0.0, "standby")})
        self._warm(r["to_version"])
        self._health(r, r["to_version"])

    def _warm(self, model_id: str) -> None:
        from ray import serve

        server = serve.get_deployment_handle("ModelServer", app_name="qmlops")
        server.options(multiplexed_model_id=model_id).warm.remote().result()

    def _probe(self, model: str, model_id: str, n: int, concurrency: int = 1) -> dict[str, Any]:
        """``n`` predictions forced to ``model_id`` through the gateway's HTTP API, on real feature rows."""
        import httpx

        record = self.store.models.get(model_id)
        rows = _sample_rows(self.store, record, max(1, min(n, 64)))
        url = self.service.status()["url"]
        latencies: list[float] = []
        errors: list[str] = []

        def one(i: int) -> None:
            body = {"model": model, "version": record.version, "features": rows[i % len(rows)]}
            t0 = time.perf_counter()
            try:
                response = httpx.post(f"{url}/v1/predict", json=body, timeout=30.0)
                ok = response.status_code == 200 and np.isfinite(response.json()["prediction"])
                if not ok:
                    errors.append(f"{response.status_code}: {response.text[:200]}")
            except Exception as exc:
                errors.append(f"{type(exc).__name__}: {exc}")
                return
            if ok:
                latencies.append((time.perf_counter() - t0) * 1000)

        started = time.perf_counter()
        with ThreadPoolExecutor(max_workers=max(1, concurrency)) as pool:
            list(pool.map(one, range(n)))
        seconds = time.perf_counter() - started
        return {"requests": n, "errors": len(errors), "error_rate": len(errors) / n if n else 0.0,
                "rps": n / seconds if seconds > 0 else None, "p50_ms": _pct(latencies, 50), "p99_ms": _pct(latencies, 99),
                "first_errors": errors[:3]}  # fmt: skip

    def _health(self, r: dict[str, Any], model_id: str) -> None:
        result = self._probe(r["model"], model_id, int(r["options"].get("health_requests", 5)))
        ok = result["errors"] == 0
        self.store.serving.add_check(model_id, "health", ok, result, rollout_id=r["id"])
        self.store.serving.add_event(r["id"], "health_check", {"model_version": model_id, "ok": ok, **result})
        if not ok:
            raise _GateFailed(f"health check failed: {result['errors']} of {result['requests']} predictions failed "
                              f"({result['first_errors'][:1]})", result)  # fmt: skip

    def _performance(self, r: dict[str, Any], model_id: str) -> None:
        opts = r["options"]
        result = self._probe(r["model"], model_id, int(opts["perf_requests"]), int(opts["perf_concurrency"]))
        reasons = []
        if result["error_rate"] > float(opts["max_error_rate"]):
            reasons.append(f"error rate {result['error_rate']:.1%} > {float(opts['max_error_rate']):.1%}")
        if result["p99_ms"] is None or result["p99_ms"] > float(opts["max_p99_ms"]):
            reasons.append(f"p99 {result['p99_ms']} ms > {float(opts['max_p99_ms']):g} ms")
        ok = not reasons
        self.store.serving.add_check(
            model_id, "performance", ok, {**result, "reasons": reasons}, rollout_id=r["id"]
        )
        self.store.serving.add_event(
            r["id"], "performance_test", {"model_version": model_id, "ok": ok, **result}
        )
        if not ok:
            raise _GateFailed("performance test failed: " + "; ".join(reasons), result)

    def _succeed(self, r: dict[str, Any]) -> dict[str, Any]:
        record = self.store.models.get(r["to_version"])
        self._move(record, "production", f"rollout {r['id']} succeeded")
        self.store.serving.add_event(r["id"], "succeeded", {})
        return self.store.serving.update_rollout(
            r["id"], state="succeeded", ended_at=_now_dt(), reason="all gates passed"
        )

    def _rollback(self, r: dict[str, Any], reason: str, details: Any = None) -> dict[str, Any]:
        r = self.store.serving.get_rollout(r["id"])
        old_id, new_id = r["from_version"], r["to_version"]
        try:
            if old_id:
                self._set_weights(r, {old_id: (100.0, "stable")}, drop_others=True)
                table = self.service.table(r["model"])
                if table.entry_for(new_id) is not None:
                    self.service.set_table(table.without(new_id))
            else:
                self.service.remove_model(r["model"])
        except Exception as exc:  # record it; the rollout is failed either way
            reason += f" (and restoring traffic failed: {type(exc).__name__}: {exc})"
        record = self.store.models.get(new_id)
        try:
            self._move(record, "rolled_back", f"rollout {r['id']}: {reason}")
        except QmlopsError:
            pass
        from qmlops.monitoring import AlertManager

        AlertManager(self.store, executor=_ALERT_SENDER).notify(
            "rollout", r["model"], "critical", f"{r['model']} v{record.version} rolled back: {reason}",
            {"rollout_id": r["id"], "details": details},
        )  # fmt: skip
        self.store.serving.add_event(r["id"], "rolled_back", {"reason": reason, "details": details})
        return self.store.serving.update_rollout(
            r["id"], state="rolled_back", reason=reason, ended_at=_now_dt()
        )

    def _move(self, record: Any, target: str, reason: str) -> None:
        path = {"canary": {"registered": ["staging", "canary"], "staging": ["canary"], "rolled_back": ["staging", "canary"],
                           "archived": ["staging", "canary"], "production": []},
                "production": {"canary": ["production"], "staging": ["production"], "registered": ["staging", "production"]},
                "rolled_back": {"canary": ["rolled_back"], "production": ["rolled_back"], "staging": ["canary", "rolled_back"]}}  # fmt: skip
        current = self.store.models.get(record.id).state
        for state in path.get(target, {}).get(current, []):
            self.registry.transition(record.name, record.id, state, reason=reason, actor="rollout-controller",
                                     skip_validation=f"validated when the rollout started ({reason})")  # fmt: skip

    # -- operator actions ---------------------------------------------------------------------------------
    def pause(self, rollout_id: str) -> dict[str, Any]:
        r = self._active(rollout_id)
        self.store.serving.add_event(rollout_id, "paused", {})
        return self.store.serving.update_rollout(r["id"], state="paused")

    def resume(self, rollout_id: str) -> dict[str, Any]:
        r = self.store.serving.get_rollout(rollout_id)
        if r["state"] != "paused":
            raise ConflictError(f"rollout {rollout_id} is {r['state']}, not paused", field="state")
        self.store.serving.add_event(rollout_id, "resumed", {})
        return self.store.serving.update_rollout(rollout_id, state="running", step_started_at=_now())

    def promote(self, rollout_id: str) -> dict[str, Any]:
        """Skip the remaining steps: 100% to the new version now (an operator's decision, recorded)."""
        r = self._active(rollout_id)
        self._set_weights(r, {r["to_version"]: (100.0, "stable")}, drop_others=True)
        self.store.serving.add_event(rollout_id, "promoted", {})
        return self._succeed(r)

    def rollback(self, rollout_id: str) -> dict[str, Any]:
        """Back to the stable version; after success, back to the version that served before (instant: warm)."""
        r = self.store.serving.get_rollout(rollout_id)
        if r["state"] not in (*ACTIVE, "succeeded"):
            raise ConflictError(f"rollout {rollout_id} is {r['state']}; nothing to roll back", field="state")
        return self._rollback(r, "rolled back by an operator")

    def _active(self, rollout_id: str) -> dict[str, Any]:
        r = self.store.serving.get_rollout(rollout_id)
        if r["state"] not in ACTIVE:
            raise ConflictError(f"rollout {rollout_id} is {r['state']}, not active", field="state")
        return r

    def describe(self, rollout_id: str) -> dict[str, Any]:
        r = self.store.serving.get_rollout(rollout_id)
        return {**r, "events": self.store.serving.events(rollout_id),
                "checks": self.store.serving.checks(rollout_id=rollout_id)}  # fmt: skip

    def resume_all(self, *, driver: str | None = None) -> list[str]:
        """Tick the active rollouts this driver owns, adopting orphans (no tick for ``ORPHAN_SECONDS``).

        Without ``driver`` every active rollout is ticked once (an operator's explicit resume).
        """
        active = self.store.serving.list_rollouts(active_only=True, limit=1000)
        ticked = []
        for r in active:
            owner = r["options"].get("_driver")
            stale = time.time() - _parse(r["updated_at"]) > ORPHAN_SECONDS
            if driver is not None and owner != driver and not stale:
                continue
            if driver is not None and owner != driver:
                options = {**r["options"], "_driver": driver}
                self.store.serving.update_rollout(r["id"], options=options)
                self.store.serving.add_event(r["id"], "adopted", {"from": owner, "by": driver})
            if r["state"] != "paused":
                self.tick(r["id"])
            ticked.append(r["id"])
        return ticked


class _GateFailed(Exception):
    def __init__(self, reason: str, details: Any = None) -> None:
        super().__init__(reason)
        self.details = details


def _local_driver() -> str:
    import os
    import socket

    return f"process:{socket.gethostname()}:{os.getpid()}"


def _now() -> Any:
    from qmlops.metadata._db import utcnow

    return utcnow()


def _now_dt() -> Any:
    return _now()


def _parse(value: str | None) -> float:
    import datetime as dt

    if value is None:
        return time.time()
    return dt.datetime.fromisoformat(value).replace(tzinfo=dt.UTC).timestamp()


def _pct(values: list[float], q: float) -> float | None:
    return float(np.percentile(values, q)) if values else None


def _sample_rows(store: Store, record: Any, n: int) -> list[dict[str, float]]:
    """Real rows for probes: the last ``n`` rows of the version's feature materialisation, in its signature."""
    from qmlops.features import load_features

    names = list(record.signature["feature_names"])
    parents = [p for p in store.lineage.upstream(record.id) if p.kind == "feature_set"]
    if not parents:
        return [{name: 0.0 for name in names}]
    frame = load_features(materialization=parents[0].id, store=store)["feature"]
    step_len = int(record.tags.get("step_len", "1"))
    rows = []
    if step_len > 1:
        for _, block in frame.groupby(level="instrument"):
            if len(block) >= step_len:
                values = np.nan_to_num(block.tail(step_len).to_numpy(dtype=np.float64)).reshape(-1)
                rows.append(dict(zip(names, values.tolist(), strict=True)))
            if len(rows) >= n:
                break
        return rows
    tail = frame.tail(n).fillna(0.0)  # JSON has no NaN
    return [dict(zip(names, row, strict=True)) for row in tail[names].to_numpy(dtype=np.float64).tolist()]


# ------------------------------------------------------------------------------------------- the actor
class _ControllerActor:
    """The named, detached controller: ticks active rollouts in a background thread; survives its callers."""

    def __init__(self, settings: Settings, poll: float = 0.5) -> None:
        import threading

        self.controller = RolloutController(settings)
        self.poll = poll
        self._lock = threading.Lock()  # one operation at a time: the loop's ticks and operators' calls
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="rollouts", daemon=True)
        self._thread.start()

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                with self._lock:
                    self.controller.resume_all(driver="actor")
            except Exception:  # keep ticking; each rollout records its own failures
                traceback.print_exc()
            self._stop.wait(self.poll)

    def _call(self, method: str, *args: Any, **kwargs: Any) -> tuple[str, Any]:
        try:
            with self._lock:
                return "ok", getattr(self.controller, method)(*args, **kwargs)
        except Exception as exc:  # returned, the caller re-raises it with its type
            return "err", exc

    def start(self, *args: Any, **kwargs: Any) -> tuple[str, Any]:
        return self._call("start", *args, driver="actor", **kwargs)

    def describe(self, rollout_id: str) -> tuple[str, Any]:
        return self._call("describe", rollout_id)

    def pause(self, rollout_id: str) -> tuple[str, Any]:
        return self._call("pause", rollout_id)

    def resume(self, rollout_id: str) -> tuple[str, Any]:
        return self._call("resume", rollout_id)

    def promote(self, rollout_id: str) -> tuple[str, Any]:
        return self._call("promote", rollout_id)

    def rollback(self, rollout_id: str) -> tuple[str, Any]:
        return self._call("rollback", rollout_id)

    def shutdown(self) -> None:
        self._stop.set()


def controller_handle(settings: Settings | None = None) -> Any:
    """The rollout controller actor (``<metadata actor name>-rollouts``), created on the head node if absent."""
    import ray

    settings = settings or get_settings()
    name = f"{settings.metadata_actor_name}-rollouts"
    return ray.remote(_ControllerActor).options(
        name=name, namespace=settings.metadata_namespace, lifetime="detached", get_if_exists=True, num_cpus=0,
        max_concurrency=8, max_restarts=-1, resources={"node:__internal_head__": 0.001},
    ).remote(settings)  # fmt: skip
