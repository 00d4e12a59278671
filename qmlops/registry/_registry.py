"""The model registry: versions with checksummed artifacts, lifecycle with history, aliases, tags, search."""

from __future__ import annotations

import getpass
import re
import subprocess
import uuid
from datetime import datetime
from pathlib import Path
from typing import Any

import pandas as pd

from qmlops.config import Settings, get_settings
from qmlops.exceptions import ConflictError, IncompatibleModelError, NotFoundError, ValidationError
from qmlops.metadata import (
    AliasEvent,
    Clause,
    MetadataStore,
    ModelVersionRecord,
    RemoteMetadataStore,
    TransitionRecord,
    get_store,
)
from qmlops.registry._artifacts import ArtifactStore
from qmlops.registry._flavors import Predictor, flavor_for, get_flavor
from qmlops.registry._lifecycle import GATED_STATES, check_transition
from qmlops.registry._search import parse_filter
from qmlops.registry._signature import Signature
from qmlops.registry._validate import (
    ValidationReport,
    check_environment,
    check_signature,
    environment,
    smoke_test,
)

__all__ = ["ModelRegistry"]

Store = MetadataStore | RemoteMetadataStore
_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9_.-]{0,99}$")
_RESERVED_ALIASES = {"latest", "production", "staging", "canary"}


def _actor(actor: str | None) -> str | None:
    if actor:
        return actor
    try:
        return getpass.getuser()
    except Exception:  # no user name in some containers
        return None


def _git_commit() -> str | None:
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5,
                             cwd=Path(__file__).parent)  # fmt: skip
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None if out.returncode == 0 else None


