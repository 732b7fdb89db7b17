"""The real gRPC server on 127.0.0.1, spoken to by a real client.

Each test starts its own `engine.serving.server.Server` (velocity state is per server) on an event
loop in a background thread, and talks to it with a synchronous grpc channel. Nothing is
mocked; nothing sleeps. A server that logs an unhandled exception on its loop, or whose
thread ends in an exception, fails the test that started it.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import grpc
import numpy as np
import pyarrow as pa
import pyarrow.ipc
import pyarrow.parquet as pq
import pytest
from google.protobuf.descriptor_pool import DescriptorPool
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha.proto_reflection_descriptor_database import (
    ProtoReflectionDescriptorDatabase,
)
from ordersight.v1 import risk_pb2 as pb

from engine.codec.arrow_orders import decode_table
from engine.codec.history import history_from_table
from engine.codec.order_messages import order_from_row
from engine.config import load_settings
from engine.decision.cascade import Engine
from engine.decision.policy import FALLBACK, SCREENED_OUT
from engine.decision.score_file import replay_history
from engine.errors import InvalidInput, ModelLoadError
from engine.features import matrix as features
from engine.features.velocity import VelocityState
from engine.models.artifacts import ModelSet
from engine.serving.batcher import Pending
from engine.serving.server import Server
from tests.conftest import CAPACITY
from tests.grpc_harness import (
    SERVICE,
    TIMEOUT_S,
    RunningServer,
    arrow_ipc,
    assert_same_decisions,
    order_columns,
    orders_of,
    rpc_error,
    simple_order,
    unknown_labels,
)

# --- scoring ---------------------------------------------------------------------------------


def test_score_one_order(server: RunningServer, history: pa.Table, models: ModelSet) -> None:
    d = server.stub.Score(order_from_row(history.slice(0, 1).to_pylist()[0]))
    assert d.order_id == history.column("order_id")[0].as_py()
    assert d.action in (pb.APPROVE, pb.REVIEW, pb.DECLINE)
    assert 0.0 <= d.score <= 1.0
    assert d.path in (pb.SCREENED_OUT, pb.MODEL, pb.FALLBACK)
    assert d.model_version == models.version
    assert d.latency_us > 0


def test_flagged_decisions_carry_reasons(server: RunningServer, history: pa.Table) -> None:
    # Orders of at least `high_value` (2000 major units; every simulated currency has two
    # decimals) are always reviewed (HIGH_VALUE), so some orders are surely flagged; the
    # fraud scenarios add model-flagged ones.
    high = np.flatnonzero(history.column("amount_minor").to_numpy() >= 200_000)[:5]
    fraud = np.flatnonzero(history.column("is_fraud").fill_null(0).to_numpy() == 1)[:40]
    rows = np.sort(np.concatenate([high, fraud]))
    decisions = [server.stub.Score(o) for o in orders_of(history.take(rows))]
    flagged = [d for d in decisions if d.action != pb.APPROVE]
    assert len(flagged) >= len(high)
    for d in flagged:
        assert d.reasons, f"{d.order_id}: {pb.Action.Name(d.action)} without a reason"
        assert all(r.code and r.message for r in d.reasons)
    high_ids = set(history.column("order_id").take(high).to_pylist())
    for d in decisions:
        if d.order_id in high_ids:
            assert d.action == pb.REVIEW and "HIGH_VALUE" in d.review_triggers


def test_health_serving(server: RunningServer) -> None:
    stub = health_pb2_grpc.HealthStub(server.channel)
    for service in ("", SERVICE):
        reply = stub.Check(health_pb2.HealthCheckRequest(service=service))
        assert reply.status == health_pb2.HealthCheckResponse.SERVING, service


def test_reflection_lists_the_services(server: RunningServer) -> None:
    db = ProtoReflectionDescriptorDatabase(server.channel)
    assert {SERVICE, "ordersight.v1.ModelAdmin"} <= set(db.get_services())
    methods = DescriptorPool(db).FindServiceByName(SERVICE).methods_by_name
    assert {"Score", "ScoreBatch", "ReportOutcomes"} <= set(methods)
    admin = DescriptorPool(db).FindServiceByName("ordersight.v1.ModelAdmin").methods_by_name
    assert set(admin) == {
        "ListModels", "GetStatus", "LoadModel", "Rollback", "SetChallenger", "ClearChallenger"
    }  # fmt: skip


def test_score_batch_orders_and_arrow_keep_request_order(
    start_server: Callable[..., RunningServer], history: pa.Table
) -> None:
    rows = history.slice(0, 300)
    want_ids = rows.column("order_id").to_pylist()
    # Reversed, so that "request order" is not also time order or id order.
    rev = rows.take(np.arange(rows.num_rows)[::-1])
    by_orders = start_server().stub.ScoreBatch(
        pb.ScoreBatchRequest(orders=pb.OrderList(orders=orders_of(rev)))
    )
    assert [d.order_id for d in by_orders.decisions] == want_ids[::-1]

    by_arrow = start_server().stub.ScoreBatch(
        pb.ScoreBatchRequest(arrow_ipc=arrow_ipc(order_columns(rows)))
    )
    assert [d.order_id for d in by_arrow.decisions] == want_ids


# --- parity: online scoring and the offline replay make the same decisions -------------------

PARITY_START = 12_000  # a stretch of the history in the middle of its three weeks


def test_parity_score_score_batch_and_offline_replay(
    start_server: Callable[..., RunningServer], history: pa.Table, models: ModelSet
) -> None:
    rows = history.slice(PARITY_START, 600)
    orders = orders_of(rows)
    decoded = decode_table(rows)
    offline = replay_history(
        Engine(models, VelocityState(CAPACITY)),
        decoded.ids,
        decoded.arrays,
        *unknown_labels(rows.num_rows),
    )
    # Both tiers take part, so the parity covers the screener and the model alike.
    assert {pb.SCREENED_OUT, pb.MODEL} <= set(offline.path.tolist())

    single = start_server()
    one_by_one = [single.stub.Score(o) for o in orders]
    batch = start_server().stub.ScoreBatch(pb.ScoreBatchRequest(orders=pb.OrderList(orders=orders)))
    arrow = start_server().stub.ScoreBatch(
        pb.ScoreBatchRequest(arrow_ipc=arrow_ipc(order_columns(rows)))
    )
    assert_same_decisions(one_by_one, offline, tol=1e-9)
    assert_same_decisions(list(batch.decisions), offline, tol=1e-9)
    assert_same_decisions(list(arrow.decisions), offline, tol=1e-9)


def test_parity_with_outcomes_reported_online(
    start_server: Callable[..., RunningServer], history: pa.Table, models: ModelSet
) -> None:
    """`score-file` semantics: labels become known half a day after their order, inside the
    stretch. Online, order events go to Score and label events to ReportOutcomes, in the
    event order the replay uses; the decisions must be the replay's."""
    rows = history.slice(PARITY_START, 2000).drop_columns(["label_known_at"])
    hist = history_from_table(rows, label_delay_days=0.5)
    kinds, event_rows, times = features.replay_events(hist.t, hist.known_at, hist.labels)
    last_order = int(np.flatnonzero(kinds == 0)[-1])
    labels_seen = kinds[:last_order] == 1
    assert labels_seen.sum() > 500
    assert (hist.labels[event_rows[:last_order][labels_seen]] == 1).sum() >= 5  # some frauds

    orders = orders_of(rows)
    srv = start_server()
    online: dict[int, pb.Decision] = {}
    outcomes: list[pb.Outcome] = []

    def report() -> None:
        if outcomes:
            reply = srv.stub.ReportOutcomes(pb.ReportOutcomesRequest(outcomes=outcomes))
            assert reply.accepted == len(outcomes)
            outcomes.clear()

    for kind, r, t in zip(kinds.tolist(), event_rows.tolist(), times.tolist(), strict=True):
        if kind == 0:
            report()  # consecutive label events go in one call, in their order
            online[r] = srv.stub.Score(orders[r])
        else:
            oc = pb.Outcome(order=orders[r], is_fraud=bool(hist.labels[r] == 1))
            oc.known_at.FromMicroseconds(round(t * 1e6))
            outcomes.append(oc)
    report()

    offline = replay_history(
        Engine(models, VelocityState(CAPACITY)), hist.ids, hist.arrays, hist.labels, hist.known_at
    )
    assert_same_decisions([online[r] for r in range(rows.num_rows)], offline, tol=1e-6)
    # The labels really changed something: without them some scores differ.
    blind = replay_history(
        Engine(models, VelocityState(CAPACITY)),
        hist.ids,
        hist.arrays,
        *unknown_labels(rows.num_rows),
    )
    assert np.any(np.abs(blind.score - offline.score) > 1e-6)


