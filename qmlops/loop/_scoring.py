"""Scoring a day's universe with several model versions: in this process, or as Ray Data batch inference.

The Ray path is ``map_batches`` over a callable class that builds each version's predictor once per actor from
the checksummed artifact bytes handed to it (workers never open the metadata store).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from qmlops.registry import Predictor, Signature, get_flavor

__all__ = ["ModelBlob", "score_local", "score_ray"]

ModelBlob = tuple[str, dict[str, Any], str, bytes]  # (model version id, signature, flavor, artifact bytes)


def _predictor(blob: ModelBlob) -> Predictor:
    model_id, signature, flavor, data = blob
    sig = Signature.from_dict(signature)
    return Predictor(sig, get_flavor(flavor).load(data, sig), flavor, model_id)


class _Scorer:
    """Ray Data UDF: predictors built once when the actor starts, every batch scored by every version."""

    def __init__(self, blobs: list[ModelBlob]) -> None:
        self.predictors = [_predictor(b) for b in blobs]

    def __call__(self, batch: pd.DataFrame) -> pd.DataFrame:
        out = {"instrument": batch["instrument"].astype(str).to_numpy()}
        for p in self.predictors:
            out[str(p.model_id)] = p.predict(batch)
        return pd.DataFrame(out)


def score_local(features: pd.DataFrame, predictors: dict[str, Predictor]) -> dict[str, np.ndarray]:
    """version id -> scores, in the order of ``features``' rows."""
    return {model_id: p.predict(features) for model_id, p in predictors.items()}


def score_ray(features: pd.DataFrame, blobs: list[ModelBlob]) -> dict[str, np.ndarray]:
    """The same as :func:`score_local`, as a Ray Data pipeline with one scoring actor."""
    import ray.data

    from qmlops.features._engine import configure_ray_data

    configure_ray_data()
    frame = features.reset_index()
    frame["instrument"] = frame["instrument"].astype(str)
    frame = frame.drop(columns=["datetime"])
    ds = ray.data.from_pandas(frame)
    scored = ds.map_batches(_Scorer, fn_constructor_kwargs={"blobs": blobs}, concurrency=1, batch_size=None,
                            batch_format="pandas", num_cpus=1).to_pandas()  # fmt: skip
    scored = scored.set_index("instrument").reindex(frame["instrument"])
    return {b[0]: scored[b[0]].to_numpy(dtype=np.float64) for b in blobs}
