"""The metadata store (DuckDB): the only place in qmlops that speaks SQL.

``get_store()`` returns a store whose attributes are repositories, one per table family
(``store.datasets``, ``store.lineage``, ``store.predictions``, ...). The same interface is served locally or,
on a Ray cluster, by the single-writer actor ``qmlops-metadata``.
"""

from qmlops.metadata._admin import AdminRepository
from qmlops.metadata._backup import backup_store, check_store, restore_store
from qmlops.metadata._datasets import DatasetRecord, DatasetRepository
from qmlops.metadata._db import MIGRATIONS, Database
from qmlops.metadata._features import FeatureRepository, FeatureSetRecord, FeatureStat, MaterializationRecord
from qmlops.metadata._lineage import NODE_KINDS, LineageEdge, LineageNode, LineageRepository
from qmlops.metadata._loop import LOOP_STAGES, LoopRepository
from qmlops.metadata._models import (
    SEARCH_FIELDS,
    AliasEvent,
    Clause,
    ModelRepository,
    ModelVersionRecord,
    TransitionRecord,
)
from qmlops.metadata._predictions import PREDICTION_SCHEMA, PredictionRepository
from qmlops.metadata._runs import RUN_KINDS, RUN_STATUSES, RunMetric, RunRecord, RunRepository, finite_or_none
from qmlops.metadata._store import (
    REPOSITORIES,
    HttpMetadataStore,
    MetadataStore,
    RemoteMetadataStore,
    connect_remote,
    get_store,
    open_local,
    shutdown_remote,
)

__all__ = [
    "AdminRepository",
    "backup_store",
    "restore_store",
    "check_store",
    "Database",
    "MIGRATIONS",
    "MetadataStore",
    "RemoteMetadataStore",
    "HttpMetadataStore",
    "REPOSITORIES",
    "get_store",
    "finite_or_none",
    "open_local",
    "connect_remote",
    "shutdown_remote",
    "DatasetRecord",
    "DatasetRepository",
    "LineageRepository",
    "LineageNode",
    "LineageEdge",
    "LoopRepository",
    "LOOP_STAGES",
    "NODE_KINDS",
    "PredictionRepository",
    "FeatureRepository",
    "FeatureSetRecord",
    "FeatureStat",
    "MaterializationRecord",
    "ModelRepository",
    "ModelVersionRecord",
    "TransitionRecord",
    "AliasEvent",
    "Clause",
    "SEARCH_FIELDS",
    "PREDICTION_SCHEMA",
    "RunRecord",
    "RunMetric",
    "RunRepository",
    "RUN_KINDS",
    "RUN_STATUSES",
]
