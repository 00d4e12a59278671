"""The compatibility validator run before a version may serve (staging, canary, production).

Three checks, each listed in the report: (1) the signature matches the features serving will feed (names,
order, dtypes: missing, extra, reordered and dtype mismatches listed); (2) the package versions it was trained
with against this environment (a major mismatch fails, a minor one warns); (3) a smoke prediction on real sample
rows returns finite values of the right shape.
"""

from __future__ import annotations

import platform
from dataclasses import asdict, dataclass, field
from importlib import metadata
from typing import Any

import numpy as np
import pandas as pd

from qmlops.registry._signature import Signature

__all__ = [
    "ValidationReport",
    "environment",
    "check_signature",
    "check_environment",
    "smoke_test",
    "KEY_PACKAGES",
]

KEY_PACKAGES = ("numpy", "pandas", "scikit-learn", "lightgbm", "xgboost", "torch", "pyqlib")


@dataclass
class ValidationReport:
    ok: bool = True
    errors: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    checks: dict[str, Any] = field(default_factory=dict)

    def fail(self, message: str) -> None:
        self.ok = False
        self.errors.append(message)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def environment() -> dict[str, str]:
    """Python and key package versions of this process."""
    env = {"python": platform.python_version()}
    for pkg in KEY_PACKAGES:
        try:
            env[pkg] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            continue
    return env


def check_signature(signature: Signature, serving: list[str], serving_dtypes: list[str] | None,
                    report: ValidationReport) -> None:  # fmt: skip
    names = signature.feature_names
    missing = [n for n in names if n not in serving]
    extra = [n for n in serving if n not in names]
    common_model = [n for n in names if n in serving]
    common_serving = [n for n in serving if n in names]
    reordered = common_model != common_serving
    dtype_mismatch = []
    if serving_dtypes is not None:
        served = dict(zip(serving, serving_dtypes, strict=True))
        for n, dt in zip(names, signature.dtypes, strict=True):
            if n in served and served[n] != dt:
                dtype_mismatch.append(f"{n}: model {dt}, serving {served[n]}")
    report.checks["signature"] = {"missing": missing, "extra": extra, "reordered": reordered,
                                  "dtype_mismatch": dtype_mismatch}  # fmt: skip
    if missing:
        report.fail(f"serving lacks {len(missing)} feature(s) the model needs: {', '.join(missing[:10])}")
    if extra:
        report.fail(f"serving feeds {len(extra)} feature(s) the model does not know: {', '.join(extra[:10])}")
    if reordered:
        first = next(i for i, (a, b) in enumerate(zip(common_model, common_serving, strict=True)) if a != b)
        report.fail(f"feature order differs from position {first}: model has {common_model[first]!r}, "
                    f"serving has {common_serving[first]!r}")  # fmt: skip
    if dtype_mismatch:
        report.fail(f"dtype mismatch: {'; '.join(dtype_mismatch[:10])}")


def _major_minor(version: str) -> tuple[int, int]:
    parts = [int("".join(ch for ch in p if ch.isdigit()) or 0) for p in version.split(".")[:2]]
    return (parts + [0, 0])[0], (parts + [0, 0])[1]


def check_environment(trained: dict[str, str], report: ValidationReport) -> None:
    here = environment()
    rows = {}
    for pkg, version in sorted(trained.items()):
        now = here.get(pkg)
        rows[pkg] = {"trained": version, "running": now}
        if now is None:
            report.warnings.append(f"{pkg} {version} was used in training but is not installed here")
            continue
        (ma, mi), (na, ni) = _major_minor(version), _major_minor(now)
        if ma != na:
            report.fail(f"{pkg}: trained with {version}, running {now} (major version differs)")
        elif mi != ni:
            report.warnings.append(f"{pkg}: trained with {version}, running {now} (minor version differs)")
    report.checks["environment"] = rows


def smoke_test(predict: Any, sample: pd.DataFrame, report: ValidationReport) -> None:
    try:
        out = np.asarray(predict(sample))
    except Exception as exc:  # the report records why the model cannot score
        report.fail(f"smoke prediction raised {type(exc).__name__}: {exc}")
        report.checks["smoke"] = {"rows": len(sample), "ok": False}
        return
    finite = bool(np.isfinite(out).all())
    shape_ok = out.shape == (len(sample),)
    report.checks["smoke"] = {"rows": len(sample), "shape": list(out.shape), "finite": finite}
    if not shape_ok:
        report.fail(f"smoke prediction has shape {list(out.shape)}, expected [{len(sample)}]")
    if not finite:
        report.fail(f"smoke prediction has {int((~np.isfinite(out)).sum())} non-finite values")
