"""The training engine: one entry point that trains any catalogue model type on the feature store.

``train(TrainConfig(...))``

1. resolves the dataset version and the feature set's materialisation, and plans train / valid / test segments by
   trading date: after the features' warm-up, split by fractions (or the dates given), with a purge gap of the
   label horizon between segments so no training label is realised inside a later segment;
2. prepares the frame for the model family: tree models see raw features (NaN is missing) and a per-day
   z-scored label (Qlib's Alpha158 handler defaults); every other family gets a robust z-score fitted on the
   train segment, NaN -> 0, and a per-day rank-normalised label (Qlib's NN benchmark processors);
3. builds Qlib's ``DatasetH`` / ``TSDatasetH`` over a ``StaticDataLoader`` and fits the Qlib model with the
   engine's early stopper (:mod:`qmlops.training._early_stopping`) observing every boosting round or epoch;
4. reports each step (train/valid loss, valid IC, early-stop state) to the run's rows in the metadata store, to
   Ray Tune when running inside a trial, and to in-process subscribers;
5. evaluates the test segment against the raw label (IC, ICIR, Rank IC, Rank ICIR, MSE, top-k long-short
   backtest), writes an HTML report, and registers the model with its metrics, signature and lineage
   (feature materialisation -> training run -> model version).
"""

from __future__ import annotations

import math
import re
import threading
import time
import traceback
import uuid
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from qmlops import storage
from qmlops.config import Settings, get_settings
from qmlops.exceptions import QmlopsError, ValidationError, reject_unknown
from qmlops.metadata import MetadataStore, RemoteMetadataStore, finite_or_none, get_store
from qmlops.training._catalogue import ModelType, get_model_type
from qmlops.training._early_stopping import EarlyStopper, parse_early_stopping
from qmlops.training._evaluate import Evaluation, daily_ic, evaluate_predictions, long_short_backtest
from qmlops.training._oracle import OracleComparison, compare_to_oracle

__all__ = [
    "TrainConfig",
    "TrainResult",
    "train",
    "train_remote",
    "plan_segments",
    "label_horizon",
    "subscribe_progress",
    "unsubscribe_progress",
]

Store = MetadataStore | RemoteMetadataStore
ProgressCallback = Callable[[str, int, dict[str, Any]], None]  # (run_id, step, metrics)
SEGMENT_NAMES = ("train", "valid", "test")


