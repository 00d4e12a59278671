"""Explainability: SHAP explanations of registry model versions (global and per prediction) and the indicator
impact analysis (families and single indicators ranked by correlation, mutual information, permutation
importance and SHAP share).

:func:`explain_global` computes a version's global importance and impact report, stores the importance with the
version (``model_explanations``) and writes the HTML report under the artifacts root.
"""

from __future__ import annotations

from typing import Any

from qmlops.explain._impact import ImpactReport, impact_analysis, render_report
from qmlops.explain._shap import Explanation, ModelExplainer, background_for

__all__ = ["Explanation", "ImpactReport", "ModelExplainer", "background_for", "explain_global", "impact_analysis",
           "render_report"]  # fmt: skip


def explain_global(name: str, ref: int | str = "latest", *, rows: int = 2000, shap_rows: int = 300,
                   store: Any = None, settings: Any = None) -> tuple[ImpactReport, str]:  # fmt: skip
    """Global SHAP importance and the impact report of one version; stored with it. (report, report URI)."""
    from qmlops import storage
    from qmlops.config import get_settings
    from qmlops.metadata import get_store
    from qmlops.registry import ModelRegistry

    settings = settings or get_settings()
    store = store or get_store(settings)
    registry = ModelRegistry(store, settings)
    report = impact_analysis(registry, name, ref, rows=rows, shap_rows=shap_rows)
    record = registry.get(report.model, report.version)
    uri = storage.join(settings.artifacts_uri, "explain", record.id, "report.html")
    storage.write_bytes(render_report(report).encode("utf-8"), uri)
    families = report.families.reset_index().to_dict(orient="records")
    store.experiments.put_explanation(record.id, report.explanation.method, report.explanation.base_value,
                                      report.explanation.global_importance(), families, report.rows, uri)  # fmt: skip
    return report, uri
