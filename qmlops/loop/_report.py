"""The loop's timeline: per day the data version, oracle IC, online IC per version, drift, alerts, retrains,
shadow verdicts and promotions; as JSON (status, the page) and as an HTML report with the IC timeline plot."""

from __future__ import annotations

import base64
import html
from typing import Any

import numpy as np
import pandas as pd

from qmlops.metadata import MetadataStore, RemoteMetadataStore

__all__ = ["loop_timeline", "loop_summary", "render_loop_report"]

Store = MetadataStore | RemoteMetadataStore


def loop_timeline(store: Store, loop_id: str) -> list[dict[str, Any]]:
    """One row per processed day: version, production and its online IC, oracle IC, drift, decisions."""
    steps = store.loops.steps(loop_id)
    metrics = store.loops.metrics(loop_id)
    decisions = store.loops.decisions(loop_id)
    days: dict[str, dict[str, Any]] = {}
    for s in steps:
        row = days.setdefault(s["day"], {"day": s["day"], "ic": {}, "decisions": [], "seconds": {}})
        row["seconds"][s["stage"]] = s["seconds"]
        details = s["details"] or {}
        if s["stage"] == "ingest":
            row["version"] = details.get("version")
            row["quarantined"] = details.get("quarantined", 0)
        elif s["stage"] == "watch":
            row["drift_share"] = details.get("drift_share")
        elif s["stage"] == "score":
            row["scored"] = details.get("versions", {})
    for m in metrics:  # metrics are dated by prediction day
        row = days.setdefault(m["day"], {"day": m["day"], "ic": {}, "decisions": [], "seconds": {}})
        if m["model_version"] == "oracle":
            row["oracle_ic"] = m["ic"]
        else:
            row["ic"][m["model_version"]] = {"ic": m["ic"], "role": m["role"]}
    for d in decisions:
        row = days.setdefault(d["day"], {"day": d["day"], "ic": {}, "decisions": [], "seconds": {}})
        row["decisions"].append(
            {"kind": d["kind"], "model_version": d["model_version"], "reason": d["reason"]}
        )
    return [days[k] for k in sorted(days)]


def loop_summary(store: Store, loop_id: str, window: int = 20) -> dict[str, Any]:
    """Headline figures: the production line's online IC (what served each day) against the oracle's."""
    metrics = pd.DataFrame(store.loops.metrics(loop_id))
    out: dict[str, Any] = {"days": len({s["day"] for s in store.loops.steps(loop_id)})}
    if metrics.empty:
        return out
    prod = metrics[metrics["role"] == "production"].set_index("day")["ic"].astype(float)
    out["production_mean_ic"] = _finite(prod.mean())
    out["production_last_ic"] = _finite(prod.tail(window).mean())
    oracle = metrics[metrics["model_version"] == "oracle"].set_index("day")["ic"].astype(float)
    if len(oracle):
        both = pd.concat([prod, oracle], axis=1, keys=["production", "oracle"]).dropna()
        out["oracle_mean_ic"] = _finite(oracle.mean())
        out["production_vs_oracle"] = (
            _finite(both["production"].mean() / both["oracle"].mean()) if len(both) else None
        )
    kinds = pd.Series([d["kind"] for d in store.loops.decisions(loop_id)])
    out.update({f"n_{k}": int((kinds == k).sum()) for k in ("retrain", "promote", "archive", "alert")})
    return out


def _finite(x: Any) -> float | None:
    return float(x) if x is not None and np.isfinite(x) else None