# ------------------------------------------------------------------------------------------------- config
@dataclass
class TrainConfig:
    """One training run. Every field has a default except the model type."""

    model_type: str
    dataset: str = "sp500"
    feature_set: str = "alpha158"
    params: dict[str, Any] = field(default_factory=dict)
    segments: dict[str, tuple[str, str]] | None = None  # explicit dates; else ``split`` fractions
    split: tuple[float, float, float] = (0.6, 0.2, 0.2)
    instruments: list[str] | None = None  # a subset of the dataset's instruments
    step_len: int = 20  # window length of sequence models
    early_stopping: dict[str, Any] | str | None = None  # see EarlyStopper.from_config / parse_early_stopping
    device: str = "auto"  # auto | cpu | cuda
    progress_every: int = 10  # boosting rounds per progress row (NN models report every epoch)
    register_as: str | None = None  # model name; None -> "<feature_set>-<model_type>", "" -> do not register
    report: bool = True
    topk: int = 20
    seed: int = 0
    name: str | None = None

    def validate(self) -> TrainConfig:
        mtype = get_model_type(self.model_type)  # unknown or unavailable types fail here, before any data
        if not isinstance(self.params, Mapping):
            raise ValidationError("params must be a mapping of name -> value", field="params")
        mtype.params_for(1, self.params)  # unknown parameter names
        if len(self.split) != 3 or any(not (0 < f < 1) for f in self.split) or sum(self.split) > 1 + 1e-9:
            raise ValidationError(
                f"split needs three fractions in (0, 1) summing to at most 1; got {list(self.split)}",
                field="split",
            )
        if self.segments is not None:
            missing = [s for s in SEGMENT_NAMES if s not in self.segments]
            if missing:
                raise ValidationError(
                    f"segments need {', '.join(SEGMENT_NAMES)}; missing {missing}", field="segments"
                )
            for name in SEGMENT_NAMES:
                pair = self.segments[name]
                try:
                    start, end = pd.Timestamp(pair[0]), pd.Timestamp(pair[1])
                except (TypeError, ValueError, IndexError):
                    raise ValidationError(
                        f"need [start, end] dates; got {pair!r}", field=f"segments.{name}"
                    ) from None
                if start > end:
                    raise ValidationError("start is after end", field=f"segments.{name}")
            for first, second in zip(SEGMENT_NAMES, SEGMENT_NAMES[1:], strict=False):
                if pd.Timestamp(self.segments[first][1]) >= pd.Timestamp(self.segments[second][0]):
                    raise ValidationError(
                        f"{second} must start after {first} ends", field=f"segments.{second}"
                    )
        if not 2 <= int(self.step_len) <= 250:
            raise ValidationError(f"step_len must be 2..250, got {self.step_len}", field="step_len")
        if self.device not in ("auto", "cpu", "cuda"):
            raise ValidationError(f"device must be auto, cpu or cuda; got {self.device!r}", field="device")
        if int(self.progress_every) < 1:
            raise ValidationError("progress_every must be >= 1", field="progress_every")
        if int(self.topk) < 1:
            raise ValidationError("topk must be >= 1", field="topk")
        self.stopper(mtype)  # early-stopping config errors
        return self

    def stopper(self, mtype: ModelType) -> EarlyStopper:
        spec = self.early_stopping
        if isinstance(spec, str):
            spec = parse_early_stopping(spec)
        if spec is None:  # the type's own patience: Qlib's early_stopping_rounds / early_stop defaults
            params = mtype.params_for(1, self.params)
            patience = params.get(
                "early_stopping_rounds", params.get("early_stop", params.get("early_stop_rounds"))
            )
            spec = {"patience": int(patience)} if patience else {}
        return EarlyStopper.from_config(spec)

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["split"] = list(self.split)
        return out

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> TrainConfig:
        reject_unknown(data, cls.__dataclass_fields__, "training option")
        values = dict(data)
        if "split" in values:
            values["split"] = tuple(values["split"])
        if values.get("segments"):
            values["segments"] = {k: tuple(v) for k, v in values["segments"].items()}
        return cls(**values)


@dataclass
class TrainResult:
    run_id: str
    model_type: str
    evaluation: Evaluation
    best_step: int | None
    stop_reason: str
    stopped_by: str
    steps: list[dict[str, Any]]
    segments: dict[str, tuple[str, str]]
    feature_names: list[str]
    model_version: dict[str, Any] | None = None
    report_uri: str | None = None
    predictions: pd.Series | None = field(default=None, repr=False)
    model: Any = field(default=None, repr=False)
    duration_seconds: float = 0.0
    oracle: OracleComparison | None = None  # on a planted market: the oracle's IC on the same test rows
    device: dict[str, Any] = field(default_factory=dict)  # the DeviceChoice: device, reason, what was seen

    def summary(self) -> dict[str, Any]:
        return {
            "run_id": self.run_id,
            "model_type": self.model_type,
            "metrics": self.evaluation.to_dict(),
            "best_step": self.best_step,
            "stop_reason": self.stop_reason,
            "stopped_by": self.stopped_by,
            "n_steps": len(self.steps),
            "segments": {k: list(v) for k, v in self.segments.items()},
            "model_version": self.model_version,
            "report_uri": self.report_uri,
            "duration_seconds": round(self.duration_seconds, 3),
            "oracle": self.oracle.to_dict() if self.oracle else None,
            "device": self.device.get("device"),
            "device_reason": self.device.get("reason"),
        }


# ------------------------------------------------------------------------------------------------ segments
def label_horizon(label_expression: str) -> int:
    """Trading days a label looks ahead: the largest ``k`` in ``Ref(..., -k)`` (Qlib's LABEL0: 2)."""
    ahead = [int(k) for k in re.findall(r"Ref\([^,]+,\s*-(\d+)\)", label_expression)]
    return max(ahead) if ahead else 0


