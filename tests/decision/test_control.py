"""The pilot's control group: which customers, and how their orders are decided."""

from __future__ import annotations

import numpy as np
import pytest

from engine.codec.arrow_orders import decode_table
from engine.decision.cascade import Engine
from engine.decision.control import CAUSE, check_fraction, in_control
from engine.decision.policy import DECLINE, FALLBACK
from engine.features.velocity import VelocityState
from engine.models.artifacts import ModelSet
from engine.orders import hashing
from engine.orders.schema import ENTITY_KINDS
from tests.conftest import CAPACITY


def _keys(n: int, seed: int = 0) -> np.ndarray:
    keys = np.zeros((n, len(ENTITY_KINDS)), np.uint64)
    keys[:, 0] = np.random.default_rng(seed).integers(1, 2**63, n, dtype=np.int64).astype(np.uint64)
    return keys


def test_the_share_of_customers_is_the_fraction_and_assignment_is_fixed() -> None:
    keys = _keys(200_000)
    for fraction in (0.01, 0.05, 0.2):
        share = in_control(keys, fraction).mean()
        sd = np.sqrt(fraction * (1 - fraction) / keys.shape[0])
        assert abs(share - fraction) < 5 * sd
    np.testing.assert_array_equal(in_control(keys, 0.05), in_control(keys.copy(), 0.05))
    # A customer in the group at 5% stays in it at 10%: growing the group adds customers.
    small, large = in_control(keys, 0.05), in_control(keys, 0.10)
    assert not (small & ~large).any()
    assert not in_control(keys, 0.0).any()


def test_the_assignment_depends_on_the_deployment_secret() -> None:
    ids = [f"customer-{i}" for i in range(20_000)]
    try:
        hashing.set_secret(b"a" * 32)
        a = in_control(_customer_keys(ids), 0.1)
        hashing.set_secret(b"b" * 32)
        b = in_control(_customer_keys(ids), 0.1)
    finally:
        hashing.set_secret(None)
    assert 0.05 < a.mean() < 0.15 and 0.05 < b.mean() < 0.15
    assert (a != b).mean() > 0.1  # another secret, another group


def _customer_keys(ids: list[str]) -> np.ndarray:
    import pyarrow as pa

    from engine.orders.schema import ORDER_SCHEMA

    rows = [
        {"order_id": f"o{i}", "customer_id": c, "created_at": 1_700_000_000 * 10**6,
         "amount_minor": 100, "currency": "USD"}
        for i, c in enumerate(ids)
    ]  # fmt: skip
    return decode_table(pa.Table.from_pylist(rows, schema=ORDER_SCHEMA)).arrays.keys


@pytest.mark.parametrize("bad", [-0.1, 0.6])
def test_a_fraction_out_of_range_is_refused(bad: float) -> None:
    with pytest.raises(ValueError, match="control_fraction"):
        check_fraction(bad)


def test_control_orders_are_decided_by_the_rules_and_the_rest_as_before(
    history, models: ModelSet
) -> None:
    orders = decode_table(history.slice(0, 4000).drop_columns(["is_fraud", "label_known_at"]))
    X = Engine(models, VelocityState(CAPACITY)).featurize(orders.arrays)
    plain = Engine(models, VelocityState(CAPACITY))
    piloted = Engine(models, VelocityState(CAPACITY))
    piloted.control_fraction = 0.25
    a = plain.decide(orders.ids, orders.arrays, X)
    b = piloted.decide(orders.ids, orders.arrays, X)
    control = in_control(orders.arrays.keys, 0.25)
    assert 0.15 < control.mean() < 0.35
    treated = np.flatnonzero(~control)
    np.testing.assert_array_equal(a.action[treated], b.action[treated])
    np.testing.assert_array_equal(a.score[treated], b.score[treated])
    assert all(b.causes[i] != CAUSE for i in treated.tolist())
    rows = np.flatnonzero(control)
    assert (b.path[rows] == FALLBACK).all()
    assert all(b.causes[i] == CAUSE for i in rows.tolist())
    # The rules' own score, as the fallback gives it.
    fired = models.fallback.fired(X[rows])
    rule_score = 1 / (1 + np.exp(-models.fallback.raw(fired)))
    np.testing.assert_allclose(b.score[rows], rule_score)
    # Neither a model's doubt nor a missing model sends a control order to review.
    for i in rows.tolist():
        assert "LOW_CONFIDENCE" not in b.triggers[i]
        assert "MODEL_UNAVAILABLE" not in b.triggers[i]
    declines = rows[b.score[rows] >= models.policy.decline_threshold]
    plain_stakes = [i for i in declines.tolist() if not b.triggers[i]]
    assert all(b.action[i] == DECLINE for i in plain_stakes)
