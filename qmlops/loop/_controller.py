"""The loop controller: one trading day per step, every stage recorded, resumable at the first unfinished stage.

Stages of a day ``d`` (the ``i``-th market day of the loop's data):

1. ``ingest``: append the day's bars as a new version of the loop's dataset (chained hash, lineage, quarantine;
   an alert when rows are quarantined or instruments are missing).
2. ``features``: the day's Alpha158 rows from its 130-day tail (:func:`qmlops.features.compute_tail_features`).
3. ``score``: the production model and every shadow candidate score the universe; one stored prediction per
   (day, instrument, version) whatever happens (``INSERT OR IGNORE`` on that key).
4. ``mature``: predictions of day ``i - 2`` meet their label (``close[i] / close[i-1] - 1``, Qlib's LABEL0):
   IC, rank IC and top-k long-short per version (and the market's oracle where the source has one).
5. ``watch``: drift share of the day's features against the production model's training reference (PSI > 0.25
   per feature) and IC decay (:func:`qmlops.loop.ic_decay`); alerts through the existing channels.
6. ``retrain``: by :func:`qmlops.loop.retrain_decision`; materialises the day's version and trains through the
   training engine on the policy's window; the first model goes to production, later ones into shadow.
7. ``verdict``: each shadow candidate's paired test (:func:`qmlops.loop.shadow_verdict`) promotes it
   (registry production; through the rollout controller when the policy deploys: ``shadow`` beside a served
   production version, else ``immediate``) or archives it with the reason.

A stage is recorded as done (``loop_steps``) only after its effects, and every effect is idempotent (versions
by hash, predictions and metrics by key), so a process killed anywhere resumes without a missed or doubled day.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

import numpy as np
import pandas as pd

from qmlops.config import Settings, get_settings
from qmlops.data import append_bars, branch_dataset, load_dataset
from qmlops.exceptions import ConflictError, QmlopsError, ValidationError
from qmlops.features import ALPHA158_LOOKBACK, compute_tail_features, tail_window
from qmlops.loop._decide import day_metrics, ic_decay, retrain_decision, shadow_verdict
from qmlops.loop._policy import LoopPolicy, load_policy
from qmlops.metadata import LOOP_STAGES, MetadataStore, RemoteMetadataStore, get_store

__all__ = ["LoopController", "LABEL_HORIZON"]

log = logging.getLogger(__name__)
Store = MetadataStore | RemoteMetadataStore
LABEL_HORIZON = 2  # LABEL0 = Ref($close, -2) / Ref($close, -1) - 1
_PSI_ALERT = 0.25
_WARMUP_DAYS = 60  # Alpha158's longest window: earlier days' features are warm-up
OnDay = Callable[[str, dict[str, Any]], None]


class LoopController:
    """Drives one loop (a name, a policy, the loop's own dataset). Build with :meth:`open_replay` / :meth:`open_live`."""

    def __init__(self, loop: dict[str, Any], *, store: Store, settings: Settings,
                 source: pd.DataFrame | None = None, oracle: pd.Series | None = None) -> None:  # fmt: skip
        self.loop = loop
        self.id: str = loop["id"]
        self.policy: LoopPolicy = load_policy(loop["policy"])
        self.store = store
        self.settings = settings
        self.source = source
        self.oracle = oracle
        self._predictors: dict[str, Any] = {}
        self._feature_cache: dict[pd.Timestamp, pd.DataFrame] = {}
        self.replay_days: list[pd.Timestamp] = []
        self._load_table()

    # -- opening ------------------------------------------------------------------------------------------
    @classmethod
    def open_replay(cls, name: str, dataset: str, start: str, end: str | None = None, *,
                    policy: LoopPolicy | dict[str, Any] | str | None = None, store: Store | None = None,
                    settings: Settings | None = None) -> LoopController:  # fmt: skip
        """A replay over ``dataset``'s stored days from ``start`` to ``end``: the days before ``start`` become the
        loop's first data version; a loop of the same name and policy resumes where it stopped."""
        settings = settings or get_settings()
        store = store or get_store(settings)
        pol = policy if isinstance(policy, LoopPolicy) else load_policy(policy)
        record = store.datasets.resolve(dataset)
        frame = load_dataset(record.id, store=store, settings=settings)
        calendar = pd.DatetimeIndex(sorted(frame["date"].unique()))
        first = _day(start, "from")
        last = _day(end, "to") if end else calendar[-1]
        if first > last:
            raise ValidationError("--from is after --to", field="from")
        head = frame[frame["date"] < first]
        if head["date"].nunique() < _WARMUP_DAYS:
            raise ValidationError(
                f"the replay needs {_WARMUP_DAYS} market days of {record.id} before {first.date()}; it has "
                f"{head['date'].nunique()}", field="from",
            )  # fmt: skip
        if not ((calendar >= first) & (calendar <= last)).any():
            raise ValidationError(f"{record.id} has no market day between {first.date()} and {last.date()}",
                                  field="to")  # fmt: skip
        loop_dataset = f"loop-{name}"
        loop = store.loops.create(name, dataset=loop_dataset, source=record.id, mode="replay",
                                  policy=pol.model_dump(mode="json"), model=f"loop-{name}")  # fmt: skip
        if store.datasets.latest(loop_dataset) is None:
            branch_dataset(
                loop_dataset, head.reset_index(drop=True), origin=record.id, store=store, settings=settings
            )
        ctl = cls(
            loop, store=store, settings=settings, source=frame, oracle=_oracle_of(record, store, settings)
        )
        ctl.replay_days = [d for d in calendar if first <= d <= last]
        return ctl

    @classmethod
    def open(
        cls, name: str, *, store: Store | None = None, settings: Settings | None = None
    ) -> LoopController:
        settings = settings or get_settings()
        store = store or get_store(settings)
        loop = store.loops.get(name)
        source = oracle = None
        if loop["source"]:
            record = store.datasets.get(loop["source"])
            source, oracle = (
                load_dataset(record.id, store=store, settings=settings),
                _oracle_of(record, store, settings),
            )
        return cls(loop, store=store, settings=settings, source=source, oracle=oracle)

    def _load_table(self) -> None:
        latest = self.store.datasets.latest(self.loop["dataset"])
        if latest is None:
            self.table = pd.DataFrame()
            self.calendar = pd.DatetimeIndex([])
            return
        self.table = load_dataset(latest.id, store=self.store, settings=self.settings)
        self.version = latest
        self._index()

    def _index(self) -> None:
        self.calendar = pd.DatetimeIndex(sorted(self.table["date"].unique()))
        self.first_dates = self.table.groupby("instrument")["date"].min()

    # -- driving ------------------------------------------------------------------------------------------
    def run(self, days: list[pd.Timestamp] | None = None, *, on_day: OnDay | None = None) -> dict[str, Any]:
        """Process ``days`` (default: the replay's) in order, skipping done ones; stops when asked to."""
        days = days if days is not None else self.replay_days
        self.store.loops.update(self.id, state="running", error=None)
        try:
            for day in days:
                if self.store.loops.get(self.id)["state"] == "stopping":
                    return self.store.loops.update(self.id, state="stopped")
                summary = self.run_day(day)
                if on_day is not None:
                    on_day(str(pd.Timestamp(day).date()), summary)
        except BaseException as exc:
            self.store.loops.update(self.id, state="failed", error=f"{type(exc).__name__}: {exc}"[:2000])
            raise
        return self.store.loops.update(self.id, state="finished")

    def run_day(self, day: Any, rows: pd.DataFrame | None = None) -> dict[str, Any]:
        """Every stage of ``day`` not yet done. ``rows``: the day's bars (live); a replay takes them from its source."""
        d = pd.Timestamp(day).normalize()
        done = self.store.loops.stages_done(self.id, d.date())
        out: dict[str, Any] = {}
        for stage in LOOP_STAGES:
            if stage in done:
                out[stage] = done[stage]["details"]
                continue
            started = time.perf_counter()
            details = (
                getattr(self, f"_{stage}")(d, rows) if stage == "ingest" else getattr(self, f"_{stage}")(d)
            )
            self.store.loops.finish_stage(self.id, d.date(), stage, details, time.perf_counter() - started)
            out[stage] = details
        self.store.loops.update(self.id, last_day=d.date())
        return out

    # -- stages -------------------------------------------------------------------------------------------
    def _ingest(self, d: pd.Timestamp, rows: pd.DataFrame | None) -> dict[str, Any]:
        if (
            len(self.calendar) and self.calendar[-1] >= d
        ):  # appended before a crash, or by `data ingest --append`
            return {"version": self.version.id, "already_stored": True}
        if rows is None:
            if self.source is None:
                raise ValidationError(f"no bars for {d.date()}", field="day")
            rows = self.source[self.source["date"] == d]
        result, self.table = append_bars(self.loop["dataset"], rows, on_error="quarantine", parent_frame=self.table,
                                         store=self.store, settings=self.settings)  # fmt: skip
        self.version = result.record
        self._index()
        diff = result.record.diff or {}
        details = {"version": result.record.id, "rows": int(diff.get("rows_added", 0)),
                   "quarantined": result.record.n_quarantined, "missing_instruments": diff.get("missing_instruments", [])}  # fmt: skip
        if details["quarantined"] or details["missing_instruments"]:
            message = (f"loop {self.id} {d.date()}: {details['quarantined']} bad rows quarantined, "
                       f"{len(details['missing_instruments'])} instruments missing")  # fmt: skip
            self._alert(
                d,
                "warning",
                message,
                {**details, "rule_counts": (result.record.config or {}).get("rule_counts")},
            )
        return details

    def _day_features(self, d: pd.Timestamp) -> pd.DataFrame:
        if d not in self._feature_cache:
            window, origin = tail_window(self.calendar, d)
            tail = self.table[(self.table["date"] >= window[0]) & (self.table["date"] <= d)]
            frame = compute_tail_features(
                tail, pd.DatetimeIndex([d]), first_dates=self.first_dates, calendar=window, origin=origin
            )
            self._feature_cache = {d: frame}  # one day kept: each stage of a day reads the same rows
        return self._feature_cache[d]

    def _features(self, d: pd.Timestamp) -> dict[str, Any]:
        frame = self._day_features(d)
        return {"rows": len(frame), "lookback_days": ALPHA158_LOOKBACK}

    def _score(self, d: pd.Timestamp) -> dict[str, Any]:
        versions = self._scoring_versions()
        if not versions:
            return {"versions": {}}
        frame = self._day_features(d)
        instruments = frame.index.get_level_values("instrument").astype(str).tolist()
        if self.policy.scoring == "ray":
            from qmlops.loop._scoring import score_ray

            scores = score_ray(frame, [self._blob(v) for v in versions])
        else:
            from qmlops.loop._scoring import score_local

            scores = score_local(frame, {v: self._predictor(v) for v in versions})
        written = {}
        for model_id, role in versions.items():
            written[model_id] = self.store.loops.add_predictions(self.id, d.date(), model_id, role, instruments,
                                                                 scores[model_id].tolist())  # fmt: skip
        return {"versions": versions, "rows_written": written}

    def _mature(self, d: pd.Timestamp) -> dict[str, Any]:
        pos = self.calendar.get_indexer([d])[0]
        if pos < LABEL_HORIZON:
            return {}
        p_day = self.calendar[pos - LABEL_HORIZON]
        close = self.table[self.table["date"].isin(self.calendar[pos - 1 : pos + 1])].pivot(
            index="date", columns="instrument", values="close"
        )
        returns = (close.iloc[-1] / close.iloc[0] - 1.0) if len(close) == 2 else pd.Series(dtype=float)
        preds = pd.DataFrame(self.store.loops.predictions(self.id, p_day.date()),
                             columns=["day", "instrument", "model_version", "role", "score"])  # fmt: skip
        rows = []
        for (model_id, role), block in preds.groupby(["model_version", "role"]):
            r = returns.reindex(block["instrument"]).to_numpy(dtype=np.float64)
            m = day_metrics(block["score"].to_numpy(dtype=np.float64), r, self.policy.topk)
            rows.append({"model_version": model_id, "role": role, **m.to_dict()})
        if self.oracle is not None:
            value = self.oracle.get(p_day)
            if value is not None and np.isfinite(value):
                rows.append({"model_version": "oracle", "role": "oracle", "ic": float(value), "rank_ic": None,
                             "long_short": None, "n": int(returns.notna().sum())})  # fmt: skip
        self.store.loops.add_metrics(self.id, p_day.date(), rows)
        return {"day": str(p_day.date()), "metrics": {r["model_version"]: r["ic"] for r in rows}}

    def _watch(self, d: pd.Timestamp) -> dict[str, Any]:
        production = self.store.loops.get(self.id)["production"]
        if production is None:
            return {}
        details: dict[str, Any] = {"drift_share": self._drift_share(production, self._day_features(d))}
        days, ics = self._decay_series(production)
        decayed, decay = ic_decay(ics, self.policy.trigger)
        if "change_index" in decay:
            decay["change_day"] = days[decay["change_index"]]
        details["ic_decay"] = {"decayed": decayed, **decay}
        if decayed:
            how = (f"Page-Hinkley {decay['statistic']:.2f} over {decay['threshold']:g}, mean IC {decay['mean_ic_since_change']:+.4f} "
                   f"since {decay['change_day']}" if "statistic" in decay else
                   f"{decay.get('rolling_mean_ic', 0):+.4f} under {self.policy.trigger.ic_floor:g}")  # fmt: skip
            self._alert(d, "warning", f"loop {self.id}: production online IC decayed ({how})", decay)
        share = self.policy.trigger.drift_share
        if share is not None and details["drift_share"] is not None and details["drift_share"] >= share:
            self.store.loops.add_decision(self.id, d.date(), "drift", f"drift share {details['drift_share']:.0%}",
                                          model_version=production)  # fmt: skip
        return details

    def _retrain(self, d: pd.Timestamp) -> dict[str, Any]:
        loop = self.store.loops.get(self.id)
        production = loop["production"]
        retrains = self.store.loops.decisions(self.id, "retrain")
        last = self.calendar.get_indexer([pd.Timestamp(retrains[-1]["day"])])[0] if retrains else None
        watch = self.store.loops.stages_done(self.id, d.date()).get("watch", {}).get("details") or {}
        days, ics = self._decay_series(production) if production else ([], [])
        go, reason, why = retrain_decision(
            day_index=int(self.calendar.get_indexer([d])[0]), has_production=production is not None,
            last_retrain_index=None if last is None or last < 0 else int(last),
            production_ics=ics, drift_share=watch.get("drift_share"),
            shadow_pending=bool(self._shadows()), policy=self.policy,
        )  # fmt: skip
        if not go:
            return {"retrain": False}
        if "change_index" in why:
            why["change_day"] = days[why["change_index"]]
        since = None
        if self.policy.change.restart_window:
            if reason == "ic_decay" and "change_day" in why:
                since = pd.Timestamp(why["change_day"])
            elif production is not None:  # the serving model's window started at a change: keep that start
                served = [r for r in retrains if r["model_version"] == production]
                start = ((served[-1]["details"] or {}).get("window_from_change")) if served else None
                since = pd.Timestamp(start) if start else None
        model = self._train(d, since)
        self.store.loops.add_decision(self.id, d.date(), "retrain", reason, model_version=model["id"],
                                      details={**why, **model})  # fmt: skip
        if production is None:
            self._promote(d, model["id"], "the loop's first model")
        else:
            self.store.loops.add_decision(self.id, d.date(), "shadow", f"v{model['version']} scores in shadow",
                                          model_version=model["id"])  # fmt: skip
        return {"retrain": True, "reason": reason, "model_version": model["id"]}

    def _verdict(self, d: pd.Timestamp) -> dict[str, Any]:
        production = self.store.loops.get(self.id)["production"]
        out = {}
        for model_id in self._shadows():
            cand = {m["day"]: m["ic"] for m in self.store.loops.metrics(self.id, model_id)}
            prod = {m["day"]: m["ic"] for m in self.store.loops.metrics(self.id, production)}
            days = sorted(set(cand) & set(prod))
            verdict = shadow_verdict([cand[k] for k in days], [prod[k] for k in days], self.policy.shadow)
            out[model_id] = verdict.to_dict()
            if verdict.verdict == "promote":
                self._promote(d, model_id, verdict.reason, verdict.to_dict())
            elif verdict.verdict == "archive":
                self._archive(d, model_id, verdict.reason, verdict.to_dict())
        return out

    # -- helpers ------------------------------------------------------------------------------------------
    def _scoring_versions(self) -> dict[str, str]:
        production = self.store.loops.get(self.id)["production"]
        out = {production: "production"} if production else {}
        out.update({m: "shadow" for m in self._shadows()})
        return out

    def _shadows(self) -> list[str]:
        """Candidates in shadow: a shadow decision with no promote/archive decision after it."""
        decided: dict[str, str] = {}
        for dec in self.store.loops.decisions(self.id):
            if dec["kind"] in ("shadow", "promote", "archive") and dec["model_version"]:
                decided[dec["model_version"]] = dec["kind"]
        return [m for m, kind in decided.items() if kind == "shadow"]

    def _ics(self, model_id: str) -> list[float | None]:
        return [m["ic"] for m in self.store.loops.metrics(self.id, model_id)]

    def _decay_series(self, model_id: str) -> tuple[list[str], list[float]]:
        """The daily ICs the decay test reads (oldest first, finite only), with their days: ``rolling_mean``: the
        production model's own; ``page_hinkley``: the production line's (whichever version served each day) since
        the last retrain on IC decay, so a model promoted into a regime where it is already wrong still shows
        the line's fall."""
        if self.policy.trigger.method == "page_hinkley":
            decays = self.store.loops.decisions(self.id, "retrain")
            since = max((str(r["day"]) for r in decays if r["reason"] == "ic_decay"), default="")
            rows = [(str(m["day"]), m["ic"]) for m in self.store.loops.metrics(self.id)
                    if m["role"] == "production" and str(m["day"]) > since]  # fmt: skip
        else:
            rows = [(str(m["day"]), m["ic"]) for m in self.store.loops.metrics(self.id, model_id)]
        rows = sorted((d, float(v)) for d, v in rows if v is not None and np.isfinite(v))
        return [r[0] for r in rows], [r[1] for r in rows]

    def _predictor(self, model_id: str) -> Any:
        if model_id not in self._predictors:
            from qmlops.registry import ModelRegistry

            record = self.store.models.get(model_id)
            self._predictors[model_id] = ModelRegistry(self.store, self.settings).load_predictor(
                record.name, record.id
            )
        return self._predictors[model_id]

    def _blob(self, model_id: str) -> Any:
        from qmlops.registry import ModelRegistry

        record = self.store.models.get(model_id)
        data = ModelRegistry(self.store, self.settings).artifacts.get(
            record.artifact_sha256, record.artifact_uri
        )
        return (model_id, record.signature, record.flavor, data)

    def _drift_share(self, model_id: str, frame: pd.DataFrame) -> float | None:
        from qmlops.monitoring import FeatureReference, bin_counts, psi

        reference = self.store.monitoring.get_reference(model_id)
        if reference is None:
            return None
        shifted, tested = 0, 0
        for stat in reference["stats"]:
            if not stat.get("bin_edges") or stat["feature"] not in frame.columns:
                continue
            try:
                ref = FeatureReference(
                    stat["feature"], np.asarray(stat["bin_edges"]), np.asarray(stat["bin_counts"])
                )
            except ValidationError:  # a constant feature in the training window has no usable bins
                continue
            counts = bin_counts(ref, frame[stat["feature"]].to_numpy(dtype=np.float64))
            if counts.sum() == 0:
                continue
            tested += 1
            shifted += int(psi(ref.reference_cells, counts) > _PSI_ALERT)
        return shifted / tested if tested else None

    def _train(self, d: pd.Timestamp, since: pd.Timestamp | None = None) -> dict[str, Any]:
        """Train on the policy's window of matured days up to ``d``; ``since``: a change point the window starts
        at instead (with at least ``change.min_days`` days) while it is later than the window's own start."""
        from qmlops.features import materialize
        from qmlops.training import TrainConfig, train

        pos = int(self.calendar.get_indexer([d])[0])
        last_label = pos - LABEL_HORIZON
        first = max(_WARMUP_DAYS - 1, 0 if self.policy.window == "expanding" else last_label - self.policy.train_days + 1)  # fmt: skip
        from_change = None
        if since is not None:
            at = int(self.calendar.searchsorted(since))
            start = max(_WARMUP_DAYS - 1, min(at, last_label - self.policy.change.min_days + 1))
            if start > first:
                first, from_change = start, str(since.date())
        window = self.calendar[first : last_label + 1]
        n = len(window)
        if n < min(30, self.policy.change.min_days if from_change else 30):
            raise ValidationError(f"{n} days with matured labels are too few to train on", field="train_days")
        # 70/15/15, with valid and test long enough to keep days after the label-horizon purge before each
        a, b = min(int(n * 0.7), n - 7), min(int(n * 0.85), n - 3)
        segments = {"train": (str(window[0].date()), str(window[a - 1].date())),
                    "valid": (str(window[a].date()), str(window[b - 1].date())),
                    "test": (str(window[b].date()), str(window[-1].date()))}  # fmt: skip
        materialize(self.version.id, self.policy.feature_set, engine=self.policy.feature_engine, store=self.store,
                    settings=self.settings)  # fmt: skip
        config = TrainConfig(model_type=self.policy.model_type, dataset=self.version.id, feature_set=self.policy.feature_set,
                             params=self.policy.model_params(since_change=from_change is not None), segments=segments, register_as=self.loop["model"],
                             report=False, seed=self.policy.seed, name=f"loop {self.id} {d.date()}")  # fmt: skip
        result = train(config, store=self.store, settings=self.settings)
        assert result.model_version is not None
        return {**result.model_version, "run_id": result.run_id, "segments": segments,
                "test_ic": result.evaluation.to_dict().get("ic"), "window_from_change": from_change}  # fmt: skip

    def _promote(
        self, d: pd.Timestamp, model_id: str, reason: str, details: dict[str, Any] | None = None
    ) -> None:
        from qmlops.registry import ModelRegistry

        registry = ModelRegistry(self.store, self.settings)
        record = self.store.models.get(model_id)
        if self.policy.deploy:
            from qmlops.deploy import RolloutController

            controller = RolloutController(self.settings, self.store)
            try:
                serving = any(
                    e.role == "stable" and e.weight > 0 for e in controller.service.table(record.name).entries
                )
            except QmlopsError:
                serving = False
            # a served model changes through a shadow rollout (staged beside production, health-checked, then
            # switched with the old version warm); the verdict is the matured days', so no live window is awaited
            strategy, options = (
                ("shadow", {"observe_seconds": 0.0, "min_requests": 0}) if serving else ("immediate", {})
            )
            rollout = controller.start(record.name, record.id, strategy, options)
            rollout = controller.run(rollout["id"])
            if rollout["state"] != "succeeded":
                self._archive(
                    d, model_id, f"rollout {rollout['id']} {rollout['state']}: {rollout.get('reason')}"
                )
                return
            details = {**(details or {}), "rollout": rollout["id"]}
        else:
            if record.state == "registered":
                registry.transition(record.name, record.id, "staging", reason=f"loop {self.id}", actor="loop")
            registry.transition(record.name, record.id, "production", reason=f"loop {self.id}: {reason}"[:500],
                                actor="loop", skip_validation="validated on entering staging")  # fmt: skip
        self.store.loops.update(self.id, production=model_id)
        self.store.loops.add_decision(
            self.id, d.date(), "promote", reason, model_version=model_id, details=details
        )

    def _archive(
        self, d: pd.Timestamp, model_id: str, reason: str, details: dict[str, Any] | None = None
    ) -> None:
        from qmlops.registry import ModelRegistry

        record = self.store.models.get(model_id)
        if record.state != "archived":
            ModelRegistry(self.store, self.settings).transition(record.name, record.id, "archived",
                                                                reason=f"loop {self.id}: {reason}"[:500], actor="loop")  # fmt: skip
        self.store.loops.add_decision(
            self.id, d.date(), "archive", reason, model_version=model_id, details=details
        )

    def _alert(self, d: pd.Timestamp, severity: str, message: str, details: dict[str, Any]) -> None:
        from qmlops.monitoring import AlertManager

        try:
            AlertManager(self.store).notify("loop", self.id, severity, message, details)
        except Exception:  # a failing channel must not stop the day
            log.exception("loop alert failed")
        self.store.loops.add_decision(self.id, d.date(), "alert", message, details=details)

    def add_shadow(self, model: str, ref: int | str = "latest", *, day: Any = None) -> str:
        """Put a registered version (trained anywhere, with the loop's feature set) into shadow beside production.

        Raises :class:`ConflictError` when the loop has no production model yet or the version already serves.
        """
        record = self.store.models.get(model) if str(model).startswith("mv-") else None
        if record is None:
            from qmlops.registry import ModelRegistry

            record = ModelRegistry(self.store, self.settings).get(model, ref)
        loop = self.store.loops.get(self.id)
        if loop["production"] is None:
            raise ConflictError(f"loop {self.id} has no production model to shadow against yet", field="loop")
        if record.id == loop["production"] or record.id in self._shadows():
            raise ConflictError(
                f"{record.name} v{record.version} already scores in loop {self.id}", field="version"
            )
        when = (
            pd.Timestamp(day)
            if day is not None
            else (self.calendar[-1] if len(self.calendar) else pd.Timestamp.now())
        )
        self.store.loops.add_decision(self.id, when.date(), "shadow", f"{record.name} v{record.version} added to shadow",
                                      model_version=record.id)  # fmt: skip
        return str(record.id)

    def status(self) -> dict[str, Any]:
        """The loop's row, its shadow candidates, the last days' stages and the decisions so far."""
        loop = self.store.loops.get(self.id)
        metrics = self.store.loops.metrics(self.id)
        return {**loop, "shadows": self._shadows(), "decisions": [d for d in self.store.loops.decisions(self.id)
                                                                  if d["kind"] != "alert"][-20:],
                "alerts": len(self.store.loops.decisions(self.id, "alert")), "recent_metrics": metrics[-10:]}  # fmt: skip

    def stop(self) -> dict[str, Any]:
        return self.store.loops.update(self.id, state="stopping")


def _day(value: str, field: str) -> pd.Timestamp:
    try:
        return pd.Timestamp(value).normalize()
    except (TypeError, ValueError):
        raise ValidationError(f"not a date: {value!r}", field=field) from None


def _oracle_of(record: Any, store: Store, settings: Settings) -> pd.Series | None:
    """The market's daily oracle IC (day -> Pearson IC of the planted score with the realised LABEL0) when the
    version's source records an oracle (the planted market, ``qmlops.data.load_oracle``); else None."""
    import importlib

    load_oracle = getattr(importlib.import_module("qmlops.data"), "load_oracle", None)
    if load_oracle is None:
        return None
    try:
        oracle = load_oracle(record.id, store=store, settings=settings)
    except QmlopsError:  # not a planted market
        return None
    frame = oracle.dropna(subset=["score", "label"])
    daily = frame.groupby("date")[["score", "label"]].apply(
        lambda g: g["score"].corr(g["label"]) if len(g) >= 3 else np.nan
    )
    return pd.Series(daily.to_numpy(dtype=np.float64), index=pd.DatetimeIndex(daily.index))
