"""Routing under stress: kill -9 of a real server process loses no answered routing or
completion; Route while Score traffic runs; the bound on open cases."""

from __future__ import annotations

import threading
from collections.abc import Callable
from pathlib import Path

import grpc
import pyarrow as pa
from ordersight.v1 import risk_pb2 as pb
from ordersight.v1 import risk_pb2_grpc as pb_grpc

from engine.store import open_store
from tests.fuzzing import ChildServer
from tests.grpc_harness import TIMEOUT_S, RunningServer, orders_of, rpc_error


def _agent(agent_id: str, capacity: int = 3) -> pb.RoutingAgent:
    return pb.RoutingAgent(
        agent_id=agent_id, capacity=capacity,
        skills=[pb.AgentSkill(skill="installation", level=3)],
    )  # fmt: skip


def _route(case_id: str) -> pb.RouteRequest:
    return pb.RouteRequest(case=pb.RoutingCase(case_id=case_id, category="installation"))


def test_kill_9_loses_no_answered_routing(models_dir: Path, tmp_path: Path) -> None:
    settings = {"store": tmp_path / "store.db", "single_process": "true"}
    child = ChildServer(models_dir, **settings).start()
    stub = pb_grpc.RoutingStub(child.channel)
    for name in ("a", "b", "c"):
        stub.UpsertAgent(_agent(name), timeout=TIMEOUT_S)
    answered: dict[str, pb.RouteDecision] = {}
    completed: set[str] = set()
    done = threading.Event()

    def load(prefix: str) -> None:  # routes and completes until the process dies
        i = 0
        while not done.is_set():
            try:
                got = stub.Route(_route(f"{prefix}-{i}"), timeout=TIMEOUT_S)
                answered[got.case_id] = got
                if got.status == "assigned" and i % 2:
                    stub.CompleteCase(
                        pb.CompleteCaseRequest(case_id=got.case_id, handle_s=600, quality=1),
                        timeout=TIMEOUT_S,
                    )
                    completed.add(got.case_id)
            except (grpc.RpcError, ValueError):  # the process died; ValueError: channel closed
                return
            i += 1

    threads = [threading.Thread(target=load, args=(p,)) for p in "xyz"]
    for t in threads:
        t.start()
    while len(answered) < 60:
        threading.Event().wait(0.01)
    child.kill()
    done.set()
    for t in threads:
        t.join(TIMEOUT_S)
    restarted = ChildServer(models_dir, **settings).start()
    try:
        stub = pb_grpc.RoutingStub(restarted.channel)
        for case_id, before in answered.items():
            got = stub.GetRoutedCase(pb.GetRoutedCaseRequest(case_id=case_id), timeout=TIMEOUT_S)
            assert got.agent_id == before.agent_id, case_id
            if case_id in completed:
                assert got.status == "completed", case_id
            else:  # a completion committed as the process died may have gone unanswered
                assert got.status in (before.status, "completed"), case_id
        agents = stub.ListAgents(pb.ListAgentsRequest(), timeout=TIMEOUT_S).agents
        store = open_store(str(tmp_path / "store.db"), migrate=False)
        try:
            rows = store.conn.execute(
                "SELECT agent_id, COUNT(*) FROM routing_cases WHERE status = 'assigned' "
                "GROUP BY agent_id"
            ).fetchall()
        finally:
            store.close()
        held = dict(rows)
        assert {a.agent_id: a.load for a in agents} == {n: held.get(n, 0) for n in "abc"}
        learnt = sum(p.cases for a in agents for p in a.performance)
        assert learnt >= len(completed)  # a completion answered is learnt
    finally:
        restarted.stop()


def test_route_while_score_traffic_runs(
    store: str, history: pa.Table, start_server: Callable[..., RunningServer]
) -> None:
    srv = start_server(store=store)  # front processes: Routing and Score share them
    routing = pb_grpc.RoutingStub(srv.channel)
    for name in ("a", "b"):
        routing.UpsertAgent(_agent(name, capacity=100), timeout=TIMEOUT_S)
    orders = orders_of(history.slice(0, 600))
    scored: list[int] = []

    def score() -> None:
        for i in range(0, len(orders), 20):
            req = pb.ScoreBatchRequest(orders=pb.OrderList(orders=orders[i : i + 20]))
            scored.append(len(srv.stub.ScoreBatch(req, timeout=TIMEOUT_S).decisions))

    scorer = threading.Thread(target=score)
    scorer.start()
    got = [routing.Route(_route(f"c-{i}"), timeout=TIMEOUT_S) for i in range(80)]
    scorer.join(TIMEOUT_S)
    assert sum(scored) == len(orders)
    assert all(g.status == "assigned" for g in got)
    loads = {a.agent_id: a.load for a in routing.ListAgents(pb.ListAgentsRequest()).agents}
    assert sum(loads.values()) == 80


def test_past_routing_open_max_route_is_resource_exhausted(
    tmp_path: Path, start_server: Callable[..., RunningServer]
) -> None:
    srv = start_server(single_process=True, store=str(tmp_path / "s.db"), routing_open_max=3)
    stub = pb_grpc.RoutingStub(srv.channel)
    for i in range(3):
        stub.Route(_route(f"c-{i}"), timeout=TIMEOUT_S)
    err = rpc_error(lambda: stub.Route(_route("c-3"), timeout=TIMEOUT_S))
    assert err.code() == grpc.StatusCode.RESOURCE_EXHAUSTED and "routing_open_max" in err.details()
    assert stub.Route(_route("c-0"), timeout=TIMEOUT_S).case_id == "c-0"  # a retry still answers
