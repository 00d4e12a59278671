"""Thin, explicit fixes that let Qlib 0.9.7's torch model zoo run on torch 2.13 / pandas 3 / numpy 2 / mlflow 3.17.

Every fix below was found by training each model in ``qlib.contrib.model`` for one epoch on the S&P 500 data and
has a test in ``tests/training/test_compat.py`` that shows the raw Qlib call failing and the fixed call working.
Nothing here edits site-packages; fixes are parameters, small subclasses, or (two cases) targeted,
version-guarded patches.

Breakages (symptom -> cause -> fix). 1 and 3 come from the newer torch/mlflow; the others are Qlib 0.9.7 bugs or
unstated contracts that any stack hits outside Qlib's own benchmark configs. pandas 3 / numpy 2 broke nothing on
these paths (Qlib's ``DataFrame.drop(inplace=True)`` warns ``Pandas4Warning``: a pandas 4 breakage to come).

1. ``DNNModelPytorch()`` raises ``TypeError: ReduceLROnPlateau.__init__() got an unexpected keyword argument
   'verbose'`` -> Qlib compares torch versions as strings ("2.13.0" <= "2.6.0" is true) and passes ``verbose=``,
   which torch 2.7 removed -> :class:`DNNModelPytorch` passes the same scheduler as a ``functools.partial`` of
   ``ReduceLROnPlateau`` without ``verbose`` (parameter-level).
2. ``DNNModelPytorch.fit`` raises ``ModuleNotFoundError: No module named 'ipdb'`` (or opens a debugger when ipdb
   is installed) -> its validation metric ``ICLoss`` skips days with fewer than 50 instruments and calls
   ``ipdb.set_trace()`` when every day was skipped -> :class:`DNNModelPytorch` overrides ``get_metric`` with the
   mean daily Pearson IC over days with at least two names (:func:`mean_daily_ic`).
3. Any Qlib call that logs (``R.log_metrics`` in DNN, ``R.get_recorder`` in GRU) raises ``MlflowException: The
   filesystem tracking backend ... is in maintenance mode`` -> mlflow 3.17 refuses the file store Qlib's default
   ``exp_manager`` uses -> :func:`ensure_qlib_initialised` sets ``MLFLOW_ALLOW_FILE_STORE=true`` (if unset) and
   points Qlib's recorder at a per-process temporary file store (Qlib's recorder is a sink qmlops never reads).
4. ``GRU.fit`` raises ``ValueError: No valid experiment (or recorder) has been found`` -> it calls
   ``R.get_recorder()``, which (unlike ``R.log_metrics``) needs an active recorder -> :func:`qlib_fit_context`
   runs ``fit`` inside ``R.start(...)``.
5. Starting a recorder shells out to ``git diff``/``git status`` in the working directory: hundreds of lines of
   git usage text on stderr outside a repository (every Ray worker), and a copy of the repository's uncommitted
   diff inside a repository -> ``MLflowRecorder._log_uncommitted_code`` is replaced by a no-op (targeted patch,
   only for Qlib <= 0.9.7, applied by :func:`apply_compat`).
6. ``fit(save_path=None)`` leaves a checkpoint file in ``~/tmp`` per fit, and TabNet a pretrain file, never
   removed -> :func:`qlib_fit_context` gives ``fit`` a ``save_path`` inside a temporary directory.
7. ``predict(dataset)`` of the ``*_ts`` models and ``GeneralPTNN`` has no ``segment`` argument (always "test"),
   so validation predictions (per-epoch IC, evaluation) are impossible -> the ``*TS``/``GeneralPTNN`` subclasses
   take ``predict(dataset, segment="test")`` and read ``segment`` through a :func:`segment_view` of the dataset.
8. ``pytorch_tcn_ts.TCN.predict`` raises ``RuntimeError: ... expected input[N, T, F] to have F channels`` (and is
   silently wrong when ``step_len == d_feat``) -> it forgets the [N, T, F] -> [N, F, T] transpose its own
   ``train_epoch`` does -> :class:`TCNTS` overrides ``predict`` with the transpose.
9. ``GATs.fit`` and ``IGMTF.fit`` raise ``RuntimeError: Error(s) in loading state_dict ... size mismatch`` for
   any size but d_feat=6/hidden_size=64 -> they build a default-sized ``GRUModel()``/``LSTMModel()`` as the
   "pretrained" base even when ``model_path`` is None and copy its weights -> :class:`GATs` / :class:`IGMTF`
   rebind those names (for the duration of their own ``fit``, under a lock, Qlib <= 0.9.7 only) to a factory that
   builds the base at the model's own size, or an empty module when there is no ``model_path``.
10. NaN features make every score NaN, so Qlib's "best epoch" is never set and ``fit`` ends with
    ``UnboundLocalError: ... 'best_param'`` -> :func:`build_qlib_dataset` refuses non-finite features with a
    ``ValidationError`` naming the column, and drops unlabelled rows from the learn data (``DropnaLabel``).
11. The ``*_ts`` models default to ``n_jobs=10`` DataLoader worker processes per loader; on a 2-core machine and
    inside Ray workers that is slower and forks torch -> ``create_model`` defaults ``n_jobs=0`` (parameter).
12. ``IGMTF.fit`` raises ``ValueError: unknown metric ``''`` with its default ``metric=""`` -> its ``metric_fn``
    tests ``self.metric == ("", "loss")`` instead of ``in`` -> :class:`IGMTF` overrides ``metric_fn``.
13. ``TabnetModel.fit`` (default ``pretrain=True``) raises ``DateParseError: ... pretrain`` -> pre-training
    prepares segments named "pretrain" and "pretrain_validation" that ordinary datasets lack, and
    ``pretrain_file=None`` leaves a file in ``~/tmp`` -> :class:`TabnetModel` pre-trains on "train"/"valid"
    through a :func:`segment_view` when those segments are absent, with its checkpoint in a temporary directory.
14. Creating an experiment in a ``file:`` store takes a lock at ``uri.path.lstrip("/") + "/filelock"``, a path
    relative to the working directory, so Qlib leaves ``./tmp/.../mlruns/filelock`` in the repository ->
    :func:`ensure_qlib_initialised` creates the "qmlops" experiment directly (no lock) so the locked
    get-or-create path never runs.
15. Two ``IGMTF.predict`` calls of the same model can differ (seen on 29 of 1,646 test rows) -> its
    ``get_train_hidden`` shuffles the training days with numpy's global RNG and the neighbour search breaks ties
    by position -> :class:`IGMTF` runs it under a fixed seed (and restores the global RNG). Shown by the IGMTF
    case of ``tests/training/test_nn_models.py`` (restored best-epoch predictions must equal that epoch's).
"""