# --- bad input -------------------------------------------------------------------------------


def _without_created_at() -> pb.Order:
    o = simple_order()
    o.ClearField("created_at")
    return o


def _with_item_quantity(q: int) -> pb.Order:
    o = simple_order()
    o.items.add(sku="sku-1", category="home", quantity=q, unit_price_minor=1999)
    return o


BAD_ORDERS = {
    "order_id": simple_order(order_id=""),
    "created_at": _without_created_at(),
    "amount_minor": simple_order(amount_minor=-1),
    "currency": simple_order(currency="usd"),
    "items[0].quantity": _with_item_quantity(-1),
}


@pytest.mark.parametrize("field", BAD_ORDERS)
def test_score_rejects_bad_field(server: RunningServer, field: str) -> None:
    err = rpc_error(lambda: server.stub.Score(BAD_ORDERS[field]))
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert err.details().startswith(f"{field}:"), err.details()
    assert server.stub.Score(simple_order("o-good")).order_id == "o-good"


def _history_arrow(history: pa.Table, change: Callable[[pa.Table], pa.Table]) -> bytes:
    return arrow_ipc(change(order_columns(history.slice(0, 5))))


def _amount_as_strings(t: pa.Table) -> pa.Table:
    i = t.schema.get_field_index("amount_minor")
    return t.set_column(i, "amount_minor", t.column("amount_minor").cast(pa.string()))


