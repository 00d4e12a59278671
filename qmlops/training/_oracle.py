"""A model's test IC next to the oracle's on the same days: how much of the knowable signal it captured.

On a planted market (:mod:`qmlops.data._planted`) the oracle score is the planted signal itself, the best
prediction there is in expectation. ``compare_to_oracle`` measures the oracle with the same daily IC definition
as the model (:func:`daily_ic`) on exactly the (date, instrument) rows the model was evaluated on, so
``share = model IC / oracle IC`` is 1 for a perfect model and about 0 for one that learned nothing.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
import pandas as pd

from qmlops.exceptions import ValidationError
from qmlops.training._evaluate import Evaluation, daily_ic

__all__ = ["OracleComparison", "compare_to_oracle"]


@dataclass(frozen=True)
class OracleComparison:
    model_ic: float
    model_rank_ic: float
    oracle_ic: float
    oracle_rank_ic: float
    share: float  # model_ic / oracle_ic (nan when the oracle IC is not positive)
    rank_share: float
    n_days: int

    def to_dict(self) -> dict[str, float | int]:
        return asdict(self)


def compare_to_oracle(pred: pd.Series, evaluation: Evaluation, oracle: pd.DataFrame) -> OracleComparison:
    """The oracle's IC / Rank IC on the rows of ``pred`` ((datetime, instrument) index) next to ``evaluation``'s.

    ``oracle`` has columns date, instrument, score, label (``qmlops.data.load_oracle``). Raises
    :class:`ValidationError` when the oracle covers none of the predicted rows.
    """
    frame = oracle.assign(instrument=oracle["instrument"].astype(str)).set_index(["date", "instrument"])
    frame.index = frame.index.set_names(["datetime", "instrument"])
    keys = pd.MultiIndex.from_arrays(
        [pd.DatetimeIndex(pred.index.get_level_values("datetime")).astype("datetime64[ns]"),
         pred.index.get_level_values("instrument").astype(str)],
        names=["datetime", "instrument"],
    )  # fmt: skip
    rows = frame.reindex(keys)
    rows = rows[np.isfinite(rows["score"]) & np.isfinite(rows["label"])]
    if rows.empty:
        raise ValidationError("the oracle covers none of the predicted rows", field="oracle")
    ic = daily_ic(rows["score"], rows["label"], method="pearson")
    ric = daily_ic(rows["score"], rows["label"], method="spearman")
    oracle_ic, oracle_ric = float(ic.mean()), float(ric.mean())

    def share(model: float, best: float) -> float:
        return model / best if best > 0 else float("nan")

    return OracleComparison(
        model_ic=evaluation.ic,
        model_rank_ic=evaluation.rank_ic,
        oracle_ic=oracle_ic,
        oracle_rank_ic=oracle_ric,
        share=share(evaluation.ic, oracle_ic),
        rank_share=share(evaluation.rank_ic, oracle_ric),
        n_days=len(ic),
    )
