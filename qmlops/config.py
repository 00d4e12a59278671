"""Settings from ``QMLOPS_*`` environment variables, with defaults that work on a laptop.

``QMLOPS_HOME`` (default ``./.qmlops``) holds ``metadata.duckdb`` and, unless overridden, ``data/``,
``artifacts/``, ``features/`` and ``logs/``. The storage locations (data, artifacts, features) may be
``pyarrow.fs`` URIs (``s3://...``, ``gs://...``, ``file:///...``) so a multi-node cluster can share them; the
DuckDB file is always local to the process that owns it (the metadata actor on a cluster).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field, replace
from pathlib import Path

__all__ = ["Settings", "get_settings"]


def _env(name: str, default: str) -> str:
    value = os.environ.get(name)
    return value if value else default


def _join(base: str, name: str) -> str:
    if "://" in base:
        return base.rstrip("/") + "/" + name
    return str(Path(base) / name)


@dataclass(frozen=True)
class Settings:
    """Resolved qmlops settings. Build with :func:`get_settings`; override with ``dataclasses.replace``."""

    home: str
    metadata_path: str
    data_uri: str
    artifacts_uri: str
    features_uri: str
    logs_dir: str
    metadata_mode: str = "auto"  # auto | local | ray
    metadata_actor_name: str = "qmlops-metadata"
    metadata_namespace: str = "qmlops"
    extra: dict[str, str] = field(default_factory=dict)

    def with_home(self, home: str | os.PathLike[str]) -> Settings:
        home = str(home)
        return replace(
            self,
            home=home,
            metadata_path=str(Path(home) / "metadata.duckdb"),
            data_uri=_join(home, "data"),
            artifacts_uri=_join(home, "artifacts"),
            features_uri=_join(home, "features"),
            logs_dir=str(Path(home) / "logs"),
        )

    def ensure_local_dirs(self) -> None:
        """Create the local directories among the settings (URIs are created on first write)."""
        for path in (self.home, self.logs_dir, Path(self.metadata_path).parent):
            Path(path).mkdir(parents=True, exist_ok=True)
        for uri in (self.data_uri, self.artifacts_uri, self.features_uri):
            if "://" not in uri:
                Path(uri).mkdir(parents=True, exist_ok=True)


def get_settings() -> Settings:
    """Read the settings from the environment now (not cached: tests and jobs change the environment)."""
    home = str(Path(_env("QMLOPS_HOME", ".qmlops")).expanduser().absolute())
    mode = _env("QMLOPS_METADATA_MODE", "auto")
    if mode not in {"auto", "local", "ray"}:
        from qmlops.exceptions import ValidationError

        raise ValidationError(f"must be one of auto, local, ray; got {mode!r}", field="QMLOPS_METADATA_MODE")
    return Settings(
        home=home,
        metadata_path=_env("QMLOPS_METADATA_PATH", str(Path(home) / "metadata.duckdb")),
        data_uri=_env("QMLOPS_DATA_URI", _join(home, "data")),
        artifacts_uri=_env("QMLOPS_ARTIFACTS_URI", _join(home, "artifacts")),
        features_uri=_env("QMLOPS_FEATURES_URI", _join(home, "features")),
        logs_dir=_env("QMLOPS_LOGS_DIR", str(Path(home) / "logs")),
        metadata_mode=mode,
        metadata_actor_name=_env("QMLOPS_METADATA_ACTOR", "qmlops-metadata"),
        metadata_namespace=_env("QMLOPS_RAY_NAMESPACE", "qmlops"),
    )
