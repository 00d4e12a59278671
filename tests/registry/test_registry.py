"""The model registry with real trained models: artifacts, lifecycle, aliases, search, validation."""

from __future__ import annotations

import pickle
import time
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from qmlops.exceptions import (
    ConflictError,
    IncompatibleModelError,
    IntegrityError,
    NotFoundError,
    ValidationError,
)
from qmlops.metadata import get_store
from qmlops.registry import TRANSITIONS, ModelRegistry, Signature

from .conftest import FEATURES, Trained, in_memory_predict

KINDS = ["lightgbm", "xgboost", "linear", "torch"]


def _register(reg: ModelRegistry, trained: Trained, kind: str = "lightgbm", name: str = "alpha", **kw):  # type: ignore[no-untyped-def]
    return reg.register(name, trained.models[kind], signature=trained.x_train, model_type=kind, **kw)


@pytest.mark.parametrize("kind", KINDS)
def test_registered_model_predicts_like_the_in_memory_one(
    tmp_home: Path, trained: Trained, kind: str
) -> None:
    reg = ModelRegistry()
    rec = _register(reg, trained, kind, metrics={"test_ic": 0.01}, params={"seed": 0})
    assert rec.version == 1 and rec.state == "registered" and rec.flavor == kind
    assert rec.signature["feature_names"] == FEATURES and rec.signature["dtypes"] == ["float32"] * len(
        FEATURES
    )
    assert rec.environment["python"] and "numpy" in rec.environment
    predictor = reg.load_predictor("alpha", "latest")
    shuffled = trained.x_test[FEATURES[::-1]]  # columns are picked by name, not position
    np.testing.assert_allclose(predictor.predict(shuffled), in_memory_predict(kind, trained.models[kind],
                               trained.x_test), rtol=1e-5, atol=1e-6)  # fmt: skip
    with pytest.raises(ValidationError, match="missing 1 feature") as info:
        predictor.predict(trained.x_test.drop(columns=["MA5"]))
    assert info.value.field == "MA5"
    assert _register(reg, trained, kind).version == 2  # versions count up per name


def test_artifacts_are_stored_once_per_content(tmp_home: Path, trained: Trained) -> None:
    reg = ModelRegistry()
    a, b = _register(reg, trained), _register(reg, trained)
    assert a.artifact_sha256 == b.artifact_sha256 and a.artifact_uri == b.artifact_uri and a.id != b.id
    assert len([p for p in (tmp_home / "artifacts").rglob("*") if p.is_file()]) == 1


