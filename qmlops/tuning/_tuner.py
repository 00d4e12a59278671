"""AutoML on Ray Tune: the training engine as the trainable, Optuna samplers, ASHA or FIFO scheduling.

Each trial trains one configuration through :func:`qmlops.training.train`; inside the trial every progress
step (a boosting-round batch or an epoch) is a ``tune.report``, so ASHA can stop it early, while the engine's
own early stopping still applies. The model type is a dimension of the search when several are given: the
space is define-by-run (Optuna), so each type samples only its own parameters (conditional sub-spaces), and
the recommender's first picks are evaluated first (``points_to_evaluate``).

The tuning run is a ``runs`` row (kind ``tune``); its trials are ``trial`` rows with their per-step metrics;
the best configuration is retrained and registered with lineage ``tuning_run -> training_run -> model
version``. Those rows are also what ``resume`` continues from (see :func:`resume_tuning`).
"""

from __future__ import annotations

import math
import os
import time
import uuid
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from qmlops.config import Settings, get_settings
from qmlops.exceptions import ValidationError
from qmlops.metadata import MetadataStore, RemoteMetadataStore, get_store
from qmlops.training import TrainConfig, check_space, get_model_type

__all__ = [
    "TuneConfig",
    "TuneResult",
    "tune_models",
    "resume_tuning",
    "seed_points",
    "SEARCHERS",
    "SCHEDULERS",
]

Store = MetadataStore | RemoteMetadataStore
SEARCHERS = ("tpe", "nsga2", "cmaes", "random")
SCHEDULERS = ("asha", "fifo")