def _negative_quantity(t: pa.Table) -> pa.Table:
    items = t.column("items").to_pylist()
    items[2] = [{"sku": "x", "category": "books", "quantity": -1, "unit_price_minor": 100}]
    return t.set_column(t.schema.get_field_index("items"), "items", pa.array(items))


def _in_a_year(t: pa.Table) -> pa.Table:
    future = pa.array([dt.datetime.now(dt.UTC) + dt.timedelta(days=365)] * t.num_rows)
    return t.set_column(t.schema.get_field_index("created_at"), "created_at", future)


def _huge_naive_seconds(t: pa.Table) -> pa.Table:
    huge = pa.array([10**15] * t.num_rows, pa.int64()).cast(pa.timestamp("s"))
    return t.set_column(t.schema.get_field_index("created_at"), "created_at", huge)


BAD_BATCHES: dict[str, tuple[Callable[[pa.Table], pb.ScoreBatchRequest], str]] = {
    "unreadable arrow": (lambda h: pb.ScoreBatchRequest(arrow_ipc=b"not arrow"), "arrow_ipc"),
    "arrow lacks amount_minor": (
        lambda h: pb.ScoreBatchRequest(
            arrow_ipc=_history_arrow(h, lambda t: t.drop_columns(["amount_minor"]))
        ),
        "'amount_minor'",
    ),
    "arrow amount_minor as strings": (
        lambda h: pb.ScoreBatchRequest(arrow_ipc=_history_arrow(h, _amount_as_strings)),
        "'amount_minor'",
    ),
    "neither payload": (lambda h: pb.ScoreBatchRequest(), "payload"),
    "arrow negative item quantity": (
        lambda h: pb.ScoreBatchRequest(arrow_ipc=_history_arrow(h, _negative_quantity)),
        "'items.quantity'",
    ),
    "arrow order from the future": (
        lambda h: pb.ScoreBatchRequest(arrow_ipc=_history_arrow(h, _in_a_year)),
        "'created_at'",
    ),
    "arrow duplicated column": (
        lambda h: pb.ScoreBatchRequest(
            arrow_ipc=_history_arrow(h, lambda t: t.append_column("currency", t.column("currency")))
        ),
        "'currency' appears more than once",
    ),
    "arrow naive timestamp out of range": (
        lambda h: pb.ScoreBatchRequest(arrow_ipc=_history_arrow(h, _huge_naive_seconds)),
        "'created_at'",
    ),
    "second order bad": (
        lambda h: pb.ScoreBatchRequest(
            orders=pb.OrderList(orders=[simple_order("o-1"), simple_order("o-2", currency="usd")])
        ),
        "orders.orders[1].currency",
    ),
}


