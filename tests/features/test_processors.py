"""Our processors against Qlib's own processor classes on the same real feature frame."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from qmlops.data import Sp500Source, resolve_source
from qmlops.data._versions import _canonical
from qmlops.features import (
    CSRankNorm,
    DropnaLabel,
    Fillna,
    RobustZScoreNorm,
    apply_processors,
    compute_alpha158,
    compute_alpha158_label,
    default_processors,
)


@pytest.fixture(scope="module")
def frame() -> pd.DataFrame:
    raw, _, _ = _canonical(resolve_source(Sp500Source.name), "fail")
    raw = raw[raw["instrument"].isin(sorted(raw["instrument"].unique())[:40])]
    feats, label = compute_alpha158(raw), compute_alpha158_label(raw)
    out = pd.concat({"feature": feats, "label": label}, axis=1)
    return out


def test_robust_zscore_and_fillna_match_qlib(frame: pd.DataFrame) -> None:
    from qlib.data.dataset import processor as qp

    fit = ("2009-08-21", "2010-03-31")
    ours = Fillna()(RobustZScoreNorm(*fit).fit(frame)(frame))
    q_norm = qp.RobustZScoreNorm(fit_start_time=fit[0], fit_end_time=fit[1], fields_group="feature")
    theirs = frame.copy()
    q_norm.fit(theirs)
    theirs = q_norm(theirs)
    theirs = qp.Fillna(fields_group="feature")(theirs)
    np.testing.assert_allclose(ours["feature"].to_numpy(np.float64), theirs["feature"].to_numpy(np.float64),
                               rtol=1e-5, atol=1e-5)  # fmt: skip
    assert not ours["feature"].isna().any().any()
    assert ours["feature"].abs().max().max() <= 3.0


def test_label_processors_match_qlib(frame: pd.DataFrame) -> None:
    from qlib.data.dataset import processor as qp

    ours = CSRankNorm()(DropnaLabel()(frame))
    theirs = qp.CSRankNorm(fields_group="label")(qp.DropnaLabel()(frame.copy()))
    assert ours.index.equals(theirs.index) and len(ours) < len(frame)
    np.testing.assert_allclose(ours["label"].to_numpy(np.float64), theirs["label"].to_numpy(np.float64))


def test_apply_processors_skips_learn_only_steps_for_inference(frame: pd.DataFrame) -> None:
    procs = default_processors("2009-08-21", "2010-03-31")
    learn = apply_processors(frame, procs, for_learning=True)
    infer = apply_processors(frame, procs, for_learning=False)
    assert len(infer) == len(frame) and len(learn) == frame["label"].notna().all(axis=1).sum()
    # the same fitted normaliser served both
    common = learn.index
    np.testing.assert_allclose(
        learn.loc[common, "feature"].to_numpy(), infer.loc[common, "feature"].to_numpy()
    )
