"""Boosting-round hooks for Qlib's tree models: the engine's early stopper and progress on every round.

Qlib's ``LGBModel``/``XGBModel``/``CatBoostModel`` fix their callbacks (LightGBM's own ``early_stopping``) inside
``fit``; the subclasses here keep Qlib's data path (``dataset.prepare`` of the learn data, the same library
calls and parameters) and swap the callback list for a :class:`RoundMonitor`:

- every round it passes train and valid MSE to the stopper (the monitored value is the valid MSE by default, the
  same quantity LightGBM's ``early_stopping`` watches, so ``Patience(50)`` reproduces Qlib's run exactly);
- every ``progress_every`` rounds (and on the last round) it predicts the validation segment with the trees so far,
  scores the mean daily IC and reports a progress step; when the stopper monitors the IC it is scored every round;
- when the stopper says stop, training ends and the booster is cut back to the best round.

CatBoost cannot predict from inside its own ``fit``, so it trains in chunks of ``progress_every`` rounds, each
continuing the previous model (``init_model``); the stopper still sees every round's losses.

Binned LightGBM datasets are reusable across runs in one process when :data:`REUSE_LGB_DATASETS` is on (the
tuning trainable turns it on: trials differ in training parameters, not in data). Building the bins of 100k+
rows x 158 features is most of a short trial's cost. The cache key is a fingerprint of the arrays and labels and
the dataset parameters; reuse needs ``feature_pre_filter=False`` (so ``min_data_in_leaf`` may differ between
trials), which is therefore set in that mode only: a plain training run keeps Qlib's exact data path.
"""

from __future__ import annotations

import functools
import hashlib
import math
from collections.abc import Callable
from typing import Any

import numpy as np
import pandas as pd
from qlib.contrib.model import catboost_model, gbdt, xgboost
from qlib.data.dataset import DatasetH
from qlib.data.dataset.handler import DataHandlerLP

from qmlops.training._compat import mean_daily_ic

__all__ = ["RoundMonitor", "ObservedLGBModel", "ObservedXGBModel", "ObservedCatBoostModel", "OBSERVED"]

OnStep = Callable[[int, dict[str, Any]], None]

REUSE_LGB_DATASETS = False
# Parameters that shape a LightGBM Dataset (its bins); anything else may change between runs sharing one.
_LGB_DATASET_PARAMS = ("max_bin", "min_data_in_bin", "bin_construct_sample_cnt", "data_random_seed", "use_missing",
                       "zero_as_missing", "linear_tree", "max_bin_by_feature", "categorical_feature")  # fmt: skip
_LGB_CACHE: dict[tuple[Any, ...], tuple[Any, Any]] = {}


