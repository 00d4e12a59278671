"""cluster/serve_config.yaml is a valid Serve deploy config whose import path builds the qmlops application."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from ray.serve.schema import ServeDeploySchema

from qmlops.config import get_settings
from qmlops.exceptions import ValidationError
from qmlops.serving import ServeOptions
from qmlops.serving._service import deploy_config

ROOT = Path(__file__).resolve().parents[2]


def test_serve_config_file_validates_and_builds(tmp_home: Path) -> None:
    data = yaml.safe_load((ROOT / "cluster" / "serve_config.yaml").read_text())
    schema = ServeDeploySchema.model_validate(data)
    app = schema.applications[0]
    assert app.import_path == "serve_apps.app:build" and app.route_prefix == "/"
    assert {d.name for d in app.deployments} == {"Gateway", "ModelServer"}
    assert schema.http_options.host == "127.0.0.1"
    from ray.serve import Application

    from serve_apps.app import build

    assert isinstance(build(app.args), Application)  # the import path resolves and builds with these args


def test_generated_config_matches_the_schema_and_carries_no_token(tmp_home: Path, monkeypatch) -> None:
    monkeypatch.setenv("QMLOPS_ADMIN_TOKEN", "do-not-leak")
    config = deploy_config(get_settings(), ServeOptions(port=8123, preload=("mv-1",)), {"routes": [], "revision": 1,
                                                                                        "admin_token_hash": "ab"})  # fmt: skip
    schema = ServeDeploySchema.model_validate(config)
    assert schema.http_options.port == 8123 and schema.applications[0].args["preload"] == ["mv-1"]
    assert "do-not-leak" not in str(config)


def test_model_server_replicas_ask_for_a_gpu_share_only_when_given(tmp_home: Path) -> None:
    def actor_options(options: ServeOptions) -> dict[str, dict]:
        config = deploy_config(get_settings(), options.validate(), {"routes": [], "revision": 1})
        ServeDeploySchema.model_validate(config)
        return {d["name"]: d["ray_actor_options"] for d in config["applications"][0]["deployments"]}

    gpu = actor_options(ServeOptions(server_gpus=0.5))
    assert gpu["ModelServer"]["num_gpus"] == 0.5 and "num_gpus" not in gpu["Gateway"]
    assert "num_gpus" not in actor_options(ServeOptions())["ModelServer"]
    assert actor_options(ServeOptions(server_gpus=2))["ModelServer"]["num_gpus"] == 2.0
    for bad in (-0.5, 1.5, float("nan")):
        with pytest.raises(ValidationError) as err:
            ServeOptions(server_gpus=bad).validate()
        assert err.value.field == "server_gpus"
