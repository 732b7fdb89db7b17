"""Decisions written straight to wire bytes equal the protobuf route byte for byte:
`decisions_to_pb` then `SerializeToString`, per Decision and as a ScoreBatchResponse.

`python -m benchmarks.codecs` prints the two routes' cost per decision side by side.
"""

from __future__ import annotations

import math
import struct
from collections.abc import Sequence

import numpy as np
import pyarrow as pa
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from ordersight.v1 import risk_pb2 as pb

from engine.codec.arrow_orders import decode_table
from engine.codec.decision_encoder import batch_response_bytes, decision_bytes, warm
from engine.decision.cascade import Engine
from engine.decision.decisions import Decisions
from engine.decision.policy import APPROVE, FALLBACK, MODEL
from engine.decision.reasons import Reason
from engine.features.velocity import VelocityState
from engine.models.artifacts import ModelSet
from tests.conftest import CAPACITY
from tests.oracle import decisions_to_pb

INT64 = st.integers(-(2**63), 2**63 - 1)

# --- generated decisions ------------------------------------------------------------------

text = st.text(st.characters(codec="utf-8"), max_size=12)  # multi-byte and 4-byte included
long_text = st.sampled_from(["x" * 127, "y" * 128, "é" * 70, "设" * 50, "🙂" * 40, "z" * 300])
strings = st.one_of(st.just(""), st.sampled_from(["o-1", "ü-ß", "设备-7", "🙂", "\x00"]), text)
some_strings = st.one_of(strings, long_text)
SPECIAL = [0.0, -0.0, math.nan, -math.nan, math.inf, -math.inf, 5e-324, -5e-324, 2.2e-308, 1e308]
doubles = st.one_of(
    st.sampled_from(SPECIAL),
    st.floats(allow_nan=True, allow_infinity=True, allow_subnormal=True),
    # Any bit pattern: NaNs with payloads and signalling NaNs keep their bits on the wire.
    st.integers(0, 2**64 - 1).map(lambda b: struct.unpack("<d", b.to_bytes(8, "little"))[0]),
)
enums = st.one_of(st.integers(0, 3), st.integers(-128, 127))  # int8, as the pipeline gives
reasons = st.builds(Reason, some_strings, some_strings, doubles, some_strings)
triggers = st.sampled_from(["HIGH_VALUE", "KEY_ACCOUNT", "LOW_CONFIDENCE", "DEADLINE", ""])


@st.composite
def decisions(draw: st.DrawFn, max_rows: int = 6) -> tuple[Decisions, list[int]]:
    """Decisions and latencies; up to 6 rows reach both routes (Python for 1-2, the kernel)."""
    n = draw(st.integers(0, max_rows))
    d = Decisions(
        order_ids=draw(st.lists(some_strings, min_size=n, max_size=n)),
        action=np.array(draw(st.lists(enums, min_size=n, max_size=n)), np.int8),
        score=np.array(draw(st.lists(doubles, min_size=n, max_size=n)), np.float64),
        raw=np.array(draw(st.lists(doubles, min_size=n, max_size=n)), np.float64),
        base=np.array(draw(st.lists(doubles, min_size=n, max_size=n)), np.float64),
        path=np.array(draw(st.lists(enums, min_size=n, max_size=n)), np.int8),
        reasons=[draw(st.lists(reasons, max_size=4)) for _ in range(n)],
        triggers=[draw(st.lists(st.one_of(triggers, text), max_size=3)) for _ in range(n)],
        causes=draw(st.lists(st.one_of(st.just(""), some_strings), min_size=n, max_size=n)),
        model_version=draw(st.one_of(st.just("20261130T095840Z"), some_strings)),
    )
    latency = draw(st.lists(st.one_of(st.integers(0, 10**6), INT64), min_size=n, max_size=n))
    return d, latency


def bits(x: float) -> bytes:
    return struct.pack("<d", x)


def assert_same_as_protobuf(d: Decisions, latency_us: Sequence[int]) -> None:
    expected = decisions_to_pb(d, list(latency_us))
    got = decision_bytes(d, latency_us)
    assert got == [m.SerializeToString() for m in expected]
    batch = batch_response_bytes(d, latency_us)
    assert batch == pb.ScoreBatchResponse(decisions=expected).SerializeToString()
    # Parsed back, the bytes hold the decisions' own values (bits of doubles, NaN included).
    parsed = pb.ScoreBatchResponse.FromString(batch).decisions
    assert len(parsed) == len(got) == len(d)
    for i, (m, one) in enumerate(zip(parsed, got, strict=True)):
        assert m.SerializeToString() == pb.Decision.FromString(one).SerializeToString() == one
        assert (m.order_id, m.action, m.path) == (d.order_ids[i], d.action[i], d.path[i])
        assert (m.model_version, m.latency_us, m.fallback_cause) == (
            d.model_version,
            latency_us[i],
            d.causes[i],
        )
        assert [bits(m.score), bits(m.raw_score), bits(m.base_value)] == [
            bits(d.score[i]),
            bits(d.raw[i]),
            bits(d.base[i]),
        ]
        assert list(m.review_triggers) == d.triggers[i]
        assert [(r.code, r.feature, bits(r.contribution), r.message) for r in m.reasons] == [
            (r.code, r.feature, bits(r.contribution), r.message) for r in d.reasons[i]
        ]