from __future__ import annotations

import atexit
import contextlib
import functools
import importlib
import os
import shutil
import tempfile
import threading
import uuid
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import qlib
import torch
from packaging.version import Version
from qlib.contrib.model import (
    pytorch_alstm_ts,
    pytorch_gats,
    pytorch_gats_ts,
    pytorch_general_nn,
    pytorch_gru_ts,
    pytorch_igmtf,
    pytorch_localformer_ts,
    pytorch_lstm_ts,
    pytorch_nn,
    pytorch_tabnet,
    pytorch_tcn_ts,
    pytorch_transformer_ts,
)
from qlib.data.dataset import DatasetH, TSDatasetH
from qlib.data.dataset.handler import DataHandlerLP
from qlib.data.dataset.loader import StaticDataLoader
from torch.utils.data import DataLoader

from qmlops.exceptions import ValidationError

QLIB_VERSION = Version(qlib.__version__)
_QLIB_NEEDS_PATCHES = QLIB_VERSION <= Version("0.9.7")
_lock = threading.Lock()
_base_model_lock = threading.RLock()  # held while a GATs/IGMTF fit runs with the names rebound (fix 9)
_state: dict[str, Any] = {"initialised": False, "patched": False, "tmp": None}

__all__ = [
    "apply_compat",
    "build_qlib_dataset",
    "compat_model_class",
    "ensure_qlib_initialised",
    "mean_daily_ic",
    "predict_segment",
    "qlib_fit_context",
    "segment_view",
]


