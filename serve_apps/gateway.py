"""The gateway deployment: FastAPI ingress, sticky routing, input validation, model-server calls, admin API.

Every request is validated before any model runs; client errors are 4xx with ``{"error": {"field", "reason"}}``
and never 5xx. Routing tables arrive through ``user_config`` (``reconfigure``), so a weight change applies
without a redeploy and without dropping requests in flight. Per version the gateway keeps a bounded window of
(time, latency, ok) that rollout gates read (``stats``). Monitoring (:class:`qmlops.monitoring.GatewayMonitor`)
logs every answered prediction, feeds the drift windows and evaluates alert rules off the request path; its
read endpoints are ``/v1/predictions``, ``/v1/metrics/models``, ``/v1/drift``, ``/v1/alerts`` (and the
``/v1/ws/alerts`` WebSocket) and ``/v1/resources``. A routing table's ``shadow`` entries get a mirrored copy of
each routed request, scored in a background task after the answer is built and logged with variant ``shadow``.

(No ``from __future__ import annotations`` here: FastAPI reads the route signatures' annotations at runtime.)
"""

import asyncio
import logging
import math
import os
import time
import uuid
from collections import deque
from collections.abc import Callable
from typing import Any

import numpy as np
from fastapi import FastAPI, Request, WebSocket, WebSocketDisconnect
from fastapi.exceptions import RequestValidationError
from fastapi.middleware.cors import CORSMiddleware
from fastapi.responses import JSONResponse, Response
from ray import serve

from qmlops.config import Settings
from qmlops.exceptions import QmlopsError
from qmlops.serving import _requests as edge
from qmlops.serving._routing import RouteEntry

__all__ = ["Gateway", "api", "MAX_BODY_BYTES", "MAX_ROWS"]

MAX_BODY_BYTES = 1_000_000
MAX_ROWS = 1_000
WINDOW = 50_000  # latency samples kept per version
MAX_BATCH = 32  # requests per model-server call
MAX_IN_FLIGHT = 2  # model-server calls per version at a time; requests arriving meanwhile form the next batch
MAX_SHADOW_PENDING = (
    256  # mirrored requests waiting for a shadow version; more are dropped (and counted), not queued
)

log = logging.getLogger("qmlops.gateway")

api = FastAPI(title="qmlops gateway", version="1", docs_url="/docs", openapi_url="/openapi.json")

# Browsers: cross-origin writes are refused unless the origin is listed here (empty by default); the gateway's
# own page (same origin) always may. CORS headers are only sent for listed origins.
ALLOWED_ORIGINS = frozenset(
    o.strip().lower().rstrip("/") for o in os.environ.get("QMLOPS_CORS_ORIGINS", "").split(",") if o.strip()
)
if ALLOWED_ORIGINS:
    api.add_middleware(CORSMiddleware, allow_origins=sorted(ALLOWED_ORIGINS), allow_methods=["GET", "POST"],
                       allow_headers=["authorization", "content-type", "x-user-id"])  # fmt: skip


def _body_schema(model: Any) -> dict[str, Any]:
    """An ``openapi_extra`` that documents a JSON request body read by hand (the handlers parse it safely)."""
    schema = model.model_json_schema(ref_template="#/components/schemas/{model}")
    defs = schema.pop("$defs", {})
    if defs:  # pragma: no cover - the edge models are flat
        raise RuntimeError("nested request models need component registration")
    return {"requestBody": {"required": True, "content": {"application/json": {"schema": schema}}}}


def _list_or_one(model: Any, key: str) -> dict[str, Any]:
    one = model.model_json_schema()
    many = {"type": "object", "properties": {key: {"type": "array", "items": one, "minItems": 1}},
            "required": [key], "additionalProperties": False}  # fmt: skip
    return {
        "requestBody": {"required": True, "content": {"application/json": {"schema": {"anyOf": [one, many]}}}}
    }


class ClientError(Exception):
    def __init__(self, status: int, field: str | None, reason: str) -> None:
        super().__init__(reason)
        self.status, self.field, self.reason = status, field, reason


def _error(status: int, field: str | None, reason: str) -> JSONResponse:
    return JSONResponse(status_code=status, content={"error": {"field": field, "reason": reason}})


@api.exception_handler(ClientError)
async def _client_error(request: Request, exc: ClientError) -> JSONResponse:
    return _error(exc.status, exc.field, exc.reason)


@api.exception_handler(RequestValidationError)
async def _validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
    first = (exc.errors() or [{}])[0]
    where = ".".join(str(p) for p in first.get("loc", ()) if p not in ("query", "path", "body")) or None
    return _error(422, where, str(first.get("msg", "invalid request")))


@api.exception_handler(QmlopsError)
async def _qmlops_error(request: Request, exc: QmlopsError) -> JSONResponse:
    if exc.http_status >= 500:
        return _server_fault(request, exc)
    return _error(exc.http_status, exc.field, exc.message)


@api.exception_handler(Exception)
async def _server_error(request: Request, exc: Exception) -> JSONResponse:
    return _server_fault(request, exc)


def _server_fault(request: Request, exc: BaseException) -> JSONResponse:
    """Only what is not the client's fault gets here (a model that fails, a lost replica, a bug). The client
    gets a generic reason and an id; the detail goes to the server log under that id, never into the body."""
    incident = uuid.uuid4().hex
    log.error("server fault %s on %s %s", incident, request.method, request.url.path, exc_info=exc)
    return JSONResponse(status_code=500, content={"error": {"field": None, "request_id": incident,
                        "reason": f"internal server error (request id {incident}; the detail is in the server log)"}})  # fmt: skip


def _check_origin(request: Request | WebSocket) -> None:
    """Writes and WebSocket upgrades from a browser page of another origin are refused (CSRF, CSWSH)."""
    if not edge.origin_allowed(request.headers.get("origin"), request.headers.get("host"), ALLOWED_ORIGINS):
        raise ClientError(
            403, "origin", "cross-origin requests are refused; list the origin in QMLOPS_CORS_ORIGINS"
        )


