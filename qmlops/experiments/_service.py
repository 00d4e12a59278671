"""The experiments service: A/B tests over served model versions, end to end.

An experiment splits one served model's traffic between variants (registry versions, the first is the control)
for users (the gateway's sticky key). Experiments live in layers: in a layer, running experiments own disjoint
slices of the layer's hash (their ``traffic`` shares, in start order), so one user is in at most one experiment
of a layer (:class:`~qmlops.experiments.Layer`). Inside its slice a user's variant comes from a second hash
salted with the experiment, so it never changes while the experiment runs. Optional ``targeting`` limits the
experiment to requests whose ``attributes`` match (``{"region": ["eu", "us"]}``); start and stop times bound it.

The gateway logs an exposure for every prediction it answers inside an experiment; business events arrive on
``POST /v1/events`` (or :meth:`ExperimentService.record_events`). Results per metric: a ``proportion`` metric is
whether a user had the event at or after first exposure (z-test, chi-square), a ``mean`` metric is the user's
sum of the event's values (Welch; Mann-Whitney U for skewed ones such as returns), a ``ratio`` metric is the
sum of one event over the sum of another (delta method). Every comparison against control gets a lift with a
confidence interval, Holm's correction across variants and metrics, a sample ratio mismatch check, and an
always-valid mSPRT p-value, so looking at results while the experiment runs does not inflate false positives.
"""

from __future__ import annotations

import html
import math
import uuid
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

import numpy as np

from qmlops.exceptions import ConflictError, ValidationError
from qmlops.experiments._analysis import METRIC_TESTS, analyze_experiment
from qmlops.experiments._assignment import ExperimentSlot, Layer, allocate_buckets
from qmlops.experiments._sequential import msprt_p_values
from qmlops.experiments._stats import srm_check
from qmlops.reporting import img_tag, png_bytes

__all__ = ["ExperimentRouter", "ExperimentService", "gateway_experiments", "route_experiment"]

_NAME_OK = set("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_-.")


def _check_name(value: Any, field: str) -> str:
    if not isinstance(value, str) or not value or len(value) > 100 or set(value) - _NAME_OK:
        raise ValidationError("must be 1-100 letters, digits, _ - .", field=field)
    return value


