"""The metadata actor's loopback endpoint: how a process outside Ray (the CLI) reaches the single writer.

On a cluster the DuckDB file is locked by the metadata actor, so a CLI process cannot open it, and connecting a
Ray driver just to ask the actor costs seconds. The actor therefore also serves its repositories over HTTP on
``127.0.0.1`` (a random port) and writes the address with a fresh token into ``QMLOPS_HOME/run/`` (directory
0700, file 0600). A client on the same machine that can read the home reads the file and posts calls there; only
the token's holder is answered, and the request body is read only after the token matched. Calls and results
travel pickled (the repositories return dataclasses and Arrow tables), the same objects Ray would carry.

Cost: one more thread in the actor, and the endpoint reaches only clients on the head node (where the file is).
"""

from __future__ import annotations

import hmac
import http.client
import json
import os
import pickle
import secrets
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

from qmlops.exceptions import UnavailableError

if TYPE_CHECKING:
    from qmlops.metadata._admin import AdminRepository
    from qmlops.metadata._datasets import DatasetRepository
    from qmlops.metadata._experiments import ExperimentRepository
    from qmlops.metadata._features import FeatureRepository
    from qmlops.metadata._lineage import LineageRepository
    from qmlops.metadata._models import ModelRepository
    from qmlops.metadata._monitoring import MonitoringRepository
    from qmlops.metadata._predictions import PredictionRepository
    from qmlops.metadata._runs import RunRepository
    from qmlops.metadata._serving import ServingRepository

__all__ = ["ENDPOINT_FILE", "EndpointServer", "HttpMetadataStore", "endpoint_file", "read_endpoint"]

ENDPOINT_FILE = "metadata-endpoint.json"
_CALL_TIMEOUT_S = 300.0


def endpoint_file(home: str) -> Path:
    return Path(home) / "run" / ENDPOINT_FILE