def plan_segments(
    calendar: pd.DatetimeIndex,
    *,
    horizon: int,
    warmup: int = 0,
    split: tuple[float, float, float] = (0.6, 0.2, 0.2),
    segments: Mapping[str, tuple[Any, Any]] | None = None,
) -> dict[str, tuple[pd.Timestamp, pd.Timestamp]]:
    """Train/valid/test date ranges over ``calendar`` with ``horizon`` trading days purged before valid and test.

    A label of day ``i`` is realised at day ``i + horizon``, so the last usable day of a segment that ends before
    a segment starting at day ``v`` is ``v - horizon - 1``. Explicit ``segments`` are cut back the same way.
    """
    days = pd.DatetimeIndex(sorted(set(calendar)))
    if segments is None:
        usable = days[warmup:]
        n = len(usable)
        n_train, n_valid = int(n * split[0]), int(n * split[1])
        n_test = int(round(n * split[2]))
        if min(n_train, n_valid, n_test) - horizon < 5:
            raise ValidationError(
                f"{n} trading days after a {warmup}-day warm-up are too few for split {list(split)} with a "
                f"{horizon}-day purge between segments", field="split",
            )  # fmt: skip
        bounds = {
            "train": (usable[0], usable[n_train - 1]),
            "valid": (usable[n_train], usable[n_train + n_valid - 1]),
            "test": (usable[n_train + n_valid], usable[min(n - 1, n_train + n_valid + n_test - 1)]),
        }
    else:
        bounds = {k: (pd.Timestamp(segments[k][0]), pd.Timestamp(segments[k][1])) for k in SEGMENT_NAMES}
    out: dict[str, tuple[pd.Timestamp, pd.Timestamp]] = {}
    for name in SEGMENT_NAMES:
        start, end = bounds[name]
        in_seg = days[(days >= start) & (days <= end)]
        if len(in_seg) == 0:
            raise ValidationError(
                f"no trading days between {start.date()} and {end.date()}", field=f"segments.{name}"
            )
        out[name] = (in_seg[0], in_seg[-1])
    for earlier, later in (("train", "valid"), ("valid", "test")):
        v = days.get_indexer([out[later][0]])[0]
        last_ok = days[v - horizon - 1] if v - horizon - 1 >= 0 else None
        if last_ok is None or last_ok < out[earlier][0]:
            raise ValidationError(
                f"{earlier} has no days left after the {horizon}-day purge", field=f"segments.{earlier}"
            )
        if out[earlier][1] > last_ok:
            out[earlier] = (out[earlier][0], last_ok)
    return out


# ------------------------------------------------------------------------------------------------ progress
_SUBSCRIBERS: dict[int, ProgressCallback] = {}
_SUB_LOCK = threading.Lock()


def subscribe_progress(callback: ProgressCallback) -> int:
    """Call ``callback(run_id, step, metrics)`` for every progress step of runs in this process; returns a token."""
    with _SUB_LOCK:
        token = id(callback) ^ int(time.monotonic_ns())
        _SUBSCRIBERS[token] = callback
        return token


def unsubscribe_progress(token: int) -> None:
    with _SUB_LOCK:
        _SUBSCRIBERS.pop(token, None)


def _in_tune_session() -> bool:
    try:
        from ray.tune.trainable.trainable_fn_utils import _in_tune_session as in_session

        return bool(in_session())
    except Exception:  # Ray without Tune, or no session machinery: not a trial
        return False


class _Progress:
    """Fans one step out to the metadata store, Ray Tune (inside a trial) and subscribers."""

    def __init__(self, run_id: str, store: Store, callback: ProgressCallback | None) -> None:
        self.run_id, self.store, self.callback = run_id, store, callback
        self.tune = _in_tune_session()
        self.rows: list[dict[str, Any]] = []
        self.started = time.perf_counter()

    def __call__(self, step: int, metrics: Mapping[str, Any]) -> None:
        row = {k: metrics.get(k) for k in ("train_loss", "valid_loss", "valid_ic", "best_step")}
        row["early_stop"] = dict(metrics.get("early_stop") or {})
        row["step"] = int(step)
        self.rows.append(row)
        self.store.runs.log_metric(
            self.run_id, int(step), train_loss=row["train_loss"], valid_loss=row["valid_loss"],  # stored finite or NULL
            valid_ic=row["valid_ic"], best_step=row["best_step"], early_stop=row["early_stop"],
            extra={k: finite_or_none(v) for k, v in metrics.items() if k == "seconds"},
        )  # fmt: skip
        if self.tune:
            from ray import tune

            metrics = {k: finite_or_none(row[k]) for k in ("train_loss", "valid_loss", "valid_ic")}
            tune.report({"step": int(step), "train_seconds": time.perf_counter() - self.started, **metrics})
        for cb in [self.callback, *list(_SUBSCRIBERS.values())]:
            if cb is not None:
                cb(self.run_id, int(step), dict(row))