async def _json_body(request: Request) -> dict[str, Any]:
    """The request's JSON object: same-origin or listed origin, JSON content type, size, depth, number sizes
    and encodable text checked (:mod:`qmlops.serving._requests`)."""
    _check_origin(request)
    edge.check_content_type(request.headers.get("content-type"))
    length = request.headers.get("content-length")
    if length is not None and length.isdigit() and int(length) > MAX_BODY_BYTES:
        raise ClientError(413, "body", f"body of {length} bytes is over the {MAX_BODY_BYTES}-byte limit")
    raw = await request.body()
    if len(raw) > MAX_BODY_BYTES:
        raise ClientError(413, "body", f"body of {len(raw)} bytes is over the {MAX_BODY_BYTES}-byte limit")
    body = edge.parse_json(raw)
    if not isinstance(body, dict):
        raise ClientError(422, "body", "the body must be a JSON object")
    return body


async def _accept(websocket: WebSocket) -> bool:
    """Accept an upgrade from no browser, the gateway's own page or a listed origin; refuse (403) any other
    page, which could otherwise read the stream with the user's network position (cross-site WebSocket
    hijacking)."""
    try:
        _check_origin(websocket)
    except ClientError:
        await websocket.close(code=1008)
        return False
    await websocket.accept()
    return True