class ExperimentService:
    def __init__(self, store: Any = None, settings: Any = None) -> None:
        from qmlops.config import get_settings
        from qmlops.metadata import get_store

        self.settings = settings or get_settings()
        self.store = store or get_store(self.settings)

    # -- lifecycle ----------------------------------------------------------------------------------------
    def create(self, name: str, model: str, variants: list[Mapping[str, Any]], *, metrics: list[Mapping[str, Any]],
               layer: str = "default", traffic: float = 1.0, targeting: Mapping[str, list[Any]] | None = None,
               start_at: Any = None, stop_at: Any = None) -> dict[str, Any]:  # fmt: skip
        """Validate and store a draft. ``variants``: ``[{"name", "version", "weight"}]`` (control first)."""
        from qmlops.registry import ModelRegistry

        _check_name(name, "name")
        _check_name(layer, "layer")
        if not isinstance(variants, list) or len(variants) < 2:
            raise ValidationError(
                "an experiment needs a control and at least one other variant", field="variants"
            )
        registry = ModelRegistry(self.store, self.settings)
        resolved = []
        for i, v in enumerate(variants):
            if not isinstance(v, Mapping) or set(v) - {"name", "version", "weight"}:
                raise ValidationError("each variant is {name, version, weight}", field=f"variants[{i}]")
            vname = _check_name(v.get("name"), f"variants[{i}].name")
            weight = v.get("weight", 1.0)
            if (
                isinstance(weight, bool)
                or not isinstance(weight, int | float)
                or not math.isfinite(weight)
                or weight <= 0
            ):
                raise ValidationError("must be a positive number", field=f"variants[{i}].weight")
            record = registry.get(model, v.get("version", "latest"))
            resolved.append(
                {
                    "name": vname,
                    "model_version": record.id,
                    "version": record.version,
                    "weight": float(weight),
                }
            )
        if len({v["name"] for v in resolved}) != len(resolved):
            raise ValidationError("variant names must be unique", field="variants")
        checked = []
        for i, m in enumerate(metrics or []):
            if not isinstance(m, Mapping) or set(m) - {"name", "kind", "event", "denominator", "test"}:
                raise ValidationError(
                    "each metric is {name, kind, event, denominator?, test?}", field=f"metrics[{i}]"
                )
            kind = m.get("kind")
            if kind not in METRIC_TESTS:
                raise ValidationError(
                    f"kind must be one of {sorted(METRIC_TESTS)}", field=f"metrics[{i}].kind"
                )
            if m.get("test") is not None and m["test"] not in METRIC_TESTS[kind]:
                raise ValidationError(f"test must be one of {METRIC_TESTS[kind]}", field=f"metrics[{i}].test")
            _check_name(m.get("name"), f"metrics[{i}].name")
            _check_name(m.get("event"), f"metrics[{i}].event")
            if kind == "ratio":
                _check_name(m.get("denominator"), f"metrics[{i}].denominator")
            checked.append(dict(m))
        if not checked:
            raise ValidationError("at least one metric is needed", field="metrics")
        if isinstance(traffic, bool) or not isinstance(traffic, int | float) or not 0 < traffic <= 1:
            raise ValidationError("traffic must be in (0, 1]", field="traffic")
        if targeting is not None and (not isinstance(targeting, Mapping)
                                      or not all(isinstance(v, list) and v for v in targeting.values())):  # fmt: skip
            raise ValidationError(
                "targeting maps an attribute to a non-empty list of allowed values", field="targeting"
            )
        return dict(self.store.experiments.create({
            "name": name, "model": model, "layer": layer, "salt": uuid.uuid4().hex[:12], "variants": resolved,
            "targeting": dict(targeting) if targeting else None, "metrics": checked, "traffic": float(traffic),
            "start_at": start_at, "stop_at": stop_at}))  # fmt: skip

    def start(self, ref: str) -> dict[str, Any]:
        exp = self.store.experiments.get(ref)
        if exp["state"] == "running":
            return dict(exp)
        if exp["state"] == "stopped":
            raise ConflictError(f"experiment {exp['name']} was stopped; create a new one", field="experiment")
        others = [e for e in self.store.experiments.list(state="running") if e["layer"] == exp["layer"]]
        used = sum(e["traffic"] for e in others)
        if used + exp["traffic"] > 1.0 + 1e-9:
            raise ConflictError(f"layer {exp['layer']!r} has {1 - used:.0%} of its traffic free; the experiment needs "
                                f"{exp['traffic']:.0%}", field="traffic")  # fmt: skip
        taken = [r for e in others for r in (e.get("buckets") or [])]
        buckets = (
            allocate_buckets(taken, exp["traffic"])
            if all(e.get("buckets") is not None for e in others)
            else None
        )  # experiments started before fixed ranges existed: keep the old in-order slices
        now = datetime.now(UTC).replace(tzinfo=None)
        exp = self.store.experiments.set_state(exp["id"], "running", start_at=exp["start_at"] or now,
                                               buckets=[list(r) for r in buckets] if buckets is not None else None)  # fmt: skip
        self._apply()
        return dict(exp)

    def stop(self, ref: str) -> dict[str, Any]:
        exp = self.store.experiments.get(ref)
        now = datetime.now(UTC).replace(tzinfo=None)
        exp = self.store.experiments.set_state(exp["id"], "stopped", stop_at=now)
        self._apply()
        return dict(exp)

    def _apply(self) -> None:
        """Push the running experiments to the gateway (a lightweight user_config update), if Serve runs."""
        try:
            from ray.serve.context import _get_global_client

            if _get_global_client() is None:
                return
        except Exception:
            return
        from qmlops.serving import ServeService

        service = ServeService(self.settings, self.store)
        service.apply()
        service.wait_revision()

    def record_events(self, events: Sequence[Mapping[str, Any]]) -> int:
        """Validate and store business events ``{experiment, user_id, event, value, ts?}``; all or nothing."""
        if not isinstance(events, list | tuple) or not events or len(events) > 10_000:
            raise ValidationError("events must be a list of 1..10,000 objects", field="events")
        known: dict[str, str] = {}
        rows = []
        for i, ev in enumerate(events):
            where = f"events[{i}]"
            if not isinstance(ev, Mapping):
                raise ValidationError("must be an object", field=where)
            extra = sorted(set(ev) - {"experiment", "user_id", "event", "value", "ts"})
            if extra:
                raise ValidationError("unknown field", field=f"{where}.{extra[0]}")
            ref = ev.get("experiment")
            if not isinstance(ref, str) or not ref:
                raise ValidationError("required: the experiment id or name", field=f"{where}.experiment")
            if ref not in known:
                known[ref] = self.store.experiments.get(ref)["id"]
            unit = ev.get("user_id")
            if not isinstance(unit, str | int) or isinstance(unit, bool) or unit == "":
                raise ValidationError("required: a string or integer user id", field=f"{where}.user_id")
            if isinstance(unit, str) and len(unit) > 256:
                raise ValidationError("a user id is at most 256 characters", field=f"{where}.user_id")
            _check_name(ev.get("event"), f"{where}.event")
            value = ev.get("value", 1.0)
            if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
                raise ValidationError("must be a finite number", field=f"{where}.value")
            if abs(value) > 1e300:
                raise ValidationError("must be at most 1e300 in size", field=f"{where}.value")
            ts = ev.get("ts")
            if ts is not None:
                from qmlops.serving import parse_timestamp

                ts = parse_timestamp(ts, f"{where}.ts")
            rows.append((known[ref], str(unit), ev["event"], float(value), ts))
        return int(self.store.experiments.add_events(rows))

    # -- analysis -----------------------------------------------------------------------------------------
    def _per_unit(
        self, exp: dict[str, Any]
    ) -> tuple[dict[str, list[str]], dict[tuple[str, str], tuple[int, float]]]:
        units: dict[str, list[str]] = {v["name"]: [] for v in exp["variants"]}
        for row in sorted(self.store.experiments.units(exp["id"]), key=lambda r: r["first_ts"]):
            units.setdefault(row["variant"], []).append(row["unit_id"])
        events = {
            (r["unit_id"], r["name"]): (int(r["n"]), float(r["total"]))
            for r in self.store.experiments.unit_events(exp["id"])
        }
        return units, events

    def results(self, ref: str, *, alpha: float = 0.05, ci: str = "analytic") -> dict[str, Any]:
        """Per metric and variant against control. ``ci="bootstrap"`` gives seeded percentile-bootstrap
        intervals of the difference instead of the analytic ones (Mann-Whitney metrics always bootstrap)."""
        if ci not in ("analytic", "bootstrap"):
            raise ValidationError("ci must be 'analytic' or 'bootstrap'", field="ci")
        exp = self.store.experiments.get(ref)
        units, events = self._per_unit(exp)
        names = [v["name"] for v in exp["variants"]]
        control = names[0]
        counts = [len(units.get(n, [])) for n in names]
        weights = [v["weight"] for v in exp["variants"]]
        out: dict[str, Any] = {"experiment": exp, "control": control, "alpha": alpha, "ci": ci,
                               "units": dict(zip(names, counts, strict=True))}  # fmt: skip
        if sum(counts) > 0:
            srm = srm_check(counts, weights)
            out["srm"] = {
                "p_value": srm.p_value,
                "mismatch": srm.mismatch,
                "expected": list(map(float, srm.expected)),
            }
        if any(c < 2 for c in counts):
            out["metrics"] = []
            out["note"] = "fewer than 2 exposed users in some variant: nothing to analyse yet"
            return out
        spec: dict[str, tuple[str, dict[str, Any]]] = {}
        tests = {}
        for m in exp["metrics"]:
            arms: dict[str, Any] = {}
            for n in names:
                ids = units[n]
                if m["kind"] == "proportion":
                    arms[n] = np.array(
                        [1.0 if events.get((u, m["event"]), (0, 0))[0] > 0 else 0.0 for u in ids]
                    )
                elif m["kind"] == "mean":
                    arms[n] = np.array([events.get((u, m["event"]), (0, 0.0))[1] for u in ids])
                else:
                    arms[n] = (np.array([events.get((u, m["event"]), (0, 0.0))[1] for u in ids]),
                               np.array([events.get((u, m["denominator"]), (0, 0.0))[1] for u in ids]))  # fmt: skip
            spec[m["name"]] = (m["kind"], arms)
            if m.get("test"):
                tests[m["name"]] = m["test"]
        results = analyze_experiment(spec, control=control, alpha=alpha, tests=tests, ci=ci)
        rows = []
        for r in results:
            item = r.to_dict()
            kind, arms = spec[r.metric]
            if kind != "ratio":  # always-valid (mSPRT) p-value over users in exposure order: safe to peek at
                a, b = np.asarray(arms[control]), np.asarray(arms[r.variant])
                m = min(a.size, b.size)
                item["always_valid_p_value"] = float(msprt_p_values(a[:m], b[:m])[-1]) if m >= 2 else 1.0
            rows.append(item)
        out["metrics"] = rows
        return out

    def report_html(self, ref: str, *, alpha: float = 0.05) -> str:
        """HTML: units per variant, SRM, a table per metric, the metric over time and CI per variant (PNG)."""
        res = self.results(ref, alpha=alpha)
        exp = res["experiment"]
        plots = "".join(f"<h3>{html.escape(k)}</h3>{img_tag(v, k)}" for k, v in self._plots(exp, res).items())
        rows = "".join(
            f"<tr><td>{html.escape(m['metric'])}</td><td>{html.escape(m['variant'])}</td><td>{m['control_mean']:.4g}</td>"
            f"<td>{m['variant_mean']:.4g}</td><td>{m['relative_lift']:+.2%}</td><td>[{m['relative_ci'][0]:+.2%}, "
            f"{m['relative_ci'][1]:+.2%}]</td><td>{m['test']}</td><td>{m['p_value']:.4f}</td><td>{m['adjusted_p_value']:.4f}</td>"
            f"<td>{m.get('always_valid_p_value', float('nan')):.4f}</td><td>{'yes' if m['significant'] else 'no'}</td></tr>"
            for m in res["metrics"])  # fmt: skip
        srm = res.get("srm") or {}
        return (f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(exp['name'])}</title><style>"
                "body{font-family:sans-serif;margin:2em}td,th{padding:2px 8px;text-align:right}</style></head><body>"
                f"<h1>Experiment {html.escape(exp['name'])} ({exp['state']})</h1><p>model {html.escape(exp['model'])}, "
                f"layer {html.escape(exp['layer'])}, units {res['units']}, SRM p={srm.get('p_value', float('nan')):.4f}"
                f"{' (MISMATCH)' if srm.get('mismatch') else ''}</p><table><tr><th>metric</th><th>variant</th>"
                "<th>control</th><th>variant</th><th>lift</th><th>CI</th><th>test</th><th>p</th><th>Holm p</th>"
                f"<th>always-valid p</th><th>significant</th></tr>{rows}</table>{plots}</body></html>")  # fmt: skip

    def _plots(self, exp: dict[str, Any], res: dict[str, Any]) -> dict[str, bytes]:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        out = {}
        if res["metrics"]:
            fig, ax = plt.subplots(figsize=(7, 0.6 + 0.5 * len(res["metrics"])))
            labels = [f"{m['metric']} / {m['variant']}" for m in res["metrics"]]
            lifts = [m["relative_lift"] for m in res["metrics"]]
            lo = [m["relative_lift"] - m["relative_ci"][0] for m in res["metrics"]]
            hi = [m["relative_ci"][1] - m["relative_lift"] for m in res["metrics"]]
            ax.errorbar(lifts, range(len(labels)), xerr=[lo, hi], fmt="o", capsize=4)
            ax.axvline(0, color="grey", lw=1)
            ax.set_yticks(range(len(labels)), labels)
            ax.set_xlabel("relative lift vs control (CI)")
            out["confidence intervals per variant"] = png_bytes(fig, dpi=100)
        rows = self.store.experiments.unit_events(exp["id"])
        units = {r["unit_id"]: r["variant"] for r in self.store.experiments.units(exp["id"])}
        if rows:
            event = exp["metrics"][0]["event"]
            fig, ax = plt.subplots(figsize=(7, 3.5))
            for v in [x["name"] for x in exp["variants"]]:
                times = sorted(
                    r["first_ts"] for r in rows if r["name"] == event and units.get(r["unit_id"]) == v
                )
                if times:
                    ax.step(times, np.arange(1, len(times) + 1), where="post", label=v)
            ax.set_ylabel(f"users with '{event}'")
            ax.legend()
            out[f"{event} over time"] = png_bytes(fig, dpi=100)
        return out