# ---------------------------------------------------------------------------------------------- process setup
def _sweep_stale_qlib_dirs() -> int:
    """Remove the Qlib scratch directories of processes that are gone.

    A Ray worker ends without running ``atexit`` handlers, so each one left its ``qmlops-qlib-<pid>-*``
    directory behind; the next initialisation on the machine removes those whose process no longer exists.
    """
    removed = 0
    for path in Path(tempfile.gettempdir()).glob("qmlops-qlib-*-*"):
        pid = path.name.split("-")[2]
        if not pid.isdigit() or int(pid) == os.getpid():
            continue
        try:
            os.kill(int(pid), 0)
            continue  # alive (or not ours to signal): keep
        except ProcessLookupError:
            pass
        except PermissionError:
            continue
        shutil.rmtree(path, ignore_errors=True)
        removed += 1
    return removed


def ensure_qlib_initialised(provider_uri: str | None = None) -> None:
    """Initialise Qlib once per process for models fed by a static frame (no Qlib-format market data needed).

    Measured: ``DatasetH``/``TSDatasetH`` over a ``StaticDataLoader`` work without ``qlib.init`` at all; the
    models need it only for Qlib's recorder ``R`` ("Please run qlib.init() first"). So the provider is an empty
    temporary directory nobody reads, and the recorder writes to a per-process temporary mlflow file store
    removed at exit (fix 3). If Qlib was already initialised elsewhere, its configuration is kept (only the
    mlflow opt-in is set, so its file store is usable). ``provider_uri`` points at real Qlib-format data for
    callers that need it (e.g. Qlib's own Alpha158 handler as a reference); it only matters on the first call.
    """
    from qlib.config import C

    with _lock:
        os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")
        if _state["initialised"] or C.registered:
            _state["initialised"] = True
            return
        _sweep_stale_qlib_dirs()
        tmp = tempfile.mkdtemp(prefix=f"qmlops-qlib-{os.getpid()}-")
        # Registered before qlib.init so it runs after Qlib's own exit handler (atexit is last-in, first-out).
        atexit.register(shutil.rmtree, tmp, True)
        if provider_uri is None:
            provider_uri = os.path.join(tmp, "provider")
            os.makedirs(provider_uri, exist_ok=True)
        qlib.init(
            provider_uri=provider_uri,
            region="us",
            kernels=1,
            logging_level="WARNING",
            exp_manager={
                "class": "MLflowExpManager",
                "module_path": "qlib.workflow.expm",
                "kwargs": {"uri": "file:" + os.path.join(tmp, "mlruns"), "default_exp_name": "qmlops"},
            },
        )
        from qlib.workflow import R

        R.exp_manager.create_exp("qmlops")  # fix 14: created here, Qlib never takes its mis-pathed lock
        _state.update(initialised=True, tmp=tmp)


def apply_compat() -> None:
    """Initialise Qlib and apply the version-guarded patches (fix 5). Idempotent.

    Also silences two warnings that repeat on every step and say nothing actionable to a qmlops user: Qlib's
    DNN calls ``scheduler.step(epoch)`` (deprecated positional epoch; same behaviour), and pandas 3 flags
    Qlib's ``mode.chained_assignment`` option (no effect since pandas 3).
    """
    import warnings

    warnings.filterwarnings(
        "ignore", message=r"The epoch parameter in `scheduler.step\(\)`", category=UserWarning
    )
    warnings.filterwarnings("ignore", message=r"The 'mode.chained_assignment' option is deprecated")
    warnings.filterwarnings("ignore", message=r"The given NumPy array is not writable")  # Qlib DNN, read-only
    ensure_qlib_initialised()
    import logging

    logging.getLogger("qlib.workflow").setLevel(logging.WARNING)  # "Recorder ... starts running" per fit
    with _lock:
        if _state["patched"] or not _QLIB_NEEDS_PATCHES:
            return
        from qlib.workflow.recorder import MLflowRecorder

        _state["original_log_uncommitted_code"] = MLflowRecorder._log_uncommitted_code
        MLflowRecorder._log_uncommitted_code = lambda self: None
        _state["patched"] = True