# ------------------------------------------------------------------------------------------------- engine
_FRAME_CACHE: dict[str, pd.DataFrame] = {}


def _load_frame(materialization: str, store: Store) -> pd.DataFrame:
    """The materialisation's frame, kept for the next run in this process (Tune reuses trial actors, so a
    search reads the feature store once per worker instead of once per trial). One entry: the newest."""
    from qmlops.features import load_features

    frame = _FRAME_CACHE.get(materialization)
    if frame is None:
        frame = load_features(materialization=materialization, store=store)
        _FRAME_CACHE.clear()
        _FRAME_CACHE[materialization] = frame
    return frame


def _prepare_frame(
    frame: pd.DataFrame, mtype: ModelType, train_seg: tuple[pd.Timestamp, pd.Timestamp]
) -> tuple[pd.DataFrame, np.ndarray | None, np.ndarray | None]:
    """The frame the model trains on, plus the fitted robust z-score (median, scale) for non-tree models."""
    if mtype.preprocessing == "raw":
        return frame, None, None
    from qmlops.features import Fillna, RobustZScoreNorm

    norm = RobustZScoreNorm(train_seg[0], train_seg[1]).fit(frame)
    out = Fillna()(norm(frame))
    return out, norm.median_, norm.scale_


def _fit(
    mtype: ModelType,
    model: Any,
    dataset: Any,
    stopper: EarlyStopper,
    progress: _Progress,
    params: Mapping[str, Any],
    config: TrainConfig,
) -> tuple[int | None, str, str, list[dict[str, Any]]]:
    """Fit with the stopper observing every step. Returns (best_step, stop_reason, stopped_by, steps)."""
    from qmlops.training._compat import apply_compat, qlib_fit_context
    from qmlops.training._gbdt import RoundMonitor
    from qmlops.training._torch_hooks import fit_with_hooks

    if mtype.family == "tree":
        budget = int(params.get("num_boost_round", 1000))
        monitor = RoundMonitor(stopper, progress, progress_every=config.progress_every, budget=budget)
        apply_compat()  # the observed fits replace Qlib's callbacks and do not log through its recorder
        if mtype.name == "lightgbm":
            model.fit_observed(dataset, monitor)
        else:
            model.fit_observed(dataset, monitor, num_boost_round=budget)
        return monitor.best_step, monitor.stop_reason, monitor.stopped_by, monitor.steps
    if mtype.family == "linear":
        from qmlops.training._compat import mean_daily_ic, predict_segment

        with qlib_fit_context():
            model.fit(dataset)
        rows = []
        for seg in ("train", "valid"):
            pred = predict_segment(model, dataset, seg)
            label = dataset.prepare(seg, col_set="label", data_key="learn").iloc[:, 0].reindex(pred.index)
            ok = np.isfinite(label.to_numpy())
            mse = float(np.mean((pred.to_numpy()[ok] - label.to_numpy()[ok]) ** 2))
            ic = mean_daily_ic(pred.to_numpy(), label.to_numpy(), pred.index.get_level_values(0).to_numpy())
            rows.append((mse, ic))
        decision = stopper.update(0, rows[0][0], rows[1][0], rows[1][1])
        row = {"step": 0, "train_loss": rows[0][0], "valid_loss": rows[1][0], "valid_ic": rows[1][1],
               "best_step": 0, "early_stop": dict(decision.state)}  # fmt: skip
        progress(0, row)
        return 0, "closed-form fit: a single step", "closed_form", [row]

    def on_epoch(step: int, metrics: dict[str, Any]) -> None:
        decision = stopper.last_decision
        progress(step, {**metrics, "early_stop": dict(decision.state) if decision is not None else {}})

    outcome = fit_with_hooks(model, dataset, on_epoch=on_epoch, stopper=stopper)
    steps = [{"step": e.step, **e.as_dict(), "best_step": None} for e in outcome.epochs]
    return outcome.best_step, outcome.stop_reason, outcome.stopped_by, steps


