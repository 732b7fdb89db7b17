"""kill -9 under load, restart: the state is rebuilt from the snapshot and the decision log,
so the next orders are decided exactly as by a twin that never stopped; nothing that was
acknowledged is missing from the log; open alerts survive."""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from pathlib import Path

import grpc
import numpy as np
import pyarrow as pa
from ordersight.v1 import risk_pb2 as pb
from ordersight.v1 import risk_pb2_grpc as pb_grpc

from engine.decision_log import segments
from engine.features.matrix import FEATURE_NAMES
from tests.fuzzing import ChildServer
from tests.grpc_harness import TIMEOUT_S, RunningServer, orders_of
from tests.monitoring.test_alerts import BUCKET, MONDAY, SERIES, _events

WINDOW = 16  # Score calls in flight
CUSTOMER_30D = FEATURE_NAMES.index("customer_id.cnt_30d")


def _log_rows(folder: Path) -> pa.Table:
    batches = list(segments.read_folder(folder))
    return pa.Table.from_batches(batches) if batches else pa.table({})


def _settings(tmp_path: Path) -> dict[str, object]:
    return {
        "snapshot_dir": tmp_path / "state", "snapshot_every_s": 0.4,
        "log_dir": tmp_path / "log", "log_durability": "fsync",
    }  # fmt: skip


def _replayed(child: ChildServer) -> dict[str, int]:
    """What the restarted engine says it replayed from the log."""
    m = re.search(
        r"replayed (?P<orders>\d+) orders and (?P<outcomes>\d+) outcomes after seq "
        r"(?P<after>\d+) into the state, (?P<detector>\d+) rows", child.output(1 << 20)
    )  # fmt: skip
    assert m is not None, child.output()
    return {k: int(v) for k, v in m.groupdict().items()}


def _outcome(order: pb.Order, fraud: bool) -> pb.ReportOutcomesRequest:
    req = pb.ReportOutcomesRequest()
    oc = req.outcomes.add(is_fraud=fraud)
    oc.order.CopyFrom(order)
    oc.known_at.FromSeconds(order.created_at.seconds + 3600)
    return req


