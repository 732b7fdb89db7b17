"""Admission control over a real server: past the engine's queue bound a Score call gets
RESOURCE_EXHAUSTED at once, what was admitted is answered; a call whose deadline passed
while it waited is not scored, and one whose deadline cannot be met is refused on arrival."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import grpc
import pyarrow as pa
from ordersight.v1 import risk_pb2 as pb

from tests.grpc_harness import (
    TIMEOUT_S,
    RunningServer,
    featurize_held,
    orders_of,
    simple_order,
)


@contextmanager
def _engine_held(srv: RunningServer, history: pa.Table) -> Iterator[grpc.Future]:
    """A ScoreBatch that holds the engine's thread until the block ends."""
    with featurize_held(srv) as entered:
        big = srv.stub.ScoreBatch.future(
            pb.ScoreBatchRequest(orders=pb.OrderList(orders=orders_of(history.slice(0, 20))))
        )
        assert entered.wait(TIMEOUT_S)
        yield big


def _waiting(srv: RunningServer, n: int) -> None:
    assert srv.server is not None
    batcher, end = srv.server.plane.batcher, time.monotonic() + TIMEOUT_S
    while batcher.waiting + batcher.items < n:
        assert time.monotonic() < end, "the calls did not reach the engine"
        time.sleep(0.005)


def test_past_the_queue_bound_calls_are_refused_at_once_and_the_rest_answered(
    start_server: Callable[..., RunningServer], history: pa.Table
) -> None:
    srv = start_server(max_queue=8)
    with _engine_held(srv, history) as big:
        admitted = [srv.stub.Score.future(simple_order(f"a-{i}")) for i in range(8)]
        _waiting(srv, 8)
        t0 = time.monotonic()
        refused = [srv.stub.Score.future(simple_order(f"r-{i}")) for i in range(20)]
        codes = [f.exception(timeout=TIMEOUT_S) for f in refused]
        elapsed = time.monotonic() - t0
    assert all(c is not None and c.code() == grpc.StatusCode.RESOURCE_EXHAUSTED for c in codes)
    assert "queue" in (codes[0].details() or "")  # type: ignore[union-attr]
    assert elapsed < TIMEOUT_S  # answered while the engine was still held
    assert [f.result(timeout=TIMEOUT_S).order_id for f in admitted] == [f"a-{i}" for i in range(8)]
    assert big.result(timeout=TIMEOUT_S)
    metrics = srv.server.hub.registry  # type: ignore[union-attr]
    assert metrics.get_sample_value("ordersight_rejected_total", {"reason": "queue_full"}) == 20


def test_a_call_whose_deadline_passed_in_the_queue_is_not_scored(
    start_server: Callable[..., RunningServer], history: pa.Table
) -> None:
    srv = start_server()
    assert srv.server is not None
    with _engine_held(srv, history) as big:
        late = srv.stub.Score.future(simple_order("late"), timeout=0.2)
        _waiting(srv, 1)
        time.sleep(0.3)
    assert big.result(timeout=TIMEOUT_S)
    assert late.exception(timeout=TIMEOUT_S).code() == grpc.StatusCode.DEADLINE_EXCEEDED  # type: ignore[union-attr]
    seen = srv.server.engine.orders_seen
    srv.stub.Score(simple_order("after"), timeout=TIMEOUT_S)
    assert srv.server.engine.orders_seen == seen + 1  # "late" was never added to the state
    assert seen == 20  # the ScoreBatch alone
    metrics = srv.server.hub.registry
    assert metrics.get_sample_value("ordersight_rejected_total", {"reason": "deadline"}) == 1


def test_a_call_whose_deadline_cannot_be_met_is_refused_at_once(
    start_server: Callable[..., RunningServer], history: pa.Table
) -> None:
    """With calls queued ahead at the engine's measured pace, a call that would be reached
    only after its deadline is refused on arrival, not queued and left to expire."""
    srv = start_server()
    assert srv.server is not None
    plane = srv.server.plane
    with _engine_held(srv, history) as big:
        ahead = [srv.stub.Score.future(simple_order(f"q-{i}")) for i in range(4)]
        _waiting(srv, 4)
        plane._per_call_s = 0.05  # the pace a slow engine measures: 50 ms per call
        err = srv.stub.Score.future(simple_order("hopeless"), timeout=0.1).exception(TIMEOUT_S)
        plane._per_call_s = 100e-6
    assert big.result(timeout=TIMEOUT_S)
    assert err is not None and err.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    assert "the deadline cannot be met" in (err.details() or "")  # the server's, not the client's
    assert [f.result(timeout=TIMEOUT_S).order_id for f in ahead] == [f"q-{i}" for i in range(4)]
    metrics = srv.server.hub.registry
    assert metrics.get_sample_value("ordersight_rejected_total", {"reason": "deadline"}) == 1
