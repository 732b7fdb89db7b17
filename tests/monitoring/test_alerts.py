"""Operational alerts over the real server: ReportEvent in, WatchAlerts / ListAlerts out."""

from __future__ import annotations

import datetime as dt
import queue
import threading
from collections.abc import Callable

import grpc
import numpy as np
import pytest
from ordersight.v1 import risk_pb2 as pb

from engine.cli import main
from tests.grpc_harness import TIMEOUT_S, RunningServer, rpc_error

MONDAY = dt.datetime(2026, 1, 5, tzinfo=dt.UTC).timestamp()
BUCKET = 300.0
SERIES = "errors{channel=app,code=PAYMENT_TIMEOUT}"


def _events(
    rng: np.random.Generator, start: float, buckets: int, rate: float
) -> list[pb.CheckoutEvent]:
    counts = rng.poisson(rate, buckets)
    times = np.repeat(start + BUCKET * np.arange(buckets), counts)
    times = times + BUCKET * rng.random(times.size)
    out = []
    for t in times:
        ev = pb.CheckoutEvent(channel="app", code="PAYMENT_TIMEOUT")
        ev.time.FromNanoseconds(int(t * 1e9))
        out.append(ev)
    return out


def test_error_storm_is_streamed_listed_and_shown(
    start_server: Callable[..., RunningServer], capsys: pytest.CaptureFixture[str]
) -> None:
    server = start_server()
    rng = np.random.default_rng(1)
    t = MONDAY
    for _ in range(21 * 48):  # three quiet weeks, half an hour per call, to learn the baseline
        events = _events(rng, t, 6, 3.0)  # within the detector's lead: every event counted
        assert server.stub.ReportEvent(pb.ReportEventRequest(events=events)).accepted == len(events)
        t += 6 * BUCKET
    assert server.stub.ListAlerts(pb.ListAlertsRequest()).alerts == []

    received: queue.Queue[pb.Alert] = queue.Queue()
    stream = server.stub.WatchAlerts(pb.WatchAlertsRequest(include_active=True))
    started = threading.Event()

    def watch() -> None:
        started.set()
        try:
            for a in stream:
                received.put(a)
        except grpc.RpcError:
            pass  # cancelled at the end of the test

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    started.wait(TIMEOUT_S)
    storm = _events(rng, t, 4, 120.0) + _events(rng, t + 4 * BUCKET, 1, 3.0)
    closer = pb.CheckoutEvent(channel="app", code="PAYMENT_TIMEOUT")
    closer.time.FromSeconds(int(t + 5 * BUCKET + 120))  # moves time past the storm's buckets
    storm.append(closer)
    server.stub.ReportEvent(pb.ReportEventRequest(events=storm))
    alert = received.get(timeout=TIMEOUT_S)
    stream.cancel()
    assert (alert.series, alert.kind) == (SERIES, "spike")
    assert alert.actual > 5 * alert.expected
    assert alert.start.ToSeconds() >= t
    listed = server.stub.ListAlerts(pb.ListAlertsRequest()).alerts
    assert [a.series for a in listed] == [SERIES]

    assert main(["alerts", "--addr", f"127.0.0.1:{server.port}"]) == 0
    out = capsys.readouterr().out
    assert SERIES in out and "spike" in out


@pytest.mark.parametrize(
    ("event", "field"),
    [
        (pb.CheckoutEvent(channel="web"), "events[0].code"),
        (pb.CheckoutEvent(channel="web", code="X"), "events[0].time"),
    ],
)
def test_bad_events_are_refused(server: RunningServer, event: pb.CheckoutEvent, field: str) -> None:
    err = rpc_error(lambda: server.stub.ReportEvent(pb.ReportEventRequest(events=[event])))
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert err.details().startswith(field)


def test_event_from_the_future_is_refused(server: RunningServer) -> None:
    ev = pb.CheckoutEvent(channel="web", code="X")
    ev.time.FromDatetime(dt.datetime.now(dt.UTC) + dt.timedelta(hours=2))
    err = rpc_error(lambda: server.stub.ReportEvent(pb.ReportEventRequest(events=[ev])))
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT and "future" in err.details()