def test_kill_9_under_load_then_restart_decides_as_an_uninterrupted_twin(
    models_dir: Path, history: pa.Table, tmp_path: Path,
    start_server: Callable[..., RunningServer],
) -> None:  # fmt: skip
    settings = _settings(tmp_path)
    load, nxt = orders_of(history.slice(8_000, 2_400)), orders_of(history.slice(10_400, 40))
    by_id = {o.order_id: o for o in load}
    child = ChildServer(models_dir, **settings).start()
    stub = pb_grpc.OrderRiskStub(child.channel)
    acked: set[str] = set()
    sent: set[str] = set()
    outcomes: dict[str, pb.ReportOutcomesRequest] = {}
    flying: list[tuple[str, grpc.Future]] = []
    killed_at = len(load) // 2
    for i, order in enumerate(load):
        if len(acked) >= killed_at:
            break
        flying.append((order.order_id, stub.Score.future(order, timeout=TIMEOUT_S)))
        sent.add(order.order_id)
        if i % 97 == 50:  # outcomes arrive while orders are scored
            past = load[i - 40]
            req = _outcome(past, fraud=i % 2 == 0)
            stub.ReportOutcomes(req, timeout=TIMEOUT_S)
            outcomes[past.order_id] = req
        while len(flying) >= WINDOW:
            oid, fut = flying.pop(0)
            fut.result()
            acked.add(oid)
    time.sleep(0.02)  # let the window's calls reach the engine
    child.kill()  # with calls in flight
    for oid, fut in flying:
        try:
            fut.result()
            acked.add(oid)
        except grpc.RpcError:
            pass

    restarted = ChildServer(models_dir, **settings).start()
    replayed = _replayed(restarted)
    assert replayed["after"] > 0 and replayed["orders"] > 0  # a snapshot, and orders after it
    logged = _log_rows(tmp_path / "log")
    kinds = logged.column("kind").to_pylist()
    ids = logged.column("order_id").to_pylist()
    decided = {i for i, k in zip(ids, kinds, strict=True) if k == "decision"}
    assert acked <= decided, f"{len(acked - decided)} acknowledged orders not in the log"
    assert decided <= sent  # the log holds nothing that was not sent: the rest was in flight
    assert {i for i, k in zip(ids, kinds, strict=True) if k == "outcome"} == set(outcomes)

    # The twin never stops: it is fed the same orders and outcomes, in the log's order.
    twin = start_server(log_dir=str(tmp_path / "twin-log"))
    seqs = logged.column("seq").to_pylist()
    entries: dict[int, tuple[str, list[str]]] = {}
    for s, k, i in zip(seqs, kinds, ids, strict=True):
        entries.setdefault(s, (k, []))[1].append(i)
    for s in sorted(entries):
        kind, members = entries[s]
        if kind == "decision":
            batch = pb.OrderList(orders=[by_id[i] for i in members])
            twin.stub.ScoreBatch(pb.ScoreBatchRequest(orders=batch), timeout=TIMEOUT_S)
        else:
            twin.stub.ReportOutcomes(outcomes[members[0]], timeout=TIMEOUT_S)

    again = pb_grpc.OrderRiskStub(restarted.channel)
    got = [again.Score(o, timeout=TIMEOUT_S) for o in nxt]
    want = [twin.stub.Score(o, timeout=TIMEOUT_S) for o in nxt]
    restarted.stop()
    assert [(d.action, d.score, d.path, list(d.reasons)) for d in got] == [
        (d.action, d.score, d.path, list(d.reasons)) for d in want
    ]
    twin.stop()
    mine, theirs = _log_rows(tmp_path / "log"), _log_rows(tmp_path / "twin-log")

    def features(t: pa.Table) -> np.ndarray:
        rows = dict(zip(t.column("order_id").to_pylist(), t.column("features").to_pylist(),
                        strict=True))  # fmt: skip
        return np.array([rows[o.order_id] for o in nxt])

    assert np.array_equal(features(mine), features(theirs), equal_nan=True)
    # Repeat customers make the comparison mean something: the state is not empty.
    assert np.count_nonzero(features(mine)[:, CUSTOMER_30D] > 0) >= len(nxt) // 4


def test_open_alerts_survive_kill_9(models_dir: Path, tmp_path: Path) -> None:
    settings = _settings(tmp_path)
    child = ChildServer(models_dir, **settings).start()
    stub = pb_grpc.OrderRiskStub(child.channel)
    rng = np.random.default_rng(1)
    t = MONDAY
    for _ in range(21):  # three quiet weeks, to learn the baseline
        stub.ReportEvent(pb.ReportEventRequest(events=_events(rng, t, 288, 3.0)))
        t += 288 * BUCKET
    time.sleep(0.6)  # a snapshot holds the baseline; the storm is only in the log
    storm = _events(rng, t, 4, 120.0) + _events(rng, t + 4 * BUCKET, 1, 3.0)
    stub.ReportEvent(pb.ReportEventRequest(events=storm), timeout=TIMEOUT_S)
    before = stub.ListAlerts(pb.ListAlertsRequest(), timeout=TIMEOUT_S).alerts
    assert [a.series for a in before] == [SERIES]
    child.kill()

    restarted = ChildServer(models_dir, **settings).start()
    replayed = _replayed(restarted)
    assert replayed["after"] > 0 and replayed["detector"] > 0
    after = pb_grpc.OrderRiskStub(restarted.channel).ListAlerts(pb.ListAlertsRequest()).alerts
    restarted.stop()
    assert [(a.series, a.kind, a.start, a.actual) for a in after] == [
        (a.series, a.kind, a.start, a.actual) for a in before
    ]