class EndpointServer:
    """Serves ``dispatch(repo, method, args, kwargs) -> (status, value)`` on 127.0.0.1 in a daemon thread."""

    def __init__(self, dispatch: Any, describe: Any, home: str) -> None:
        self.token = secrets.token_urlsafe(32)
        self.home = home
        token = self.token.encode()

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, format: str, *args: Any) -> None:  # quiet: the actor's log is for events
                return

            def _authorised(self) -> bool:
                given = self.headers.get("Authorization", "").removeprefix("Bearer ").encode()
                if hmac.compare_digest(given, token):
                    return True
                self._reply(401, b"unauthorised", "text/plain")
                return False

            def _reply(self, status: int, body: bytes, kind: str) -> None:
                self.send_response(status)
                self.send_header("Content-Type", kind)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def do_GET(self) -> None:
                if self._authorised():
                    self._reply(200, json.dumps(describe(), default=str).encode(), "application/json")

            def do_POST(self) -> None:
                if not self._authorised():
                    return
                length = int(self.headers.get("Content-Length", "0"))
                repo, method, args, kwargs = pickle.loads(self.rfile.read(length))
                self._reply(
                    200, pickle.dumps(dispatch(repo, method, args, kwargs)), "application/octet-stream"
                )

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self.port = int(self._server.server_address[1])
        self._thread = threading.Thread(
            target=self._server.serve_forever, name="qmlops-metadata-http", daemon=True
        )
        self._thread.start()
        self._write_file(describe())

    def _write_file(self, description: dict[str, Any]) -> None:
        path = endpoint_file(self.home)
        path.parent.mkdir(parents=True, exist_ok=True)
        os.chmod(path.parent, 0o700)
        tmp = path.with_suffix(f".{os.getpid()}.tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as fh:
            json.dump({"url": f"http://127.0.0.1:{self.port}", "token": self.token, "pid": os.getpid(),
                       "metadata_path": description.get("path")}, fh)  # fmt: skip
        os.replace(tmp, path)

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        path = endpoint_file(self.home)
        try:
            if json.loads(path.read_text()).get("token") == self.token:
                path.unlink()
        except (OSError, ValueError):
            pass


def read_endpoint(home: str) -> dict[str, Any] | None:
    """The endpoint description a metadata actor left in ``home`` (``None`` when there is none)."""
    try:
        return cast(dict[str, Any], json.loads(endpoint_file(home).read_text()))
    except (OSError, ValueError):
        return None


class _Client:
    def __init__(self, url: str, token: str, home: str | None = None) -> None:
        self.home = home
        self._use(url, token)

    def _use(self, url: str, token: str) -> None:
        host, _, port = url.removeprefix("http://").partition(":")
        self.host, self.port, self.token = host, int(port), token

    def _moved(self) -> bool:
        """Whether the actor restarted (a new address in the endpoint file); follow it if so."""
        info = read_endpoint(self.home) if self.home else None
        if not info or (info.get("url"), info.get("token")) == (
            f"http://{self.host}:{self.port}",
            self.token,
        ):
            return False
        self._use(str(info["url"]), str(info["token"]))
        return True

    def request(self, verb: str, body: bytes | None, *, timeout: float) -> bytes:
        con = http.client.HTTPConnection(self.host, self.port, timeout=timeout)
        try:
            con.request(verb, "/", body=body, headers={"Authorization": f"Bearer {self.token}"})
            resp = con.getresponse()
            data = resp.read()
        except OSError as exc:
            raise UnavailableError(
                f"the metadata actor at {self.host}:{self.port} does not answer ({exc}); it restarts on its own "
                "after a crash, so retry in a few seconds, or check the cluster with `ray status`",
                field="metadata",
            ) from None
        finally:
            con.close()
        if resp.status != 200:
            raise UnavailableError(
                f"the metadata endpoint refused the call (HTTP {resp.status}); the endpoint file in "
                "QMLOPS_HOME/run is stale or not this home's, retry once the metadata actor has restarted",
                field="metadata",
            )
        return data

    def call(self, repo: str, method: str, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        body = pickle.dumps((repo, method, args, kwargs))
        try:
            raw = self.request("POST", body, timeout=_CALL_TIMEOUT_S)
        except UnavailableError:
            if not self._moved():
                raise
            raw = self.request("POST", body, timeout=_CALL_TIMEOUT_S)
        status, value = pickle.loads(raw)
        if status == "err":
            raise value
        return value

    def describe(self, *, timeout: float) -> dict[str, Any]:
        return cast(dict[str, Any], json.loads(self.request("GET", None, timeout=timeout)))


class _HttpRepository:
    def __init__(self, client: _Client, name: str) -> None:
        self._client = client
        self._name = name

    def __getattr__(self, method: str) -> Any:
        if method.startswith("_"):
            raise AttributeError(method)

        def call(*args: Any, **kwargs: Any) -> Any:
            return self._client.call(self._name, method, args, kwargs)

        call.__name__ = method
        return call


class HttpMetadataStore:
    """The metadata store's interface over the actor's loopback endpoint (see the module docstring)."""

    datasets: DatasetRepository
    lineage: LineageRepository
    predictions: PredictionRepository
    features: FeatureRepository
    models: ModelRepository
    runs: RunRepository
    serving: ServingRepository
    monitoring: MonitoringRepository
    experiments: ExperimentRepository
    admin: AdminRepository

    def __init__(
        self, url: str, token: str, repositories: list[str], *, home: str | None = None, timeout: float = 2.0
    ) -> None:
        self._client = _Client(url, token, home)
        self.url = url
        info = self._client.describe(timeout=timeout)
        self.path = str(info["path"])
        for attr in repositories:
            setattr(self, attr, _HttpRepository(self._client, attr))

    @property
    def is_remote(self) -> bool:
        return True

    def schema_version(self) -> int:
        return int(self._client.describe(timeout=_CALL_TIMEOUT_S)["schema_version"])

    def close(self) -> None:
        return None
