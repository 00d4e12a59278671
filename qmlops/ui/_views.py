"""JSON views behind the ``/ui`` page: each one reads the metadata store and returns plain, JSON-safe data.

The page itself (``static/``) is plain HTML and JavaScript with no build step; it reads these views through the
gateway's ``/v1/ui/...`` endpoints and the existing monitoring, experiment and alert endpoints. Views take the
store as an argument so that the gateway (remote store) and tests (either store) call them the same way.
"""

from __future__ import annotations

import threading
from typing import Any

from qmlops.metadata import finite_or_none

__all__ = [
    "clean",
    "models_view",
    "catalogue_view",
    "runs_view",
    "run_stage",
    "run_view",
    "rollouts_view",
    "jobs_view",
    "loops_view",
    "report_html",
]

_RECOMMENDATIONS: dict[str, dict[str, Any]] = {}  # materialization id -> meta-features and picks
_RECOMMEND_LOCK = threading.Lock()


def clean(value: Any) -> Any:
    """The value with every non-finite float replaced by None (JSON has no NaN) and datetimes as ISO text."""
    if isinstance(value, float):
        return finite_or_none(value)
    if isinstance(value, dict):
        return {str(k): clean(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [clean(v) for v in value]
    if hasattr(value, "isoformat"):
        return value.isoformat()
    return value


def models_view(store: Any, *, limit: int = 500) -> dict[str, Any]:
    """Registered models: per name its versions (state, aliases, key metrics) and the lifecycle history."""
    records = store.models.search([], sort="created_at", descending=True, limit=limit)
    names: dict[str, list[dict[str, Any]]] = {}
    for r in records:
        names.setdefault(r.name, []).append({
            "id": r.id, "version": r.version, "model_type": r.model_type, "state": r.state, "aliases": r.aliases,
            "created_at": r.created_at, "created_by": r.created_by, "metrics": r.metrics,
            "n_features": len((r.signature or {}).get("feature_names") or []), "run_id": r.tags.get("run_id"),
            "report_uri": r.tags.get("report_uri"), "tags": r.tags,
        })  # fmt: skip
    _mark_served(store, names)
    histories = store.models.recent_history(sorted(names), per_name=50)
    out = []
    for name in sorted(names):
        out.append({"name": name, "versions": sorted(names[name], key=lambda v: -v["version"]),
                    "history": [t.to_dict() for t in histories[name]]})  # fmt: skip
    return clean({"models": out})


_ROUTED_STATES = ("canary", "production")


def _mark_served(store: Any, names: dict[str, list[dict[str, Any]]]) -> None:
    """Each version's share of traffic in its routing table (what is live), and why the registry state can
    differ from it: a version deployed directly (no rollout) serves while its lifecycle state is unchanged."""
    routed: dict[str, dict[str, Any]] = {}
    for table in store.serving.list_tables():
        for e in table["entries"]:
            routed[e["model_version"]] = {"weight": float(e["weight"]), "role": e["role"]}
    for versions in names.values():
        for v in versions:
            serving = routed.get(v["id"])
            v["serving"] = serving
            if serving and serving["weight"] > 0 and v["state"] not in _ROUTED_STATES:
                v["serving_note"] = (f"live: {serving['weight']:g}% of {serving['role']} traffic through a direct "
                                     f"deploy (no rollout), so its registry state is still {v['state']}")  # fmt: skip
            elif v["state"] in _ROUTED_STATES and not (serving and serving["weight"] > 0):
                v["serving_note"] = f"{v['state']} in the registry but not routed any traffic now"


def catalogue_view(
    store: Any, *, dataset: str | None = None, feature_set: str = "alpha158"
) -> dict[str, Any]:
    """Every model type the engine knows, and, for a dataset, the recommender's ranking with its reasons.

    The meta-features read the whole materialization once; the result is cached per materialization id.
    """
    from qmlops.training import list_model_types

    types = [t.to_dict() for t in list_model_types()]
    out: dict[str, Any] = {"types": types, "datasets": _datasets(store)}
    if dataset:
        out["recommendation"] = _recommend(store, dataset, feature_set)
    return clean(out)


def _datasets(store: Any) -> list[dict[str, Any]]:
    """Datasets that have a finished feature materialization (the ones the recommender can read)."""
    done = {m.dataset_id: m for m in store.features.list(limit=200) if m.status == "complete"}
    out = []
    for rec in store.datasets.list(limit=200):
        if rec.id in done:
            out.append({"id": rec.id, "name": rec.name, "rows": rec.n_rows, "instruments": rec.n_instruments,
                        "start": rec.start_date, "end": rec.end_date})  # fmt: skip
    return out


def _recommend(store: Any, dataset: str, feature_set: str) -> dict[str, Any]:
    from qmlops.features import load_features
    from qmlops.features._store import _resolve
    from qmlops.tuning import meta_features, recommend

    mat, _ = _resolve(store, dataset, feature_set, None)
    with _RECOMMEND_LOCK:
        cached = _RECOMMENDATIONS.get(mat.id)
        if cached is None:
            meta = meta_features(load_features(materialization=mat.id, feature_set=feature_set, store=store))
            cached = {"dataset": dataset, "materialization": mat.id, "meta": meta,
                      "ranking": [r.to_dict() for r in recommend(meta)]}  # fmt: skip
            _RECOMMENDATIONS[mat.id] = cached
    return cached


def run_stage(
    run: dict[str, Any], last_step: int | None, early_stop: dict[str, Any] | None = None
) -> dict[str, Any]:
    """What a run is doing, from what it has stored: its stage (a word or two) and a short message.

    A running run with no step yet is preparing its data and model; one whose last step reached the step budget
    or whose early stopper ran out of patience is finishing (evaluating the test segment, writing the report,
    registering); otherwise it is training.
    """
    status = run["status"]
    if status == "finished":
        return {"stage": "finished", "message": run.get("stop_reason") or ""}
    if status == "failed":
        return {
            "stage": "failed",
            "message": (run.get("error") or "").splitlines()[0][:200] if run.get("error") else "",
        }
    if last_step is None:
        return {"stage": "preparing", "message": "reading the features and building the model"}
    total, es = run.get("total_steps"), early_stop or {}
    patience, since = es.get("patience"), es.get("since_best")
    out_of_patience = (
        isinstance(patience, int | float) and isinstance(since, int | float) and since >= patience
    )
    if (total and last_step >= total) or out_of_patience:
        return {
            "stage": "finishing",
            "message": "evaluating on the test segment, writing the report, registering",
        }
    best = run.get("best_step")
    return {"stage": "training",
            "message": f"step {last_step}" + (f" of {total}" if total else "") + (f", best {best}" if best is not None else "")}  # fmt: skip


def runs_view(
    store: Any, *, kind: str | None = None, status: str | None = None, limit: int = 50
) -> dict[str, Any]:
    """Runs newest first, each with its latest logged step and stage (the progress bars read them)."""
    runs = store.runs.list(kind=kind, status=status, limit=limit)
    latest = store.runs.latest_metrics([r.id for r in runs])
    out = []
    for r in runs:
        data, last = r.to_dict(), latest.get(r.id)
        step, early_stop = (last.step, last.early_stop) if last else (None, None)
        out.append({**data, "last_step": step, **run_stage(data, step, early_stop)})
    return clean({"runs": out})


def run_view(store: Any, run_id: str, *, after_step: int = -1) -> dict[str, Any]:
    """One run and its per-step metrics after ``after_step`` (the live view polls with the last step it has)."""
    run = store.runs.get(run_id)
    metrics = store.runs.metrics(run.id, after_step=after_step)
    data = run.to_dict()
    last = (
        metrics[-1] if metrics else store.runs.latest_metrics([run.id]).get(run.id)
    )  # none new: the stored one
    last_step, early_stop = (last.step, last.early_stop) if last else (None, None)
    return clean({
        "run": {**data, **run_stage(data, last_step, early_stop)},
        "metrics": [{"step": m.step, "ts": m.ts, "train_loss": m.train_loss, "valid_loss": m.valid_loss,
                     "valid_ic": m.valid_ic, "best_step": m.best_step, "early_stop": m.early_stop}
                    for m in metrics],
    })  # fmt: skip


def rollouts_view(store: Any, *, limit: int = 20) -> dict[str, Any]:
    """Current routing weights per model, recent rollouts with their events and gate results, and checks."""
    tables = store.serving.list_tables()
    rollouts = store.serving.list_rollouts(limit=limit)
    events = store.serving.events_for([r["id"] for r in rollouts])  # one query, not one per rollout
    for r in rollouts:
        r["events"] = events[r["id"]]
    checks = store.serving.checks(limit=200)
    return clean({
        "routes": [{k: t[k] for k in ("model", "revision", "sticky_field", "entries", "updated_at")} for t in tables],
        "rollouts": rollouts,
        "health_checks": [c for c in checks if c["kind"] == "health"][:50],
        "performance_tests": [c for c in checks if c["kind"] != "health"],
    })  # fmt: skip


def jobs_view(store: Any, *, limit: int = 100) -> dict[str, Any]:
    return clean({"jobs": store.monitoring.jobs(limit=limit)})


def loops_view(store: Any, *, name: str | None = None, days: int = 120) -> dict[str, Any]:
    """The loops, and for one (``name``, default the most recently updated) its summary and per-day timeline:
    data version, oracle IC, online IC per version (role), drift share, decisions (the last ``days`` days)."""
    from qmlops.loop._report import loop_summary, loop_timeline

    loops = store.loops.list()
    chosen = name or (loops[0]["id"] if loops else None)
    out: dict[str, Any] = {"loops": loops, "loop": None}
    if chosen is not None:
        out["loop"] = {**store.loops.get(chosen), "summary": loop_summary(store, chosen),
                       "timeline": loop_timeline(store, chosen)[-days:]}  # fmt: skip
    return clean(out)


def report_html(store: Any, run_id: str) -> str:
    """The finished run's training report (HTML), read from wherever the artifact store keeps it."""
    from qmlops import storage
    from qmlops.exceptions import NotFoundError

    run = store.runs.get(run_id)
    if not run.report_uri:
        raise NotFoundError(f"run {run.id} has no report (still running, failed, or trained with report=False)",
                            field="run_id")  # fmt: skip
    return storage.read_bytes(run.report_uri).decode("utf-8")
