"""Faults of the disk, on a real `ordersight serve`: files that cannot grow (RLIMIT_FSIZE, the
way a full disk refuses a write) under the decision log's fail_closed and fail_open, a
snapshot directory that cannot be written, and a Numba cache directory that cannot be used.
The limit is lifted from outside (prlimit) to see the engine recover by itself."""

from __future__ import annotations

import resource
import socket
import time
import urllib.request
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from ordersight.v1 import risk_pb2 as pb
from ordersight.v1 import risk_pb2_grpc as pb_grpc
from prometheus_client.parser import text_string_to_metric_families

from engine.decision_log import segments
from tests.fuzzing import ChildServer
from tests.grpc_harness import TIMEOUT_S, simple_order

SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING
TINY = 512
"""File size limit of the child: less than a log segment's schema, so no write succeeds."""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _health(srv: ChildServer, service: str) -> int:
    stub = health_pb2_grpc.HealthStub(srv.channel)
    return stub.Check(health_pb2.HealthCheckRequest(service=service), timeout=10).status


def _until(what, timeout: float = TIMEOUT_S) -> None:  # type: ignore[no-untyped-def]
    end = time.monotonic() + timeout
    while not what():
        assert time.monotonic() < end, "the condition never held"
        time.sleep(0.1)


def _metric(port: int, name: str, labels: dict[str, str] | None = None) -> float:
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10).read().decode()
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            if s.name == name and (labels is None or s.labels == labels):
                return float(s.value)
    return float("nan")


def _score(srv: ChildServer, order_id: str) -> tuple[grpc.StatusCode, str]:
    code, details, _ = srv.call("order", simple_order(order_id).SerializeToString())
    return code, details


def _unlimit(srv: ChildServer) -> None:
    assert srv.proc is not None
    hard = resource.prlimit(srv.proc.pid, resource.RLIMIT_FSIZE)[1]
    resource.prlimit(srv.proc.pid, resource.RLIMIT_FSIZE, (hard, hard))


@pytest.fixture
def no_numba_cache(tmp_path: Path) -> dict[str, str]:
    """A Numba cache directory that cannot be made (under a regular file: even root cannot),
    which is also what keeps the child from writing cache files past its size limit."""
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("")
    return {"NUMBA_CACHE_DIR": str(blocker / "numba")}


def _on_a_full_disk(
    models_dir: Path, tmp_path: Path, env: dict[str, str], **settings: object
) -> tuple[ChildServer, int]:
    """`ordersight serve` whose files cannot grow past TINY, the decision log in fsync mode
    in tmp_path/log, metrics on a free port (returned)."""
    metrics = _free_port()
    srv = ChildServer(
        models_dir, env=env, file_size_limit=TINY, log_dir=tmp_path / "log",
        log_durability="fsync", metrics_port=metrics, **settings,
    )  # fmt: skip
    return srv, metrics


def test_fail_closed_refuses_what_it_cannot_log_and_recovers(
    models_dir: Path, tmp_path: Path, no_numba_cache: dict[str, str]
) -> None:
    srv, metrics = _on_a_full_disk(
        models_dir, tmp_path, no_numba_cache, log_on_failure="fail_closed",
        snapshot_dir=tmp_path / "state", snapshot_every_s=0.5,
    )  # fmt: skip
    try:
        srv.start()
        code, details = _score(srv, "first")
        assert code == grpc.StatusCode.UNAVAILABLE and "decision log" in details
        code, details = _score(srv, "second")  # refused before it is decided
        assert code == grpc.StatusCode.UNAVAILABLE
        assert "decision log down, calls refused (fail_closed)" in details
        _until(lambda: _health(srv, "") == NOT_SERVING)
        time.sleep(2.5)  # the writer's probes (every second) find the disk still full
        assert _health(srv, "") == NOT_SERVING
        assert _score(srv, "still-full")[0] == grpc.StatusCode.UNAVAILABLE
        assert _health(srv, "ordersight.decision_log") == NOT_SERVING
        assert _health(srv, "ordersight.snapshots") == NOT_SERVING
        assert _health(srv, "ordersight.tier_two") == SERVING
        assert _metric(metrics, "ordersight_log_errors_total") >= 1
        refused = _metric(metrics, "ordersight_rejected_total", {"reason": "log_down"})
        assert refused >= 2  # "second" and "still-full"
        up = _metric(metrics, "ordersight_component_up", {"component": "ordersight.decision_log"})
        assert up == 0

        _unlimit(srv)  # the disk has room again: the writer's probe finds it
        _until(lambda: _health(srv, "") == SERVING)
        _until(lambda: _health(srv, "ordersight.snapshots") == SERVING)
        assert _score(srv, "third")[0] == grpc.StatusCode.OK
    finally:
        srv.stop()
    out = srv.output(200_000)
    assert "Traceback" not in out
    assert "is not writable" in out  # the Numba cache, turned off
    assert "NOT_SERVING" in out and "SERVING again" in out
    rows = {r.as_py() for b in segments.read_folder(tmp_path / "log") for r in b.column("order_id")}
    assert rows == {"third"}  # what was refused was never logged; what was answered was


def test_fail_open_keeps_deciding_and_counts_what_it_lost(
    models_dir: Path, tmp_path: Path, no_numba_cache: dict[str, str]
) -> None:
    srv, metrics = _on_a_full_disk(
        models_dir, tmp_path, no_numba_cache, log_on_failure="fail_open",
        health_report_s=0.5, single_process=True,
    )  # fmt: skip
    try:
        srv.start()
        for i in range(5):
            assert _score(srv, f"o-{i}")[0] == grpc.StatusCode.OK
        _until(lambda: _health(srv, "ordersight.decision_log") == NOT_SERVING)
        assert _health(srv, "") == SERVING  # decisions are still made
        assert _metric(metrics, "ordersight_log_lost_rows_total") >= 5
        assert _metric(metrics, "ordersight_degraded") == 1
        alerts = pb_grpc.OrderRiskStub(srv.channel).ListAlerts(pb.ListAlertsRequest()).alerts
        down = [a for a in alerts if a.series == "component{name=ordersight.decision_log}"]
        assert len(down) == 1 and down[0].severity == "critical" and "failed" in down[0].explanation
        time.sleep(2.0)  # a degraded line every health_report_s
    finally:
        srv.stop()
    out = srv.output(200_000)
    assert "Traceback" not in out
    assert out.count("degraded: ordersight.decision_log down") >= 2
