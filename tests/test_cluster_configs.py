"""Cluster configs are valid for the tools that read them: Ray's cluster-launcher schema, Serve's config schema,
Ray's runtime_env, and the fields the KubeRay operator needs in RayCluster / RayJob / RayService."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]


def _load(path: str) -> dict[str, Any]:
    return dict(yaml.safe_load((ROOT / path).read_text()))


def test_ray_cluster_yaml_validates_against_rays_schema() -> None:
    import jsonschema
    import ray.autoscaler
    from ray.autoscaler._private.util import prepare_config, validate_config

    config = _load("ray_cluster.yaml")
    schema = json.loads((Path(os.path.dirname(ray.autoscaler.__file__)) / "ray-schema.json").read_text())
    jsonschema.validate(config, schema)  # the file as written
    validate_config(prepare_config(config))  # and after Ray fills in its defaults, as `ray up` does
    types = config["available_node_types"]
    assert set(types) == {"head", "cpu_worker", "gpu_worker"} and config["head_node_type"] == "head"
    assert types["head"]["resources"] == {"CPU": 0} and types["gpu_worker"]["max_workers"] >= 1
    assert any("pip install -e /home/ubuntu/qmlops" in c for c in config["setup_commands"])
    start = " ".join(config["head_start_ray_commands"])
    assert "--dashboard-port=8265" in start and "--metrics-export-port=8080" in start
    broken = {**config, "available_node_types": {**types, "head": {**types["head"], "resourcez": {}}}}
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(broken, schema)


def test_runtime_env_is_a_valid_ray_runtime_env() -> None:
    from ray.runtime_env import RuntimeEnv

    env = RuntimeEnv(**_load("cluster/runtime_env.yaml"))
    assert env["env_vars"]["QMLOPS_METADATA_MODE"] == "ray"
    assert all(env["env_vars"][k].startswith("s3://") for k in ("QMLOPS_DATA_URI", "QMLOPS_FEATURES_URI",
                                                                 "QMLOPS_ARTIFACTS_URI"))  # fmt: skip


def _check_group(group: dict[str, Any], head: bool) -> None:
    assert isinstance(group["rayStartParams"], dict)
    containers = group["template"]["spec"]["containers"]
    assert containers and all(c["image"] and c["name"] for c in containers)
    assert all(set(c["resources"]["limits"]) >= {"cpu", "memory"} for c in containers)
    if not head:
        assert group["groupName"] and 0 <= group["minReplicas"] <= group["replicas"] <= group["maxReplicas"]


def _check_cluster_spec(spec: dict[str, Any]) -> None:
    assert spec["rayVersion"].startswith("2.60")
    _check_group(spec["headGroupSpec"], head=True)
    assert spec["workerGroupSpecs"]
    for group in spec["workerGroupSpecs"]:
        _check_group(group, head=False)


def test_kuberay_manifests_have_what_the_operator_needs() -> None:
    from ray.serve.schema import ServeDeploySchema

    cluster = _load("cluster/kuberay/raycluster.yaml")
    assert (
        cluster["apiVersion"] == "ray.io/v1"
        and cluster["kind"] == "RayCluster"
        and cluster["metadata"]["name"]
    )
    _check_cluster_spec(cluster["spec"])
    assert {g["groupName"] for g in cluster["spec"]["workerGroupSpecs"]} == {"cpu", "gpu"}
    gpu = next(g for g in cluster["spec"]["workerGroupSpecs"] if g["groupName"] == "gpu")
    assert gpu["template"]["spec"]["containers"][0]["resources"]["limits"]["nvidia.com/gpu"] == "1"

    job = _load("cluster/kuberay/rayjob.yaml")
    assert job["kind"] == "RayJob" and job["spec"]["entrypoint"].startswith("python -m jobs.demo")
    assert job["spec"]["shutdownAfterJobFinishes"] is True
    assert yaml.safe_load(job["spec"]["runtimeEnvYAML"])["env_vars"]["QMLOPS_METADATA_MODE"] == "ray"
    _check_cluster_spec(job["spec"]["rayClusterSpec"])

    service = _load("cluster/kuberay/rayservice.yaml")
    assert service["kind"] == "RayService"
    serve_config = ServeDeploySchema.model_validate(yaml.safe_load(service["spec"]["serveConfigV2"]))
    app = serve_config.applications[0]
    assert app.import_path == "serve_apps.app:build" and {d.name for d in app.deployments} == {
        "Gateway",
        "ModelServer",
    }
    _check_cluster_spec(service["spec"]["rayClusterConfig"])