def _make_model(mtype: ModelType, params: dict[str, Any], device: str) -> tuple[Any, dict[str, Any]]:
    """Instantiate the (observed / compat) class; returns (model, fit-time params)."""
    from qmlops.training._gbdt import OBSERVED
    from qmlops.training._torch_hooks import create_model

    params = dict(params)
    if mtype.family == "tree":
        fit_params: dict[str, Any] = {
            k: params.pop(k) for k in ("num_boost_round", "early_stopping_rounds") if k in params
        }
        cls = OBSERVED[mtype.name]
        if mtype.name == "lightgbm":
            return cls(num_boost_round=fit_params.get("num_boost_round", 1000), **params), fit_params
        if mtype.name == "xgboost" and device.startswith("cuda"):
            params.setdefault("device", "cuda")
        return cls(**params), fit_params
    if mtype.family == "linear":
        return mtype.resolve_class()(**params), {}
    # Qlib's own early stop would end runs our stopper wants to continue; ours decides, theirs never fires first
    budget_key = mtype.step_budget_param or "n_epochs"
    for key in ("early_stop", "early_stop_rounds"):
        if key in params:
            params[key] = int(params.get(budget_key, 100)) + 1
    if mtype.name == "gats":
        params.pop("batch_size", None)
    return create_model(mtype.resolve_class(), device=device, **params), {}


def _feature_importance(mtype: ModelType, model: Any, names: list[str]) -> pd.Series | None:
    try:
        if mtype.name == "lightgbm":
            values = model.model.feature_importance(importance_type="gain")
            return pd.Series(values, index=names, dtype="float64")
        if mtype.name == "xgboost":
            scores = model.model.get_score(importance_type="gain")
            return pd.Series({n: scores.get(f"f{i}", 0.0) for i, n in enumerate(names)}, dtype="float64")
        if mtype.name == "catboost":
            return pd.Series(model.model.get_feature_importance(), index=names, dtype="float64")
        if mtype.name == "linear":
            return pd.Series(np.abs(np.asarray(model.coef_, dtype=float)), index=names)
    except Exception:  # importance is a nicety of the report; never fail a run over it
        return None
    return None