@pytest.mark.parametrize("case", BAD_BATCHES)
def test_score_batch_rejects_bad_payload(
    server: RunningServer, history: pa.Table, case: str
) -> None:
    make, names = BAD_BATCHES[case]
    err = rpc_error(lambda: server.stub.ScoreBatch(make(history)))
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert names in err.details(), err.details()
    assert server.stub.Score(simple_order("o-good")).order_id == "o-good"


def test_report_outcomes_rejects_bad_order(server: RunningServer) -> None:
    bad = pb.Outcome(order=simple_order(currency="usd"), is_fraud=True)
    err = rpc_error(lambda: server.stub.ReportOutcomes(pb.ReportOutcomesRequest(outcomes=[bad])))
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert err.details().startswith("outcomes[0].order.currency:"), err.details()


def _created_beyond_int64_micros() -> pb.Order:
    o = simple_order()
    o.created_at.seconds = 10**13  # outside Timestamp's range; * 1e6 overflows int64
    return o


def test_score_rejects_out_of_range_timestamp(server: RunningServer) -> None:
    err = rpc_error(lambda: server.stub.Score(_created_beyond_int64_micros()))
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "created_at" in err.details(), err.details()


def test_out_of_range_timestamp_does_not_stop_the_server(server: RunningServer) -> None:
    with pytest.raises(grpc.RpcError):
        server.stub.Score(_created_beyond_int64_micros())
    assert server.stub.Score(simple_order("o-good")).order_id == "o-good"


def test_score_rejects_currency_with_trailing_newline(server: RunningServer) -> None:
    err = rpc_error(lambda: server.stub.Score(simple_order(currency="JPY\n")))
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert err.details().startswith("currency:"), err.details()


# --- deadlines -------------------------------------------------------------------------------


def _gate_first_batch(srv: RunningServer) -> tuple[threading.Event, threading.Event]:
    """Hold the engine inside the first micro-batch until `release` is set.

    The batch is still scored by the real engine; the gate only fixes *when*, so that a
    test can line calls up against it without sleeping.
    """
    entered, release = threading.Event(), threading.Event()
    score_calls = srv.server.plane.score_calls

    def gated(batch):
        if not entered.is_set():
            entered.set()
            release.wait(TIMEOUT_S)
        return score_calls(batch)

    srv.server.plane.score_calls = gated
    return entered, release


