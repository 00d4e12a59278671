"""The qmlops Serve application builder: ``import_path: serve_apps.app:build`` in a Serve config.

``args`` (all optional): ``settings`` (a mapping of qmlops Settings fields; default: read from the environment
of the process that builds the app), ``preload`` (model version ids the model server loads at start),
``max_batch_size``, ``batch_wait_timeout_s``. Replicas, resources and the gateway's routing tables
(``user_config``) come from the config's ``deployments`` section, so a routing change is a lightweight update.
"""

from __future__ import annotations

from typing import Any

from serve_apps.gateway import Gateway
from serve_apps.model_server import ModelServer

__all__ = ["build"]


def build(args: dict[str, Any]) -> Any:
    from qmlops.config import Settings, get_settings

    settings = Settings(**args["settings"]) if args.get("settings") else get_settings()
    server = ModelServer.bind(  # type: ignore[attr-defined]
        settings, list(args.get("preload") or []), int(args.get("max_batch_size", 16)),
        float(args.get("batch_wait_timeout_s", 0.002)),
    )  # fmt: skip
    return Gateway.bind(settings, server)  # type: ignore[attr-defined]