def gateway_experiments(store: Any) -> list[dict[str, Any]]:
    """Running experiments as the gateway needs them (in ``user_config``): slices per layer in start order."""
    running = sorted(store.experiments.list(state="running"), key=lambda e: e["start_at"] or "")
    out = []
    for exp in running:
        out.append({k: exp.get(k) for k in ("id", "name", "model", "layer", "traffic", "targeting", "start_at", "stop_at",
                                             "buckets")}
                   | {"variants": [{k: v[k] for k in ("name", "model_version", "version", "weight")}
                                   for v in exp["variants"]]})  # fmt: skip
    return out


class ExperimentRouter:
    """The running experiments compiled once (on each gateway ``reconfigure``), so the request path only hashes:
    one :class:`Layer` per layer with its slices, start/stop times parsed, targeting as sets."""

    def __init__(self, experiments: list[dict[str, Any]]) -> None:
        by_layer: dict[str, list[dict[str, Any]]] = {}
        for e in experiments:
            by_layer.setdefault(e["layer"], []).append(e)
        self.layers = []
        for layer, exps in by_layer.items():
            slots = [ExperimentSlot(e["id"], e["traffic"], tuple(v["name"] for v in e["variants"]),
                                    tuple(v["weight"] for v in e["variants"]),
                                    tuple((int(lo), int(hi)) for lo, hi in e["buckets"]) if e.get("buckets") else None)
                     for e in exps]  # fmt: skip
            self.layers.append((Layer(layer, slots), {e["id"]: e for e in exps}))
        self.models = {e["model"] for e in experiments}
        self._bounds = {e["id"]: (_parse(e.get("start_at")), _parse(e.get("stop_at"))) for e in experiments}
        self._targets = {
            e["id"]: {k: set(v) for k, v in (e.get("targeting") or {}).items()} for e in experiments
        }
        self._variants = {e["id"]: {v["name"]: v for v in e["variants"]} for e in experiments}

    def route(self, model: str, unit: str, attributes: Mapping[str, Any] | None,
              now: datetime | None = None) -> tuple[dict[str, Any], dict[str, Any]] | None:  # fmt: skip
        """(experiment, variant) for a request to ``model`` by ``unit``, or None (not in any experiment)."""
        if model not in self.models:
            return None
        now = now or datetime.now(UTC).replace(tzinfo=None)
        for layer, exps in self.layers:
            hit = layer.assign(unit)
            if hit is None or exps[hit[0]]["model"] != model:
                continue
            start, stop = self._bounds[hit[0]]
            if (start is not None and start > now) or (stop is not None and stop <= now):
                continue
            attrs = attributes or {}
            if any(_hashable(attrs.get(k)) not in allowed for k, allowed in self._targets[hit[0]].items()):
                continue
            return exps[hit[0]], self._variants[hit[0]][hit[1]]
        return None


def _parse(value: str | None) -> datetime | None:
    return datetime.fromisoformat(value.removesuffix("Z")) if value else None


def _hashable(value: Any) -> Any:
    return value if isinstance(value, str | int | float | bool | type(None)) else repr(value)


def route_experiment(experiments: list[dict[str, Any]], model: str, unit: str,
                     attributes: Mapping[str, Any] | None, now: datetime | None = None) -> tuple[dict[str, Any], dict[str, Any]] | None:  # fmt: skip
    """One-off routing (the gateway keeps an :class:`ExperimentRouter` instead)."""
    return ExperimentRouter(experiments).route(model, unit, attributes, now)