@contextlib.contextmanager
def qlib_fit_context() -> Iterator[dict[str, Any]]:
    """Run a Qlib ``fit`` inside an active recorder with a temporary ``save_path`` (fixes 4 and 6).

    Yields the extra keyword arguments for a torch model's ``fit`` (``save_path``; models whose ``fit`` has no
    ``save_path``, such as ``LGBModel``, take none of them); the checkpoint directory is removed afterwards.
    Non-torch models that log (``LGBModel.fit`` calls ``R.log_metrics``) should also fit inside this context,
    or Qlib starts a default recorder that stays active.
    """
    from qlib.workflow import R

    apply_compat()
    # Qlib's recorder (R) is one global: two threads of one process fitting at once would both start a run.
    # Fits that need it take turns; the tree models' observed fits do not log through R and skip this context.
    with _RECORDER_LOCK, tempfile.TemporaryDirectory(prefix="qmlops-fit-") as tmp:
        with R.start(experiment_name="qmlops", recorder_name=uuid.uuid4().hex):
            yield {"save_path": os.path.join(tmp, "checkpoint.bin")}


_RECORDER_LOCK = threading.RLock()


# ---------------------------------------------------------------------------------------------------- data
def build_qlib_dataset(
    frame: pd.DataFrame,
    segments: Mapping[str, tuple[Any, Any]],
    step_len: int | None = None,
    *,
    allow_nan: bool = False,
    label_norm: str | None = None,
) -> DatasetH:
    """A ``DatasetH`` (or ``TSDatasetH`` with ``step_len``) over a (datetime, instrument) frame whose columns are
    ("feature", name) and ("label", name). Features must be finite (fix 10) unless ``allow_nan`` (tree models,
    which treat NaN as missing); unlabelled rows leave the learn data, whose label is then normalised per day by
    Qlib's ``label_norm`` processor (``CSZScoreNorm`` or ``CSRankNorm``) when one is given.
    """
    if not isinstance(frame.columns, pd.MultiIndex) or not {"feature", "label"} <= set(
        frame.columns.get_level_values(0)
    ):
        raise ValidationError("columns must be a MultiIndex with 'feature' and 'label' groups", field="frame")
    if not allow_nan:
        features = frame["feature"].to_numpy(dtype=np.float64)
        bad = ~np.isfinite(features).all(axis=0)
        if bad.any():
            names = list(frame["feature"].columns[bad])[:5]
            raise ValidationError(
                f"features must be finite (fill or drop NaN/inf first); non-finite in {names}",
                field="frame.feature",
            )
    learn: list[dict[str, Any]] = [{"class": "DropnaLabel", "kwargs": {"fields_group": "label"}}]
    if label_norm is not None:
        if label_norm not in ("CSZScoreNorm", "CSRankNorm"):
            raise ValidationError("label_norm must be CSZScoreNorm or CSRankNorm", field="label_norm")
        learn.append({"class": label_norm, "kwargs": {"fields_group": "label"}})
    handler = DataHandlerLP(data_loader=StaticDataLoader(config=frame), learn_processors=learn)
    if step_len is None:
        return DatasetH(handler, segments=dict(segments))
    return TSDatasetH(handler=handler, segments=dict(segments), step_len=step_len)


