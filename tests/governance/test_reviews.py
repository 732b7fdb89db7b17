"""The review queue and outcomes over a real server and a real store (SQLite here, and
PostgreSQL: the `store` fixture runs each test on both)."""

from __future__ import annotations

import threading
from collections.abc import Callable
from pathlib import Path

import grpc
import pyarrow as pa
import pytest
from ordersight.v1 import risk_pb2 as pb
from ordersight.v1 import risk_pb2_grpc as pb_grpc

from engine.decision_log import segments
from engine.features.matrix import FEATURE_NAMES
from engine.store import open_store
from tests.grpc_harness import TIMEOUT_S, RunningServer, orders_of, rpc_error

KNOWN_FRAUDS = FEATURE_NAMES.index("customer_id.known_frauds_30d")


def _score(srv: RunningServer, orders: list[pb.Order]) -> list[pb.Decision]:
    req = pb.ScoreBatchRequest(orders=pb.OrderList(orders=orders))
    return list(srv.stub.ScoreBatch(req, timeout=TIMEOUT_S).decisions)


def _reviews(srv: RunningServer) -> pb_grpc.ReviewsStub:
    return pb_grpc.ReviewsStub(srv.channel)


def _all_cases(stub: pb_grpc.ReviewsStub, **filters: object) -> list[pb.ReviewCase]:
    out, token = [], ""
    while True:
        page = stub.ListReviews(
            pb.ListReviewsRequest(page_size=7, page_token=token, **filters), timeout=TIMEOUT_S
        )
        out += list(page.cases)
        token = page.next_page_token
        if not token:
            return out


def _outcome(order: pb.Order, **fields: object) -> pb.ReportOutcomesRequest:
    req = pb.ReportOutcomesRequest()
    oc = req.outcomes.add(**fields)
    oc.order.CopyFrom(order)
    oc.known_at.FromSeconds(order.created_at.seconds + 3600)
    return req


@pytest.fixture
def scored(
    store: str, history: pa.Table, tmp_path: Path, start_server: Callable[..., RunningServer]
):
    srv = start_server(single_process=True, store=store, log_dir=str(tmp_path / "log"))
    orders = orders_of(history.slice(2_000, 3_000))
    decisions = _score(srv, orders)
    srv.server.reviews.flush()
    return srv, orders, decisions


def test_every_review_opens_one_case_with_its_reasons(scored) -> None:
    srv, orders, decisions = scored
    reviewed = {d.order_id: d for d in decisions if d.action == pb.REVIEW}
    assert len(reviewed) > 20
    cases = _all_cases(_reviews(srv))
    assert [c.order_id for c in cases] == sorted(  # oldest first, each once
        (c.order_id for c in cases),
        key=lambda i: ([c.opened_at.ToNanoseconds() for c in cases if c.order_id == i][0], i),
    )
    assert {c.order_id for c in cases} == set(reviewed)
    by_order = {o.order_id: o for o in orders}
    for c in cases:
        d = reviewed[c.order_id]
        assert [r.code for r in c.reasons] == [r.code for r in d.reasons]
        assert list(c.review_triggers) == list(d.review_triggers)
        assert c.score == pytest.approx(d.score)
        assert c.amount == pytest.approx(by_order[c.order_id].amount_minor / 100)
        assert c.status == "open" and c.facts
    high = _all_cases(_reviews(srv), trigger="HIGH_VALUE")
    assert {c.order_id for c in high} == {
        i for i, d in reviewed.items() if "HIGH_VALUE" in d.review_triggers
    }
    big = _all_cases(_reviews(srv), min_amount=500.0)
    assert {c.order_id for c in big} == {c.order_id for c in cases if c.amount >= 500.0}
    channel = cases[0].channel
    assert {c.order_id for c in _all_cases(_reviews(srv), channel=channel)} == {
        c.order_id for c in cases if c.channel == channel
    }