@dataclass
class TuneConfig:
    model_types: list[str] = field(default_factory=lambda: ["lightgbm"])
    dataset: str = "sp500"
    feature_set: str = "alpha158"
    num_samples: int = 16
    searcher: str = "tpe"
    scheduler: str = "asha"
    metric: str = "valid_loss"
    mode: str = "min"
    objectives: list[str] | None = (
        None  # multi-objective, e.g. ["valid_ic:max", "train_seconds:min"] (NSGA-II)
    )
    grace_period: int = 2
    reduction_factor: float = 3.0
    max_t: int = 200
    max_concurrent: int = 2
    cpus_per_trial: float = 1.0
    gpus_per_trial: float = (
        0.0  # for the types that can use a GPU (catalogue ``gpu`` optional); trees get none
    )
    gpus_by_type: dict[str, float] = field(
        default_factory=dict
    )  # model type -> GPU share, overrides the above
    time_budget_s: float | None = None
    seed: int = 0
    space_overrides: dict[str, dict[str, Any]] = field(default_factory=dict)  # model type -> {param: spec}
    fixed_params: dict[str, dict[str, Any]] = field(default_factory=dict)  # model type -> {param: value}
    instruments: list[str] | None = None
    step_len: int = 20
    progress_every: int = 10
    early_stopping: dict[str, Any] | str | None = None
    register_as: str | None = None  # None -> "<feature_set>-tuned"; "" -> do not retrain/register the best
    points_to_evaluate: list[dict[str, Any]] = field(default_factory=list)

    def validate(self) -> TuneConfig:
        if not self.model_types:
            raise ValidationError("give at least one model type", field="model_types")
        for name in self.model_types:
            get_model_type(name)
        if self.searcher not in SEARCHERS:
            raise ValidationError(f"must be one of {', '.join(SEARCHERS)}", field="searcher")
        if self.scheduler not in SCHEDULERS:
            raise ValidationError(f"must be one of {', '.join(SCHEDULERS)}", field="scheduler")
        if self.mode not in ("min", "max"):
            raise ValidationError("mode must be min or max", field="mode")
        if self.metric not in ("valid_loss", "valid_ic"):
            raise ValidationError("metric must be valid_loss or valid_ic", field="metric")
        if int(self.num_samples) < 1 or int(self.max_concurrent) < 1:
            raise ValidationError("num_samples and max_concurrent must be >= 1", field="num_samples")
        if self.objectives:
            for obj in self.objectives:
                name, _, mode = obj.partition(":")
                if name not in ("valid_loss", "valid_ic", "train_seconds", "test_ic") or mode not in (
                    "min",
                    "max",
                ):
                    raise ValidationError(f"objective {obj!r}: use NAME:min|max with NAME in valid_loss, valid_ic, "
                                          "train_seconds", field="objectives")  # fmt: skip
            if self.scheduler == "asha":
                raise ValidationError("multi-objective search needs the fifo scheduler (ASHA ranks one metric)",
                                      field="scheduler")  # fmt: skip
        if float(self.cpus_per_trial) <= 0:
            raise ValidationError("cpus_per_trial must be > 0", field="cpus_per_trial")
        _check_gpu_share(self.gpus_per_trial, "gpus_per_trial")
        for name, share in self.gpus_by_type.items():
            if name not in self.model_types:
                raise ValidationError(
                    f"a GPU share for {name!r}, which is not searched", field="gpus_by_type"
                )
            _check_gpu_share(share, f"gpus_by_type.{name}")
        for name, overrides in self.space_overrides.items():
            if name not in self.model_types:
                raise ValidationError(
                    f"a space override for {name!r}, which is not searched", field="space_overrides"
                )
            check_space(overrides, get_model_type(name))
        for name in self.model_types:
            space = self.space(name)
            if not space:
                raise ValidationError(f"{name} has an empty search space", field="space_overrides")
        return self

    def gpus_for(self, name: str) -> float:
        """The GPU share a trial of model type ``name`` asks Ray for: its ``gpus_by_type`` entry, else
        ``gpus_per_trial`` for types that can use a GPU and 0 for those that cannot (trees, linear)."""
        if name in self.gpus_by_type:
            return float(self.gpus_by_type[name])
        return float(self.gpus_per_trial) if get_model_type(name).gpu != "no" else 0.0

    def space(self, name: str) -> dict[str, dict[str, Any]]:
        mtype = get_model_type(name)
        merged = {**mtype.search_space, **self.space_overrides.get(name, {})}
        return check_space(merged, mtype)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class TuneResult:
    run_id: str
    trials: list[dict[str, Any]]
    best: dict[str, Any]
    pareto: list[dict[str, Any]]
    model_version: dict[str, Any] | None
    duration_seconds: float
    storage_path: str

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _check_gpu_share(value: Any, name: str) -> None:
    """Ray takes a fraction of one GPU (0 < share <= 1) or whole GPUs, nothing in between."""
    try:
        share = float(value)
    except (TypeError, ValueError):
        raise ValidationError(f"must be a number of GPUs, got {value!r}", field=name) from None
    if not math.isfinite(share) or share < 0 or (share > 1 and not share.is_integer()):
        raise ValidationError(f"must be 0, a fraction of one GPU (0 < share <= 1) or whole GPUs; got {value!r}",
                              field=name)  # fmt: skip


class _TrialResources:
    """Per-trial resources from the trial's model type (a class so Tune can pickle and checkpoint it)."""

    def __init__(self, cpus: float, gpus: dict[str, float]) -> None:
        self.cpus, self.gpus = float(cpus), dict(gpus)

    def __call__(self, trial_config: Mapping[str, Any]) -> Any:
        from ray.tune import PlacementGroupFactory

        gpus = self.gpus.get(str(trial_config.get("model_type")), 0.0)
        return PlacementGroupFactory([{"CPU": self.cpus, "GPU": gpus} if gpus else {"CPU": self.cpus}])


def _suggest(trial: Any, name: str, spec: Mapping[str, Any], prefix: str) -> Any:
    key = f"{prefix}{name}"
    if spec["type"] == "float":
        return trial.suggest_float(key, spec["low"], spec["high"], log=bool(spec.get("log")))
    if spec["type"] == "int":
        return trial.suggest_int(key, int(spec["low"]), int(spec["high"]), log=bool(spec.get("log")))
    return trial.suggest_categorical(key, list(spec["choices"]))