def test_a_bad_order_fails_its_own_call_alone_in_a_micro_batch(server: RunningServer) -> None:
    """One micro-batch of three Score calls, the middle one refused: the others are scored."""
    plane, loop = server.server.plane, server.loop
    assert plane is not None and loop is not None
    orders = [simple_order("o-a"), simple_order("o-bad", currency="ZZZ"), simple_order("o-c")]

    async def one_micro_batch() -> list:
        futures = [loop.create_future() for _ in orders]
        pending = [
            Pending(o.SerializeToString(), None, plane.clock(), f)
            for o, f in zip(orders, futures, strict=True)
        ]
        return await plane.process(pending)

    results = asyncio.run_coroutine_threadsafe(one_micro_batch(), loop).result(TIMEOUT_S)
    assert [pb.Decision.FromString(results[i]).order_id for i in (0, 2)] == ["o-a", "o-c"]
    assert isinstance(results[1], InvalidInput) and results[1].field == "currency"


def test_call_expiring_while_queued_never_crashes(server: RunningServer) -> None:
    entered, release = _gate_first_batch(server)
    first = server.stub.Score.future(simple_order("o-first"))
    assert entered.wait(TIMEOUT_S)
    # The loop is busy in the first batch: this call's deadline passes before it is served.
    late = server.stub.Score.future(simple_order("o-late", amount_minor=500_000), timeout=0.05)
    assert late.exception(timeout=TIMEOUT_S).code() == grpc.StatusCode.DEADLINE_EXCEEDED
    release.set()
    assert first.result(timeout=TIMEOUT_S).order_id == "o-first"
    assert server.stub.Score(simple_order("o-next")).order_id == "o-next"


def test_nearly_expired_deadline_is_answered_or_exceeded(server: RunningServer) -> None:
    # A high-value order is always escalated, so a late one can only go to the rules.
    o = simple_order("o-rush", amount_minor=500_000)
    try:
        d = server.stub.Score(o, timeout=0.002)
    except grpc.RpcError as exc:
        assert exc.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    else:
        assert d.order_id == "o-rush"
        assert d.path in (pb.MODEL, pb.FALLBACK)
        assert d.path == pb.MODEL or d.fallback_cause == "DEADLINE"
    assert server.stub.Score(simple_order("o-next")).order_id == "o-next"


def test_expired_deadline_sends_escalated_orders_to_the_rules(
    history: pa.Table, models: ModelSet
) -> None:
    rows = decode_table(history.slice(PARITY_START, 600))
    n = rows.n
    on_time = Engine(models, VelocityState(CAPACITY)).score(rows)
    late = Engine(models, VelocityState(CAPACITY)).score(rows, deadlines=np.full(n, -np.inf))
    escalated = on_time.path != SCREENED_OUT
    assert escalated.any() and (~escalated).any()
    assert (late.path[escalated] == FALLBACK).all()
    assert {late.causes[i] for i in np.flatnonzero(escalated)} == {"DEADLINE"}
    # Screened-out orders never needed tier two: the deadline changes nothing for them.
    assert (late.path[~escalated] == SCREENED_OUT).all()
    np.testing.assert_array_equal(late.score[~escalated], on_time.score[~escalated])
    assert all(late.causes[i] == "" for i in np.flatnonzero(~escalated))
    if not models.policy.fallback_can_decline:
        assert not (late.action[escalated] == pb.DECLINE).any()


# --- concurrency and shutdown ----------------------------------------------------------------


def test_concurrent_calls_each_get_their_own_decision(
    server: RunningServer, history: pa.Table
) -> None:
    orders = orders_of(history.slice(0, 64))
    with ThreadPoolExecutor(max_workers=64) as pool:
        decisions = list(pool.map(server.stub.Score, orders))
    assert [d.order_id for d in decisions] == [o.order_id for o in orders]
    assert all(0.0 <= d.score <= 1.0 and d.action != pb.ACTION_UNSPECIFIED for d in decisions)
    assert server.server.plane.batcher.items == 64


