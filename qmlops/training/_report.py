"""The training report: one self-contained HTML file with its PNG plots embedded as data URIs.

Plots are drawn with matplotlib's object API on an Agg canvas (no pyplot, no global backend state), so reports
can be rendered from Ray workers and threads. Every user-supplied string is HTML-escaped.
"""

from __future__ import annotations

import html
import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd

from qmlops import storage
from qmlops.reporting import img_tag, png_bytes

__all__ = ["render_training_report", "training_plots", "write_training_report"]

_STYLE = """
body{font-family:system-ui,sans-serif;margin:2em;color:#222;max-width:1100px}
table{border-collapse:collapse;margin:.5em 0 1.5em}td,th{border:1px solid #ccc;padding:3px 8px;text-align:left}
th{background:#f3f3f3}.hl{background:#fff6d5;font-weight:600}figure{margin:1em 0}figcaption{color:#555}
img{max-width:100%}
"""


def _fmt(value: Any) -> str:
    if value is None:
        return "n/a"
    if isinstance(value, bool):
        return str(value)
    if isinstance(value, int | np.integer):
        return str(int(value))
    if isinstance(value, float | np.floating):
        return "n/a" if not math.isfinite(float(value)) else f"{float(value):.4g}"
    return html.escape(str(value))


def _clean(series: pd.Series) -> pd.Series:
    s = pd.to_numeric(series, errors="coerce").astype("float64")
    return s[np.isfinite(s.to_numpy())]


def training_plots(
    *,
    epochs: Sequence[Mapping[str, Any]],
    daily_ic: pd.Series,
    daily_returns: pd.Series,
    feature_importance: pd.Series | None = None,
    top_features: int = 20,
) -> dict[str, bytes]:
    """name -> PNG: curves, daily_ic, cumulative_return and (with importances) feature_importance."""
    from matplotlib.figure import Figure

    plots: dict[str, bytes] = {}
    fig = Figure(figsize=(8, 3.6))
    ax = fig.add_subplot()
    frame = pd.DataFrame(list(epochs))
    if frame.empty or "step" not in frame:
        ax.text(0.5, 0.5, "no per-step metrics", ha="center", va="center", transform=ax.transAxes)
    else:
        for column, style in (("train_loss", "-"), ("valid_loss", "--")):
            if column in frame:
                data = frame[["step", column]].apply(pd.to_numeric, errors="coerce").dropna()
                ax.plot(data["step"], data[column], style, label=column.replace("_", " "))
        ax.set_xlabel("step (boosting round / epoch)")
        ax.set_ylabel("MSE")
        if "valid_ic" in frame:
            ic = frame[["step", "valid_ic"]].apply(pd.to_numeric, errors="coerce").dropna()
            twin = ax.twinx()
            twin.plot(ic["step"], ic["valid_ic"], ":", color="tab:green", marker=".", label="valid IC")
            twin.set_ylabel("valid IC")
            twin.legend(loc="upper right")
        ax.legend(loc="upper left")
    ax.set_title("training curves")
    plots["curves"] = png_bytes(fig)

    fig = Figure(figsize=(8, 3.2))
    ax = fig.add_subplot()
    ic = _clean(daily_ic)
    if len(ic):
        ax.bar(
            pd.DatetimeIndex(ic.index),
            ic.to_numpy(),
            color=np.where(ic.to_numpy() >= 0, "tab:blue", "tab:red"),
        )
        ax.plot(pd.DatetimeIndex(ic.index), ic.rolling(20, min_periods=1).mean().to_numpy(), color="k",
                label="20-day mean")  # fmt: skip
        ax.legend()
    ax.axhline(0, color="grey", lw=0.8)
    ax.set_title("daily IC on the test segment")
    fig.autofmt_xdate()
    plots["daily_ic"] = png_bytes(fig)

    fig = Figure(figsize=(8, 3.2))
    ax = fig.add_subplot()
    rets = _clean(daily_returns)
    if len(rets):
        ax.plot(pd.DatetimeIndex(rets.index), rets.cumsum().to_numpy(), color="tab:purple")
    ax.axhline(0, color="grey", lw=0.8)
    ax.set_title("cumulative top-k long-short return (test)")
    fig.autofmt_xdate()
    plots["cumulative_return"] = png_bytes(fig)

    if feature_importance is not None and len(_clean(feature_importance)):
        top = _clean(feature_importance).sort_values(ascending=False).head(top_features)[::-1]
        fig = Figure(figsize=(8, max(2.5, 0.28 * len(top))))
        ax = fig.add_subplot()
        ax.barh([str(i) for i in top.index], top.to_numpy(), color="tab:orange")
        ax.set_title(f"feature importance (top {len(top)})")
        plots["feature_importance"] = png_bytes(fig)
    return plots