def segment_view(dataset: DatasetH, aliases: Mapping[str, str | slice]) -> DatasetH:
    """The same dataset (same class, so ``isinstance`` checks in Qlib still pass) whose ``prepare`` reads other
    segments under some names, e.g. ``{"test": "valid"}`` (fix 7). The original dataset is not modified.
    """
    view = object.__new__(type(dataset))
    view.__dict__.update(dataset.__dict__)
    prepare = dataset.prepare

    def resolve(segment: Any) -> Any:
        return aliases.get(segment, segment) if isinstance(segment, str) else segment

    def aliased_prepare(segments: Any, *args: Any, **kwargs: Any) -> Any:
        if isinstance(segments, list | tuple):
            segments = [resolve(s) for s in segments]
        else:
            segments = resolve(segments)
        return prepare(segments, *args, **kwargs)

    view.prepare = aliased_prepare
    return view


def mean_daily_ic(pred: np.ndarray, label: np.ndarray, dates: np.ndarray) -> float:
    """Mean over days of the Pearson correlation between prediction and label (the information coefficient).

    Pairs with a non-finite value are ignored; days with fewer than two pairs or zero spread are skipped.
    Returns NaN when no day qualifies.
    """
    frame = pd.DataFrame(
        {"p": np.asarray(pred, dtype=float), "y": np.asarray(label, dtype=float), "d": dates}
    )
    frame = frame[np.isfinite(frame["p"]) & np.isfinite(frame["y"])]
    ics = []
    for _, day in frame.groupby("d", sort=False):
        if len(day) >= 2 and day["p"].std() > 0 and day["y"].std() > 0:
            ics.append(float(np.corrcoef(day["p"], day["y"])[0, 1]))
    return float(np.mean(ics)) if ics else float("nan")


# ------------------------------------------------------------------------------------------- model shims
class DNNModelPytorch(pytorch_nn.DNNModelPytorch):
    """``DNNModelPytorch`` with fix 1 (scheduler without ``verbose``) and fix 2 (IC without ipdb)."""

    def __init__(self, *args: Any, scheduler: Any = "default", **kwargs: Any) -> None:
        if scheduler == "default":
            scheduler = functools.partial(
                torch.optim.lr_scheduler.ReduceLROnPlateau,
                mode="min",
                factor=0.5,
                patience=10,
                threshold=0.0001,
                threshold_mode="rel",
                cooldown=0,
                min_lr=0.00001,
                eps=1e-08,
            )
        super().__init__(*args, scheduler=scheduler, **kwargs)

    def get_metric(self, pred: torch.Tensor, target: torch.Tensor, index: pd.MultiIndex) -> torch.Tensor:
        ic = mean_daily_ic(
            pred.detach().cpu().numpy().reshape(-1),
            target.detach().cpu().numpy().reshape(-1),
            index.get_level_values(0).to_numpy(),
        )
        return torch.tensor(0.0 if np.isnan(ic) else ic)


class _EmptyModule(torch.nn.Module):
    """A base model with no weights: copying its state dict changes nothing."""


@contextlib.contextmanager
def _base_model_sized_like(module: Any, model: Any) -> Iterator[None]:
    """Fix 9: while ``model.fit`` runs, ``module.GRUModel``/``LSTMModel`` build the model's own size."""
    if not _QLIB_NEEDS_PATCHES:
        yield
        return

    def factory(cls: type) -> Any:
        def build() -> torch.nn.Module:
            if model.model_path is None:
                return _EmptyModule()
            return cls(
                d_feat=model.d_feat,
                hidden_size=model.hidden_size,
                num_layers=model.num_layers,
                dropout=model.dropout,
            )

        return build

    with _base_model_lock:
        saved = module.GRUModel, module.LSTMModel
        module.GRUModel, module.LSTMModel = factory(saved[0]), factory(saved[1])
        try:
            yield
        finally:
            module.GRUModel, module.LSTMModel = saved


class GATs(pytorch_gats.GATs):
    """``GATs`` with fix 9 (base model built at the model's own size)."""

    def fit(
        self, dataset: DatasetH, evals_result: dict[str, Any] | None = None, save_path: str | None = None
    ) -> None:
        with _base_model_sized_like(pytorch_gats, self):
            super().fit(
                dataset, evals_result={} if evals_result is None else evals_result, save_path=save_path
            )