def _fingerprint(*arrays: np.ndarray) -> str:
    """Shape, a strided sample and column sums of each array: cheap next to binning, and enough to tell apart the
    frames one process sees (the same materialisation and split, or not)."""
    h = hashlib.blake2b(digest_size=16)
    for a in arrays:
        a = np.asarray(a, dtype=np.float64)
        flat = a.reshape(-1)
        h.update(repr(a.shape).encode())
        h.update(np.ascontiguousarray(flat[:: max(1, flat.size // 200_000)]).tobytes())
        h.update(np.nansum(a.reshape(a.shape[0], -1), axis=0).tobytes())
    return h.hexdigest()


def _lgb_datasets(ds_l: list[tuple[Any, str]], params: dict[str, Any]) -> tuple[Any, Any, dict[str, Any]]:
    """(train, valid, dataset params for ``lgb.train``): Qlib's datasets, or reused binned ones."""
    (dtrain, _), (dvalid, _) = ds_l
    if not REUSE_LGB_DATASETS:
        return dtrain, dvalid, {}
    extra = {"feature_pre_filter": False}
    shape = {k: params[k] for k in _LGB_DATASET_PARAMS if k in params}
    key = (_fingerprint(dtrain.data, dtrain.label, dvalid.data, dvalid.label), tuple(sorted(shape.items())))
    cached = _LGB_CACHE.get(key)
    if cached is None:
        import lightgbm as lgb

        dparams = {**shape, **extra, "verbose": -1}
        train_set = lgb.Dataset(dtrain.data, label=dtrain.label, params=dparams).construct()
        valid_set = lgb.Dataset(
            dvalid.data, label=dvalid.label, reference=train_set, params=dparams
        ).construct()
        _LGB_CACHE.clear()  # one entry: the newest data
        cached = _LGB_CACHE[key] = (train_set, valid_set)
    return cached[0], cached[1], extra


class RoundMonitor:
    """Per-round bookkeeping shared by the three libraries."""

    def __init__(
        self, stopper: Any, on_step: OnStep | None, *, progress_every: int = 10, budget: int
    ) -> None:
        self.stopper, self.on_step = stopper, on_step
        self.progress_every, self.budget = max(1, int(progress_every)), budget
        self.valid_label: np.ndarray | None = None
        self.valid_dates: np.ndarray | None = None
        self.best_step: int | None = None
        self.stop_reason, self.stopped_by = "", ""
        self.steps: list[dict[str, Any]] = []
        self._ic = float("nan")
        self._monitor_ic = getattr(stopper, "monitor", "valid_loss") in ("valid_metric", "valid_ic")

    def set_valid(self, label: np.ndarray, dates: np.ndarray) -> None:
        self.valid_label, self.valid_dates = np.asarray(label, dtype=float), np.asarray(dates)

    def wants_ic(self, step: int) -> bool:
        return self._monitor_ic or (step + 1) % self.progress_every == 0 or step + 1 >= self.budget

    def update(
        self, step: int, train_loss: float, valid_loss: float, predict_valid: Callable[[], np.ndarray]
    ) -> bool:
        """Returns True when training should stop after this round."""
        if self.wants_ic(step) and self.valid_label is not None and self.valid_dates is not None:
            self._ic = mean_daily_ic(predict_valid(), self.valid_label, self.valid_dates)
        decision = self.stopper.update(step, train_loss, valid_loss, self._ic) if self.stopper else None
        if decision is not None:
            self.best_step = decision.best_step
        elif self.best_step is None or valid_loss < self.steps[self.best_step]["valid_loss"]:
            self.best_step = step
        stop = bool(decision is not None and decision.stop)
        if stop and not self.wants_ic(step) and self.valid_label is not None and self.valid_dates is not None:
            self._ic = mean_daily_ic(predict_valid(), self.valid_label, self.valid_dates)  # the last row's IC
        row = {"step": step, "train_loss": train_loss, "valid_loss": valid_loss, "valid_ic": self._ic,
               "best_step": self.best_step, "early_stop": dict(getattr(decision, "state", {}) or {})}  # fmt: skip
        self.steps.append(row)
        if stop and decision is not None:
            self.stop_reason, self.stopped_by = str(decision.reason or "early stopper"), "stopper"
        if self.on_step is not None and (self.wants_ic(step) or stop):
            self.on_step(step, row)
        return stop

    def finish(self) -> None:
        if not self.stopped_by:
            self.stopped_by, self.stop_reason = "max_epochs", f"round budget of {self.budget} reached"
        last = self.steps[-1] if self.steps else None
        if (
            self.on_step is not None
            and last is not None
            and not (self.wants_ic(last["step"]) or self.stopped_by == "stopper")
        ):
            self.on_step(last["step"], last)


def _valid_frame(dataset: DatasetH) -> pd.DataFrame:
    return dataset.prepare("valid", col_set=["feature", "label"], data_key=DataHandlerLP.DK_L)


def _label_1d(y: pd.DataFrame, what: str) -> np.ndarray:
    if y.values.ndim == 2 and y.values.shape[1] == 1:
        return np.squeeze(y.values)
    raise ValueError(f"{what} doesn't support multi-label training")


class ObservedLGBModel(gbdt.LGBModel):
    def fit_observed(self, dataset: DatasetH, monitor: RoundMonitor) -> None:
        import lightgbm as lgb

        ds_l = self._prepare_data(dataset)  # Qlib's own learn-data path
        dtrain, dvalid, extra = _lgb_datasets(ds_l, self.params)
        valid = _valid_frame(dataset)
        x_valid = valid["feature"].to_numpy()
        monitor.set_valid(_label_1d(valid["label"], "LightGBM"), valid.index.get_level_values(0).to_numpy())

        def callback(env: Any) -> None:
            scores = {(name, metric): value for name, metric, value, _ in env.evaluation_result_list}
            train_loss = float(scores.get(("train", "l2"), math.nan))
            valid_loss = float(scores.get(("valid", "l2"), math.nan))
            stop = monitor.update(env.iteration, train_loss, valid_loss,
                                  lambda: env.model.predict(x_valid, num_iteration=env.iteration + 1))  # fmt: skip
            if stop:
                raise lgb.callback.EarlyStopException(int(monitor.best_step or 0), env.evaluation_result_list)

        callback.order = 30  # type: ignore[attr-defined]
        params = {**self.params, **extra, "metric": "l2"}
        booster = lgb.train(params, dtrain, num_boost_round=self.num_boost_round, valid_sets=[dtrain, dvalid],
                            valid_names=["train", "valid"], callbacks=[callback])  # fmt: skip
        monitor.finish()
        best = int(monitor.best_step if monitor.best_step is not None else booster.current_iteration() - 1)
        self.model = lgb.Booster(model_str=booster.model_to_string(num_iteration=best + 1))


class ObservedXGBModel(xgboost.XGBModel):
    def fit_observed(self, dataset: DatasetH, monitor: RoundMonitor, *, num_boost_round: int = 1000) -> None:
        import xgboost as xgb

        df_train, df_valid = dataset.prepare(["train", "valid"], col_set=["feature", "label"],
                                             data_key=DataHandlerLP.DK_L)  # fmt: skip
        y_train, y_valid = _label_1d(df_train["label"], "XGBoost"), _label_1d(df_valid["label"], "XGBoost")
        dtrain = xgb.DMatrix(df_train["feature"].values, label=y_train)
        dvalid = xgb.DMatrix(df_valid["feature"].values, label=y_valid)
        monitor.set_valid(y_valid, df_valid.index.get_level_values(0).to_numpy())

        class Callback(xgb.callback.TrainingCallback):
            def after_iteration(self, model: Any, epoch: int, evals_log: Any) -> bool:
                train_rmse = float(list(evals_log["train"].values())[0][-1])
                valid_rmse = float(list(evals_log["valid"].values())[0][-1])
                return monitor.update(epoch, train_rmse**2, valid_rmse**2,
                                      lambda: model.predict(dvalid, iteration_range=(0, epoch + 1)))  # fmt: skip

        params = {**self._params, "eval_metric": "rmse"}
        booster = xgb.train(params, dtrain=dtrain, num_boost_round=num_boost_round,
                            evals=[(dtrain, "train"), (dvalid, "valid")], verbose_eval=False,
                            callbacks=[Callback()])  # fmt: skip
        monitor.finish()
        best = int(monitor.best_step if monitor.best_step is not None else booster.num_boosted_rounds() - 1)
        self.model = booster[: best + 1]


class ObservedCatBoostModel(catboost_model.CatBoostModel):
    def fit_observed(self, dataset: DatasetH, monitor: RoundMonitor, *, num_boost_round: int = 1000) -> None:
        from catboost import CatBoost, Pool
        from catboost.utils import get_gpu_device_count

        df_train, df_valid = dataset.prepare(["train", "valid"], col_set=["feature", "label"],
                                             data_key=DataHandlerLP.DK_L)  # fmt: skip
        y_train, y_valid = _label_1d(df_train["label"], "CatBoost"), _label_1d(df_valid["label"], "CatBoost")
        train_pool = Pool(data=df_train["feature"].values, label=y_train)
        valid_pool = Pool(data=df_valid["feature"].values, label=y_valid)
        x_valid = df_valid["feature"].values
        monitor.set_valid(y_valid, df_valid.index.get_level_values(0).to_numpy())
        chunk = monitor.progress_every
        model: Any = None
        step, stop = 0, False
        while step < num_boost_round and not stop:
            n = min(chunk, num_boost_round - step)
            params = {**self._params, "iterations": n, "verbose": False, "allow_writing_files": False,
                      "task_type": "GPU" if get_gpu_device_count() > 0 else "CPU"}  # fmt: skip
            current = CatBoost(params)
            current.fit(train_pool, eval_set=valid_pool, init_model=model, use_best_model=False)
            model = current
            evals = model.get_evals_result()
            learn = list(evals["learn"].values())[0]
            valid = list(evals["validation"].values())[0]
            for i in range(n):
                stop = monitor.update(step + i, float(learn[i]) ** 2, float(valid[i]) ** 2,
                                      functools.partial(model.predict, x_valid, ntree_end=step + i + 1))  # fmt: skip
                if stop:
                    break
            step += n
        monitor.finish()
        best = int(monitor.best_step if monitor.best_step is not None else model.tree_count_ - 1)
        model.shrink(best + 1)
        self.model = model


OBSERVED: dict[str, type] = {
    "lightgbm": ObservedLGBModel,
    "xgboost": ObservedXGBModel,
    "catboost": ObservedCatBoostModel,
}