def _number(value: Any, field: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ClientError(422, field, f"must be a number, got {type(value).__name__}")
    if not math.isfinite(float(value)):
        raise ClientError(422, field, "must be finite")
    return float(value)


def _limit(value: int) -> int:
    if not 1 <= value <= 1000:
        raise ClientError(422, "limit", "must be 1..1000")
    return value


def _window(window_s: float, bucket_s: float | None = None) -> None:
    """A chart's look-back window and bucket width: 4xx naming the field when out of range."""
    if not (math.isfinite(window_s) and 0 < window_s <= 30 * 86400):
        raise ClientError(422, "window_s", "must be a number of seconds in (0, 30 days]")
    if bucket_s is not None:
        if not (math.isfinite(bucket_s) and 1 <= bucket_s <= window_s):
            raise ClientError(422, "bucket_s", "must be a number of seconds in [1, window_s]")
        if window_s / bucket_s > 5000:
            raise ClientError(422, "bucket_s", "too small for the window: at most 5000 buckets")


def _deployments() -> dict[str, Any]:
    """Serve's view of this application's deployments: status and replica states (empty if Serve cannot say)."""
    from qmlops.serving import APP_NAME

    try:
        app = serve.status().applications.get(APP_NAME)
    except Exception:  # the controller busy or gone: the page shows the routes without replica states
        return {}
    if app is None:
        return {}
    return {name: {"status": str(getattr(d.status, "value", d.status)), "replicas": {str(k): int(v) for k, v in d.replica_states.items()},
                   "message": d.message} for name, d in app.deployments.items()}  # fmt: skip


def _percentile(values: list[float], q: float) -> float | None:
    return float(np.percentile(values, q)) if values else None


class _VersionInfo:
    def __init__(self, record: Any, materialization: str | None) -> None:
        self.id, self.name, self.version = record.id, record.name, record.version
        self.names: list[str] = list(record.signature["feature_names"])
        self.index = {n: i for i, n in enumerate(self.names)}
        self.step_len = int(record.tags.get("step_len", "1"))
        self.base_names = [n.rsplit("@t-", 1)[0] for n in self.names[-len(self.names) // self.step_len :]]
        self.materialization = materialization


@serve.deployment(name="Gateway", max_ongoing_requests=64, ray_actor_options={"num_cpus": 0.5})
@serve.ingress(api)
class Gateway:
    def __init__(self, settings: Settings, model_server: Any) -> None:
        from qmlops.metadata import get_store
        from qmlops.serving._routing import RoutingTable

        self.settings = settings
        self.store = get_store(settings)
        self.model_server = model_server
        self.tables: dict[str, RoutingTable] = {}
        self.revision = 0
        self.versions: dict[str, _VersionInfo] = {}
        self.windows: dict[str, deque[tuple[float, float, bool]]] = {}
        self.ready: dict[str, bool] = {}
        self.hooks: list[Callable[[dict[str, Any]], None]] = []
        from qmlops.serving._tokens import TokenCheck, hash_token

        env_token = os.environ.get("QMLOPS_ADMIN_TOKEN") or ""  # direct construction; Serve passes a hash
        self.admin = TokenCheck(hash_token(env_token) if env_token else "")
        self.admin_dev = os.environ.get("QMLOPS_ADMIN_DEV", "") == "1"
        self.started = time.time()
        self._queues: dict[str, asyncio.Queue] = {}
        self._batchers: dict[str, asyncio.Task] = {}
        self.monitor: Any = None
        self.monitoring_options: dict[str, Any] | None = None
        self.experiments: Any = None  # an ExperimentRouter once reconfigure ran
        # request ids this replica answered lately: feedback for them is known before the log's next flush
        self.issued: dict[str, int] = {}
        self.feedback_rejected = 0
        self._shadow_tasks: set[asyncio.Task] = set()
        self.shadow_dropped = 0

    # -- configuration ------------------------------------------------------------------------------------
    def reconfigure(self, config: dict[str, Any]) -> None:
        from qmlops.serving._routing import RoutingTable

        tables = {t["model"]: RoutingTable.from_dict(t) for t in config.get("routes", [])}
        self.tables = tables  # one assignment: requests see the old or the new tables, never a mix
        self.revision = int(config.get("revision", 0))
        # an apply without a hash never switches a configured token off (the hash is kept under QMLOPS_HOME)
        self.admin.set(config.get("admin_token_hash") or self.admin.encoded)
        self.admin_dev = bool(config.get("admin_dev", os.environ.get("QMLOPS_ADMIN_DEV", "") == "1"))
        self._configure_monitoring(config.get("monitoring") or {})
        from qmlops.experiments import ExperimentRouter

        self.experiments = ExperimentRouter(list(config.get("experiments") or []))
        wanted = {e.model_version for t in tables.values() for e in t.entries}
        for model_id in wanted - set(self.ready):
            self.ready[model_id] = False
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return
        for model_id in wanted:
            if not self.ready.get(model_id):
                loop.create_task(self._warm(model_id))

    def _server(self) -> Any:
        """The model-server handle, its router on this replica's event loop (not a thread of its own).

        Called from coroutines only: Serve binds a same-loop router to the running loop. Saves two thread
        hand-offs per call; with the gRPC transport (``_by_reference=False`` below) it took the gateway's CPU
        per request from 5.7 to 4.3 ms in ``bench/serving.py``.
        """
        if not self.model_server.is_initialized:
            self.model_server._init(_run_router_in_separate_loop=False)
        return self.model_server

    async def _warm(self, model_id: str) -> None:
        try:
            await self._server().options(multiplexed_model_id=model_id).warm.remote()
            self.ready[model_id] = True
        except Exception:  # readyz reports it; the next request retries the load
            self.ready[model_id] = False

    def _configure_monitoring(self, options: dict[str, Any]) -> None:
        """(Re)start the replica's monitor when its options change; the old one flushes first."""
        from qmlops.monitoring import GatewayMonitor

        if options == self.monitoring_options:
            return
        if self.monitor is not None:
            self.monitor.close()
            self.monitor = None
        self.monitoring_options = options
        if options.get("enabled", True) is False:
            return
        try:
            replica = serve.get_replica_context().replica_id.unique_id
        except Exception:  # outside a Serve replica (direct construction)
            replica = uuid.uuid4().hex[:8]
        self.monitor = GatewayMonitor(self.store, replica, self.settings.home, options)

    async def __del__(self) -> None:
        """Serve calls this on a graceful replica shutdown: the prediction log is flushed to the last row."""
        if self.monitor is not None:
            await asyncio.get_running_loop().run_in_executor(None, self.monitor.close)

    def _experiment_route(self, name: str, key: Any, attributes: dict[str, Any] | None) -> Any:
        if key is None or self.experiments is None:
            return None
        return self.experiments.route(name, str(key), attributes)

    def _expose(self, experiment_id: str, unit: str, variant: str, request_id: str) -> None:
        if self.monitor is not None:
            self.monitor.expose(experiment_id, unit, variant, request_id)
        else:  # monitoring off: exposures are still the experiment's denominator
            asyncio.get_running_loop().run_in_executor(None, self.store.experiments.add_exposures,
                                                       [(experiment_id, unit, variant, request_id, time.time())])  # fmt: skip

    def add_prediction_hook(self, hook: Callable[[dict[str, Any]], None]) -> None:
        self.hooks.append(hook)

    def _info(self, model_id: str) -> _VersionInfo:
        info = self.versions.get(model_id)
        if info is None:
            record = self.store.models.get(model_id)
            parents = [n for n in self.store.lineage.upstream(model_id) if n.kind == "feature_set"]
            info = self.versions[model_id] = _VersionInfo(record, parents[0].id if parents else None)
        return info

    # -- statistics for rollout gates ----------------------------------------------------------------------
    def _record(self, model_id: str, latency_ms: float, ok: bool) -> None:
        window = self.windows.get(model_id)
        if window is None:
            window = self.windows[model_id] = deque(maxlen=WINDOW)
        window.append((time.time(), latency_ms, ok))

    def stats(self, since: float = 0.0) -> dict[str, dict[str, Any]]:
        out: dict[str, dict[str, Any]] = {}
        for model_id, window in list(self.windows.items()):
            rows = [r for r in list(window) if r[0] >= since]
            lat = [r[1] for r in rows if r[2]]
            errors = sum(1 for r in rows if not r[2])
            out[model_id] = {"requests": len(rows), "errors": errors,
                             "error_rate": errors / len(rows) if rows else None,
                             "ok_requests": len(lat), **{f"p{q}_ms": _percentile(lat, q) for q in (50, 75, 90, 95, 99)}}  # fmt: skip
        return out

    def routing_revision(self) -> int:
        return self.revision

    # -- scoring ------------------------------------------------------------------------------------------
    async def _score(self, model_id: str, rows: np.ndarray) -> np.ndarray:
        """Concurrent requests for one version share a model-server call (the second hop is paid per batch).

        One queue per version, so a slow version never holds up another version's requests.
        """
        loop = asyncio.get_running_loop()
        future: asyncio.Future[np.ndarray] = loop.create_future()
        queue = self._queues.get(model_id)
        if queue is None:
            queue = self._queues[model_id] = asyncio.Queue()
            self._batchers[model_id] = loop.create_task(self._batcher(model_id, queue))
        queue.put_nowait((rows, future))
        return await future

    async def _batcher(self, model_id: str, queue: asyncio.Queue) -> None:
        """Adaptive batching without a timer: at most ``MAX_IN_FLIGHT`` calls per version; whatever queued up
        while they were out goes in the next call."""
        # gRPC between the replicas instead of a Ray actor call: the arrays go by value, no object-store round trip
        handle = self._server().options(multiplexed_model_id=model_id, _by_reference=False)
        slots = asyncio.Semaphore(MAX_IN_FLIGHT)
        while True:
            items = [await queue.get()]
            await slots.acquire()
            while len(items) < MAX_BATCH:
                try:
                    items.append(queue.get_nowait())
                except asyncio.QueueEmpty:
                    break
            asyncio.get_running_loop().create_task(self._send(handle, items, slots))

    async def _send(
        self, handle: Any, items: list[tuple[np.ndarray, asyncio.Future]], slots: asyncio.Semaphore
    ) -> None:
        try:
            await self._call(handle, items)
        finally:
            slots.release()

    async def _call(self, handle: Any, items: list[tuple[np.ndarray, asyncio.Future]]) -> None:
        try:
            scores = np.asarray(
                await handle.predict.remote(np.concatenate([rows for rows, _ in items], axis=0))
            )
        except Exception as exc:  # every request of the batch gets the failure
            for _, future in items:
                if not future.done():
                    future.set_exception(exc)
            return
        start = 0
        for rows, future in items:
            if not future.done():
                future.set_result(scores[start : start + len(rows)])
            start += len(rows)

    # -- public API ---------------------------------------------------------------------------------------
    @api.get("/healthz")
    async def healthz(self) -> dict[str, Any]:
        return {"status": "ok", "uptime_s": round(time.time() - self.started, 1)}

    @api.get("/readyz")
    async def readyz(self) -> JSONResponse:
        wanted = {e.model_version for t in self.tables.values() for e in t.entries}
        for model_id in wanted:
            if not self.ready.get(model_id):
                await self._warm(model_id)
        missing = sorted(m for m in wanted if not self.ready.get(m))
        status = 200 if wanted and not missing else 503
        return JSONResponse(status_code=status, content={"ready": status == 200, "models": sorted(wanted),
                                                         "not_loaded": missing, "revision": self.revision})  # fmt: skip

    @api.get("/v1/models")
    async def models(self) -> dict[str, Any]:
        out = []
        for name, table in sorted(self.tables.items()):
            entries = []
            for e in table.entries:
                entries.append({"model_version": e.model_version, "version": e.version, "weight": e.weight,
                                "role": e.role, "loaded": bool(self.ready.get(e.model_version))})  # fmt: skip
            out.append({"model": name, "versions": entries, "sticky_field": table.sticky_field})
        return {"models": out}

    @api.get("/v1/routes")
    async def routes(self) -> dict[str, Any]:
        return {
            "revision": self.revision,
            "routes": [t.to_dict() | {"salt": None} for t in self.tables.values()],
        }

    @api.post("/v1/explain", openapi_extra=_body_schema(edge.PredictRequest))
    async def explain(self, request: Request) -> JSONResponse:
        """SHAP contributions for the same inputs as /v1/predict (the version the request would be routed to)."""
        body = await _json_body(request)
        top = body.pop("top", 10)
        if isinstance(top, bool) or not isinstance(top, int) or not 1 <= top <= 1000:
            raise ClientError(422, "top", "must be an integer 1..1000")
        if (
            body.get("request_id") is not None
        ):  # not used here, but the same body as /v1/predict is checked alike
            edge.check_id(body["request_id"], "request_id", what="request_id")
        name, key, entry, label, _ = self._resolve(body)
        info = self._info(entry.model_version)
        rows, index = self._rows(body, info)
        if len(rows) > 50:
            raise ClientError(413, "rows", "explain at most 50 rows per request")
        handle = self._server().options(multiplexed_model_id=entry.model_version)
        explanations = await handle.explain.remote(rows, top)
        out = {"model": name, "version": entry.version, "model_version": entry.model_version,
               "variant": label, "explanations": explanations}  # fmt: skip
        if index is not None:
            out["rows"] = index
        return JSONResponse(out)

    def _resolve(self, body: dict[str, Any]) -> tuple[str, Any, Any, str, Any]:
        """(model name, sticky key, route entry, variant label, experiment or None) for a predict/explain body.

        The label is the routing role (stable, canary, ...) or, inside an experiment, the variant's name."""
        name = body.get("model")
        if not isinstance(name, str) or not name:
            raise ClientError(422, "model", "required: the model name (a string)")
        if len(name) > 200:
            raise ClientError(422, "model", "a model name is at most 200 characters")
        table = self.tables.get(name)
        if table is None:
            raise ClientError(
                404, "model", f"model {name!r} is not deployed; deployed: {sorted(self.tables)}"
            )
        key = body.get(table.sticky_field)
        if key is not None and (not isinstance(key, str | int) or isinstance(key, bool)):
            raise ClientError(422, table.sticky_field, "must be a string or an integer")
        if isinstance(key, str) and not 1 <= len(key) <= 256:
            raise ClientError(422, table.sticky_field, "must be 1..256 characters")
        attributes = body.get("attributes")
        if attributes is not None and not isinstance(attributes, dict):
            raise ClientError(
                422, "attributes", "must be an object of request attributes (experiment targeting)"
            )
        experiment = None
        if body.get("version") is not None:
            if not isinstance(body["version"], int) or isinstance(body["version"], bool):
                raise ClientError(422, "version", "must be an integer version number")
            entry = table.entry_for(body["version"])
            if entry is None:
                raise ClientError(404, "version", f"version {body['version']!r} of {name} is not deployed")
        else:
            hit = self._experiment_route(name, key, attributes)
            if hit is not None:
                experiment, variant = hit
                entry = RouteEntry(variant["model_version"], variant["version"], 0.0, "variant")
                return name, key, entry, variant["name"], experiment
            else:
                entry = table.route(str(key) if key is not None else None)
        return name, key, entry, entry.role, experiment

    @api.post("/v1/predict", openapi_extra=_body_schema(edge.PredictRequest))
    async def predict(self, request: Request) -> JSONResponse:
        body = await _json_body(request)
        started = time.perf_counter()
        given = body.get("request_id")
        request_id = (
            edge.check_id(given, "request_id", what="request_id") if given is not None else uuid.uuid4().hex
        )
        model = body.get("model")
        if "x-user-id" in request.headers and isinstance(model, str) and model in self.tables:
            body.setdefault(self.tables[model].sticky_field, request.headers["x-user-id"])
        name, key, entry, label, experiment = self._resolve(body)
        info = self._info(entry.model_version)
        rows, index = self._rows(body, info)
        overhead_ms = (time.perf_counter() - started) * 1000  # parsing and routing, charged to shadows too
        ok = False
        predictions: list[float] | None = None
        try:
            scores = await self._score(entry.model_version, rows)
            predictions = [float(x) for x in np.asarray(scores).reshape(-1)]
            ok = True
        finally:
            latency = (time.perf_counter() - started) * 1000
            self._record(entry.model_version, latency, ok)
            if self.monitor is not None:
                self.monitor.record(request_id, name, entry.model_version, entry.version, label, rows,
                                    predictions, latency, "ok" if ok else "error")  # fmt: skip
        assert predictions is not None
        response = {"request_id": request_id, "model": name, "version": entry.version,
                    "model_version": entry.model_version, "variant": label, "predictions": predictions,
                    "prediction": predictions[0], "latency_ms": round(latency, 3)}  # fmt: skip
        if index is not None:
            response["rows"] = index
        if experiment is not None:
            response["experiment"] = experiment["id"]
            self._expose(experiment["id"], str(key), label, request_id)
        self.issued[request_id] = len(predictions)
        if len(self.issued) > 200_000:
            for old in list(self.issued)[:50_000]:
                del self.issued[old]
        if len(predictions) > 1:  # the prediction log and /v1/feedback know each row as request_id/i
            response["request_ids"] = [f"{request_id}/{i}" for i in range(len(predictions))]
        if body.get("version") is None and experiment is None and entry.role != "shadow":
            self._mirror(name, request_id, body, info, rows, overhead_ms)
        for hook in self.hooks:
            hook({**response, "inputs": rows, "ts": time.time(), "status": "ok"})
        return JSONResponse(response)

    # -- shadow scoring ----------------------------------------------------------------------------------
    def _mirror(self, name: str, request_id: str, body: dict[str, Any], info: _VersionInfo, rows: np.ndarray,
                overhead_ms: float) -> None:  # fmt: skip
        """A copy of a routed request for every ``shadow`` entry, scored in a background task: the answer is
        already built and never waits for it, and a shadow's failure never reaches the client."""
        table = self.tables.get(name)
        for entry in [e for e in table.entries if e.role == "shadow"] if table is not None else []:
            if (
                len(self._shadow_tasks) >= MAX_SHADOW_PENDING
            ):  # a slow shadow sheds copies, never holds live ones
                self.shadow_dropped += 1
                continue
            task = asyncio.get_running_loop().create_task(
                self._shadow(name, request_id, body, info, rows, entry, overhead_ms)
            )
            self._shadow_tasks.add(task)
            task.add_done_callback(self._shadow_tasks.discard)

    async def _shadow(self, name: str, request_id: str, body: dict[str, Any], live: _VersionInfo,
                      live_rows: np.ndarray, entry: Any, overhead_ms: float) -> None:  # fmt: skip
        """Score the mirrored request with a shadow version; logged as variant ``shadow`` under the live request's
        id, so feedback for that request labels both versions (online IC side by side)."""
        ok, rows, predictions = False, live_rows, None
        started = time.perf_counter()
        try:
            info = self.versions.get(entry.model_version)
            if info is None:  # first copy: a store read, off the event loop and outside the timed part
                info = await asyncio.to_thread(self._info, entry.model_version)
                started = time.perf_counter()
            if info.names != live.names:  # another signature: the same request in the shadow's own columns
                rows, _ = self._rows(body, info)
            scores = await self._score(entry.model_version, rows)
            predictions = [float(x) for x in np.asarray(scores).reshape(-1)]
            ok = True
        except Exception:  # counted as the shadow's error, never the client's
            pass
        latency = overhead_ms + (time.perf_counter() - started) * 1000
        self._record(entry.model_version, latency, ok)
        if self.monitor is not None:
            self.monitor.record(request_id, name, entry.model_version, entry.version, "shadow", rows, predictions,
                                latency, "ok" if ok else "error")  # fmt: skip

    def _rows(
        self, body: dict[str, Any], info: _VersionInfo
    ) -> tuple[np.ndarray, list[dict[str, str]] | None]:
        """Rows in the version's signature order, from features by name or from {instrument(s), date}."""
        allowed = {"model", "version", "request_id", "features", "rows", "instrument", "instruments", "date",
                   "max_staleness_days", "attributes", self.tables[info.name].sticky_field}  # fmt: skip
        extra = sorted(set(body) - allowed)
        if extra:
            raise ClientError(422, extra[0], f"unknown field; allowed: {sorted(allowed)}")
        given = [k for k in ("features", "rows", "instrument", "instruments") if k in body]
        if len(given) != 1:
            raise ClientError(422, "features", "send exactly one of features, rows, instrument(s)+date")
        if given[0] in ("features", "rows"):
            items = [body["features"]] if given[0] == "features" else body["rows"]
            if not isinstance(items, list) or not items:
                raise ClientError(422, given[0], "must be a non-empty list of feature objects")
            if len(items) > MAX_ROWS:
                raise ClientError(413, "rows", f"{len(items)} rows is over the {MAX_ROWS}-row limit")
            x = np.empty((len(items), len(info.names)))
            for i, item in enumerate(items):
                where = "features" if given[0] == "features" else f"rows[{i}]"
                if not isinstance(item, dict):
                    raise ClientError(422, where, "must be an object of feature name -> number")
                missing = [n for n in info.names if n not in item]
                if missing:
                    raise ClientError(
                        422, f"{where}.{missing[0]}", f"missing {len(missing)} feature(s), e.g. {missing[:5]}"
                    )
                unknown = [k for k in item if k not in info.index]
                if unknown:
                    raise ClientError(
                        422, f"{where}.{unknown[0]}", f"not a feature of {info.name} v{info.version}"
                    )
                for n, value in item.items():
                    x[i, info.index[n]] = _number(value, f"{where}.{n}")
            return x, None
        return self._rows_from_store(body, info)

    def _rows_from_store(
        self, body: dict[str, Any], info: _VersionInfo
    ) -> tuple[np.ndarray, list[dict[str, str]]]:
        import pandas as pd

        from qmlops.features import get_feature_windows

        instruments = [body["instrument"]] if "instrument" in body else body["instruments"]
        field = "instrument" if "instrument" in body else "instruments"
        if (
            not isinstance(instruments, list)
            or not instruments
            or not all(isinstance(i, str) and i for i in instruments)
        ):
            raise ClientError(422, field, "must be a non-empty instrument name (or a list of them)")
        if len(instruments) > MAX_ROWS:
            raise ClientError(413, field, f"{len(instruments)} instruments is over the {MAX_ROWS} limit")
        if "date" not in body:
            raise ClientError(422, "date", "required with instrument(s): an ISO date such as 2010-06-01")
        as_of = pd.Timestamp(edge.parse_date(body["date"], "date"))
        if any(len(i) > 64 for i in instruments):
            raise ClientError(422, field, "an instrument name is at most 64 characters")
        limit = body.get("max_staleness_days")
        if limit is not None and (
            isinstance(limit, bool) or not isinstance(limit, int) or not 0 <= limit <= 100_000
        ):
            raise ClientError(422, "max_staleness_days", "must be a whole number of days from 0 to 100000")
        if info.materialization is None:
            raise ClientError(422, "instrument", f"{info.name} v{info.version} has no feature set in its lineage; "
                                                 "send features by name")  # fmt: skip
        windows = get_feature_windows([i.upper() for i in instruments], as_of, info.step_len,
                                      materialization=info.materialization, store=self.store)  # fmt: skip
        absent = [i.upper() for i in instruments if i.upper() not in windows]
        if absent:
            raise ClientError(422, field, f"no feature data for {absent[:5]} on or before {as_of.date()}")
        x = np.stack(
            [
                windows[i.upper()][1][info.base_names].to_numpy(dtype=np.float64).reshape(-1)
                for i in instruments
            ]
        )
        # The row used is the latest on or before the date; its own date and age travel with the answer.
        index = [{"instrument": i.upper(), "date": str(windows[i.upper()][0].date()),
                  "staleness_days": int((as_of.normalize() - windows[i.upper()][0].normalize()).days)}
                 for i in instruments]  # fmt: skip
        too_old = [r for r in index if limit is not None and r["staleness_days"] > limit]
        if too_old:
            raise ClientError(422, "max_staleness_days", f"the latest feature row of {too_old[0]['instrument']} on "
                                                         f"or before {as_of.date()} is from {too_old[0]['date']}, "
                                                         f"{too_old[0]['staleness_days']} days old (limit {limit})")  # fmt: skip
        return x, index

    @api.post("/v1/feedback", status_code=202, openapi_extra=_list_or_one(edge.FeedbackItem, "items"))
    async def feedback(self, request: Request) -> JSONResponse:
        """Observed outcomes ``{request_id, value}`` (or ``{"items": [...]}``) for answered predictions."""
        body = await _json_body(request)
        if "items" in body:
            if set(body) != {"items"}:
                raise ClientError(422, sorted(set(body) - {"items"})[0], "unknown field next to items")
            items = body["items"]
            if not isinstance(items, list) or not 1 <= len(items) <= MAX_ROWS:
                raise ClientError(
                    422, "items", f"must be a list of 1..{MAX_ROWS} {{request_id, value}} objects"
                )
            parsed = [
                edge.validate_as(edge.FeedbackItem, item, prefix=f"items[{i}]")
                for i, item in enumerate(items)
            ]
        else:
            parsed = [edge.validate_as(edge.FeedbackItem, body)]
        known = await self._off_loop(self._known_ids, [item.request_id for item in parsed])
        rows = [(item.request_id, item.value) for item in parsed if item.request_id in known]
        unknown = [item.request_id for item in parsed if item.request_id not in known]
        self.feedback_rejected += len(unknown)
        if rows:
            await self._off_loop(self.store.serving.add_feedback, rows)
        # feedback for an id never issued is rejected and counted, never stored (it would skew online accuracy)
        return JSONResponse(status_code=202, content={"accepted": len(rows), "rejected": len(unknown),
                                                      "unknown": unknown[:10]})  # fmt: skip

    def _known_ids(self, ids: list[str]) -> set[str]:
        def issued_here(rid: str) -> bool:
            if rid in self.issued:
                return self.issued[rid] == 1
            base, _, index = rid.rpartition("/")
            return base in self.issued and index.isdigit() and int(index) < self.issued[base]

        known = {rid for rid in ids if issued_here(rid)}
        rest = [rid for rid in ids if rid not in known]
        return known | (self.store.predictions.known_request_ids(rest) if rest else set())

    # -- admin --------------------------------------------------------------------------------------------
    def _authorise(self, request: Request) -> None:
        if not self.admin:
            if self.admin_dev:
                return
            raise ClientError(403, "authorization", "the admin API is off: set QMLOPS_ADMIN_TOKEN on the gateway "
                                                    "(or QMLOPS_ADMIN_DEV=1 for local development)")  # fmt: skip
        header = request.headers.get("authorization", "")
        scheme, _, token = header.partition(" ")
        if scheme.lower() != "bearer" or not token or not self.admin.check(token):
            raise ClientError(401, "authorization", "a valid bearer token is required")

    async def _controller(self, method: str, *args: Any, **kwargs: Any) -> Any:
        from qmlops.deploy import controller_handle

        handle = controller_handle(self.settings)
        status, value = await getattr(handle, method).remote(*args, **kwargs)
        if status == "err":
            raise value
        return value

    @api.post("/v1/admin/rollouts", status_code=201, openapi_extra=_body_schema(edge.RolloutRequest))
    async def start_rollout(self, request: Request) -> JSONResponse:
        self._authorise(request)
        body = await _json_body(request)
        extra = sorted(set(body) - {"model", "version", "strategy", "options"})
        if extra:
            raise ClientError(422, extra[0], "unknown field; allowed: model, version, strategy, options")
        for key in ("model", "version", "strategy"):
            if key not in body:
                raise ClientError(422, key, "required")
        req = edge.validate_as(edge.RolloutRequest, body)
        rollout = await self._controller("start", req.model, req.version, req.strategy, req.options)
        return JSONResponse(status_code=201, content=rollout)

    @api.get("/v1/admin/rollouts/{rollout_id}")
    async def get_rollout(self, rollout_id: str, request: Request) -> JSONResponse:
        self._authorise(request)
        return JSONResponse(await self._controller("describe", rollout_id))

    @api.post("/v1/admin/rollouts/{rollout_id}/{action}")
    async def act_on_rollout(self, rollout_id: str, action: str, request: Request) -> JSONResponse:
        self._authorise(request)
        if action not in ("pause", "resume", "promote", "rollback"):
            raise ClientError(404, "action", "one of pause, resume, promote, rollback")
        return JSONResponse(await self._controller(action, rollout_id))

    # -- monitoring ---------------------------------------------------------------------------------------
    async def _off_loop(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        return await asyncio.get_running_loop().run_in_executor(None, lambda: fn(*args, **kwargs))

    @api.get("/v1/predictions")
    async def predictions(
        self, model: str | None = None, request_id: str | None = None, since_s: float | None = None,
        status: str | None = None, limit: int = 100,
    ) -> JSONResponse:  # fmt: skip
        if since_s is not None and not (math.isfinite(since_s) and 0 < since_s <= 100 * 365 * 86400):
            raise ClientError(422, "since_s", "must be a positive number of seconds, at most 100 years")
        rows = await self._off_loop(self.store.predictions.query, model_name=model, request_id=request_id,
                                    since_s=since_s, status=status, limit=_limit(limit))  # fmt: skip
        return JSONResponse({"predictions": rows})

    @api.get("/v1/metrics/models")
    async def model_metrics(self, window_s: float = 300.0, model: str | None = None) -> JSONResponse:
        if not (math.isfinite(window_s) and 0 < window_s <= 30 * 86400):
            raise ClientError(422, "window_s", "must be a number of seconds in (0, 30 days]")
        rows = await self._off_loop(self.store.predictions.window_stats, window_s=window_s, model_name=model)
        return JSONResponse({"window_s": window_s, "models": rows,
                             "replica": self.monitor.status() if self.monitor else None})  # fmt: skip

    @api.get("/v1/drift")
    async def drift(
        self, model: str | None = None, version: str | None = None, limit: int = 20, full: bool = False
    ) -> JSONResponse:
        rows = await self._off_loop(self.store.monitoring.drift, model_name=model, model_version=version,
                                    limit=_limit(limit), full=full)  # fmt: skip
        return JSONResponse({"reports": rows})

    @api.post("/v1/admin/drift/evaluate")
    async def evaluate_drift(self, request: Request) -> JSONResponse:
        """Run this replica's drift tests now instead of waiting for the schedule."""
        self._authorise(request)
        reports = await self._off_loop(self.monitor.evaluate_drift_now) if self.monitor else []
        return JSONResponse({"reports": [{k: r[k] for k in ("drift_share", "n_rows", "n_drifted", "n_tested")}
                                         for r in reports]})  # fmt: skip

    @api.get("/v1/alerts")
    async def alerts(
        self, source: str | None = None, subject: str | None = None, unacknowledged: bool = False,
        limit: int = 100,
    ) -> JSONResponse:  # fmt: skip
        rows = await self._off_loop(self.store.monitoring.alerts, source=source, subject=subject,
                                    unacknowledged=unacknowledged, limit=_limit(limit))  # fmt: skip
        return JSONResponse({"alerts": rows})

    @api.post("/v1/alerts/{alert_id}/ack")
    async def acknowledge(self, alert_id: str, request: Request) -> JSONResponse:
        self._authorise(request)
        _check_origin(request)
        body = await _json_body(request) if await request.body() else {}
        by = edge.validate_as(edge.AckRequest, body).by
        return JSONResponse(await self._off_loop(self.store.monitoring.acknowledge, alert_id, by))

    @api.websocket("/v1/ws/alerts")
    async def alert_stream(self, websocket: WebSocket) -> None:
        """New alerts as JSON messages, as they are stored (whichever process fired them)."""
        if not await _accept(websocket):
            return
        since = (await self._off_loop(self.store.monitoring.alerts, limit=1) or [{"ts": None}])[0]["ts"]
        try:
            while True:
                rows = await self._off_loop(self.store.monitoring.alerts, since=since, limit=100)
                for alert in reversed(rows):
                    await websocket.send_json(alert)
                    since = alert["ts"]
                await asyncio.sleep(0.5)
        except (WebSocketDisconnect, RuntimeError):
            return

    @api.get("/v1/resources")
    async def resources(self, node_id: str | None = None, limit: int = 100) -> JSONResponse:
        if node_id is None:
            return JSONResponse({"nodes": await self._off_loop(self.store.monitoring.latest_samples)})
        rows = await self._off_loop(self.store.monitoring.samples, node_id=node_id, limit=_limit(limit))
        return JSONResponse({"samples": rows})

    # -- experiments --------------------------------------------------------------------------------------
    @api.post("/v1/events", status_code=202, openapi_extra=_list_or_one(edge.EventItem, "events"))
    async def events(self, request: Request) -> JSONResponse:
        """Business events for experiments: one ``{experiment, user_id, event, value, ts?}`` or ``{"events": [...]}``."""
        from qmlops.experiments import ExperimentService

        body = await _json_body(request)
        items = body.get("events") if "events" in body else [body]
        if "events" in body and set(body) != {"events"}:
            raise ClientError(422, sorted(set(body) - {"events"})[0], "unknown field next to events")
        accepted = await self._off_loop(ExperimentService(self.store, self.settings).record_events, items)
        return JSONResponse(status_code=202, content={"accepted": accepted})

    @api.get("/v1/experiments")
    async def list_experiments(self, state: str | None = None) -> JSONResponse:
        return JSONResponse({"experiments": await self._off_loop(self.store.experiments.list, state=state)})

    @api.get("/v1/experiments/{experiment}/results")
    async def experiment_results(
        self, experiment: str, alpha: float = 0.05, ci: str = "analytic"
    ) -> JSONResponse:
        from qmlops.experiments import ExperimentService

        if not 0 < alpha < 1:
            raise ClientError(422, "alpha", "must lie in (0, 1)")
        from qmlops.ui import clean

        service = ExperimentService(self.store, self.settings)
        # a lift over a zero control mean is infinite: JSON has no inf/NaN, so those become null
        return JSONResponse(clean(await self._off_loop(service.results, experiment, alpha=alpha, ci=ci)))

    # -- the web page and the reads behind it -------------------------------------------------------------
    @api.get("/ui", include_in_schema=False)
    async def ui_page(self) -> Response:
        from qmlops.ui import static_file

        return Response(static_file("index.html"), media_type="text/html; charset=utf-8")

    @api.get("/ui/{name}", include_in_schema=False)
    async def ui_file(self, name: str) -> Response:
        from qmlops.ui import STATIC_TYPES, static_file

        if name not in STATIC_TYPES:
            raise ClientError(
                404, "name", f"no such page file; the page serves {', '.join(sorted(STATIC_TYPES))}"
            )
        return Response(static_file(name), media_type=STATIC_TYPES[name] + "; charset=utf-8",
                        headers={"Cache-Control": "no-cache"})  # fmt: skip

    @api.get("/v1/registry/models")
    async def registry_models(self) -> JSONResponse:
        """Every registered model: versions with lifecycle state, aliases and test metrics, and its history."""
        from qmlops.ui import models_view

        return JSONResponse(await self._off_loop(models_view, self.store))

    @api.get("/v1/catalogue")
    async def catalogue(self, dataset: str | None = None, feature_set: str = "alpha158") -> JSONResponse:
        """The model-type catalogue; with ``dataset``, the recommender's ranking for it (cached per materialization)."""
        from qmlops.ui import catalogue_view

        return JSONResponse(
            await self._off_loop(catalogue_view, self.store, dataset=dataset, feature_set=feature_set)
        )

    @api.get("/v1/runs")
    async def list_runs(
        self, kind: str | None = None, status: str | None = None, limit: int = 50
    ) -> JSONResponse:
        from qmlops.ui import runs_view

        return JSONResponse(
            await self._off_loop(runs_view, self.store, kind=kind, status=status, limit=_limit(limit))
        )

    @api.get("/v1/runs/{run_id}")
    async def get_run(self, run_id: str, after_step: int = -1) -> JSONResponse:
        if not -1 <= after_step <= 2**62:
            raise ClientError(422, "after_step", "must be a step number (-1 for all steps)")
        from qmlops.ui import run_view

        return JSONResponse(await self._off_loop(run_view, self.store, run_id, after_step=after_step))

    @api.get("/v1/runs/{run_id}/report", include_in_schema=False)
    async def run_report(self, run_id: str) -> Response:
        from qmlops.ui import report_html

        return Response(
            await self._off_loop(report_html, self.store, run_id), media_type="text/html; charset=utf-8"
        )

    @api.websocket("/v1/ws/runs/{run_id}")
    async def run_stream(self, websocket: WebSocket, run_id: str) -> None:
        """A run's progress as it happens: the run and its new steps whenever either changes, until it ends.

        The first message carries every step so far; later ones only the new steps. The socket closes after
        the message that shows the run finished or failed. An unknown run gets one error message and a close.
        """
        from qmlops.ui import run_view

        if not await _accept(websocket):
            return
        last_step, last_status, last_beat = -1, None, None
        try:
            while True:
                try:
                    view = await self._off_loop(run_view, self.store, run_id, after_step=last_step)
                except QmlopsError as exc:
                    await websocket.send_json({"error": {"field": exc.field, "reason": exc.message}})
                    await websocket.close(code=4404)
                    return
                run = view["run"]
                if view["metrics"] or run["status"] != last_status or run["heartbeat_at"] != last_beat:
                    await websocket.send_json(view)
                    if view["metrics"]:
                        last_step = view["metrics"][-1]["step"]
                    last_status, last_beat = run["status"], run["heartbeat_at"]
                if run["status"] != "running":
                    await websocket.close()
                    return
                await asyncio.sleep(0.5)
        except (WebSocketDisconnect, RuntimeError):
            return

    @api.get("/v1/rollouts")
    async def list_rollouts(self, limit: int = 20) -> JSONResponse:
        """Read-only: current weights, recent rollouts with events and gate results, health and performance checks."""
        from qmlops.ui import rollouts_view

        return JSONResponse(await self._off_loop(rollouts_view, self.store, limit=_limit(limit)))

    @api.get("/v1/loops")
    async def list_loops(self, name: str | None = None, days: int = 120) -> JSONResponse:
        """Read-only: the loops and one loop's per-day timeline (versions, oracle and online IC, drift, decisions)."""
        from qmlops.ui import loops_view

        if not 1 <= days <= 1000:
            raise ClientError(422, "days", "must be 1..1000")
        return JSONResponse(await self._off_loop(loops_view, self.store, name=name, days=days))

    @api.get("/v1/ui/traffic")
    async def ui_traffic(
        self, window_s: float = 3600.0, bucket_s: float = 60.0, model: str | None = None
    ) -> JSONResponse:
        """Per served version and time bucket: request rate, error rate, p50/p99 latency, online IC; rollout marks."""
        from qmlops.ui import traffic_view

        _window(window_s, bucket_s)
        return JSONResponse(await self._off_loop(traffic_view, self.store, window_s=window_s, bucket_s=bucket_s,
                                                 model=model))  # fmt: skip

    @api.get("/v1/ui/drift")
    async def ui_drift(
        self, model: str | None = None, version: str | None = None, top: int = 12
    ) -> JSONResponse:
        """A served version's drift reports over time as a PSI heatmap of its top features, with the threshold."""
        from qmlops.ui import drift_history_view

        if not 1 <= top <= 100:
            raise ClientError(422, "top", "must be 1..100")
        return JSONResponse(await self._off_loop(drift_history_view, self.store, model=model, version=version,
                                                 top=top))  # fmt: skip

    @api.get("/v1/ui/infrastructure")
    async def ui_infrastructure(self, window_s: float = 3600.0) -> JSONResponse:
        """Nodes and their resource series, the admission queue, deployments, health checks, performance tests."""
        from qmlops.ui import infrastructure_view

        _window(window_s)
        deployments = await self._off_loop(_deployments)
        return JSONResponse(await self._off_loop(infrastructure_view, self.store, window_s=window_s,
                                                 deployments=deployments, now=time.time()))  # fmt: skip

    @api.get("/v1/experiments/{experiment}/assignment")
    async def experiment_assignment(self, experiment: str, bucket_s: float = 60.0) -> JSONResponse:
        """Units assigned so far per variant over time."""
        from qmlops.ui import assignment_view

        if not (math.isfinite(bucket_s) and 1 <= bucket_s <= 86400):
            raise ClientError(422, "bucket_s", "must be a number of seconds in [1, 86400]")
        return JSONResponse(await self._off_loop(assignment_view, self.store, experiment, bucket_s=bucket_s))

    @api.get("/v1/jobs")
    async def list_jobs(self, limit: int = 100) -> JSONResponse:
        """The job queue with each job's state (``qmlops jobs submit`` puts jobs there)."""
        from qmlops.ui import jobs_view

        return JSONResponse(await self._off_loop(jobs_view, self.store, limit=_limit(limit)))