def test_a_verdict_resolves_once_becomes_an_outcome_and_teaches_the_state(
    scored, store: str, tmp_path: Path
) -> None:
    srv, orders, decisions = scored
    stub = _reviews(srv)
    case = _all_cases(stub)[0]
    got = stub.ResolveReview(
        pb.ResolveReviewRequest(
            order_id=case.order_id, verdict=pb.FRAUD, reviewer="ana", note="stolen card"
        ),
        timeout=TIMEOUT_S,
    )
    assert got.status == "resolved" and got.verdict == pb.FRAUD and got.reviewer == "ana"
    assert case.order_id not in {c.order_id for c in _all_cases(stub)}
    assert case.order_id in {c.order_id for c in _all_cases(stub, status="resolved")}
    again = rpc_error(lambda: stub.ResolveReview(
        pb.ResolveReviewRequest(order_id=case.order_id, verdict=pb.LEGITIMATE, reviewer="bo"),
        timeout=TIMEOUT_S,
    ))  # fmt: skip
    assert again.code() == grpc.StatusCode.ALREADY_EXISTS and "resolved already" in again.details()
    s = open_store(store, migrate=False)
    try:
        table = s.outcomes_table().to_pylist()
    finally:
        s.close()
    assert [(r["order_id"], r["kind"], r["is_fraud"], r["reviewer"]) for r in table] == [
        (case.order_id, "REVIEW_VERDICT", True, "ana")
    ]
    # The next order of that customer sees the verdict as a known fraud.
    first = next(o for o in orders if o.order_id == case.order_id)
    nxt = pb.Order()
    nxt.CopyFrom(first)
    nxt.order_id = "after-verdict"
    nxt.created_at.FromSeconds(max(o.created_at.seconds for o in orders) + 60)
    _score(srv, [nxt])
    rows = pa.Table.from_batches(list(segments.read_folder(tmp_path / "log"))).to_pylist()
    logged = {r["order_id"]: r for r in rows if r["kind"] == "decision"}
    assert any(
        r["kind"] == "outcome" and r["order_id"] == case.order_id and r["is_fraud"] for r in rows
    )
    assert logged["after-verdict"]["features"][KNOWN_FRAUDS] > 0.9  # one fraud, decayed


@pytest.mark.parametrize(
    ("request_", "field"),
    [
        (pb.ResolveReviewRequest(order_id="x", reviewer="ana"), "verdict"),
        (pb.ResolveReviewRequest(order_id="x", verdict=pb.FRAUD), "reviewer"),
        (pb.ResolveReviewRequest(verdict=pb.FRAUD, reviewer="ana"), "order_id"),
        (
            pb.ResolveReviewRequest(order_id="x", verdict=pb.FRAUD, reviewer="a", note="n" * 2001),
            "note",
        ),
    ],
)
def test_a_bad_resolution_names_its_field(scored, request_, field: str) -> None:
    err = rpc_error(lambda: _reviews(scored[0]).ResolveReview(request_, timeout=TIMEOUT_S))
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT and err.details().startswith(field)


def test_unknown_cases_and_bad_pages(scored) -> None:
    stub = _reviews(scored[0])
    for call in (
        lambda: stub.GetReview(pb.GetReviewRequest(order_id="nope"), timeout=TIMEOUT_S),
        lambda: stub.ResolveReview(
            pb.ResolveReviewRequest(order_id="nope", verdict=pb.FRAUD, reviewer="a"),
            timeout=TIMEOUT_S,
        ),
    ):
        assert rpc_error(call).code() == grpc.StatusCode.NOT_FOUND
    for req, field in (
        (pb.ListReviewsRequest(page_token="%%%"), "page_token"),
        (pb.ListReviewsRequest(page_size=501), "page_size"),
        (pb.ListReviewsRequest(status="closed"), "status"),
        (pb.ListReviewsRequest(min_amount=10, max_amount=5), "min_amount"),
    ):
        err = rpc_error(lambda req=req: stub.ListReviews(req, timeout=TIMEOUT_S))
        assert err.code() == grpc.StatusCode.INVALID_ARGUMENT and err.details().startswith(field)