class _DefineByRun:
    """The conditional space (model type, then that type's parameters); a class so Tune can checkpoint it."""

    def __init__(self, spaces: dict[str, dict[str, dict[str, Any]]]) -> None:
        self.spaces = spaces

    def __call__(self, trial: Any) -> dict[str, Any] | None:
        spaces = self.spaces
        name = (
            trial.suggest_categorical("model_type", list(spaces)) if len(spaces) > 1 else next(iter(spaces))
        )
        out: dict[str, Any] = {"model_type": name}
        for param, spec in spaces[name].items():
            out[f"{name}.{param}"] = _suggest(trial, param, spec, f"{name}.")
        return out


def _define_by_run(config: TuneConfig) -> _DefineByRun:
    return _DefineByRun({name: config.space(name) for name in config.model_types})


def seed_points(config: TuneConfig, model_types: list[str]) -> list[dict[str, Any]]:
    """Starting points for the search: each given type at its catalogue defaults (clipped into its space).

    Used to evaluate the recommender's first picks before the sampler explores.
    """
    points = []
    for name in model_types:
        if name not in config.model_types:
            continue
        defaults = get_model_type(name).defaults
        point: dict[str, Any] = {"model_type": name} if len(config.model_types) > 1 else {}
        for param, spec in config.space(name).items():
            if spec["type"] == "categorical":
                value = defaults.get(param, spec["choices"][0])
                value = value if value in spec["choices"] else spec["choices"][0]
            else:
                low, high = spec["low"], spec["high"]
                value = min(max(defaults.get(param, (low + high) / 2), low), high)
                value = int(round(value)) if spec["type"] == "int" else float(value)
            point[f"{name}.{param}"] = value
        points.append(point)
    return points