def test_metrics_endpoint_counts_decisions(start_server: Callable[..., RunningServer]) -> None:
    import socket
    import urllib.request

    with socket.socket() as s:  # a free port for the metrics endpoint
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = start_server(metrics_port=port)
    order = pb.Order(
        order_id="o-m", customer_id="c-m", amount_minor=1500, currency="USD", channel="web"
    )
    order.created_at.FromSeconds(int(MONDAY))
    decision = server.stub.Score(order)
    bad = pb.Order(order_id="o-bad", customer_id="c-m", amount_minor=1, currency="ZZZ")
    bad.created_at.FromSeconds(int(MONDAY))
    with pytest.raises(grpc.RpcError):
        server.stub.Score(bad)
    body = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=TIMEOUT_S).read()
    text = body.decode()
    action, path = pb.Action.Name(decision.action), pb.Path.Name(decision.path)
    assert f'ordersight_decisions_total{{action="{action}",path="{path}"}} 1.0' in text
    assert "ordersight_engine_latency_seconds_count 1.0" in text
    assert "ordersight_batch_size_sum 1.0" in text
    assert 'ordersight_orders_refused_total{rule="currency"} 1.0' in text


def test_call_metrics_count_decisions_latency_and_batches_as_prometheus_would() -> None:
    from prometheus_client import generate_latest

    from engine.decision.policy import APPROVE, DECLINE, MODEL, SCREENED_OUT
    from engine.monitoring.alert_hub import AlertHub
    from engine.monitoring.anomaly import StreamMonitor

    hub = AlertHub(StreamMonitor(300.0))
    t = np.array([1000.0, 1001.0, 1002.0, 1003.0])
    action = np.array([APPROVE, APPROVE, DECLINE, APPROVE], np.int8)
    path = np.array([SCREENED_OUT, SCREENED_OUT, MODEL, MODEL], np.int8)
    hub.on_decisions(t, ["web"] * 4, action, path, [5e-5, 1e-4, 3e-4, 2.0])
    hub.on_decisions(t[:1], ["web"], action[:1], path[:1], [1e-3])
    text = generate_latest(hub.registry).decode()
    assert 'ordersight_decisions_total{action="APPROVE",path="SCREENED_OUT"} 3.0' in text
    assert 'ordersight_decisions_total{action="DECLINE",path="MODEL"} 1.0' in text
    assert 'ordersight_decisions_total{action="APPROVE",path="MODEL"} 1.0' in text
    assert 'ordersight_engine_latency_seconds_bucket{le="0.0001"} 2.0' in text  # le: inclusive
    assert 'ordersight_engine_latency_seconds_bucket{le="0.0005"} 3.0' in text
    assert 'ordersight_engine_latency_seconds_bucket{le="1.0"} 4.0' in text
    assert 'ordersight_engine_latency_seconds_bucket{le="+Inf"} 5.0' in text
    assert "ordersight_engine_latency_seconds_count 5.0" in text
    assert 'ordersight_batch_size_bucket{le="1.0"} 1.0' in text
    assert 'ordersight_batch_size_bucket{le="4.0"} 2.0' in text
    assert "ordersight_batch_size_sum 5.0" in text


def test_reported_events_the_detector_cannot_count_are_not_accepted(
    start_server: Callable[..., RunningServer],
) -> None:
    """`accepted` counts only what the detector will count: a batch eight days long is
    mostly past its lead, and events older than its clock are late."""
    server = start_server()
    rng = np.random.default_rng(2)
    week = _events(rng, MONDAY, 8 * 288, 3.0)
    accepted = server.stub.ReportEvent(pb.ReportEventRequest(events=week)).accepted
    assert 0 < accepted < len(week) / 10
    later = _events(rng, MONDAY + 8 * 86400, 6, 3.0)  # right after: within the lead
    assert server.stub.ReportEvent(pb.ReportEventRequest(events=later)).accepted == len(later)
    stale = _events(rng, MONDAY, 6, 3.0)  # their buckets closed when the clock moved on
    assert server.stub.ReportEvent(pb.ReportEventRequest(events=stale)).accepted == 0
