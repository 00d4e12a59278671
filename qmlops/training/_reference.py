"""The quality bar: Qlib's own LGBModel on Qlib's own Alpha158 handler, over the same data and segments.

The dataset version is written in Qlib's binary format (``export_qlib``), Qlib is pointed at it, and the standard
Qlib workflow runs: ``Alpha158`` handler (its default processors: raw features, ``DropnaLabel`` and a per-day
``CSZScoreNorm`` of the label for learning), ``DatasetH`` with the given segments, ``LGBModel`` with the given
parameters and its own ``lgb.early_stopping``. Predictions on the test segment are scored against the raw label
with the same evaluation as the engine's runs.
"""

from __future__ import annotations

import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pandas as pd

from qmlops.training._evaluate import Evaluation, evaluate_predictions

__all__ = ["qlib_lgb_reference"]


def qlib_lgb_reference(
    dataset: str,
    segments: Mapping[str, tuple[str, str]],
    params: Mapping[str, Any],
    *,
    instruments: list[str] | None = None,
    work_dir: str | None = None,
    topk: int = 20,
    store: Any = None,
) -> tuple[Evaluation, pd.Series]:
    """(test evaluation, test predictions) of Qlib's LGBModel on Qlib's Alpha158 over ``dataset``."""
    import qlib
    from qlib.config import C
    from qlib.contrib.data.handler import Alpha158
    from qlib.contrib.model.gbdt import LGBModel
    from qlib.data.dataset import DatasetH
    from qlib.workflow import R

    from qmlops.data import export_qlib, load_dataset
    from qmlops.training._compat import _state, ensure_qlib_initialised

    frame = load_dataset(dataset, store=store)
    if instruments:
        frame = frame[frame["instrument"].isin({i.upper() for i in instruments})]
    work = Path(work_dir or tempfile.mkdtemp(prefix="qmlops-qlib-ref-"))
    provider = export_qlib(frame, work / "qlib")
    ensure_qlib_initialised()  # our recorder set-up (temporary mlflow store) first, then repoint the provider
    mlruns = Path(_state["tmp"] or tempfile.mkdtemp(prefix="qmlops-qlib-")) / "mlruns"
    qlib.init(provider_uri=str(provider), region="us", kernels=1, logging_level="WARNING",
              exp_manager={"class": "MLflowExpManager", "module_path": "qlib.workflow.expm",
                           "kwargs": {"uri": "file:" + str(mlruns),
                                      "default_exp_name": "qmlops"}})  # fmt: skip
    assert C.registered
    try:  # created directly, so Qlib never takes its lock at a path relative to the working directory
        R.exp_manager.create_exp("qmlops")
    except Exception:  # exists already
        pass
    start = frame["date"].min().strftime("%Y-%m-%d")
    end = frame["date"].max().strftime("%Y-%m-%d")
    handler = Alpha158(instruments="all", start_time=start, end_time=end, fit_start_time=segments["train"][0],
                       fit_end_time=segments["train"][1])  # fmt: skip
    ds = DatasetH(handler, segments={k: tuple(v) for k, v in segments.items()})
    model_params = dict(params)
    model = LGBModel(
        loss=model_params.pop("loss", "mse"),
        early_stopping_rounds=model_params.pop("early_stopping_rounds", 50),
        num_boost_round=model_params.pop("num_boost_round", 1000),
        **model_params,
    )
    import uuid

    with R.start(experiment_name="qmlops", recorder_name=uuid.uuid4().hex):
        model.fit(ds, verbose_eval=0)
    pred = model.predict(ds, segment="test").astype("float64")
    label = ds.prepare("test", col_set="label", data_key="raw").iloc[:, 0]
    return evaluate_predictions(pred, label, k=topk), pred
