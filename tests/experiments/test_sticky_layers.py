"""A running experiment's users stay in it when another experiment of its layer stops or starts: its bucket
ranges are fixed when it starts (measured before over 100,000 ids: only 40% stayed when a [0.3, 0.5] layer
became [0.5])."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

UNITS = [f"user-{i}" for i in range(100_000)]


def _members(store: object) -> dict[str, set[str]]:
    from qmlops.experiments import ExperimentRouter, gateway_experiments

    router = ExperimentRouter(gateway_experiments(store))
    out: dict[str, set[str]] = {}
    for unit in UNITS:
        hit = router.route("m", unit, None)
        if hit is not None:
            out.setdefault(hit[0]["name"], set()).add(unit)
    return out


def test_stopping_or_starting_a_neighbour_never_moves_a_running_experiments_users(tmp_home: Path) -> None:
    from sklearn.linear_model import Ridge

    from qmlops.experiments import ExperimentService
    from qmlops.metadata import get_store
    from qmlops.registry import ModelRegistry

    store = get_store()
    x = pd.DataFrame(np.random.default_rng(0).normal(size=(50, 2)), columns=["a", "b"])
    registry = ModelRegistry(store)
    for alpha in (1.0, 2.0):
        registry.register("m", Ridge(alpha=alpha).fit(x, x["a"]), signature=x)
    service = ExperimentService(store=store)
    variants = [{"name": "control", "version": 1}, {"name": "treatment", "version": 2}]
    metrics = [{"name": "clicks", "kind": "proportion", "event": "click"}]
    for name, traffic in (("first", 0.3), ("second", 0.5), ("third", 0.4)):
        service.create(name, "m", variants, metrics=metrics, layer="L", traffic=traffic)
    service.start("first")
    service.start("second")
    before = _members(store)
    assert abs(len(before["first"]) - 30_000) < 1_000 and abs(len(before["second"]) - 50_000) < 1_000

    service.stop("first")
    after = _members(store)
    assert after["second"] == before["second"]  # all of its users stayed, nobody came from the stopped one
    assert "first" not in after

    service.start("third")  # takes free buckets only (the stopped one's and the never-used ones)
    later = _members(store)
    assert later["second"] == before["second"]
    assert abs(len(later["third"]) - 40_000) < 1_000 and not later["third"] & later["second"]