class ModelRegistry:
    """Register, find, move through the lifecycle, validate and load model versions."""

    def __init__(self, store: Store | None = None, settings: Settings | None = None) -> None:
        self.settings = settings or get_settings()
        self.store = store or get_store(self.settings)
        self.artifacts = ArtifactStore(self.settings.artifacts_uri)

    # -- registration -------------------------------------------------------------------------------------
    def register(
        self,
        name: str,
        model: Any,
        *,
        signature: Signature | pd.DataFrame,
        model_type: str | None = None,
        metrics: dict[str, float] | None = None,
        params: dict[str, Any] | None = None,
        tags: dict[str, str] | None = None,
        description: str | None = None,
        lineage_parents: tuple[str, ...] | list[str] = (),
        flavor: str | None = None,
        creator: str | None = None,
    ) -> ModelVersionRecord:
        """Store ``model``'s artifact (once per content) and register it as the next version of ``name``.

        ``signature`` is a :class:`Signature` or a sample of the training features (names, order and dtypes are
        taken from it). ``lineage_parents`` are lineage node ids (feature materialisations, tuning runs).
        """
        if not _NAME.match(name or ""):
            raise ValidationError(
                "model names start with a letter: letters, digits, _ . - (max 100)", field="name"
            )
        sig = signature if isinstance(signature, Signature) else Signature.from_frame(signature)
        chosen = get_flavor(flavor) if flavor else flavor_for(model)
        for key, value in (metrics or {}).items():
            if not re.match(r"^[A-Za-z_][A-Za-z0-9_.-]{0,63}$", key):
                raise ValidationError(f"bad metric name {key!r}", field="metrics")
            if not isinstance(value, int | float):
                raise ValidationError(f"metric {key} must be a number, got {value!r}", field="metrics")
        for parent in lineage_parents:
            self.store.lineage.get_node(parent)  # refuses unknown parents before anything is written
        data = chosen.dump(model, sig)
        digest, uri = self.artifacts.put(data)
        model_id = "mv-" + uuid.uuid4().hex[:16]
        record = self.store.models.insert(
            {
                "id": model_id,
                "name": name,
                "model_type": model_type or type(model).__name__,
                "flavor": chosen.name,
                "params": params or {},
                "signature": sig.to_dict(),
                "environment": environment(),
                "code_version": _git_commit(),
                "description": description,
                "artifact_sha256": digest,
                "artifact_uri": uri,
                "artifact_bytes": len(data),
            },  # fmt: skip
            {k: float(v) for k, v in (metrics or {}).items()},
            {k: str(v) for k, v in (tags or {}).items()},
            _actor(creator),
        )
        self.store.lineage.add_node(model_id, "model_version", f"{name} v{record.version}")
        for parent in lineage_parents:
            self.store.lineage.add_edge(
                parent, model_id, "trained_on", {"model": name, "version": record.version}
            )
        return record

    # -- lookup -------------------------------------------------------------------------------------------
    def get(self, name: str, ref: int | str = "latest") -> ModelVersionRecord:
        """A version by number, ``latest``, ``production``, an alias, or a model id (``mv-...``)."""
        if isinstance(ref, str) and ref.startswith("mv-"):
            return self.store.models.get(ref)
        if isinstance(ref, int) or (isinstance(ref, str) and ref.isdigit()):
            return self.store.models.get_version(name, int(ref))
        if ref == "latest":
            return self.store.models.latest(name)
        if ref == "production":
            found = self.store.models.in_state(name, "production")
            if not found:
                raise NotFoundError(f"model {name!r} has no production version", field="version")
            return found[0]
        return self.store.models.by_alias(name, ref)

    def list_versions(self, name: str | None = None, limit: int = 100) -> list[ModelVersionRecord]:
        """Versions of ``name`` (or of every model), newest first."""
        clauses = [Clause("field", "name", "=", name)] if name else []
        return self.store.models.search(clauses, limit=limit)

    def search(
        self, filter: str | None = None, *, sort: str = "created_at", descending: bool = True, limit: int = 50,
        offset: int = 0,
    ) -> list[ModelVersionRecord]:  # fmt: skip
        """Versions matching ``filter`` (see :mod:`qmlops.registry._search`), sorted by a field or metric."""
        return self.store.models.search(parse_filter(filter), sort=sort, descending=descending, limit=limit,
                                        offset=offset)  # fmt: skip

    # -- lifecycle ----------------------------------------------------------------------------------------
    def transition(
        self,
        name: str,
        ref: int | str,
        to_state: str,
        *,
        reason: str | None = None,
        actor: str | None = None,
        previous_to: str = "archived",
        skip_validation: str | None = None,
        serving_features: list[str] | None = None,
        serving_dtypes: list[str] | None = None,
        sample: pd.DataFrame | None = None,
    ) -> ModelVersionRecord:
        """Move a version to ``to_state`` if the state machine allows it; history records who, when and why.

        Into staging, canary or production the compatibility validator runs first (unless ``skip_validation``
        gives a reason); a failing report raises :class:`IncompatibleModelError` and changes no state.
        Promoting to production moves the current production version to ``previous_to`` (archived or staging).
        """
        record = self.get(name, ref)
        check_transition(record.state, to_state)
        if previous_to not in ("archived", "staging"):
            raise ValidationError("must be archived or staging", field="previous_to")
        if to_state in GATED_STATES:
            if skip_validation:
                reason = f"{reason or ''} [validation skipped: {skip_validation}]".strip()
            else:
                report = self.validate(name, record.id, serving_features=serving_features,
                                       serving_dtypes=serving_dtypes, sample=sample)  # fmt: skip
                if not report.ok:
                    raise IncompatibleModelError(
                        f"{name} v{record.version} failed validation: {'; '.join(report.errors)}",
                        field="model", details=report.to_dict(),
                    )  # fmt: skip
        demote = {}
        if to_state == "production":
            demote = {
                r.id: previous_to for r in self.store.models.in_state(name, "production") if r.id != record.id
            }
        return self.store.models.transition(record.id, to_state, expected_from=record.state, actor=_actor(actor),
                                            reason=reason, demote=demote)  # fmt: skip

    def promote(self, name: str, ref: int | str, **kwargs: Any) -> ModelVersionRecord:
        return self.transition(name, ref, "production", **kwargs)

    def history(self, name: str, ref: int | str | None = None) -> list[TransitionRecord]:
        model_id = self.get(name, ref).id if ref is not None else None
        return self.store.models.history(name, model_id)

    def in_production_at(self, name: str, when: datetime | str) -> ModelVersionRecord | None:
        """The version that was in production at ``when`` (replaying the transition history), or None."""
        at = pd.Timestamp(when).to_pydatetime().replace(tzinfo=None)
        states: dict[str, str] = {}
        for t in self.store.models.history(name):
            if t.changed_at > at:
                break
            states[t.model_id] = t.to_state
        live = [mid for mid, state in states.items() if state == "production"]
        return self.store.models.get(live[-1]) if live else None

    # -- aliases, tags, description --------------------------------------------------------------------------
    def set_alias(
        self, name: str, alias: str, ref: int | str, actor: str | None = None
    ) -> ModelVersionRecord:
        if not _NAME.match(alias) or alias in _RESERVED_ALIASES:
            raise ValidationError(f"bad alias {alias!r} (letters, digits, _ . -; not {', '.join(sorted(_RESERVED_ALIASES))})",
                                  field="alias")  # fmt: skip
        record = self.get(name, ref)
        self.store.models.set_alias(name, alias, record.id, _actor(actor))
        return self.store.models.get(record.id)

    def remove_alias(self, name: str, alias: str, actor: str | None = None) -> None:
        self.store.models.remove_alias(name, alias, _actor(actor))

    def alias_history(self, name: str, alias: str | None = None) -> list[AliasEvent]:
        return self.store.models.alias_history(name, alias)

    def set_tags(self, name: str, ref: int | str, tags: dict[str, str]) -> ModelVersionRecord:
        record = self.get(name, ref)
        for key in tags:
            if not re.match(r"^[A-Za-z_][A-Za-z0-9_.-]{0,63}$", key):
                raise ValidationError(f"bad tag name {key!r}", field="tags")
        self.store.models.set_tags(record.id, {k: str(v) for k, v in tags.items()})
        return self.store.models.get(record.id)

    def remove_tag(self, name: str, ref: int | str, key: str) -> ModelVersionRecord:
        record = self.get(name, ref)
        self.store.models.remove_tag(record.id, key)
        return self.store.models.get(record.id)

    def set_description(self, name: str, ref: int | str, description: str) -> ModelVersionRecord:
        record = self.get(name, ref)
        self.store.models.set_description(record.id, description)
        return self.store.models.get(record.id)

    # -- artifacts and validation ------------------------------------------------------------------------------
    def load_predictor(self, name: str, ref: int | str = "production") -> Predictor:
        """A predictor for a version, loaded from the checksummed store (refuses a tampered artifact)."""
        record = self.get(name, ref)
        data = self.artifacts.get(record.artifact_sha256, record.artifact_uri)
        signature = Signature.from_dict(record.signature)
        return Predictor(signature, get_flavor(record.flavor).load(data, signature), record.flavor, record.id)

    def _default_sample(self, record: ModelVersionRecord) -> tuple[list[str] | None, pd.DataFrame | None]:
        """Features and sample rows from the feature materialisation the version was trained on, if any."""
        from qmlops.features import load_features

        parents = [n for n in self.store.lineage.upstream(record.id) if n.kind == "feature_set"]
        if not parents:
            return None, None
        frame = load_features(materialization=parents[0].id, store=self.store)["feature"]
        return list(frame.columns), frame.tail(64)

    def validate(
        self,
        name: str,
        ref: int | str = "latest",
        *,
        serving_features: list[str] | None = None,
        serving_dtypes: list[str] | None = None,
        sample: pd.DataFrame | None = None,
    ) -> ValidationReport:
        """Run the compatibility checks and store the report with the version.

        Without ``serving_features``/``sample`` they come from the feature materialisation in the version's
        lineage; if there is none, the check fails and says what to pass.
        """
        record = self.get(name, ref)
        signature = Signature.from_dict(record.signature)
        report = ValidationReport()
        if serving_features is None or sample is None:
            default_features, default_sample = self._default_sample(record)
            if serving_features is None and default_features is not None:
                serving_features = default_features
                serving_dtypes = serving_dtypes or [str(default_sample[c].dtype) for c in default_features] \
                    if default_sample is not None else None  # fmt: skip
            sample = sample if sample is not None else default_sample
        if serving_features is None:
            report.fail(
                "no serving feature list: pass serving_features or register with a feature lineage parent"
            )
        else:
            check_signature(signature, serving_features, serving_dtypes, report)
        check_environment(record.environment, report)
        if sample is None:
            report.fail(
                "no sample rows for the smoke prediction: pass sample or register with a feature parent"
            )
        else:
            try:
                predictor = self.load_predictor(name, record.id)
            except Exception as exc:  # tampered artifact, unknown flavor: reported, not raised
                report.fail(f"cannot load the artifact: {exc}")
            else:
                smoke_test(predictor.predict, sample, report)
        self.store.models.set_validation(record.id, report.to_dict())
        return report

    def mark_failed(
        self, name: str, ref: int | str, reason: str, actor: str | None = None
    ) -> ModelVersionRecord:
        record = self.get(name, ref)
        if record.state == "failed":
            raise ConflictError("already failed", field="state")
        return self.transition(name, record.id, "failed", reason=reason, actor=actor)