def test_outcomes_of_every_kind_are_kept_once_and_unknown_orders_reported(
    scored, store: str
) -> None:
    srv, orders, _ = scored
    a, b = orders[10], orders[11]
    stranger = pb.Order()
    stranger.CopyFrom(orders[12])
    stranger.order_id = "never-scored"
    first = srv.stub.ReportOutcomes(_outcome(a, kind=pb.CHARGEBACK), timeout=TIMEOUT_S)
    assert (first.accepted, first.duplicates, first.unmatched) == (1, 0, 0)
    again = srv.stub.ReportOutcomes(_outcome(a, kind=pb.CHARGEBACK), timeout=TIMEOUT_S)
    assert (again.accepted, again.duplicates) == (1, 1)
    legit = srv.stub.ReportOutcomes(_outcome(b, is_fraud=False), timeout=TIMEOUT_S)
    assert legit.duplicates == 0
    lost = srv.stub.ReportOutcomes(_outcome(stranger, kind=pb.CONFIRMED_FRAUD), timeout=TIMEOUT_S)
    assert lost.unmatched == 1 and list(lost.unmatched_order_ids) == ["never-scored"]
    verdict = _outcome(b, kind=pb.REVIEW_VERDICT, verdict=pb.FRAUD, reviewer="ana")
    srv.stub.ReportOutcomes(verdict, timeout=TIMEOUT_S)
    s = open_store(store, migrate=False)
    try:
        rows = {(r["order_id"], r["kind"]): r for r in s.outcomes_table().to_pylist()}
    finally:
        s.close()
    assert set(rows) == {
        (a.order_id, "CHARGEBACK"), (b.order_id, "CONFIRMED_LEGITIMATE"),
        ("never-scored", "CONFIRMED_FRAUD"), (b.order_id, "REVIEW_VERDICT"),
    }  # fmt: skip
    assert rows[(b.order_id, "REVIEW_VERDICT")]["is_fraud"] is True
    # The accuracy metrics: a's chargeback and b's legitimate label, then b's later fraud
    # verdict; the stranger is counted as unmatched.
    reg = srv.server.hub.registry
    labelled = {
        (s.labels["action"], s.labels["label"]): s.value
        for m in reg.collect() if m.name == "ordersight_labelled_decisions"
        for s in m.samples if s.name.endswith("_total")
    }  # fmt: skip
    assert sum(labelled.values()) == 3
    assert sum(v for (_, label), v in labelled.items() if label == "fraud") == 2
    assert reg.get_sample_value("ordersight_outcomes_unmatched_total") == 1


@pytest.mark.parametrize(
    ("fields", "field"),
    [
        ({}, "outcomes[0].kind"),
        ({"kind": pb.CHARGEBACK, "is_fraud": False}, "outcomes[0].is_fraud"),
        ({"kind": pb.REVIEW_VERDICT, "verdict": pb.FRAUD}, "outcomes[0].reviewer"),
        ({"kind": pb.REVIEW_VERDICT, "reviewer": "ana"}, "outcomes[0].verdict"),
        ({"kind": pb.CHARGEBACK, "reviewer": "ana"}, "outcomes[0].verdict"),
        ({"kind": pb.CONFIRMED_FRAUD, "note": "x" * 2001}, "outcomes[0].note"),
    ],
)
def test_a_bad_outcome_names_its_field(scored, fields: dict, field: str) -> None:
    srv, orders, _ = scored
    err = rpc_error(
        lambda: srv.stub.ReportOutcomes(_outcome(orders[0], **fields), timeout=TIMEOUT_S)
    )
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT and err.details().startswith(field)


def test_reviews_are_resolved_while_orders_are_scored(scored, history: pa.Table) -> None:
    srv, _, _ = scored
    stub = _reviews(srv)
    cases = _all_cases(stub)[:15]
    more = orders_of(history.slice(5_000, 2_000))
    failures: list[BaseException] = []

    def load() -> None:
        try:
            for i in range(0, len(more), 100):
                _score(srv, more[i : i + 100])
        except BaseException as exc:
            failures.append(exc)

    t = threading.Thread(target=load)
    t.start()
    for c in cases:
        stub.ResolveReview(
            pb.ResolveReviewRequest(order_id=c.order_id, verdict=pb.LEGITIMATE, reviewer="bo"),
            timeout=TIMEOUT_S,
        )
    t.join(TIMEOUT_S)
    assert not failures
    srv.server.reviews.flush()
    resolved = {c.order_id for c in _all_cases(stub, status="resolved")}
    assert {c.order_id for c in cases} <= resolved


def test_without_a_store_the_queue_says_so(start_server: Callable[..., RunningServer]) -> None:
    srv = start_server(single_process=True)
    err = rpc_error(lambda: _reviews(srv).ListReviews(pb.ListReviewsRequest(), timeout=TIMEOUT_S))
    assert err.code() == grpc.StatusCode.FAILED_PRECONDITION and "store" in err.details()