@pytest.mark.parametrize("damage", ["flip", "truncate"])
def test_tampered_or_truncated_artifact_is_refused(tmp_home: Path, trained: Trained, damage: str) -> None:
    reg = ModelRegistry()
    rec = _register(reg, trained)
    path = Path(rec.artifact_uri)
    data = bytearray(path.read_bytes())
    if damage == "flip":
        data[len(data) // 2] ^= 0xFF
    else:
        data = data[: len(data) // 2]
    path.write_bytes(bytes(data))
    with pytest.raises(IntegrityError, match="failed its checksum"):
        reg.load_predictor("alpha", 1)


class _Marker:
    """Unpickling this object creates a marker file: proof of whether bytes were unpickled."""

    def __init__(self, path: str) -> None:
        self.path = path

    def predict(self, frame: pd.DataFrame) -> np.ndarray:
        return np.zeros(len(frame))

    def __reduce__(self) -> tuple[object, ...]:
        return (_touch_and_build, (self.path,))


def _touch_and_build(path: str) -> _Marker:
    Path(path).touch()
    return _Marker(path)


def test_nothing_is_unpickled_before_the_checksum_passes(
    tmp_home: Path, tmp_path: Path, trained: Trained
) -> None:
    marker = tmp_path / "unpickled"
    reg = ModelRegistry()
    rec = reg.register("picky", _Marker(str(marker)), signature=trained.x_train)
    assert rec.flavor == "pickle" and not marker.exists()
    reg.load_predictor("picky", 1)
    assert marker.exists()  # an intact artifact is unpickled ...
    marker.unlink()
    tampered = bytearray(Path(rec.artifact_uri).read_bytes())
    tampered[-2] ^= 0x01
    Path(rec.artifact_uri).write_bytes(bytes(tampered))
    with pytest.raises(IntegrityError):
        reg.load_predictor("picky", 1)
    assert not marker.exists()  # ... a tampered one never reaches pickle
    assert pickle.loads(pickle.dumps(1)) == 1


def _bring_to(reg: ModelRegistry, name: str, version: int, state: str) -> None:
    path = {"registered": [], "staging": ["staging"], "canary": ["staging", "canary"],
            "production": ["staging", "production"], "archived": ["archived"], "failed": ["failed"],
            "rolled_back": ["staging", "canary", "rolled_back"]}[state]  # fmt: skip
    for step in path:
        reg.transition(name, version, step, reason="setup", skip_validation="lifecycle test")


ALLOWED = [(src, dst) for src, targets in TRANSITIONS.items() for dst in targets]
REFUSED = [("registered", "production"), ("registered", "canary"), ("failed", "staging"),
           ("archived", "production"), ("rolled_back", "production"), ("production", "canary")]  # fmt: skip


@pytest.mark.parametrize(("src", "dst"), ALLOWED, ids=[f"{s}->{d}" for s, d in ALLOWED])
def test_every_allowed_transition(tmp_home: Path, trained: Trained, src: str, dst: str) -> None:
    reg = ModelRegistry()
    _register(reg, trained)
    _bring_to(reg, "alpha", 1, src)
    rec = reg.transition("alpha", 1, dst, reason="because", actor="tester", skip_validation="lifecycle test")
    assert rec.state == dst
    last = reg.history("alpha", 1)[-1]
    assert (last.from_state, last.to_state, last.actor) == (src, dst, "tester")
    assert last.reason is not None and "because" in last.reason


@pytest.mark.parametrize(("src", "dst"), REFUSED, ids=[f"{s}->{d}" for s, d in REFUSED])
def test_refused_transitions_list_the_allowed_ones(
    tmp_home: Path, trained: Trained, src: str, dst: str
) -> None:
    reg = ModelRegistry()
    _register(reg, trained)
    _bring_to(reg, "alpha", 1, src)
    with pytest.raises(ConflictError) as info:
        reg.transition("alpha", 1, dst, skip_validation="lifecycle test")
    assert info.value.details["allowed"] == list(TRANSITIONS[src])
    assert ", ".join(TRANSITIONS[src]) in str(info.value)
    assert reg.get("alpha", 1).state == src  # nothing changed


def test_one_production_version_and_history_by_date(tmp_home: Path, trained: Trained) -> None:
    reg = ModelRegistry()
    for _ in range(3):
        _register(reg, trained)
    before = datetime.now(UTC).replace(tzinfo=None)
    time.sleep(0.02)
    reg.transition("alpha", 1, "staging", skip_validation="t")
    reg.promote("alpha", 1, reason="first", skip_validation="t")
    time.sleep(0.02)
    mid = datetime.now(UTC).replace(tzinfo=None)
    time.sleep(0.02)
    reg.transition("alpha", 2, "staging", skip_validation="t")
    reg.promote("alpha", 2, reason="better", skip_validation="t")
    time.sleep(0.02)
    after = datetime.now(UTC).replace(tzinfo=None)
    assert reg.get("alpha", 1).state == "archived" and reg.get("alpha", "production").version == 2
    assert reg.in_production_at("alpha", before) is None
    assert reg.in_production_at("alpha", mid).version == 1  # type: ignore[union-attr]
    assert reg.in_production_at("alpha", after).version == 2  # type: ignore[union-attr]
    superseded = [t for t in reg.history("alpha", 1) if t.to_state == "archived"][0]
    assert "superseded by alpha v2" in str(superseded.reason)
    reg.transition("alpha", 3, "staging", skip_validation="t")
    reg.promote("alpha", 3, previous_to="staging", skip_validation="t")
    assert reg.get("alpha", 2).state == "staging"
    assert [r.version for r in reg.search("name = 'alpha' and state = 'production'")] == [3]
    # the page's one-query read: the newest transitions per name, oldest first, the same records as history
    everything = reg.history("alpha")
    assert len(everything) > 4
    recent = reg.store.models.recent_history(["alpha", "no-such-model"], per_name=4)
    assert recent == {"alpha": everything[-4:], "no-such-model": []}


def test_aliases_have_their_own_history(tmp_home: Path, trained: Trained) -> None:
    reg = ModelRegistry()
    _register(reg, trained)
    _register(reg, trained)
    reg.set_alias("alpha", "champion", 1, actor="ann")
    reg.set_alias("alpha", "champion", 2, actor="bob")
    assert reg.get("alpha", "champion").version == 2
    reg.remove_alias("alpha", "champion", actor="cy")
    events = reg.alias_history("alpha", "champion")
    assert [(e.action, e.actor) for e in events] == [("set", "ann"), ("moved", "bob"), ("removed", "cy")]
    ids = [reg.get("alpha", 1).id, reg.get("alpha", 2).id, None]
    assert [e.model_id for e in events] == ids
    with pytest.raises(NotFoundError):
        reg.get("alpha", "champion")
    with pytest.raises(ValidationError):
        reg.set_alias("alpha", "production", 1)


def test_search_by_metrics_tags_aliases_with_sort_and_pages(tmp_home: Path, trained: Trained) -> None:
    reg = ModelRegistry()
    ics = [0.01, 0.03, 0.05, 0.02]
    for i, ic in enumerate(ics):
        _register(reg, trained, name="m" + "ab"[i % 2], metrics={"test_ic": ic, "mse": 1 - ic},
                  tags={"team": "alpha" if i < 2 else "beta"})  # fmt: skip
    reg.set_alias("mb", "challenger", 2)
    found = reg.search("metrics.test_ic > 0.015", sort="metrics.test_ic")
    assert [r.metrics["test_ic"] for r in found] == [0.05, 0.03, 0.02]
    asc = reg.search(
        "metrics.test_ic >= 0.02 and tags.team = 'beta'", sort="metrics.test_ic", descending=False
    )
    assert [r.metrics["test_ic"] for r in asc] == [0.02, 0.05]
    assert [(r.name, r.version) for r in reg.search("alias = 'challenger'")] == [("mb", 2)]
    page1 = reg.search(None, sort="metrics.mse", descending=False, limit=2)
    page2 = reg.search(None, sort="metrics.mse", descending=False, limit=2, offset=2)
    assert [r.metrics["mse"] for r in page1 + page2] == sorted(1 - ic for ic in ics)
    reg.set_tags("ma", 1, {"team": "gamma"})
    assert [r.name for r in reg.search("tags.team = 'gamma'")] == ["ma"]
    reg.set_description("ma", 1, "first try")
    assert reg.get("ma", 1).description == "first try"


INJECTIONS = [
    "name = 'x'; DROP TABLE model_versions; --",
    "name = 'x' or 1 = 1",
    "1=1 OR",
    "metrics.test_ic > 0 UNION SELECT * FROM model_versions",
    "tags.\"team\" = 'a'",
    "name = 'x'' OR ''1''=''1'",
    "metrics.x;y > 1",
    "state = (SELECT 'production')",
]


@pytest.mark.parametrize("attack", INJECTIONS)
def test_injection_attempts_are_refused_or_inert(tmp_home: Path, trained: Trained, attack: str) -> None:
    reg = ModelRegistry()
    _register(reg, trained, metrics={"test_ic": 0.1})
    before = get_store().models.search([], limit=100)
    try:
        found = reg.search(attack)
    except ValidationError as exc:
        assert exc.field == "filter" and str(exc)
    else:
        assert found == []  # parsed as a plain value comparison: it matched nothing
    after = get_store().models.search([], limit=100)
    assert [r.to_dict() for r in after] == [r.to_dict() for r in before]
    with pytest.raises(ValidationError):
        reg.search(None, sort="created_at; DROP TABLE model_versions")


def test_validator_catches_order_mismatch_and_missing_feature(tmp_home: Path, trained: Trained) -> None:
    reg = ModelRegistry()
    _register(reg, trained)
    sample = trained.x_test.head(32)
    good = reg.validate("alpha", 1, serving_features=FEATURES, serving_dtypes=["float32"] * len(FEATURES),
                        sample=sample)  # fmt: skip
    assert good.ok and good.checks["smoke"]["finite"] and good.checks["smoke"]["shape"] == [32]
    swapped = FEATURES.copy()
    swapped[2], swapped[3] = swapped[3], swapped[2]
    bad_order = reg.validate("alpha", 1, serving_features=swapped, sample=sample)
    assert not bad_order.ok and bad_order.checks["signature"]["reordered"]
    assert any("order differs from position 2" in e for e in bad_order.errors)
    missing = reg.validate(
        "alpha", 1, serving_features=FEATURES[:-1], sample=sample.drop(columns=[FEATURES[-1]])
    )
    assert not missing.ok and missing.checks["signature"]["missing"] == [FEATURES[-1]]
    assert any("smoke prediction raised" in e for e in missing.errors)
    assert reg.get("alpha", 1).validation == missing.to_dict()  # the last report is stored with the version
    with pytest.raises(IncompatibleModelError, match="order differs") as info:
        reg.transition("alpha", 1, "staging", serving_features=swapped, sample=sample)
    assert info.value.details["checks"]["signature"]["reordered"]
    assert reg.get("alpha", 1).state == "registered"
    staged = reg.transition("alpha", 1, "staging", serving_features=FEATURES, sample=sample)
    assert staged.state == "staging"


def test_environment_major_mismatch_fails(tmp_home: Path, trained: Trained) -> None:
    from qmlops.registry._validate import ValidationReport, check_environment

    report = ValidationReport()
    check_environment({"numpy": "1.26.4", "pandas": "3.0.0"}, report)
    assert not report.ok and any("numpy" in e and "major" in e for e in report.errors)
    warn = ValidationReport()
    import pandas

    major, minor = pandas.__version__.split(".")[:2]
    check_environment({"pandas": f"{major}.{int(minor) + 1}.0"}, warn)
    assert warn.ok and any("minor" in w for w in warn.warnings)


def test_lineage_from_dataset_reaches_the_model(tmp_home: Path, trained: Trained) -> None:
    store = get_store()
    store.lineage.add_node("ds-test", "dataset")
    store.lineage.add_node("fm-test", "feature_set")
    store.lineage.add_edge("ds-test", "fm-test", "materialized_from")
    reg = ModelRegistry()
    rec = _register(reg, trained, lineage_parents=["fm-test"])
    impact = store.lineage.impact("ds-test")
    assert [n.id for n in impact["model_version"]] == [rec.id]
    with pytest.raises(NotFoundError):
        _register(reg, trained, lineage_parents=["fm-missing"])
    assert len(reg.list_versions("alpha")) == 1  # the refused registration wrote nothing


def test_signature_round_trip() -> None:
    sig = Signature(["a", "b"], ["float32", "float64"])
    assert Signature.from_dict(sig.to_dict()) == sig
