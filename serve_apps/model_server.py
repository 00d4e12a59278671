"""The model-server deployment: registry versions loaded on demand with ``serve.multiplexed``, scored in
``serve.batch`` batches (Serve splits batches by model id, so one batch is one model).

The multiplexed model id is a model version id (``mv-...``); models load only from the registry's
checksummed artifact store. ``preload`` versions are loaded when a replica starts and checked by
``check_health``, which is what makes a rolling update (a change of ``preload``) health-checked replica by
replica.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import numpy as np
from ray import serve

from qmlops.config import Settings

__all__ = ["ModelServer"]


@serve.deployment(name="ModelServer", max_ongoing_requests=64, ray_actor_options={"num_cpus": 0.5})
class ModelServer:
    def __init__(self, settings: Settings, preload: list[str] | None = None, max_batch_size: int = 16,
                 batch_wait_timeout_s: float = 0.002) -> None:  # fmt: skip
        from qmlops.metadata import get_store
        from qmlops.registry import ModelRegistry

        self.settings = settings
        self.registry = ModelRegistry(get_store(settings), settings)
        self.preload = list(preload or [])
        self.loaded_at: dict[str, float] = {}
        self.predict_batch.set_max_batch_size(max_batch_size)  # type: ignore[attr-defined]
        self.predict_batch.set_batch_wait_timeout_s(batch_wait_timeout_s)  # type: ignore[attr-defined]
        self._preloaded: dict[str, Any] = {}
        self._explainers: dict[str, Any] = {}
        for model_id in self.preload:  # fail the replica's start (and so a rolling update) on a bad version
            self._preloaded[model_id] = self._load(model_id)

    def _load(self, model_id: str) -> Any:
        record = self.registry.store.models.get(model_id)
        predictor = self.registry.load_predictor(record.name, model_id)
        self.loaded_at[model_id] = time.time()
        return predictor

    @serve.multiplexed(max_num_models_per_replica=8)
    async def get_model(self, model_id: str) -> Any:
        if model_id in self._preloaded:
            return self._preloaded[model_id]
        return await asyncio.get_running_loop().run_in_executor(None, self._load, model_id)

    # several batches in flight: one slow version (or a slow batch) must not queue the others behind it
    @serve.batch(max_batch_size=16, batch_wait_timeout_s=0.002, max_concurrent_batches=4)
    async def predict_batch(self, requests: list[np.ndarray]) -> list[Any]:
        model = await self.get_model(serve.get_multiplexed_model_id())
        sizes = [len(r) for r in requests]
        try:  # off the event loop: a slow model must not stall other versions' requests on this replica
            x = np.concatenate(requests, axis=0)
            scores = await asyncio.get_running_loop().run_in_executor(None, model.predict_array, x)
        except Exception as exc:  # one request's failure must not fail its batch neighbours' callers silently
            return [exc for _ in requests]
        out, start = [], 0
        for n in sizes:
            out.append(scores[start : start + n])
            start += n
        return out

    async def predict(self, rows: np.ndarray) -> np.ndarray:
        """Scores for ``rows`` (already in the version's signature order) with the request's multiplexed model."""
        result = await self.predict_batch(rows)
        if isinstance(result, Exception):
            raise result
        return result

    async def warm(self) -> dict[str, Any]:
        """Load the request's multiplexed model now (blue-green brings the new version up before any traffic)."""
        model_id = serve.get_multiplexed_model_id()
        model = await self.get_model(model_id)
        return {"model_version": model_id, "features": len(model.signature.feature_names)}

    async def explain(self, rows: np.ndarray, top: int = 10) -> list[dict[str, Any]]:
        """SHAP of ``rows`` for the request's multiplexed model (explainer built once per version, off the loop)."""
        model_id = serve.get_multiplexed_model_id()
        loop = asyncio.get_running_loop()
        if model_id not in self._explainers:
            from qmlops.explain import ModelExplainer

            record = self.registry.store.models.get(model_id)
            self._explainers[model_id] = await loop.run_in_executor(
                None, ModelExplainer, self.registry, record.name, model_id
            )
        explainer = self._explainers[model_id]
        explanation = await loop.run_in_executor(None, explainer.explain, rows)
        return [explanation.row(i, top=top) | {"method": explanation.method} for i in range(len(rows))]

    def placement(self) -> dict[str, Any]:
        """This replica's place: node, the GPU ids Ray assigned (with ``CUDA_VISIBLE_DEVICES``) and the device a
        torch version scores on here, with the reason (a logical GPU without CUDA falls back to the CPU)."""
        import ray

        from qmlops.devices import choose_device

        context = serve.get_replica_context()
        return {"replica_id": context.replica_id.unique_id, "node_id": ray.get_runtime_context().get_node_id(),
                "device_choice": choose_device("auto").to_dict(), "loaded": self.loaded()}  # fmt: skip

    def loaded(self) -> list[str]:
        return sorted(self.loaded_at)

    def check_health(self) -> None:
        for model_id, model in self._preloaded.items():
            width = len(model.signature.feature_names)
            out = model.predict_array(np.zeros((1, width)))
            if out.shape != (1,):
                raise RuntimeError(f"{model_id}: smoke prediction has shape {out.shape}")