def timeline_plot(store: Store, loop_id: str, window: int = 20) -> bytes:
    """PNG: the production line's daily online IC and its rolling mean, the oracle's, and each shadow candidate's
    rolling IC, with retrains (dotted) and promotions (solid) marked."""
    from matplotlib.figure import Figure

    from qmlops.reporting import png_bytes

    metrics = pd.DataFrame(store.loops.metrics(loop_id))
    fig = Figure(figsize=(10, 4))
    ax = fig.add_subplot()
    if metrics.empty:
        ax.text(0.5, 0.5, "no matured predictions yet", ha="center", va="center", transform=ax.transAxes)
        return png_bytes(fig)
    metrics["day"] = pd.to_datetime(metrics["day"])
    prod = metrics[metrics["role"] == "production"].set_index("day")["ic"].astype(float).sort_index()
    ax.plot(prod.index, prod.to_numpy(), color="tab:blue", alpha=0.25, lw=0.8, label="production, daily IC")
    ax.plot(prod.index, prod.rolling(window, min_periods=3).mean().to_numpy(), color="tab:blue", lw=2,
            label=f"production, {window}-day mean")  # fmt: skip
    oracle = metrics[metrics["model_version"] == "oracle"].set_index("day")["ic"].astype(float).sort_index()
    if len(oracle):
        ax.plot(oracle.index, oracle.rolling(window, min_periods=3).mean().to_numpy(), color="black", lw=1.5,
                ls="--", label=f"oracle, {window}-day mean")  # fmt: skip
    shadow = metrics[metrics["role"] == "shadow"]
    for k, (_model_id, block) in enumerate(shadow.groupby("model_version")):
        series = block.set_index("day")["ic"].astype(float).sort_index()
        ax.plot(series.index, series.rolling(5, min_periods=2).mean().to_numpy(), lw=1, alpha=0.8,
                label="shadow candidates (5-day mean)" if k == 0 else None, color="tab:orange")  # fmt: skip
    for d in store.loops.decisions(loop_id):
        if d["kind"] in ("retrain", "promote"):
            ax.axvline(pd.Timestamp(d["day"]), color="tab:green" if d["kind"] == "promote" else "tab:gray",
                       ls="-" if d["kind"] == "promote" else ":", lw=1)  # fmt: skip
    for k, change in enumerate(_regime_changes(store, loop_id)):
        ax.axvline(
            change,
            color="tab:red",
            ls="--",
            lw=1.5,
            label="regime change (planted market)" if k == 0 else None,
        )
    ax.axhline(0, color="gray", lw=0.5)
    ax.set_ylabel("online IC")
    ax.set_title(f"loop {loop_id}: online IC (retrains dotted, promotions solid green)")
    ax.legend(loc="lower left", fontsize=8)
    return png_bytes(fig)


def _regime_changes(store: Store, loop_id: str) -> list[pd.Timestamp]:
    """First days of the source market's later regimes, when the source is a planted market (else none)."""
    source = store.loops.get(loop_id).get("source")
    if not source:
        return []
    oracle = (store.datasets.get(source).config or {}).get("oracle") or []
    return [pd.Timestamp(r["first_date"]) for r in oracle if r.get("regime", 0) > 0 and r.get("first_date")]


def render_loop_report(store: Store, loop_id: str) -> str:
    loop = store.loops.get(loop_id)
    summary = loop_summary(store, loop_id)
    png = base64.b64encode(timeline_plot(store, loop_id)).decode()
    rows: list[str] = []
    for d in store.loops.decisions(loop_id):
        if d["kind"] == "alert" and len(rows) > 200:
            continue
        rows.append(f"<tr><td>{d['day']}</td><td>{html.escape(d['kind'])}</td>"
                    f"<td>{html.escape(d['model_version'] or '')}</td><td>{html.escape(d['reason'])}</td></tr>")  # fmt: skip
    facts = "".join(
        f"<tr><th>{html.escape(k)}</th><td>{html.escape(_fmt(v))}</td></tr>" for k, v in summary.items()
    )
    return f"""<!doctype html><html><head><meta charset="utf-8"><title>loop {html.escape(loop_id)}</title>
<style>body{{font-family:sans-serif;max-width:1100px;margin:2em auto}}td,th{{padding:2px 8px;text-align:left}}
table{{border-collapse:collapse}}tr:nth-child(even){{background:#f4f4f4}}</style></head><body>
<h1>Loop {html.escape(loop_id)}</h1>
<p>source {html.escape(str(loop["source"]))}, mode {html.escape(loop["mode"])}, state {html.escape(loop["state"])},
last day {html.escape(str(loop["last_day"]))}, production {html.escape(str(loop["production"]))}</p>
<table>{facts}</table>
<h2>Online IC timeline</h2><img alt="IC timeline" src="data:image/png;base64,{png}" style="max-width:100%">
<h2>Decisions</h2><table><tr><th>day</th><th>kind</th><th>version</th><th>reason</th></tr>{"".join(rows)}</table>
<h2>Policy</h2><pre>{html.escape(_fmt(loop["policy"]))}</pre></body></html>"""


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4f}"
    if isinstance(value, dict):
        import json

        return json.dumps(value, indent=2)
    return str(value)
