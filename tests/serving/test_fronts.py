"""The engine behind several gRPC front processes (`workers`): one velocity state, one order
of updates, whichever front takes a call; a front that dies is replaced.

Real front processes on 127.0.0.1 (started by the engine, which runs in this process), real
clients on separate connections; nothing is mocked.
"""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import time
import urllib.request
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import grpc
import pyarrow as pa
import pytest
from ordersight.v1 import risk_pb2 as pb
from ordersight.v1 import risk_pb2_grpc as pb_grpc

from engine.codec.arrow_orders import decode_table
from engine.config import load_settings
from engine.decision.cascade import Engine
from engine.decision.score_file import replay_history
from engine.features.velocity import VelocityState
from engine.models.artifacts import ModelSet
from engine.serving.server import Server
from tests.conftest import CAPACITY
from tests.fuzzing import ChildServer
from tests.grpc_harness import (
    TIMEOUT_S,
    RunningServer,
    assert_same_decisions,
    featurize_held,
    orders_of,
    simple_order,
    unknown_labels,
)
from tests.services import free_port

CONNECTIONS = 16  # SO_REUSEPORT spreads connections, not calls: 16 miss a front w.p. 2^-15


def _stubs(srv: RunningServer, n: int) -> tuple[list[grpc.Channel], list[pb_grpc.OrderRiskStub]]:
    """n clients, each on its own TCP connection (no shared subchannel)."""
    channels = [
        grpc.insecure_channel(f"127.0.0.1:{srv.port}", [("grpc.use_local_subchannel_pool", 1)])
        for _ in range(n)
    ]
    return channels, [pb_grpc.OrderRiskStub(c) for c in channels]


def _front_calls(srv: RunningServer) -> list[int]:
    assert srv.server is not None and srv.server.link is not None
    return sorted(c.calls for c in srv.server.link.connections)


def test_orders_through_every_front_score_as_one_process(
    start_server: Callable[..., RunningServer], history: pa.Table, models: ModelSet
) -> None:
    """Orders sent one after another over 16 connections, which the kernel spreads over
    both fronts: the same decisions, features and order of updates as one engine fed them
    all offline."""
    rows = history.slice(12_000, 480)
    decoded = decode_table(rows)
    offline = replay_history(
        Engine(models, VelocityState(CAPACITY)), decoded.ids, decoded.arrays,
        *unknown_labels(rows.num_rows),
    )  # fmt: skip
    srv = start_server(workers=2)
    channels, stubs = _stubs(srv, CONNECTIONS)
    try:
        got = [
            stubs[i % CONNECTIONS].Score(o, timeout=TIMEOUT_S)
            for i, o in enumerate(orders_of(rows))
        ]
    finally:
        for c in channels:
            c.close()
    assert_same_decisions(got, offline, tol=1e-9)
    calls = _front_calls(srv)
    assert len(calls) == 2 and min(calls) > 0 and sum(calls) == rows.num_rows


def test_concurrent_calls_from_many_connections_each_get_their_own_decision(
    start_server: Callable[..., RunningServer], history: pa.Table
) -> None:
    srv = start_server(workers=2)
    orders = orders_of(history.slice(0, 256))
    channels, stubs = _stubs(srv, CONNECTIONS)
    try:
        with ThreadPoolExecutor(max_workers=32) as pool:
            got = list(
                pool.map(
                    lambda io: stubs[io[0] % CONNECTIONS].Score(io[1], timeout=TIMEOUT_S),
                    enumerate(orders),
                )
            )
    finally:
        for c in channels:
            c.close()
    assert [d.order_id for d in got] == [o.order_id for o in orders]
    assert srv.server is not None and srv.server.plane.batcher.items == len(orders)


def test_a_front_that_dies_is_replaced(start_server: Callable[..., RunningServer]) -> None:
    srv = start_server(workers=2)
    assert srv.server is not None
    assert srv.server.fronts is not None
    victim = srv.server.fronts.procs[0]
    os.kill(victim.pid, signal.SIGKILL)
    end = time.monotonic() + TIMEOUT_S
    while True:  # bounded: the engine notices the exit and starts another front
        alive = [p for p in srv.server.fronts.procs if p.returncode is None and p.pid != victim.pid]
        if len(alive) == 2 and len(srv.server.link.connections) == 2:  # type: ignore[union-attr]
            break
        assert time.monotonic() < end, "no front replaced the one that died"
        time.sleep(0.05)
    assert srv.server.hub.registry.get_sample_value("ordersight_front_restarts_total") == 1
    channels, stubs = _stubs(srv, CONNECTIONS)
    try:
        for i, stub in enumerate(stubs):
            assert stub.Score(simple_order(f"o-{i}"), timeout=TIMEOUT_S).order_id == f"o-{i}"
    finally:
        for c in channels:
            c.close()


