"""Sticky assignment: deterministic, balanced (no SRM at the planned weights), exclusive within a layer."""

from __future__ import annotations

import hashlib

import pytest

from qmlops.exceptions import ValidationError
from qmlops.experiments import BUCKETS, ExperimentSlot, Layer, assign_variant, bucket_of, srm_check

USERS = [f"user-{i}" for i in range(20_000)]


def test_bucket_is_sha256_based_and_sticky() -> None:
    digest = hashlib.sha256(b"s:user-7").digest()
    assert bucket_of("user-7", "s") == int.from_bytes(digest[:8], "big") % BUCKETS
    assert [assign_variant(u, "exp", ["a", "b"]) for u in USERS[:50]] == [
        assign_variant(u, "exp", ["a", "b"]) for u in USERS[:50]
    ]


def test_split_follows_weights_without_sample_ratio_mismatch() -> None:
    variants, weights = ["control", "b", "c"], [0.5, 0.3, 0.2]
    got = [assign_variant(u, "checkout", variants, weights) for u in USERS]
    counts = [got.count(v) for v in variants]
    assert not srm_check(counts, weights).mismatch


def test_layers_are_exclusive_inside_and_independent_across() -> None:
    layer = Layer("ranking", [ExperimentSlot("e1", 0.3, ("a", "b")), ExperimentSlot("e2", 0.5, ("a", "b"))])
    other = Layer("pricing", [ExperimentSlot("p1", 1.0, ("x", "y"))])
    placed = [layer.assign(u) for u in USERS]
    names = [p[0] if p else None for p in placed]
    counts = [names.count("e1"), names.count("e2"), names.count(None)]
    assert not srm_check(counts, [0.3, 0.5, 0.2]).mismatch
    # Independence: the pricing split inside e1 stays 50/50.
    in_e1 = [u for u, n in zip(USERS, names, strict=True) if n == "e1"]
    pricing = [other.assign(u) for u in in_e1]
    assert not srm_check([pricing.count(("p1", "x")), pricing.count(("p1", "y"))], [0.5, 0.5]).mismatch


def test_bad_layers_and_weights_are_rejected() -> None:
    with pytest.raises(ValidationError):
        Layer("l", [ExperimentSlot("a", 0.7, ("x",)), ExperimentSlot("b", 0.5, ("x",))])
    with pytest.raises(ValidationError):
        assign_variant("u", "e", ["a", "b"], [1.0])
    with pytest.raises(ValidationError):
        assign_variant("u", "e", ["a", "b"], [0.0, 0.0])