class IGMTF(pytorch_igmtf.IGMTF):
    """``IGMTF`` with fix 9 (base model built at the model's own size)."""

    def fit(
        self, dataset: DatasetH, evals_result: dict[str, Any] | None = None, save_path: str | None = None
    ) -> None:
        with _base_model_sized_like(pytorch_igmtf, self):
            super().fit(
                dataset, evals_result={} if evals_result is None else evals_result, save_path=save_path
            )

    def get_train_hidden(self, x_train: pd.DataFrame) -> Any:
        """Fix 15: the training days' hidden states in a fixed order (Qlib shuffles them with numpy's global RNG,
        so two ``predict`` calls of one model could pick different neighbours among tied similarities)."""
        state = np.random.get_state()
        try:
            np.random.seed(int(self.seed) if self.seed is not None else 0)
            return super().get_train_hidden(x_train)
        finally:
            np.random.set_state(state)

    def metric_fn(self, pred: torch.Tensor, label: torch.Tensor) -> torch.Tensor:
        if self.metric in ("", "loss"):  # fix 12: Qlib tests ``metric == ("", "loss")``
            mask = torch.isfinite(label)
            return -self.loss_fn(pred[mask], label[mask])
        return super().metric_fn(pred, label)


class TabnetModel(pytorch_tabnet.TabnetModel):
    """``TabnetModel`` with fix 13: pre-training reads the train/valid segments when the dataset has no
    "pretrain"/"pretrain_validation" segments, and its pre-training checkpoint lives in a temporary directory."""

    def __init__(self, *args: Any, pretrain_file: str | None = None, **kwargs: Any) -> None:
        if pretrain_file is None:
            ensure_qlib_initialised()
            scratch = _state["tmp"] or tempfile.mkdtemp(prefix="qmlops-tabnet-")
            pretrain_file = os.path.join(scratch, f"tabnet-pretrain-{uuid.uuid4().hex}.bin")
        super().__init__(*args, pretrain_file=pretrain_file, **kwargs)

    def pretrain_fn(self, dataset: Any = DatasetH, pretrain_file: str = "./pretrain/best.model") -> None:
        segments = getattr(dataset, "segments", {})
        if "pretrain" not in segments and "pretrain_validation" not in segments:
            dataset = segment_view(dataset, {"pretrain": "train", "pretrain_validation": "valid"})
        super().pretrain_fn(dataset, pretrain_file)


class GRUTS(pytorch_gru_ts.GRU):
    """``pytorch_gru_ts.GRU`` with ``predict(dataset, segment)`` (fix 7)."""

    def predict(self, dataset: DatasetH, segment: str | slice = "test") -> pd.Series:
        return super().predict(segment_view(dataset, {"test": segment}))


class LSTMTS(pytorch_lstm_ts.LSTM):
    """``pytorch_lstm_ts.LSTM`` with ``predict(dataset, segment)`` (fix 7)."""

    def predict(self, dataset: DatasetH, segment: str | slice = "test") -> pd.Series:
        return super().predict(segment_view(dataset, {"test": segment}))


class ALSTMTS(pytorch_alstm_ts.ALSTM):
    """``pytorch_alstm_ts.ALSTM``; its ``predict`` already takes ``segment``, listed so every ts model has a shim."""


class TransformerTS(pytorch_transformer_ts.TransformerModel):
    """``pytorch_transformer_ts.TransformerModel`` with ``predict(dataset, segment)`` (fix 7)."""

    def predict(self, dataset: DatasetH, segment: str | slice = "test") -> pd.Series:
        return super().predict(segment_view(dataset, {"test": segment}))


class LocalformerTS(pytorch_localformer_ts.LocalformerModel):
    """``pytorch_localformer_ts.LocalformerModel`` with ``predict(dataset, segment)`` (fix 7)."""

    def predict(self, dataset: DatasetH, segment: str | slice = "test") -> pd.Series:
        return super().predict(segment_view(dataset, {"test": segment}))


