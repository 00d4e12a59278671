"""One real Serve application for the serving tests: gateway + model server on 127.0.0.1, real registry models.

Module-wide: a QMLOPS_HOME served by its own metadata actor, a 40-instrument S&P 500 slice with Alpha158, two
LightGBM versions of ``alpha`` (different parameters, so their predictions differ) and a linear model ``lin``.
"""

from __future__ import annotations

import socket
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

from qmlops.serving._traffic import Traffic

__all__ = ["Served", "Traffic", "free_port"]  # Traffic: background clients for rollouts under load


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Served:
    url: str
    home: Path
    versions: dict[str, Any]
    instruments: list[str]
    test_day: str
    client: httpx.Client = field(repr=False)


@pytest.fixture(scope="package")
def served(ray_cluster: object, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    from qmlops.data import ingest, load_dataset
    from qmlops.features import materialize
    from qmlops.metadata import shutdown_remote
    from qmlops.serving import ServeOptions, ServeService
    from qmlops.training import TrainConfig, train

    home = tmp_path_factory.mktemp("serve-home")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("QMLOPS_HOME", str(home))
        mp.setenv("QMLOPS_METADATA_MODE", "ray")
        mp.setenv("QMLOPS_METADATA_ACTOR", f"qmlops-metadata-serve-{uuid.uuid4().hex[:8]}")
        mp.setenv("QMLOPS_ADMIN_TOKEN", "s3cret-token")
        frame = load_dataset(ingest("sp500").record.id)
        names = sorted(frame["instrument"].unique())[::12][:40]
        csv = home / "sub.csv"
        frame[frame["instrument"].isin(names)].rename(columns={"date": "Date", "instrument": "Symbol"})[
            ["Date", "Symbol", "open", "high", "low", "close", "volume"]
        ].to_csv(csv, index=False)
        ingest(str(csv), name="sub")
        materialize("sub", "alpha158", engine="local")
        light = {"lambda_l1": 1.0, "lambda_l2": 1.0, "num_leaves": 15}
        r1 = train(TrainConfig("lightgbm", dataset="sub", params=light, register_as="alpha", report=False))
        r2 = train(TrainConfig("lightgbm", dataset="sub", params={**light, "learning_rate": 0.05, "num_leaves": 7},
                               register_as="alpha", report=False))  # fmt: skip
        r3 = train(TrainConfig("linear", dataset="sub", register_as="lin", report=False))
        port = free_port()
        service = ServeService()
        service.start(ServeOptions(port=port, max_ongoing_requests=64))
        service.deploy_model("alpha", 1)
        service.deploy_model("lin", 1)
        client = httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=60.0)
        deadline = time.time() + 60
        while client.get("/readyz").status_code != 200 and time.time() < deadline:
            time.sleep(0.2)
        yield Served(f"http://127.0.0.1:{port}", home, {"alpha1": r1.model_version, "alpha2": r2.model_version,
                     "lin1": r3.model_version}, [n.upper() for n in names], r1.segments["test"][0], client)  # fmt: skip
        client.close()
        from ray import serve

        serve.shutdown()
        shutdown_remote()
