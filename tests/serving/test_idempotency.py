"""Idempotent retries over a real server: a repeated Score call gets the stored decision and
is not counted again; another order under a used id is refused; the cache is bounded, has a
window, and survives a hot swap."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import grpc
import pyarrow as pa
from ordersight.v1 import risk_pb2 as pb
from ordersight.v1 import risk_pb2_grpc as pb_grpc

from tests.grpc_harness import TIMEOUT_S, RunningServer, orders_of, rpc_error


def _seen(srv: RunningServer) -> int:
    assert srv.server is not None
    return srv.server.engine.orders_seen


def _decided(d: pb.Decision) -> pb.Decision:
    d.latency_us = 0  # the only field that depends on the moment
    return d


def test_a_retry_gets_the_stored_decision_and_is_not_counted_again(
    start_server: Callable[..., RunningServer], history: pa.Table
) -> None:
    srv = start_server()
    orders = orders_of(history.slice(5_500, 10))
    first = [srv.stub.Score(o, timeout=TIMEOUT_S) for o in orders]
    seen = _seen(srv)
    again = [srv.stub.Score(o, timeout=TIMEOUT_S) for o in orders]
    assert again == first  # byte for byte: the stored answers
    assert _seen(srv) == seen  # the velocity state did not count them twice
    # A twin that only saw them once decides the next order the same way.
    twin = start_server()
    for o in orders:
        twin.stub.Score(o, timeout=TIMEOUT_S)
    nxt = orders_of(history.slice(5_510, 5))
    assert [_decided(srv.stub.Score(o, timeout=TIMEOUT_S)) for o in nxt] == [
        _decided(twin.stub.Score(o, timeout=TIMEOUT_S)) for o in nxt
    ]
    metrics = srv.server.hub.registry  # type: ignore[union-attr]
    assert metrics.get_sample_value("ordersight_retries_total", {"outcome": "replayed"}) == 10


def test_concurrent_retries_of_one_order_are_scored_once(
    start_server: Callable[..., RunningServer], history: pa.Table
) -> None:
    srv = start_server()
    order = orders_of(history.slice(5_600, 1))[0]
    futures = [srv.stub.Score.future(order, timeout=TIMEOUT_S) for _ in range(12)]
    answers = [f.result() for f in futures]
    assert all(a == answers[0] for a in answers)
    assert _seen(srv) == 1


def test_another_order_under_a_used_id_is_refused_as_a_conflict(
    start_server: Callable[..., RunningServer], history: pa.Table
) -> None:
    srv = start_server()
    order = orders_of(history.slice(5_700, 1))[0]
    srv.stub.Score(order, timeout=TIMEOUT_S)
    changed = pb.Order()
    changed.CopyFrom(order)
    changed.amount_minor += 100
    err = rpc_error(lambda: srv.stub.Score(changed, timeout=TIMEOUT_S))
    assert err.code() == grpc.StatusCode.ALREADY_EXISTS
    assert f"order_id '{order.order_id}'" in (err.details() or "")
    assert _seen(srv) == 1


def test_the_window_and_the_bound_forget_old_orders(
    start_server: Callable[..., RunningServer], history: pa.Table
) -> None:
    orders = orders_of(history.slice(5_800, 6))
    srv = start_server(idempotency_window_s=0.2)
    srv.stub.Score(orders[0], timeout=TIMEOUT_S)
    time.sleep(0.3)
    srv.stub.Score(orders[0], timeout=TIMEOUT_S)  # past the window: a new call
    assert _seen(srv) == 2
    small = start_server(idempotency_max=2)
    for o in orders[1:4]:
        small.stub.Score(o, timeout=TIMEOUT_S)
    small.stub.Score(orders[1], timeout=TIMEOUT_S)  # evicted by the bound: scored again
    small.stub.Score(orders[3], timeout=TIMEOUT_S)  # still held: replayed
    assert _seen(small) == 4


def test_stored_decisions_survive_a_hot_swap(
    start_server: Callable[..., RunningServer], history: pa.Table, models_dir: Path
) -> None:
    srv = start_server()
    order = orders_of(history.slice(5_900, 1))[0]
    before = srv.stub.Score(order, timeout=TIMEOUT_S)
    admin = pb_grpc.ModelAdminStub(srv.channel)
    admin.LoadModel(pb.LoadModelRequest(path=str(models_dir)), timeout=120)
    assert srv.stub.Score(order, timeout=TIMEOUT_S) == before
    assert _seen(srv) == 1