def _sampler(config: TuneConfig) -> Any:
    import optuna

    if config.searcher == "tpe":
        return optuna.samplers.TPESampler(seed=config.seed, n_startup_trials=max(2, config.num_samples // 4))
    if config.searcher == "nsga2":
        return optuna.samplers.NSGAIISampler(
            seed=config.seed, population_size=max(4, min(16, config.num_samples // 2))
        )
    if config.searcher == "cmaes":
        return optuna.samplers.CmaEsSampler(seed=config.seed, warn_independent_sampling=False)
    return optuna.samplers.RandomSampler(seed=config.seed)


def _trial_params(
    trial_config: Mapping[str, Any], fixed: Mapping[str, dict[str, Any]]
) -> tuple[str, dict[str, Any]]:
    name = str(trial_config["model_type"])
    params = {k.split(".", 1)[1]: v for k, v in trial_config.items() if k.startswith(f"{name}.")}
    return name, {**fixed.get(name, {}), **params}


def _trainable(trial_config: dict[str, Any], *, base: dict[str, Any], store: Any, settings: Settings) -> None:
    import ray
    from ray import tune

    from qmlops.training import _gbdt, train

    _gbdt.REUSE_LGB_DATASETS = (
        True  # trials share data, not parameters: bin the LightGBM data once per worker
    )
    name, params = _trial_params(trial_config, base["fixed_params"])
    started, started_at = time.perf_counter(), time.time()
    result = train(
        TrainConfig(name, dataset=base["dataset"], feature_set=base["feature_set"], params=params,
                    instruments=base["instruments"], step_len=base["step_len"], early_stopping=base["early_stopping"],
                    progress_every=base["progress_every"], register_as="", report=False),
        store=store, settings=settings, parent_run_id=base["run_id"],
    )  # fmt: skip
    losses = [
        s["valid_loss"]
        for s in result.steps
        if s.get("valid_loss") is not None and math.isfinite(s["valid_loss"])
    ]
    best = next(
        (s for s in result.steps if s["step"] == result.best_step), result.steps[-1] if result.steps else {}
    )
    tune.report({
        "step": (result.steps[-1]["step"] + 1) if result.steps else 0,
        "valid_loss": min(losses) if losses else float("nan"),
        "valid_ic": float(best.get("valid_ic") or float("nan")),
        "train_seconds": time.perf_counter() - started,
        "test_ic": result.evaluation.ic,
        "trial_run_id": result.run_id,
        "node_id": ray.get_runtime_context().get_node_id(),  # which node ran it (Tune's node_ip is per host)
        "device": result.device.get("device"), "device_reason": result.device.get("reason"),
        "gpu_ids": ",".join(str(i) for i in ray.get_gpu_ids()),  # a string: Tune's loggers take no lists
        "cuda_visible_devices": os.environ.get("CUDA_VISIBLE_DEVICES"),
        "started_at": started_at, "ended_at": time.time(),
        "trial_complete": True,  # Tune sets its own "done" on trials a scheduler stops, so not that name
    })  # fmt: skip


def _pareto(rows: list[dict[str, Any]], objectives: list[str]) -> list[dict[str, Any]]:
    def key(row: dict[str, Any], obj: str) -> float:
        name, _, mode = obj.partition(":")
        value = row.get(name)
        if value is None or not math.isfinite(float(value)):
            return math.inf
        return float(value) if mode == "min" else -float(value)

    front = []
    for a in rows:
        ka = [key(a, o) for o in objectives]
        dominated = any(all(key(b, o) <= x for o, x in zip(objectives, ka, strict=True))
                        and any(key(b, o) < x for o, x in zip(objectives, ka, strict=True)) for b in rows if b is not a)  # fmt: skip
        if not dominated and all(math.isfinite(x) for x in ka):
            front.append(a)
    return front


def tune_models(config: TuneConfig, *, store: Store | None = None, settings: Settings | None = None,
                run_id: str | None = None) -> TuneResult:  # fmt: skip
    """Run the search (see the module docstring); needs a connected Ray."""
    config.validate()
    settings = settings or get_settings()
    store = store or get_store(settings)
    from qmlops.features import builtin_set

    definition = builtin_set(config.feature_set)
    dataset_rec = store.datasets.resolve(config.dataset)
    mat = store.features.find(dataset_rec.id, definition.id)
    if mat is None or mat.status != "complete":
        raise ValidationError(f"feature set {definition.name} is not materialised for {dataset_rec.id}",
                              field="feature_set")  # fmt: skip
    run_id = run_id or "tune-" + uuid.uuid4().hex[:12]
    storage = str(Path(settings.home) / "tune")
    store.runs.start(run_id, "tune", name=f"tune {','.join(config.model_types)}", model_type=",".join(config.model_types),
                     config={**config.to_dict(), "storage_path": storage, "dataset_id": dataset_rec.id},
                     total_steps=config.num_samples)  # fmt: skip
    store.lineage.add_node(run_id, "tuning_run", f"tuning {run_id}")
    store.lineage.add_edge(
        mat.id, run_id, "tuned_on", {"searcher": config.searcher, "scheduler": config.scheduler}
    )
    return _fit(config, store, settings, run_id, storage)


def resume_tuning(run_id: str, *, store: Store | None = None, settings: Settings | None = None) -> TuneResult:
    """Continue an interrupted tuning run: finished trials are kept (not rerun), the rest are searched.

    The finished trials come from the metadata store (their parameters and best metric) and count towards the
    run's trial budget and its best; trials that were in flight are recorded as interrupted and their budget is
    searched again (a new Tune experiment, the sampler seeded afresh). (Restoring Tune's own searcher checkpoint
    was measured to deadlock when the driver died between a trial's creation and the searcher's next save: the
    restored concurrency limiter waits for a trial that no longer exists.)
    """
    settings = settings or get_settings()
    store = store or get_store(settings)
    run = store.runs.get(run_id)
    if run.kind != "tune":
        raise ValidationError(f"{run_id} is a {run.kind} run, not a tuning run", field="run_id")
    known = set(TuneConfig.__dataclass_fields__)
    config = TuneConfig(**{k: v for k, v in run.config.items() if k in known})
    prior: list[dict[str, Any]] = []
    for trial in store.runs.list(kind="trial", parent_id=run.id, limit=100_000):
        if trial.status == "running":
            store.runs.finish(trial.id, status="failed", error="interrupted: the tuning driver stopped")
            continue
        if trial.status != "finished":
            continue
        steps = store.runs.metrics(trial.id)
        losses = [m.valid_loss for m in steps if m.valid_loss is not None]
        best = next((m for m in steps if m.step == trial.best_step), steps[-1] if steps else None)
        prior.append({"model_type": trial.model_type, "params": trial.params,
                      "valid_loss": min(losses) if losses else None,
                      "valid_ic": best.valid_ic if best is not None else None,
                      "train_seconds": trial.duration_seconds, "test_ic": (trial.metrics or {}).get("ic"),
                      "iterations": len(steps), "stopped_early": False, "trial_run_id": trial.id, "error": None})  # fmt: skip
    remaining = max(0, int(config.num_samples) - len(prior))
    return _fit(config, store, settings, run.id, str(run.config["storage_path"]), prior=prior,
                num_samples=remaining, name=f"{run.id}-resume-{int(time.time())}")  # fmt: skip


def _fit(
    config: TuneConfig,
    store: Store,
    settings: Settings,
    run_id: str,
    storage: str,
    *,
    prior: list[dict[str, Any]] | None = None,
    num_samples: int | None = None,
    name: str | None = None,
) -> TuneResult:
    from ray import tune
    from ray.tune.schedulers import ASHAScheduler, FIFOScheduler
    from ray.tune.search import ConcurrencyLimiter
    from ray.tune.search.optuna import OptunaSearch

    started = time.perf_counter()
    prior = prior or []
    samples = config.num_samples if num_samples is None else num_samples
    base = {"dataset": config.dataset, "feature_set": config.feature_set, "instruments": config.instruments,
            "step_len": config.step_len, "early_stopping": config.early_stopping, "fixed_params": config.fixed_params,
            "progress_every": config.progress_every, "run_id": run_id}  # fmt: skip
    # each trial asks for its own model type's GPU share: a combined search gives GPUs to neural trials only
    resources = _TrialResources(
        config.cpus_per_trial, {name: config.gpus_for(name) for name in config.model_types}
    )
    trainable = tune.with_resources(tune.with_parameters(_trainable, base=base, store=store, settings=settings),
                                    resources)  # fmt: skip
    if config.objectives:
        metric: Any = [o.partition(":")[0] for o in config.objectives]
        mode: Any = [o.partition(":")[2] for o in config.objectives]
    else:
        metric, mode = config.metric, config.mode
    points = list(config.points_to_evaluate) if not prior else []
    sampler_config = (
        config if not prior else TuneConfig(**{**config.to_dict(), "seed": config.seed + len(prior)})
    )
    # (Ray's OptunaSearch refuses evaluated rewards with a define-by-run space, so a resumed search cannot hand
    # the finished trials to the sampler; it searches the remaining budget with a shifted seed instead.)
    searcher = OptunaSearch(space=_define_by_run(config), metric=metric, mode=mode, sampler=_sampler(sampler_config),
                            points_to_evaluate=points or None)  # fmt: skip
    scheduler = (ASHAScheduler(time_attr="training_iteration", max_t=config.max_t, grace_period=config.grace_period,
                               reduction_factor=config.reduction_factor, metric=config.metric, mode=config.mode)
                 if config.scheduler == "asha" else FIFOScheduler())  # fmt: skip
    grid: Any = []
    if samples > 0:
        tuner = tune.Tuner(
            trainable,
            tune_config=tune.TuneConfig(search_alg=ConcurrencyLimiter(searcher, max_concurrent=config.max_concurrent),
                                        scheduler=scheduler, num_samples=samples,
                                        time_budget_s=config.time_budget_s, reuse_actors=True),
            run_config=tune.RunConfig(name=name or run_id, storage_path=storage, verbose=0),
        )  # fmt: skip
        try:
            grid = tuner.fit()
        except BaseException as exc:
            store.runs.finish(run_id, status="failed", error=f"{type(exc).__name__}: {exc}")
            raise
    # A trial the scheduler stopped may have been ended before it could record that itself (Tune stops the
    # trial's actor): whatever is still running under this search was stopped by the scheduler.
    from qmlops.training._engine import _finish_stopped

    for child in store.runs.list(kind="trial", parent_id=run_id, status="running", limit=100_000):
        _finish_stopped(store, child.id)
    trials: list[dict[str, Any]] = list(prior)
    for i in range(len(grid)):
        result = grid[i]
        metrics = dict(result.metrics or {})
        name, params = _trial_params(result.config or {}, config.fixed_params) if result.config else ("?", {})
        trials.append({"model_type": name, "params": params, "valid_loss": metrics.get("valid_loss"),
                       "valid_ic": metrics.get("valid_ic"), "train_seconds": metrics.get("train_seconds"),
                       "test_ic": metrics.get("test_ic"), "iterations": metrics.get("training_iteration"),
                       "stopped_early": not metrics.get("trial_complete", False), "trial_run_id": metrics.get("trial_run_id"), "node_id": metrics.get("node_id"),
                       "gpus": config.gpus_for(name) if name in config.model_types else None,
                       **{k: metrics.get(k) for k in ("device", "device_reason", "cuda_visible_devices", "started_at",
                                                      "ended_at")},
                       "gpu_ids": [i for i in str(metrics.get("gpu_ids") or "").split(",") if i],
                       "error": str(result.error)[:300] if result.error else None})  # fmt: skip
    ok = [
        t
        for t in trials
        if t["error"] is None and t[config.metric] is not None and math.isfinite(float(t[config.metric]))
    ]
    if not ok:
        store.runs.finish(run_id, status="failed", error="no trial produced the metric")
        raise ValidationError("no trial finished with a value for the metric", field="metric")
    sign = 1.0 if config.mode == "min" else -1.0
    best = min(ok, key=lambda t: sign * float(t[config.metric]))
    pareto = _pareto(ok, config.objectives) if config.objectives else []
    model_version = None
    if config.register_as != "":
        model_version = _register_best(config, best, store, settings, run_id)
    store.runs.finish(run_id, metrics={"best_" + config.metric: float(best[config.metric]), "trials": len(trials),
                                       "stopped_early": sum(t["stopped_early"] for t in trials)},
                      stop_reason=f"{len(trials)} trials", stopped_by="budget")  # fmt: skip
    if model_version:
        store.runs.attach(run_id, model_version=model_version["id"])
    return TuneResult(run_id, trials, best, pareto, model_version, time.perf_counter() - started, storage)


def _register_best(
    config: TuneConfig, best: dict[str, Any], store: Store, settings: Settings, run_id: str
) -> dict[str, Any]:
    from qmlops.training import train

    result = train(TrainConfig(best["model_type"], dataset=config.dataset, feature_set=config.feature_set,
                               params=best["params"], instruments=config.instruments, step_len=config.step_len,
                               early_stopping=config.early_stopping, progress_every=config.progress_every,
                               register_as=config.register_as or f"{config.feature_set}-tuned"),
                   store=store, settings=settings)  # fmt: skip
    store.lineage.add_edge(run_id, result.run_id, "best_of", {"valid_metric": best.get(config.metric)})
    assert result.model_version is not None
    return result.model_version
