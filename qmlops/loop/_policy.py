"""The loop's policy: schedule, windows, triggers, shadow gate and model type, validated before anything runs."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import pydantic
from pydantic import BaseModel, ConfigDict, Field, model_validator

from qmlops.exceptions import QmlopsError, ValidationError

__all__ = [
    "SMALL_WINDOW_PARAMS",
    "ChangePolicy",
    "LoopPolicy",
    "TriggerPolicy",
    "ShadowPolicy",
    "load_policy",
]


class TriggerPolicy(BaseModel):
    """Retrain triggers. IC decay (``method``): ``rolling_mean``: the production model's mean online IC over the
    last ``ic_window`` matured days is under ``ic_floor`` on ``ic_days`` consecutive days; ``page_hinkley``: a
    Page-Hinkley test for a fall in the mean daily IC of the production line (whichever version served each day,
    since the last retrain on decay; tolerance ``ph_delta``, threshold ``ph_threshold``), with ``ic_floor`` as
    the switch (``null``: off). Either estimates where the fall began (the change point).
    Drift: the share of features whose PSI against the production model's training reference exceeds 0.25 is at
    least ``drift_share`` (``null``: off)."""

    model_config = ConfigDict(extra="forbid")
    method: Literal["rolling_mean", "page_hinkley"] = "rolling_mean"
    ph_delta: float = Field(0.01, ge=0)
    ph_threshold: float = Field(0.5, gt=0)
    ic_floor: float | None = 0.0
    ic_window: int = Field(10, ge=2, le=250)
    ic_days: int = Field(3, ge=1, le=250)
    drift_share: float | None = Field(None, gt=0, le=1)
    cooldown_days: int = Field(10, ge=0)


class ChangePolicy(BaseModel):
    """What a retrain on IC decay learns from. ``restart_window``: train on the matured days since the estimated
    change point (at least ``min_days`` of them, reaching back before it when fewer have passed), and keep that
    start for the next scheduled retrains while the model trained from it serves, until the rolling window has
    moved past it. ``params``: the model's parameters while a window is shorter than ``train_days`` because it
    starts at a change (``null``: the policy's)."""

    model_config = ConfigDict(extra="forbid")
    restart_window: bool = False
    min_days: int = Field(15, ge=10)
    params: dict[str, Any] | None = None


class ShadowPolicy(BaseModel):
    """A candidate scores in shadow; after ``min_days`` matured days beside production, it is promoted when the
    mean of daily IC differences (candidate - production) exceeds ``margin`` and a one-sided paired t-test of
    those differences has p < ``alpha``; it is archived when that cannot happen: the difference is at or under
    the margin, or ``max_days`` passed without significance."""

    model_config = ConfigDict(extra="forbid")
    min_days: int = Field(10, ge=3)
    max_days: int = Field(30, ge=3)
    margin: float = 0.0
    alpha: float = Field(0.1, gt=0, lt=1)

    @model_validator(mode="after")
    def _days(self) -> ShadowPolicy:
        if self.max_days < self.min_days:
            raise ValueError("max_days must be >= min_days")
        return self


# Qlib's LightGBM defaults are tuned for CSI300 (lambda_l1 205, lambda_l2 581): on a rolling window of a few
# thousand rows they allow no split and the model is a constant. The loop's windows are small.
SMALL_WINDOW_PARAMS: dict[str, dict[str, Any]] = {
    "lightgbm": {"lambda_l1": 1.0, "lambda_l2": 10.0, "num_leaves": 15, "learning_rate": 0.05,
                 "num_boost_round": 200},
}  # fmt: skip


class LoopPolicy(BaseModel):
    model_config = ConfigDict(extra="forbid")
    model_type: str = "lightgbm"
    params: dict[str, Any] | None = (
        None  # None: SMALL_WINDOW_PARAMS for the type, else the catalogue's defaults
    )
    feature_set: Literal["alpha158"] = "alpha158"
    train_days: int = Field(
        120, ge=30, description="rolling training window (market days with matured labels)"
    )
    window: Literal["rolling", "expanding"] = "rolling"
    min_history_days: int = Field(120, ge=70, description="days of data before the first model is trained")
    retrain_every: int = Field(20, ge=0, description="scheduled retrain every N days (0: triggers only)")
    trigger: TriggerPolicy = Field(default_factory=lambda: TriggerPolicy.model_validate({}))
    shadow: ShadowPolicy = Field(default_factory=lambda: ShadowPolicy.model_validate({}))
    change: ChangePolicy = Field(default_factory=lambda: ChangePolicy.model_validate({}))
    topk: int = Field(10, ge=1)
    scoring: Literal["local", "ray"] = "local"
    feature_engine: Literal["local", "ray"] = "local"
    deploy: bool = False  # promote through the rollout controller on a running gateway
    seed: int = 0

    @model_validator(mode="after")
    def _known_model(self) -> LoopPolicy:
        from qmlops.training import get_model_type

        mtype = get_model_type(self.model_type)
        mtype.params_for(1, self.model_params())  # unknown type or parameter: refused
        mtype.params_for(1, self.model_params(since_change=True))
        return self

    def model_params(self, *, since_change: bool = False) -> dict[str, Any]:
        if since_change and self.change.params is not None:
            return dict(self.change.params)
        return dict(SMALL_WINDOW_PARAMS.get(self.model_type, {}) if self.params is None else self.params)


def load_policy(source: str | Path | dict[str, Any] | None) -> LoopPolicy:
    """A policy from a YAML/JSON file, a mapping, or ``None`` (the defaults). Raises :class:`ValidationError`
    naming the first bad field (``policy.trigger.ic_window``, say)."""
    if source is None:
        data: Any = {}
    elif isinstance(source, dict):
        data = source
    else:
        path = Path(source)
        if not path.exists():
            raise ValidationError(f"no such policy file {str(path)!r}", field="policy")
        import yaml

        try:
            data = yaml.safe_load(path.read_text()) or {}
        except yaml.YAMLError as exc:
            raise ValidationError(f"cannot parse {path.name}: {exc}", field="policy") from None
        if not isinstance(data, dict):
            raise ValidationError("a policy file holds a mapping of settings", field="policy")
    try:
        return LoopPolicy.model_validate(data)
    except QmlopsError as exc:  # the model-type check: unknown type or parameter
        raise ValidationError(exc.message, field=f"policy.{exc.field or 'model_type'}") from None
    except pydantic.ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"])
        raise ValidationError(first["msg"], field=f"policy.{where}" if where else "policy") from None