def train(
    config: TrainConfig | Mapping[str, Any],
    *,
    store: Store | None = None,
    settings: Settings | None = None,
    on_progress: ProgressCallback | None = None,
    parent_run_id: str | None = None,
    run_id: str | None = None,
) -> TrainResult:
    """Train, evaluate, report and register one model (see the module docstring). Raises ``QmlopsError`` for
    bad input before anything is recorded; a failure during training marks the run ``failed`` with the error."""
    from qmlops.devices import choose_device
    from qmlops.features import FeatureSetDefinition, builtin_set, min_history
    from qmlops.training._compat import apply_compat, build_qlib_dataset, predict_segment

    cfg = config if isinstance(config, TrainConfig) else TrainConfig.from_dict(config)
    cfg.validate()
    # before any data is read: a cuda request nothing here can serve fails now, in one line
    choice = choose_device(cfg.device)
    settings = settings or get_settings()
    store = store or get_store(settings)
    mtype = get_model_type(cfg.model_type)
    definition: FeatureSetDefinition = builtin_set(cfg.feature_set)
    dataset_rec = store.datasets.resolve(cfg.dataset)
    mat = store.features.find(dataset_rec.id, definition.id)
    if mat is None or mat.status != "complete":
        raise ValidationError(
            f"feature set {definition.name} is not materialised for {dataset_rec.id}; run "
            f"`qmlops features build {cfg.dataset} --set {definition.name}`", field="feature_set",
        )  # fmt: skip
    device = choice.device
    stopper = cfg.stopper(mtype)
    run_id = run_id or "run-" + uuid.uuid4().hex[:16]
    started = time.perf_counter()

    frame = _load_frame(mat.id, store)
    if cfg.instruments:
        wanted = {str(i).upper() for i in cfg.instruments}
        frame = frame[frame.index.get_level_values("instrument").isin(wanted)]
        if frame.empty:
            raise ValidationError("none of the instruments are in the dataset", field="instruments")
    horizon = label_horizon(definition.label)
    calendar = pd.DatetimeIndex(frame.index.get_level_values("datetime").unique())
    segments = plan_segments(calendar, horizon=horizon, warmup=min_history(definition.kind) - 1,
                             split=cfg.split, segments=cfg.segments)  # fmt: skip
    seg_text = {k: (str(a.date()), str(b.date())) for k, (a, b) in segments.items()}
    feature_names = [str(c) for c in frame["feature"].columns]
    params = mtype.params_for(len(feature_names), cfg.params)
    if "seed" in mtype.accepted_params() and "seed" not in cfg.params:
        params["seed"] = cfg.seed
    total = params.get(mtype.step_budget_param) if mtype.step_budget_param else 1
    if mtype.name == "mlp":
        total = math.ceil(int(params["max_steps"]) / int(params["eval_steps"]))
    store.runs.start(
        run_id, "trial" if parent_run_id else "train", name=cfg.name or f"{mtype.name} on {dataset_rec.id}",
        model_type=mtype.name, params=_jsonable(params), parent_id=parent_run_id, total_steps=int(total or 1),
        config={**_jsonable(cfg.to_dict()), "segments_planned": seg_text, "device": device,
                "device_choice": choice.to_dict(),
                "dataset_id": dataset_rec.id, "materialization": mat.id, "label_horizon": horizon,
                "early_stopping": stopper.describe()},
    )  # fmt: skip
    store.lineage.add_node(run_id, "training_run", f"{mtype.name} run {run_id}")
    store.lineage.add_edge(mat.id, run_id, "trained_on", {"segments": seg_text})
    progress = _Progress(run_id, store, on_progress)
    try:
        apply_compat()
        lo, hi = segments["train"][0], segments["test"][1]
        dates = frame.index.get_level_values("datetime")
        frame = frame[(dates >= lo) & (dates <= hi)]
        prepared, median, scale = _prepare_frame(frame, mtype, segments["train"])
        step_len = cfg.step_len if mtype.data == "ts" else None
        qlib_segments = {k: (a, b) for k, (a, b) in segments.items()}
        if step_len:  # windows may reach back before the train start: give the handler that history
            qlib_segments = dict(qlib_segments)
        dataset = build_qlib_dataset(
            prepared, qlib_segments, step_len=step_len, allow_nan=mtype.preprocessing == "raw",
            label_norm="CSZScoreNorm" if mtype.family == "tree" else "CSRankNorm",
        )  # fmt: skip
        model, _fit_params = _make_model(mtype, params, device)
        best_step, stop_reason, stopped_by, steps = _fit(
            mtype, model, dataset, stopper, progress, params, cfg
        )
        pred = predict_segment(model, dataset, "test").astype("float64")
        raw_label = frame[("label", frame["label"].columns[0])]
        raw_label.name = "label"
        evaluation = evaluate_predictions(pred, raw_label, k=cfg.topk)
        result = TrainResult(
            run_id=run_id, model_type=mtype.name, evaluation=evaluation, best_step=best_step,
            stop_reason=stop_reason, stopped_by=stopped_by, steps=progress.rows or steps, segments=seg_text,
            feature_names=feature_names, predictions=pred, model=model, device=choice.to_dict(),
            oracle=_oracle_comparison(pred, evaluation, dataset_rec.id, store, settings),
        )  # fmt: skip
        if cfg.report:
            result.report_uri = _write_report(result, cfg, mtype, raw_label, settings, dataset_rec.id)
        if cfg.register_as != "":
            result.model_version = _register(result, cfg, mtype, dataset, prepared, median, scale, step_len,
                                             store, settings, dataset_rec.id)  # fmt: skip
            _store_reference(store, result.model_version["id"], frame, segments["train"], pred)
        result.duration_seconds = time.perf_counter() - started
        metrics = {k: float(v) for k, v in evaluation.to_dict().items()}
        if result.oracle is not None:
            metrics.update(oracle_ic=result.oracle.oracle_ic, oracle_rank_ic=result.oracle.oracle_rank_ic,
                           oracle_share=result.oracle.share)  # fmt: skip
        # attached before the run is marked finished: a follower that sees "finished" finds the report at once
        store.runs.attach(
            run_id, model_version=(result.model_version or {}).get("id"), report_uri=result.report_uri
        )
        store.runs.finish(run_id, best_step=best_step, stop_reason=stop_reason, stopped_by=stopped_by,
                          metrics=metrics)  # fmt: skip
        return result
    except SystemExit:
        if not _in_tune_session():
            raise
        # Ray Tune ends a trial its scheduler stopped (ASHA) with SystemExit inside tune.report: not a failure.
        _finish_stopped(store, run_id)
        raise
    except BaseException as exc:
        message = f"{type(exc).__name__}: {exc}"
        if not isinstance(exc, QmlopsError):
            message += "\n" + "".join(traceback.format_exception(exc)[-3:])
        try:
            store.runs.finish(run_id, status="failed", error=message[:4000])
        except Exception:  # the store itself may be what failed; the original error matters more
            pass
        raise


