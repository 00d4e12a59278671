"""What is routed and what the registry says agree on the page: a version serving 100% after a direct deploy
(state still ``registered``) is shown live, with why its state differs."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd


def test_models_view_shows_which_version_is_live_and_why(tmp_home: Path) -> None:
    from sklearn.linear_model import Ridge

    from qmlops.metadata import get_store
    from qmlops.registry import ModelRegistry
    from qmlops.serving import RoutingTable
    from qmlops.ui import models_view

    store = get_store()
    x = pd.DataFrame(np.random.default_rng(1).normal(size=(40, 2)), columns=["a", "b"])
    registry = ModelRegistry(store)
    v1 = registry.register("live-m", Ridge().fit(x, x["a"]), signature=x)
    v2 = registry.register("live-m", Ridge(alpha=3).fit(x, x["a"]), signature=x)
    store.serving.put_table(RoutingTable.single("live-m", v1.id, 1).to_dict())
    (model,) = models_view(store)["models"]
    by_version = {v["version"]: v for v in model["versions"]}
    assert by_version[1]["state"] == "registered" and by_version[1]["serving"]["weight"] == 100.0
    assert "live: 100% of stable traffic" in by_version[1]["serving_note"]
    assert by_version[2]["serving"] is None and "serving_note" not in by_version[2]
    assert v2.version == 2
