"""Replicas behind a load balancer share what they accept through NATS JetStream.

A real nats-server (tests/services.py) and real replicas (each an engine with its front
processes, on its own port) spoken to by real clients; nothing is mocked. Waits are
bounded polls on what a replica has applied, never sleeps of a guessed length.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from pathlib import Path

import nats
import numpy as np
import pyarrow as pa
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from nats.js.api import DeliverPolicy
from ordersight.v1 import risk_pb2 as pb

from engine.codec.arrow_orders import decode_table
from engine.decision.cascade import Engine
from engine.decision.score_file import replay_history
from engine.features.velocity import VelocityState
from engine.models.artifacts import ModelSet
from tests.conftest import CAPACITY
from tests.grpc_harness import (
    TIMEOUT_S,
    RunningServer,
    arrow_ipc,
    assert_same_decisions,
    order_columns,
    orders_of,
    unknown_labels,
)
from tests.services import nats_process, nats_server


def _wait_for(srv: RunningServer, orders: int) -> None:
    """Until `srv` has applied `orders` orders from the other replicas (bounded)."""
    assert srv.server is not None
    end = time.monotonic() + TIMEOUT_S
    while srv.server.plane.replicated_orders < orders:
        assert time.monotonic() < end, (
            f"replica applied {srv.server.plane.replicated_orders} of {orders} orders"
        )
        time.sleep(0.005)


def _state(srv: RunningServer) -> np.ndarray:
    assert srv.server is not None
    return srv.server.engine.state.words


def test_replicas_fed_alternately_decide_as_one_engine_fed_everything(
    start_server: Callable[..., RunningServer],
    history: pa.Table,
    models: ModelSet,
    tmp_path: Path,
) -> None:
    """Orders sent alternately to two replicas, each once the other has it: every decision
    is the one a single engine fed all the orders makes, and both states end bit-equal; a
    third replica started afterwards catches up from the stream to the same state."""
    rows = history.slice(12_000, 240)
    decoded = decode_table(rows)
    offline = replay_history(
        Engine(models, VelocityState(CAPACITY)), decoded.ids, decoded.arrays,
        *unknown_labels(rows.num_rows),
    )  # fmt: skip
    with nats_server(tmp_path / "nats") as url:
        a = start_server(replication_url=url, replica_id="a")
        b = start_server(replication_url=url, replica_id="b", single_process=True)
        got: list[pb.Decision] = []
        sent = {"a": 0, "b": 0}
        for i, order in enumerate(orders_of(rows)):
            here, there, name = (a, b, "a") if i % 2 == 0 else (b, a, "b")
            got.append(here.stub.Score(order, timeout=TIMEOUT_S))
            sent[name] += 1
            _wait_for(there, sent[name])
        assert_same_decisions(got, offline, tol=1e-9)
        np.testing.assert_array_equal(_state(a), _state(b))

        # A ScoreBatch (Arrow in) at one replica reaches the other as well.
        more = history.slice(12_240, 300)
        a.stub.ScoreBatch(pb.ScoreBatchRequest(arrow_ipc=arrow_ipc(order_columns(more))))
        _wait_for(b, sent["a"] + more.num_rows)
        np.testing.assert_array_equal(_state(a), _state(b))

        # Outcomes too, with the time each became known as the origin applied it.
        outcome = pb.Outcome(order=orders_of(rows.slice(0, 1))[0], is_fraud=True)
        outcome.known_at.FromSeconds(int(rows.column("created_at")[0].value // 10**6) + 3600)
        b.stub.ReportOutcomes(pb.ReportOutcomesRequest(outcomes=[outcome]))
        end = time.monotonic() + TIMEOUT_S
        while not np.array_equal(_state(a), _state(b)):
            assert time.monotonic() < end, "the outcome did not reach the other replica"
            time.sleep(0.005)

        late = start_server(replication_url=url, replica_id="c")  # caught up once it serves
        np.testing.assert_array_equal(_state(late), _state(a))
        assert late.server is not None
        applied = late.server.hub.registry.get_sample_value(
            "ordersight_replication_applied_total", {"kind": "outcomes"}
        )
        assert applied == 1
        # A replica restarted under its old name takes its own earlier orders from the stream.
        a.stop()
        again = start_server(replication_url=url, replica_id="a")
        np.testing.assert_array_equal(_state(again), _state(b))
        for srv in (again, b, late):  # while the stream is still there
            srv.stop()


def test_decisions_go_to_the_stream_for_downstream_consumers(
    start_server: Callable[..., RunningServer], history: pa.Table, tmp_path: Path
) -> None:
    """With replication_decisions, every decision (Score and ScoreBatch alike) is published
    as a ScoreBatchResponse; a consumer of the stream reads them all, in order."""
    orders = orders_of(history.slice(12_000, 20))
    with nats_server(tmp_path / "nats") as url:
        srv = start_server(replication_url=url, replica_id="a", replication_decisions=True)
        want = [srv.stub.Score(o, timeout=TIMEOUT_S) for o in orders[:10]]
        batch = srv.stub.ScoreBatch(pb.ScoreBatchRequest(orders=pb.OrderList(orders=orders[10:])))
        want += list(batch.decisions)

        async def read() -> list[pb.Decision]:
            nc = await nats.connect(url)
            got: list[pb.Decision] = []
            sub = await nc.jetstream().subscribe(
                "ORDERSIGHT.decisions.>", deliver_policy=DeliverPolicy.ALL, ordered_consumer=True
            )
            while len(got) < len(want):
                msg = await sub.next_msg(timeout=TIMEOUT_S)
                got += pb.ScoreBatchResponse.FromString(msg.data).decisions
            await nc.close()
            return got

        got = asyncio.run(read())
        srv.stop()
    assert [d.order_id for d in got] == [d.order_id for d in want]
    assert [(d.action, d.score, d.path) for d in got] == [(d.action, d.score, d.path) for d in want]


@pytest.mark.parametrize(
    "bound", [{"replication_queue_max": 5}, {"replication_queue_max_bytes": 1500}]
)
def test_while_the_stream_is_unreachable_calls_are_answered_and_the_queue_is_bounded(
    start_server: Callable[..., RunningServer],
    history: pa.Table,
    tmp_path: Path,
    bound: dict[str, int],
) -> None:
    """The NATS server dies: Score goes on answering; what waits to be published stays
    within `replication_queue_max` messages and `replication_queue_max_bytes`, and what
    does not fit is dropped and counted."""
    orders = orders_of(history.slice(14_000, 31))
    with nats_process(tmp_path / "nats") as (url, nats_proc):
        srv = start_server(replication_url=url, replica_id="a", **bound)
        assert srv.server is not None
        metrics = srv.server.hub.registry

        def sample(name: str, **labels: str) -> float:
            return metrics.get_sample_value(name, labels) or 0.0

        srv.stub.Score(orders[0], timeout=TIMEOUT_S)
        end = time.monotonic() + TIMEOUT_S
        while sample("ordersight_replication_published_total", kind="orders") < 1:
            assert time.monotonic() < end, "the first order was never published"
            time.sleep(0.01)
        nats_proc.kill()
        nats_proc.wait()
        got = [srv.stub.Score(o, timeout=TIMEOUT_S) for o in orders[1:]]
        assert [d.order_id for d in got] == [o.order_id for o in orders[1:]]
        health = health_pb2_grpc.HealthStub(srv.channel)

        def status(service: str) -> int:
            req = health_pb2.HealthCheckRequest(service=service)
            return health.Check(req, timeout=TIMEOUT_S).status

        end = time.monotonic() + TIMEOUT_S
        while status("ordersight.replication") != health_pb2.HealthCheckResponse.NOT_SERVING:
            assert time.monotonic() < end, "health never said the stream is down"
            time.sleep(0.05)
        assert status("") == health_pb2.HealthCheckResponse.SERVING  # decisions go on
        queued = sample("ordersight_replication_queued")
        queued_bytes = sample("ordersight_replication_queued_bytes")
        dropped = sample("ordersight_replication_dropped_total")
        end = time.monotonic() + TIMEOUT_S
        while sample("ordersight_replication_publish_failures_total") < 1:  # still retrying
            assert time.monotonic() < end, "the sender is not retrying the message it holds"
            time.sleep(0.02)
        srv.stop()
    # Each call was its own micro-batch, one message: one is being retried, the rest wait
    # up to the bound or were dropped.
    sent = len(orders) - 1
    assert queued + dropped in (sent - 1, sent) and dropped > 0
    if "replication_queue_max" in bound:
        assert queued == 5
    else:
        assert 0 < queued_bytes <= bound["replication_queue_max_bytes"] and queued < 10