def test_graceful_stop_finishes_the_call_in_flight(server: RunningServer) -> None:
    score_calls = server.server.plane.score_calls

    def stop_then_process(batch):
        server.request_stop()  # the stop begins before the answer
        return score_calls(batch)

    server.server.plane.score_calls = stop_then_process
    in_flight = server.stub.Score.future(simple_order("o-in-flight"))
    assert in_flight.result(timeout=TIMEOUT_S).order_id == "o-in-flight"
    server.join()  # stopped, and nothing escaped the server
    err = rpc_error(lambda: server.stub.Score(simple_order("o-after"), timeout=10))
    assert err.code() == grpc.StatusCode.UNAVAILABLE


def test_score_rejects_an_order_from_the_future(server: RunningServer) -> None:
    o = simple_order("o-future")
    o.created_at.FromDatetime(dt.datetime.now(dt.UTC) + dt.timedelta(hours=1))
    err = rpc_error(lambda: server.stub.Score(o))
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert err.details().startswith("created_at:") and "future" in err.details()


def test_unusable_model_folder_stops_start_up(tmp_path: Path) -> None:
    with pytest.raises(ModelLoadError, match="no manifest.json"):
        Server(load_settings(env={}, models=str(tmp_path), port=0, state_capacity=CAPACITY))
    rules = Server(
        load_settings(
            env={}, models=str(tmp_path), port=0, state_capacity=CAPACITY, allow_rules_only=True
        )
    )
    assert rules.engine.models.tier2 is None


def test_state_warmed_from_history_equals_offline_replay(
    start_server: Callable[..., RunningServer],
    history: pa.Table,
    models: ModelSet,
    tmp_path: Path,
) -> None:
    """A server warmed with a history scores the next orders as a replay of all of them."""
    past, new = history.slice(0, 4000), history.slice(4000, 300)
    path = tmp_path / "past.parquet"
    pq.write_table(past, path)
    server = start_server(warm_history=str(path))
    got = [server.stub.Score(o) for o in orders_of(new)]

    both = pa.concat_tables([past, new])
    h = history_from_table(both)
    # Labels known after the warm history ends, and the new orders' own, are not known yet.
    past_end = past.column("created_at").to_numpy().max().astype("int64") / 1e6
    h.labels[h.known_at > past_end] = -1
    h.labels[4000:] = -1
    engine = Engine(models, VelocityState(CAPACITY))
    want = replay_history(engine, h.ids, h.arrays, h.labels, h.known_at)
    assert [d.order_id for d in got] == want.order_ids[4000:]
    np.testing.assert_allclose([d.score for d in got], want.score[4000:], rtol=0, atol=1e-9)
    cold = start_server()
    cold_scores = [cold.stub.Score(o).score for o in orders_of(new)]
    assert not np.allclose(cold_scores, want.score[4000:])  # warming changed something


def test_arrow_response_carries_the_same_decisions(
    start_server: Callable[..., RunningServer], history: pa.Table
) -> None:
    rows = order_columns(history.slice(0, 3000))
    plain = start_server().stub.ScoreBatch(pb.ScoreBatchRequest(arrow_ipc=arrow_ipc(rows)))
    columnar = start_server().stub.ScoreBatch(
        pb.ScoreBatchRequest(arrow_ipc=arrow_ipc(rows), arrow_response=True)
    )
    assert not columnar.decisions
    table = pyarrow.ipc.open_stream(columnar.decisions_arrow_ipc).read_all()
    got = table.to_pylist()
    want = list(plain.decisions)
    assert [g["order_id"] for g in got] == [d.order_id for d in want]
    assert [g["action"] for g in got] == [pb.Action.Name(d.action) for d in want]
    assert [g["path"] for g in got] == [pb.Path.Name(d.path) for d in want]
    np.testing.assert_allclose([g["score"] for g in got], [d.score for d in want], atol=1e-12)
    assert [[r["code"] for r in g["reasons"]] for g in got] == [
        [r.code for r in d.reasons] for d in want
    ]
    assert [g["review_triggers"] for g in got] == [list(d.review_triggers) for d in want]
    assert any(g["reasons"] for g in got)  # the batch has flagged orders to compare
