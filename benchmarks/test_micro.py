"""Kernel micro-benchmarks (pytest-benchmark): `make bench-micro`, never part of `make test`.

They use the default models (`make models`) and the last orders of the default history.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest

from engine.codec.arrow_orders import decode_table
from engine.codec.order_decoder import decode_orders
from engine.codec.order_messages import orders_from_table
from engine.features import matrix as features
from engine.features.velocity import VelocityState
from engine.models import artifacts
from engine.orders.batch import OrderRules
from engine.orders.hashing import hash_values

ROOT = Path(__file__).resolve().parent.parent
N = 4096


@pytest.fixture(scope="module")
def models():
    m = artifacts.load(ROOT / "models/default")
    if m.tier1 is None or m.tier2 is None:
        pytest.fail(f"default models incomplete: {m.problems}")
    return m


@pytest.fixture(scope="module")
def table():
    t = pq.read_table(ROOT / "models/default-history.parquet")
    return t.slice(t.num_rows - N, N)


@pytest.fixture(scope="module")
def X(table):
    return features.compute(decode_table(table).arrays, VelocityState(1 << 16))


def test_hash_values(benchmark, table) -> None:
    benchmark(hash_values, table.column("customer_id").to_pylist())


def test_decode_wire_64(benchmark, table) -> None:
    raws = [o.SerializeToString() for o in orders_from_table(table.slice(0, 64))]
    rules = OrderRules()
    benchmark(lambda: rules.check(decode_orders(raws), float("inf")))


def test_velocity_features(benchmark, table) -> None:
    enc = decode_table(table).arrays
    state = VelocityState(1 << 16)
    benchmark(features.compute, enc, state)


def test_tier_one(benchmark, models, X) -> None:
    benchmark(models.tier1.screen, X)


@pytest.mark.parametrize("n", [1, 64])
def test_tier_one_small_batch(benchmark, models, X, n) -> None:
    benchmark(models.tier1.screen, np.ascontiguousarray(X[:n]))


def test_tier_two_onnx(benchmark, models, X) -> None:
    benchmark(models.tier2.score, X[:64])


def test_treeshap_one_row(benchmark, models, X) -> None:
    out = benchmark(models.tier2.contributions, X[:1])
    np.testing.assert_allclose(out.sum(axis=1), models.tier2.booster.predict(X[:1], raw_score=True))


@pytest.mark.parametrize("n", [64, N])
def test_treeshap_batch(benchmark, models, X, n) -> None:
    out = benchmark(models.tier2.contributions, X[:n])
    raw = models.tier2.booster.predict(X[:n], raw_score=True)
    np.testing.assert_allclose(out.sum(axis=1), raw, rtol=0, atol=1e-9)