_CAPTIONS = {
    "curves": "Train and valid loss per step (left axis) and valid IC (right axis, every progress step).",
    "daily_ic": "Per-day cross-sectional Pearson IC of the test predictions, with its 20-day mean.",
    "cumulative_return": "Cumulative daily return of the top-k minus bottom-k portfolio on the test segment.",
    "feature_importance": "Importance reported by the model itself (gain for trees, |coefficient| for linear).",
}


def _table(rows: Sequence[tuple[str, str]], highlight: set[str] | None = None) -> str:
    cells = "".join(f"<tr{' class=hl' if highlight and k in highlight else ''}><th>{html.escape(k)}</th><td>{v}</td></tr>"
                    for k, v in rows)  # fmt: skip
    return f"<table>{cells}</table>"


def render_training_report(
    *,
    title: str,
    run: Mapping[str, Any],
    epochs: Sequence[Mapping[str, Any]],
    evaluation: Mapping[str, Any],
    daily_ic: pd.Series,
    daily_returns: pd.Series,
    feature_importance: pd.Series | None = None,
    top_features: int = 20,
) -> str:
    """The HTML document: run summary, test metrics, plots and the per-step table."""
    plots = training_plots(epochs=epochs, daily_ic=daily_ic, daily_returns=daily_returns,
                           feature_importance=feature_importance, top_features=top_features)  # fmt: skip
    params = run.get("params") or {}
    params_html = _table([(str(k), _fmt(v)) for k, v in sorted(params.items())]) if params else "(defaults)"
    segments = run.get("segments") or {}
    summary_rows = [(str(k), _fmt(run.get(k))) for k in ("run_id", "model_type", "dataset", "feature_set",
                    "model_version", "stopped_by", "stop_reason", "best_step", "duration_seconds")]  # fmt: skip
    summary_rows += [(f"segment {k}", html.escape(" .. ".join(map(str, v)))) for k, v in segments.items()]
    summary_rows.append(("params", params_html))
    metric_rows = [(str(k), _fmt(v)) for k, v in evaluation.items()]
    figures = "".join(
        f"<figure>{img_tag(png, name)}<figcaption>{_CAPTIONS[name]}</figcaption></figure>"
        for name, png in plots.items()
    )
    rows = list(epochs)
    shown: list[Mapping[str, Any] | None] = list(rows)
    if len(rows) > 200:
        shown = [*rows[:100], None, *rows[-100:]]
    body = "".join(
        f"<tr><td colspan=4>... {len(rows) - 200} steps not shown ...</td></tr>" if r is None else
        f"<tr><td>{_fmt(r.get('step'))}</td><td>{_fmt(r.get('train_loss'))}</td><td>{_fmt(r.get('valid_loss'))}</td>"
        f"<td>{_fmt(r.get('valid_ic'))}</td></tr>"
        for r in shown
    )  # fmt: skip
    return (
        f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
        f"<style>{_STYLE}</style></head><body><h1>{html.escape(title)}</h1>"
        f"<h2>Run</h2>{_table(summary_rows, highlight={'stop_reason', 'best_step'})}"
        f"<h2>Test evaluation</h2>{_table(metric_rows)}<h2>Plots</h2>{figures}"
        f"<h2>Per-step metrics</h2><table><tr><th>step</th><th>train loss</th><th>valid loss</th><th>valid IC</th></tr>"
        f"{body}</table></body></html>"
    )


def write_training_report(uri_or_path: str, html_text: str) -> str:
    storage.write_bytes(html_text.encode("utf-8"), uri_or_path)
    return uri_or_path