def _finish_stopped(store: Any, run_id: str) -> None:
    """Record a trial the tuning scheduler stopped: its own state, the last step it reported, and why."""
    try:
        steps = store.runs.metrics(run_id)
        last = steps[-1].step if steps else None
        store.runs.finish(run_id, status="stopped", stopped_by="scheduler",
                          stop_reason=f"stopped by the tuning scheduler after step {last}: its metric ranked below "
                                      "the rung's cut (ASHA successive halving)")  # fmt: skip
    except Exception:  # the store may be what failed; the trial's end matters more
        pass


def _oracle_comparison(
    pred: pd.Series, evaluation: Evaluation, dataset_id: str, store: Store, settings: Settings
) -> OracleComparison | None:
    """The oracle's IC on the test rows when the dataset is a planted market, else None."""
    from qmlops.data import load_oracle

    record = store.datasets.resolve(dataset_id)
    if "oracle" not in (record.config or {}).get("artifacts", {}):
        return None
    return compare_to_oracle(pred, evaluation, load_oracle(dataset_id, store=store, settings=settings))


def _jsonable(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, float | int | str | bool) or value is None:
        return value
    return repr(value)


def _write_report(
    result: TrainResult,
    cfg: TrainConfig,
    mtype: ModelType,
    raw_label: pd.Series,
    settings: Settings,
    dataset_id: str,
) -> str:
    from qmlops.training._report import render_training_report, write_training_report

    assert result.predictions is not None
    ic = daily_ic(result.predictions, raw_label)
    returns, _ = long_short_backtest(result.predictions, raw_label, k=cfg.topk)
    html_text = render_training_report(
        title=f"{mtype.name} on {dataset_id} / {cfg.feature_set}",
        run={"run_id": result.run_id, "model_type": mtype.name, "params": _jsonable(cfg.params),
             "segments": result.segments, "stop_reason": result.stop_reason, "best_step": result.best_step,
             "stopped_by": result.stopped_by, "duration_seconds": time.perf_counter(), "dataset": dataset_id,
             "feature_set": cfg.feature_set, "model_version": None},
        epochs=result.steps, evaluation=result.evaluation.to_dict(), daily_ic=ic, daily_returns=returns,
        feature_importance=_feature_importance(mtype, result.model, result.feature_names),
    )  # fmt: skip
    uri = storage.join(settings.artifacts_uri, "runs", result.run_id, "report.html")
    return write_training_report(uri, html_text)


