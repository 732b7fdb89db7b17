"""`ordersight.v1.Routing` over a real server, a real store (SQLite, and PostgreSQL: the
`store` fixture runs a test on both) and a real routing text model."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import grpc
import pyarrow as pa
import pytest
from ordersight.v1 import risk_pb2 as pb
from ordersight.v1 import risk_pb2_grpc as pb_grpc

from engine.store import open_store
from tests.grpc_harness import TIMEOUT_S, RunningServer, orders_of, rpc_error

MONDAY_ALL_DAY = pb.AgentShift(start_minute=0, end_minute=1440, days="1111111")
RAID = (
    "Custom configuration for order SO-123456",
    "we need the servers configured with RAID 6 before they ship, with 512 GB each",
)


def _stub(srv: RunningServer) -> pb_grpc.RoutingStub:
    return pb_grpc.RoutingStub(srv.channel)


def _agent(agent_id: str, skills: dict[str, int], langs=("en", "de"), capacity=2, **kw):
    return pb.RoutingAgent(
        agent_id=agent_id, name=agent_id.title(), team="complex-orders",
        skills=[pb.AgentSkill(skill=s, level=v) for s, v in skills.items()],
        languages=list(langs), capacity=capacity, shift=MONDAY_ALL_DAY, **kw,
    )  # fmt: skip


def _case(case_id: str, **kw) -> pb.RouteRequest:
    return pb.RouteRequest(case=pb.RoutingCase(case_id=case_id, **kw))


def _raid(case_id: str, **kw) -> pb.RouteRequest:
    return _case(
        case_id, subject=RAID[0], body=RAID[1], language="en", amount=48_000.0,
        currency="EUR", payment_terms="net90", customer_tier="key", customer_orders=7,
        lines=[pb.RoutingLine(sku="SRV-2211-R", category="server", quantity=4,
                              built_to_order=True)],
        **kw,
    )  # fmt: skip


@pytest.fixture
def routed(store: str, routing_models: Path, start_server: Callable[..., RunningServer]):
    srv = start_server(single_process=True, store=store, routing_models=str(routing_models))
    return srv, _stub(srv)


def test_a_complex_order_goes_to_a_skilled_agent_with_reasons(routed) -> None:
    srv, stub = routed
    stub.UpsertAgent(_agent("hw", {"hardware_config": 4, "installation": 2}), timeout=TIMEOUT_S)
    stub.UpsertAgent(_agent("pay", {"payment_terms": 5}), timeout=TIMEOUT_S)
    got = stub.Route(_raid("c-1"), timeout=TIMEOUT_S)
    assert (got.agent_id, got.category, got.status, got.routes) == (
        "hw", "hardware_config", "assigned", 1,
    )  # fmt: skip
    assert 0.0 < got.confidence <= 1.0 and got.predicted_handle_s > 0
    assert got.sla_s > 0 and 0.0 <= got.p_sla_breach <= 1.0
    assert any("level 4" in r for r in got.reasons), got.reasons
    assert (
        got.reasons[0].startswith("text model ")
        and "hardware_config at confidence" in got.reasons[0]
    )
    again = stub.Route(_raid("c-1"), timeout=TIMEOUT_S)  # a retry assigns nothing twice
    assert again == got
    agents = {
        a.agent_id: a for a in stub.ListAgents(pb.ListAgentsRequest(), timeout=TIMEOUT_S).agents
    }
    assert agents["hw"].load == 1 and agents["pay"].load == 0
    assert stub.GetRoutedCase(pb.GetRoutedCaseRequest(case_id="c-1"), timeout=TIMEOUT_S) == got


def test_language_capacity_queue_and_backlog(routed) -> None:
    _, stub = routed
    stub.UpsertAgent(
        _agent("en-only", {"payment_terms": 5}, langs=("en",), capacity=1), timeout=TIMEOUT_S
    )
    stub.UpsertAgent(_agent("bilingual", {"payment_terms": 2}, capacity=1), timeout=TIMEOUT_S)
    de = stub.Route(_case("de-1", category="payment_terms", language="de"), timeout=TIMEOUT_S)
    assert de.agent_id == "bilingual"  # the expert speaks no German
    # Capacity 1 plus a queue of 1 each: three more fit, then the cases wait in the queue.
    got = [stub.Route(_case(f"en-{i}", category="payment_terms", language="en"), timeout=TIMEOUT_S)
           for i in range(5)]  # fmt: skip
    assert [g.status for g in got].count("assigned") == 3
    queued = [g for g in got if g.status == "queued"]
    assert len(queued) == 2 and all(g.queue == "payment_terms" and not g.agent_id for g in queued)
    assert queued[0].reasons[0] == "category payment_terms given by the caller"
    assert "at capacity" in queued[0].reasons[1]
    listed = stub.ListAgents(pb.ListAgentsRequest(), timeout=TIMEOUT_S)
    assert dict(listed.queued) == {"payment_terms": 2}
    early = pb.CompleteCaseRequest(case_id=queued[0].case_id, handle_s=60, quality=1)
    err = rpc_error(lambda: stub.CompleteCase(early, timeout=TIMEOUT_S))
    assert err.code() == grpc.StatusCode.FAILED_PRECONDITION
    for g in [de, *got]:
        if g.status == "assigned":
            stub.CompleteCase(pb.CompleteCaseRequest(case_id=g.case_id, handle_s=600, quality=1),
                              timeout=TIMEOUT_S)  # fmt: skip
    batch = stub.AssignBatch(pb.AssignBatchRequest(), timeout=TIMEOUT_S)
    assert {a.case_id for a in batch.assigned} == {g.case_id for g in queued}
    assert batch.still_queued == 0 and all(a.routes == 1 for a in batch.assigned)
    assert any("backlog" in r for r in batch.assigned[0].reasons)


def test_history_moves_the_choice_and_rework_routes_again(routed) -> None:
    _, stub = routed
    for name in ("slow", "fast"):
        stub.UpsertAgent(_agent(name, {"installation": 3}, capacity=50), timeout=TIMEOUT_S)
    first = stub.Route(_case("i-0", category="installation"), timeout=TIMEOUT_S)
    other = {"slow": "fast", "fast": "slow"}[first.agent_id]
    # Teach the router: the agent it chose first is slow, the other fast.
    for i in range(1, 25):
        stub.SetAgentState(
            pb.SetAgentStateRequest(agent_id=other, state=pb.AWAY), timeout=TIMEOUT_S
        )
        a = stub.Route(_case(f"i-{i}", category="installation"), timeout=TIMEOUT_S)
        assert a.agent_id == first.agent_id
        stub.CompleteCase(
            pb.CompleteCaseRequest(case_id=a.case_id, handle_s=7200, quality=0.8), timeout=TIMEOUT_S
        )
        stub.SetAgentState(
            pb.SetAgentStateRequest(agent_id=other, state=pb.AVAILABLE), timeout=TIMEOUT_S
        )
        stub.SetAgentState(
            pb.SetAgentStateRequest(agent_id=first.agent_id, state=pb.AWAY), timeout=TIMEOUT_S
        )
        b = stub.Route(_case(f"j-{i}", category="installation"), timeout=TIMEOUT_S)
        assert b.agent_id == other
        stub.CompleteCase(
            pb.CompleteCaseRequest(case_id=b.case_id, handle_s=900, quality=1.0), timeout=TIMEOUT_S
        )
        stub.SetAgentState(
            pb.SetAgentStateRequest(agent_id=first.agent_id, state=pb.AVAILABLE), timeout=TIMEOUT_S
        )
    chosen = stub.Route(_case("k", category="installation"), timeout=TIMEOUT_S)
    assert chosen.agent_id == other
    agents = {
        a.agent_id: a for a in stub.ListAgents(pb.ListAgentsRequest(), timeout=TIMEOUT_S).agents
    }
    perf = {p.category: p for p in agents[other].performance}
    assert perf["installation"].cases == 24 and perf[
        "installation"
    ].median_handle_s == pytest.approx(900)
    # A case sent back is routed again, and counted as a second routing.
    back = stub.CompleteCase(
        pb.CompleteCaseRequest(case_id="k", handle_s=120, quality=0, rework=True), timeout=TIMEOUT_S
    )
    assert back.completed.agent_id == other and back.next.routes == 2
    assert back.next.status == "assigned"
    done = stub.CompleteCase(
        pb.CompleteCaseRequest(case_id="k", handle_s=800, quality=1), timeout=TIMEOUT_S
    )
    assert done.completed.status == "completed"
    err = rpc_error(
        lambda: stub.CompleteCase(
            pb.CompleteCaseRequest(case_id="k", handle_s=800, quality=1), timeout=TIMEOUT_S
        )
    )
    assert err.code() == grpc.StatusCode.ALREADY_EXISTS


def test_a_review_case_of_the_risk_engine_is_routed_as_fraud_review(
    store: str, history: pa.Table, routing_models: Path, start_server: Callable[..., RunningServer]
) -> None:
    srv = start_server(single_process=True, store=store, routing_models=str(routing_models))
    decisions = srv.stub.ScoreBatch(
        pb.ScoreBatchRequest(orders=pb.OrderList(orders=orders_of(history.slice(2_000, 1_500)))),
        timeout=TIMEOUT_S,
    ).decisions
    srv.server.reviews.flush()
    reviewed = [d for d in decisions if d.action == pb.REVIEW]
    assert reviewed
    stub = _stub(srv)
    stub.UpsertAgent(_agent("analyst", {"fraud_review": 4}), timeout=TIMEOUT_S)
    stub.UpsertAgent(_agent("hw", {"hardware_config": 5}), timeout=TIMEOUT_S)
    got = stub.Route(_case("r-1", review_order_id=reviewed[0].order_id), timeout=TIMEOUT_S)
    assert (got.agent_id, got.category, got.priority in ("high", "urgent")) == (
        "analyst",
        "fraud_review",
        True,
    )
    assert got.reasons[0].startswith(f"risk engine REVIEW of order {reviewed[0].order_id}: ")
    db = open_store(store, migrate=False)
    sql = "SELECT source, order_id FROM routing_cases WHERE case_id = 'r-1'"
    row = db.conn.execute(sql).fetchone()
    db.close()
    assert tuple(row) == ("review", reviewed[0].order_id)
    err = rpc_error(
        lambda: stub.Route(_case("r-2", review_order_id="no-such-order"), timeout=TIMEOUT_S)
    )
    assert err.code() == grpc.StatusCode.NOT_FOUND and "case.review_order_id" in err.details()


@pytest.mark.parametrize(
    "request_, field",
    [
        (_case(""), "case.case_id"),
        (_case("x"), "case"),
        (_case("x", category="a b"), "case.category"),
        (_case("x", category="payment_terms", priority="asap"), "case.priority"),
        (_case("x", category="payment_terms", language="English"), "case.language"),
        (_case("x", category="payment_terms", amount=float("nan")), "case.amount"),
        (_case("x", category="payment_terms", currency="euro"), "case.currency"),
        (_case("x", category="payment_terms", customer_tier="gold"), "case.customer_tier"),
        (_case("x", subject="s" * 1001), "case.subject"),
        (_case("x", review_order_id="o", category="payment_terms"), "case.category"),
    ],
)
def test_route_refuses_bad_fields_naming_them(routed, request_, field) -> None:
    _, stub = routed
    err = rpc_error(lambda: stub.Route(request_, timeout=TIMEOUT_S))
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert err.details().startswith(field + ":"), err.details()


@pytest.mark.parametrize(
    "agent, field",
    [
        (_agent("", {"a": 1}), "agent_id"),
        (pb.RoutingAgent(agent_id="a", capacity=1), "skills"),
        (_agent("a", {"a": 6}), "skills[0].level"),
        (_agent("a", {"a": 1}, capacity=0), "capacity"),
        (_agent("a", {"a": 1}, langs=("EN",)), "languages[0]"),
        (
            pb.RoutingAgent(
                agent_id="a",
                capacity=1,
                skills=[pb.AgentSkill(skill="a", level=1)],
                shift=pb.AgentShift(start_minute=1500, end_minute=10),
            ),
            "shift",
        ),  # fmt: skip
        (
            pb.RoutingAgent(
                agent_id="a",
                capacity=1,
                skills=[pb.AgentSkill(skill="a", level=1)],
                shift=pb.AgentShift(end_minute=600, days="weekdays"),
            ),
            "shift.days",
        ),  # fmt: skip
    ],
)
def test_upsert_refuses_bad_agents_naming_the_field(routed, agent, field) -> None:
    _, stub = routed
    err = rpc_error(lambda: stub.UpsertAgent(agent, timeout=TIMEOUT_S))
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert err.details().startswith(field + ":"), err.details()


def test_unknowns_and_bad_completions(routed) -> None:
    _, stub = routed
    err = rpc_error(
        lambda: stub.SetAgentState(
            pb.SetAgentStateRequest(agent_id="ghost", state=pb.AWAY), timeout=TIMEOUT_S
        )
    )
    assert err.code() == grpc.StatusCode.NOT_FOUND
    err = rpc_error(
        lambda: stub.GetRoutedCase(pb.GetRoutedCaseRequest(case_id="ghost"), timeout=TIMEOUT_S)
    )
    assert err.code() == grpc.StatusCode.NOT_FOUND
    for req, field in (
        (pb.CompleteCaseRequest(case_id="x", handle_s=-1, quality=1), "handle_s"),
        (pb.CompleteCaseRequest(case_id="x", handle_s=60, quality=2), "quality"),
        (pb.CompleteCaseRequest(handle_s=60, quality=1), "case_id"),
    ):
        err = rpc_error(lambda req=req: stub.CompleteCase(req, timeout=TIMEOUT_S))
        assert err.code() == grpc.StatusCode.INVALID_ARGUMENT and err.details().startswith(field)


def test_routing_survives_a_restart(store: str, routing_models: Path, start_server) -> None:
    srv = start_server(single_process=True, store=store, routing_models=str(routing_models))
    stub = _stub(srv)
    stub.UpsertAgent(_agent("a", {"returns_rma": 3}, capacity=1), timeout=TIMEOUT_S)
    stub.UpsertAgent(_agent("b", {"returns_rma": 3}, capacity=1), timeout=TIMEOUT_S)
    for i in range(6):
        r = stub.Route(_case(f"h-{i}", category="returns_rma"), timeout=TIMEOUT_S)
        handle = 300 + 600 * (r.agent_id == "b")
        stub.CompleteCase(
            pb.CompleteCaseRequest(case_id=r.case_id, handle_s=handle, quality=1), timeout=TIMEOUT_S
        )
    open_ = [
        stub.Route(_case(f"o-{i}", category="returns_rma"), timeout=TIMEOUT_S) for i in range(5)
    ]
    before = stub.ListAgents(pb.ListAgentsRequest(), timeout=TIMEOUT_S)
    srv.stop()
    again = start_server(single_process=True, store=store, routing_models=str(routing_models))
    stub = _stub(again)
    assert stub.ListAgents(pb.ListAgentsRequest(), timeout=TIMEOUT_S) == before
    for r in open_:
        assert (
            stub.GetRoutedCase(pb.GetRoutedCaseRequest(case_id=r.case_id), timeout=TIMEOUT_S).status
            == r.status
        )


def test_without_a_store_routing_is_failed_precondition(start_server) -> None:
    srv = start_server(single_process=True)
    err = rpc_error(lambda: _stub(srv).Route(_case("x", category="a"), timeout=TIMEOUT_S))
    assert err.code() == grpc.StatusCode.FAILED_PRECONDITION and "store" in err.details()


def test_without_a_text_model_a_text_case_is_failed_precondition(store: str, start_server) -> None:
    srv = start_server(single_process=True, store=store)
    err = rpc_error(lambda: _stub(srv).Route(_raid("x"), timeout=TIMEOUT_S))
    assert err.code() == grpc.StatusCode.FAILED_PRECONDITION and "routing_models" in err.details()


def test_routing_through_the_front_processes(
    store: str, routing_models: Path, start_server
) -> None:
    srv = start_server(store=store, routing_models=str(routing_models))  # two front processes
    stub = _stub(srv)
    stub.UpsertAgent(_agent("hw", {"hardware_config": 4}), timeout=TIMEOUT_S)
    got = [stub.Route(_raid(f"f-{i}"), timeout=TIMEOUT_S) for i in range(3)]
    assert [g.agent_id for g in got] == ["hw", "hw", "hw"]  # capacity 2 and a queue of 1
    assert stub.Route(_raid("f-3"), timeout=TIMEOUT_S).status == "queued"


def test_a_case_sent_back_goes_elsewhere_and_a_misread_one_to_its_real_category(routed) -> None:
    _, stub = routed
    stub.UpsertAgent(_agent("p1", {"payment_terms": 4}, capacity=5), timeout=TIMEOUT_S)
    stub.UpsertAgent(_agent("p2", {"payment_terms": 3}, capacity=5), timeout=TIMEOUT_S)
    stub.UpsertAgent(_agent("vol", {"volume_discount": 4}, capacity=5), timeout=TIMEOUT_S)
    first = stub.Route(_case("s-1", category="payment_terms"), timeout=TIMEOUT_S)
    back = stub.CompleteCase(
        pb.CompleteCaseRequest(case_id="s-1", handle_s=300, quality=0, rework=True),
        timeout=TIMEOUT_S,
    )
    assert {first.agent_id, back.next.agent_id} == {"p1", "p2"} and back.next.routes == 2
    misread = stub.CompleteCase(
        pb.CompleteCaseRequest(
            case_id="s-1", handle_s=120, quality=0, rework=True, category="volume_discount"
        ),
        timeout=TIMEOUT_S,
    )
    assert (misread.next.agent_id, misread.next.category, misread.next.routes) == (
        "vol", "volume_discount", 3,
    )  # fmt: skip
    assert misread.next.reasons[0].startswith(
        f"sent back by {back.next.agent_id} as volume_discount"
    )
    agents = {
        a.agent_id: a for a in stub.ListAgents(pb.ListAgentsRequest(), timeout=TIMEOUT_S).agents
    }
    charged = {a: [p.cases for p in agents[a].performance] for a in ("p1", "p2")}
    assert charged == {first.agent_id: [1], back.next.agent_id: []}  # a misreading is not charged
    bad = pb.CompleteCaseRequest(case_id="s-1", handle_s=60, quality=1, category="x")
    err = rpc_error(lambda: stub.CompleteCase(bad, timeout=TIMEOUT_S))
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT and err.details().startswith("category:")