class GATsTS(pytorch_gats_ts.GATs):
    """``pytorch_gats_ts.GATs`` with ``predict(dataset, segment)`` (fix 7)."""

    def predict(self, dataset: DatasetH, segment: str | slice = "test") -> pd.Series:
        return super().predict(segment_view(dataset, {"test": segment}))


class GeneralPTNN(pytorch_general_nn.GeneralPTNN):
    """``GeneralPTNN`` with ``predict(dataset, segment)`` (fix 7)."""

    def predict(self, dataset: DatasetH, segment: str | slice = "test", **kwargs: Any) -> pd.Series:
        return super().predict(segment_view(dataset, {"test": segment}), **kwargs)


class TCNTS(pytorch_tcn_ts.TCN):
    """``pytorch_tcn_ts.TCN`` with ``predict(dataset, segment)`` (fix 7) that transposes like training (fix 8)."""

    def predict(self, dataset: DatasetH, segment: str | slice = "test") -> pd.Series:
        if not self.fitted:
            raise ValueError("model is not fitted yet!")
        samples = dataset.prepare(segment, col_set=["feature", "label"], data_key=DataHandlerLP.DK_I)
        samples.config(fillna_type="ffill+bfill")
        self.TCN_model.eval()
        preds = []
        for data in DataLoader(samples, batch_size=self.batch_size, num_workers=self.n_jobs):
            feature = torch.transpose(data, 1, 2)[:, 0:-1, :].to(self.device)  # [N, F, T] as in train_epoch
            with torch.no_grad():
                preds.append(self.TCN_model(feature.float()).detach().cpu().numpy().reshape(-1))
        return pd.Series(np.concatenate(preds), index=samples.get_index())


COMPAT_CLASSES: dict[type, type] = {
    pytorch_nn.DNNModelPytorch: DNNModelPytorch,
    pytorch_gats.GATs: GATs,
    pytorch_igmtf.IGMTF: IGMTF,
    pytorch_tabnet.TabnetModel: TabnetModel,
    pytorch_gru_ts.GRU: GRUTS,
    pytorch_lstm_ts.LSTM: LSTMTS,
    pytorch_alstm_ts.ALSTM: ALSTMTS,
    pytorch_transformer_ts.TransformerModel: TransformerTS,
    pytorch_localformer_ts.LocalformerModel: LocalformerTS,
    pytorch_gats_ts.GATs: GATsTS,
    pytorch_tcn_ts.TCN: TCNTS,
    pytorch_general_nn.GeneralPTNN: GeneralPTNN,
}


def compat_model_class(model_class: str | type) -> type:
    """The class to instantiate for a Qlib model: its shim if it has one, else itself.

    ``model_class`` is a class or a dotted path, absolute (``qlib.contrib.model.pytorch_gru_ts.GRU``) or relative
    to ``qlib.contrib.model`` (``pytorch_gru_ts.GRU``). Raises ``ValidationError`` for an unknown path.
    """
    if isinstance(model_class, str):
        module_name, _, attr = model_class.rpartition(".")
        if not module_name.startswith("qlib.") and not module_name.startswith("qmlops."):
            module_name = "qlib.contrib.model." + module_name
        try:
            model_class = getattr(importlib.import_module(module_name), attr)
        except (ImportError, AttributeError, ValueError) as exc:
            raise ValidationError(f"unknown model class {model_class!r}: {exc}", field="model_class") from exc
    assert isinstance(model_class, type)
    return COMPAT_CLASSES.get(model_class, model_class)


def predict_segment(model: Any, dataset: DatasetH, segment: str | slice = "test") -> pd.Series:
    """Predict one segment with the model's own ``predict``, for models whose ``predict`` has no ``segment``."""
    import inspect

    if "segment" in inspect.signature(model.predict).parameters:
        return model.predict(dataset, segment=segment)
    return model.predict(segment_view(dataset, {"test": segment}))