def test_a_port_another_server_listens_on_is_refused(models_dir: Path) -> None:
    """SO_REUSEPORT would let the fronts join another server's port: start-up refuses it."""
    with socket.socket() as other:
        other.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        other.bind(("127.0.0.1", 0))
        other.listen()
        port = other.getsockname()[1]
        settings = load_settings(
            env={}, models=str(models_dir), port=port, workers=2, state_capacity=CAPACITY
        )
        with pytest.raises(OSError, match="another server is listening"):
            asyncio.run(Server(settings).start())


def test_metrics_count_the_calls_of_every_front(
    start_server: Callable[..., RunningServer],
) -> None:
    """The engine serves the metrics: calls through both fronts are all counted."""
    srv = start_server(workers=2, metrics_port=free_port())
    channels, stubs = _stubs(srv, CONNECTIONS)
    try:
        for i, stub in enumerate(stubs):
            stub.Score(simple_order(f"o-{i}"), timeout=TIMEOUT_S)
    finally:
        for c in channels:
            c.close()
    assert min(_front_calls(srv)) > 0
    text = (
        urllib.request.urlopen(
            f"http://127.0.0.1:{srv.settings.metrics_port}/metrics", timeout=TIMEOUT_S
        )
        .read()
        .decode()
    )

    def total(name: str) -> float:
        return sum(
            float(line.rsplit(" ", 1)[1]) for line in text.splitlines() if line.startswith(name)
        )

    assert total("ordersight_decisions_total") == CONNECTIONS
    assert total("ordersight_front_calls_total") == CONNECTIONS  # each front's own series
    assert text.count("ordersight_front_calls_total{") == 2
    # the processes themselves: the engine's RSS and CPU, and each front's
    assert total("process_resident_memory_bytes") > 10 << 20
    assert total("process_cpu_seconds_total") > 0
    assert text.count("ordersight_front_resident_memory_bytes{") == 2
    assert total("ordersight_front_resident_memory_bytes") > 2 * (10 << 20)
    assert total("ordersight_front_cpu_seconds_total") > 0
    assert total("ordersight_fronts ") == 2


def test_score_calls_wait_in_order_behind_a_score_batch(
    start_server: Callable[..., RunningServer], history: pa.Table
) -> None:
    """While a ScoreBatch holds the engine's thread, Score calls from the fronts queue in the
    batcher (the state keeps one writer) and are answered once it is done."""
    srv = start_server(workers=2)
    assert srv.server is not None
    batch = orders_of(history.slice(0, 50))
    with featurize_held(srv) as entered:
        big = srv.stub.ScoreBatch.future(pb.ScoreBatchRequest(orders=pb.OrderList(orders=batch)))
        assert entered.wait(TIMEOUT_S)
        waiting = [srv.stub.Score.future(simple_order(f"o-{i}")) for i in range(3)]
        end = time.monotonic() + TIMEOUT_S
        # In the batcher (the first batch waiting for the engine's thread, the rest behind
        # it), none scored beside the ScoreBatch.
        batcher = srv.server.plane.batcher
        while batcher.items + batcher.waiting < len(waiting):
            assert time.monotonic() < end, "the Score calls did not reach the batcher"
            time.sleep(0.005)
        assert not any(f.done() for f in waiting)
    assert len(big.result(timeout=TIMEOUT_S).decisions) == len(batch)
    assert [f.result(timeout=TIMEOUT_S).order_id for f in waiting] == ["o-0", "o-1", "o-2"]


def _fronts_of(engine_pid: int) -> list[int]:
    """Pids of the front processes the engine `engine_pid` started."""
    out = []
    for p in Path("/proc").iterdir():
        if p.name.isdigit():
            try:
                stat = (p / "stat").read_text().rsplit(")", 1)[1].split()
                cmd = (p / "cmdline").read_bytes()
            except OSError:
                continue
            if int(stat[1]) == engine_pid and b"engine.serving.front" in cmd:
                out.append(int(p.name))
    return out


def _gone(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return True
    return state == "Z"  # exited, not yet reaped by its (dead) parent's reaper


def test_fronts_exit_and_free_the_port_when_the_engine_is_killed(models_dir: Path) -> None:
    """kill -9 of the engine process: its fronts see the link drop, fail what they hold with
    UNAVAILABLE and exit, so no process keeps the port half-served."""
    child = ChildServer(models_dir).start()  # the CLI's default: a front per core
    try:
        assert child.proc is not None
        status, _, answer = child.call("order", simple_order("before").SerializeToString())
        assert status == grpc.StatusCode.OK and answer
        fronts = _fronts_of(child.proc.pid)
        assert len(fronts) == os.cpu_count()
        child.proc.send_signal(signal.SIGKILL)
        child.proc.wait()
        end = time.monotonic() + TIMEOUT_S
        while not all(_gone(p) for p in fronts):
            assert time.monotonic() < end, "a front outlived its engine"
            time.sleep(0.05)
        status, _, _ = child.call("order", simple_order("after").SerializeToString())
        assert status == grpc.StatusCode.UNAVAILABLE
        with socket.socket() as s:  # nobody listens there any more (closed connections may)
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            s.bind(("127.0.0.1", child.port))
    finally:
        child.stop()