def plain(n: int, **overrides: object) -> Decisions:
    """n screened-out approvals, the common case."""
    fields: dict[str, object] = dict(
        order_ids=[f"o-{i}" for i in range(n)],
        action=np.full(n, APPROVE, np.int8),
        score=np.linspace(0.001, 0.03, n),
        raw=np.linspace(-7.0, -3.5, n),
        base=np.zeros(n),
        path=np.ones(n, np.int8),
        reasons=[[] for _ in range(n)],
        triggers=[[] for _ in range(n)],
        causes=[""] * n,
        model_version="20261130T095840Z",
    )
    fields.update(overrides)
    return Decisions(**fields)  # type: ignore[arg-type]


@given(decisions())
@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@example((plain(0), []))
@example((plain(1), [0]))
@example((plain(1, score=np.array([-0.0]), raw=np.array([0.0])), [-1]))
@example((plain(2, order_ids=["", "设备-🙂"], model_version=""), [2**63 - 1, -(2**63)]))
@example(
    (
        plain(
            3,
            order_ids=["", "设备-🙂", "o"],
            action=np.array([0, -1, 127], np.int8),
            path=np.array([-128, 0, 3], np.int8),
            score=np.array([-0.0, math.nan, 5e-324]),
            base=np.array([0.0, -math.inf, -0.0]),
            model_version="",
        ),
        [2**63 - 1, -(2**63), 0],
    )
)
def test_bytes_equal_protobuf(case: tuple[Decisions, list[int]]) -> None:
    d, latency = case
    assert_same_as_protobuf(d, latency)


def test_latency_may_be_any_int_sequence() -> None:
    d = plain(3)
    assert_same_as_protobuf(d, (5, 0, -5))
    assert decision_bytes(d, np.array([5, 0, -5])) == decision_bytes(d, [5, 0, -5])


def test_many_distinct_reason_texts() -> None:
    """More distinct texts than any encoding cache keeps: still the protobuf bytes."""
    n = 1200
    reasons = [
        [Reason(f"C{k}", f"f.{k}", 0.1 * i - k, f"value {i}.{k} ✓") for k in range(5)]
        for i in range(n)
    ]
    triggers = [["HIGH_VALUE", f"T{i}"] for i in range(n)]
    causes = [f"TIER2_ERROR: RuntimeError: {i}" for i in range(n)]
    d = plain(n, reasons=reasons, triggers=triggers, causes=causes)
    for _ in range(2):  # the second pass runs with whatever the caches kept
        assert_same_as_protobuf(d, list(range(n)))


def test_rejects_what_protobuf_rejects() -> None:
    d = plain(2)
    with pytest.raises(ValueError, match="latency_us: expected 2 values"):
        decision_bytes(d, [1])
    with pytest.raises(ValueError, match="score: expected 2 values"):
        batch_response_bytes(plain(2, score=np.zeros(3)), [1, 2])
    for latency in ([2**63, 0], [0, -(2**63) - 1]):  # out of int64, as protobuf refuses
        with pytest.raises(ValueError):
            decisions_to_pb(d, latency)[0].SerializeToString()
        with pytest.raises(ValueError, match="latency_us"):
            decision_bytes(d, latency)
    bad = plain(1, order_ids=["\ud800"])  # a lone surrogate has no UTF-8
    with pytest.raises(UnicodeEncodeError):
        decisions_to_pb(bad, [1])
    with pytest.raises(UnicodeEncodeError):
        decision_bytes(bad, [1])


def test_warm_then_serve() -> None:
    warm()
    assert decision_bytes(plain(1), [7]) == [decisions_to_pb(plain(1), [7])[0].SerializeToString()]


# --- real decisions -----------------------------------------------------------------------


@pytest.fixture(scope="module")
def orders(history: pa.Table) -> pa.Table:
    return decode_table(history.slice(0, 4000))


def test_engine_decisions(models: ModelSet, orders: pa.Table) -> None:
    d = Engine(models, VelocityState(CAPACITY)).score(orders)
    assert (d.path == MODEL).any() and (d.action != APPROVE).sum() > 10
    assert any(d.reasons) and any(d.triggers)
    rng = np.random.default_rng(3)
    assert_same_as_protobuf(d, rng.integers(0, 50_000, len(d)).tolist())
    for i in np.flatnonzero(d.action != APPROVE)[:10]:  # Score's micro-batches, 1 to 8 rows
        for rows in ([i], [i, i + 1], [i - 1, i, i + 1], range(i, i + 8)):
            part = d.take(rows)
            assert_same_as_protobuf(part, [1391] * len(part))


def test_engine_fallback_decisions(models: ModelSet, orders: pa.Table) -> None:
    late = Engine(models, VelocityState(CAPACITY)).score(
        orders, deadlines=np.full(orders.n, -np.inf)
    )
    rules_only = Engine(ModelSet.rules_only(), VelocityState(CAPACITY)).score(orders)
    for d in (late, rules_only):
        assert (d.path == FALLBACK).any() and any(d.causes)
        assert_same_as_protobuf(d, [250] * len(d))