def _register(
    result: TrainResult,
    cfg: TrainConfig,
    mtype: ModelType,
    dataset: Any,
    prepared: pd.DataFrame,
    median: np.ndarray | None,
    scale: np.ndarray | None,
    step_len: int | None,
    store: Store,
    settings: Settings,
    dataset_id: str,
) -> dict[str, Any]:
    from qmlops.registry import ModelRegistry
    from qmlops.training._export import export_model

    sample = None
    if not step_len:
        sample = prepared["feature"].to_numpy(dtype=np.float32)[:64]
    exported = export_model(mtype.name, result.model, result.feature_names, median=median, scale=scale,
                            step_len=step_len or 1, sample=sample)  # fmt: skip
    metrics = {
        f"test_{k}": float(v) for k, v in result.evaluation.to_dict().items() if finite_or_none(v) is not None
    }
    tags = {"run_id": result.run_id, "dataset": dataset_id, "feature_set": cfg.feature_set,
            "stop_reason": result.stop_reason[:200], "best_step": str(result.best_step),
            "test_segment": "..".join(result.segments["test"])}  # fmt: skip
    if step_len:
        tags["step_len"] = str(step_len)
    if result.report_uri:
        tags["report_uri"] = result.report_uri
    registry = ModelRegistry(store, settings)
    record = registry.register(
        cfg.register_as or f"{cfg.feature_set}-{mtype.name}", exported.model, signature=exported.signature,
        model_type=mtype.name, metrics=metrics, params=_jsonable(cfg.params), tags=tags, flavor=exported.flavor,
        description=f"{mtype.description}; trained by run {result.run_id}", lineage_parents=[result.run_id],
    )  # fmt: skip
    return {"id": record.id, "name": record.name, "version": record.version, "flavor": record.flavor}


def _store_reference(
    store: Store, model_id: str, frame: pd.DataFrame, train: tuple[str, str], pred: pd.Series
) -> None:
    """The drift reference stored with the model version: per-feature statistics of the raw features over the
    train segment, and those of the model's (out-of-sample) test-segment predictions."""
    from qmlops.features._store import reference_stats

    dates = frame.index.get_level_values("datetime")
    features = frame["feature"][(dates >= pd.Timestamp(train[0])) & (dates <= pd.Timestamp(train[1]))]
    stats = [s.to_dict() for s in reference_stats(features, list(features.columns))]
    pred_stats = reference_stats(pred.to_frame("prediction"), ["prediction"])[0].to_dict()
    store.monitoring.put_reference(model_id, "train_segment", stats, pred_stats)


# ---------------------------------------------------------------------------------------------------- Ray
def _train_task(
    config: dict[str, Any], run_id: str, parent_run_id: str | None, store: Any, settings: Settings
) -> dict[str, Any]:
    return train(
        TrainConfig.from_dict(config),
        run_id=run_id,
        parent_run_id=parent_run_id,
        store=store,
        settings=settings,
    ).summary()


def train_remote(
    config: TrainConfig | Mapping[str, Any],
    *,
    num_cpus: float = 1,
    num_gpus: float = 0,
    run_id: str | None = None,
    parent_run_id: str | None = None,
    store: Store | None = None,
    settings: Settings | None = None,
) -> tuple[str, Any]:
    """Start training as a Ray task with the requested resources; returns (run_id, ObjectRef of the summary).

    The config is validated here first, so bad input fails in the caller rather than on a worker. Progress is
    readable from ``store.runs.metrics(run_id)`` while the task runs.
    """
    import ray

    cfg = config if isinstance(config, TrainConfig) else TrainConfig.from_dict(config)
    cfg.validate()
    if (
        cfg.device == "cuda" and not num_gpus
    ):  # the task would get no GPU from Ray: refuse here, not on a worker
        raise ValidationError("device cuda on Ray needs num_gpus > 0 (or use device auto)", field="num_gpus")
    run_id = run_id or "run-" + uuid.uuid4().hex[:16]
    task = ray.remote(_train_task).options(num_cpus=num_cpus, num_gpus=num_gpus, max_retries=0,
                                           name=f"qmlops-train-{cfg.model_type}")  # fmt: skip
    # the caller's settings and metadata client travel with the task (workers may have another environment)
    settings = settings or get_settings()
    store = store or get_store(settings)
    return run_id, task.remote(cfg.to_dict(), run_id, parent_run_id, store, settings)
