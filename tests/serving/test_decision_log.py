"""The decision log over a real server: what a row holds, fsync before the answer, a torn
tail repaired on open, rotation and retention, the CLI; and the writer's limits on real
files."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from pathlib import Path

import grpc
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from ordersight.v1 import risk_pb2 as pb

from engine.cli import main
from engine.config import load_settings
from engine.decision.decisions import Decisions
from engine.decision_log import segments
from engine.decision_log.records import DECISION, Entry
from engine.decision_log.writer import DecisionLog
from engine.errors import ModelLoadError
from engine.features.matrix import N_FEATURES
from engine.serving.server import Server
from engine.serving.snapshots import NAME
from tests.conftest import CAPACITY
from tests.grpc_harness import TIMEOUT_S, RunningServer, featurize_held, orders_of
from tests.monitoring.test_alerts import MONDAY


def _rows(folder: Path) -> list[dict]:
    return [r for b in segments.read_folder(folder) for r in b.to_pylist()]


def test_every_decision_outcome_and_event_is_logged_before_its_answer(
    start_server: Callable[..., RunningServer], history: pa.Table, tmp_path: Path
) -> None:
    srv = start_server(log_dir=str(tmp_path), log_durability="fsync")
    orders = orders_of(history.slice(3_000, 60))
    answers = {}
    for o in orders[:20]:
        d = srv.stub.Score(o, timeout=TIMEOUT_S)
        answers[o.order_id] = d
        # fsync mode: the answer comes after the row is on disk, readable by anyone
        assert o.order_id in {r["order_id"] for r in _rows(tmp_path)}
    batch = srv.stub.ScoreBatch(pb.ScoreBatchRequest(orders=pb.OrderList(orders=orders[20:])))
    answers.update({d.order_id: d for d in batch.decisions})
    req = pb.ReportOutcomesRequest()
    req.outcomes.add(is_fraud=True).order.CopyFrom(orders[0])
    srv.stub.ReportOutcomes(req, timeout=TIMEOUT_S)
    ev = pb.CheckoutEvent(channel="app", code="PAYMENT_TIMEOUT")
    ev.time.FromSeconds(int(MONDAY))
    srv.stub.ReportEvent(pb.ReportEventRequest(events=[ev]), timeout=TIMEOUT_S)
    srv.stop()

    rows = _rows(tmp_path)
    kinds = [r["kind"] for r in rows]
    assert kinds == ["decision"] * 60 + ["outcome", "event"]
    seqs = [r["seq"] for r in rows]
    assert seqs == sorted(seqs) and len(set(seqs[:20])) == 20  # a micro-batch per lone call
    by_id = {o.order_id: o for o in orders}
    for r in rows[:60]:
        o, d = by_id[r["order_id"]], answers[r["order_id"]]
        assert (r["customer_id"], r["currency"], r["amount_minor"], r["channel"] or "") == (
            o.customer_id, o.currency, o.amount_minor, o.channel,
        )  # fmt: skip
        assert r["created_at"].timestamp() == pytest.approx(o.created_at.ToMicroseconds() / 1e6)
        assert (r["score"], r["model_version"]) == (d.score, d.model_version)
        assert r["action"] == pb.Action.Name(d.action) and r["path"] == pb.Path.Name(d.path)
        assert [x["code"] for x in r["reasons"]] == [x.code for x in d.reasons]
        assert r["review_triggers"] == list(d.review_triggers)
        assert len(r["features"]) == N_FEATURES and r["latency_us"] >= 0
        assert r["champion_version"] == d.model_version and r["challenger_version"] is None
    outcome, event = rows[60], rows[61]
    assert (outcome["order_id"], outcome["is_fraud"], outcome["features"]) == (
        orders[0].order_id, True, None,
    )  # fmt: skip
    assert (event["channel"], event["code"]) == ("app", "PAYMENT_TIMEOUT")
    metrics = srv.server.hub.registry  # type: ignore[union-attr]
    assert metrics.get_sample_value("ordersight_log_rows_total", {"kind": "decision"}) == 60
    assert metrics.get_sample_value("ordersight_log_bytes_total") > 0
    assert metrics.get_sample_value("ordersight_log_fsync_seconds_count") >= 20


def test_a_torn_tail_is_cut_on_open_and_every_whole_row_is_kept(
    start_server: Callable[..., RunningServer], history: pa.Table, tmp_path: Path
) -> None:
    orders = orders_of(history.slice(4_000, 30))
    srv = start_server(log_dir=str(tmp_path))
    for o in orders[:10]:
        srv.stub.Score(o, timeout=TIMEOUT_S)
    srv.stop()
    (path,) = segments.segments(tmp_path)
    whole = path.read_bytes()
    cut = whole[: len(whole) - 8 - 300]  # no end marker, the last batch cut short
    path.write_bytes(cut)
    assert segments.scan(path).torn
    srv = start_server(log_dir=str(tmp_path))  # opens: repairs, never fails
    for o in orders[10:20]:
        srv.stub.Score(o, timeout=TIMEOUT_S)
    srv.stop()
    ids = [r["order_id"] for r in _rows(tmp_path)]
    assert ids == [o.order_id for o in orders[:9]] + [o.order_id for o in orders[10:20]]
    assert [segments.scan(p).torn for p in segments.segments(tmp_path)] == [False, False]


def test_a_damaged_segment_followed_by_others_stops_the_start(
    start_server: Callable[..., RunningServer], models_dir: Path, history: pa.Table,
    tmp_path: Path,
) -> None:  # fmt: skip
    for part in range(2):
        srv = start_server(log_dir=str(tmp_path))
        srv.stub.Score(orders_of(history.slice(4_100 + part, 1))[0], timeout=TIMEOUT_S)
        srv.stop()
    first = segments.segments(tmp_path)[0]
    first.write_bytes(first.read_bytes()[:-100])
    settings = load_settings(
        env={}, models=str(models_dir), log_dir=str(tmp_path), state_capacity=CAPACITY
    )
    with pytest.raises(ModelLoadError, match="is damaged .* and newer segments follow it"):
        Server(settings)


def test_a_log_missing_entries_after_the_snapshot_stops_the_start(
    start_server: Callable[..., RunningServer], models_dir: Path, history: pa.Table,
    tmp_path: Path,
) -> None:  # fmt: skip
    state, logs = tmp_path / "state", tmp_path / "log"
    settings = {"snapshot_dir": str(state), "snapshot_every_s": 0, "log_dir": str(logs)}
    old = b""
    for part in range(3):  # three runs, a segment each; keep the first run's snapshot
        srv = start_server(**settings)
        for o in orders_of(history.slice(4_200 + 5 * part, 5)):
            srv.stub.Score(o, timeout=TIMEOUT_S)
        srv.stop()
        old = old or (state / NAME).read_bytes()
    segments.segments(logs)[1].unlink()  # seqs 6..10: after the old snapshot, gone
    (state / NAME).write_bytes(old)
    config = load_settings(env={}, models=str(models_dir), state_capacity=CAPACITY, **settings)
    with pytest.raises(
        ModelLoadError, match="the decision log misses entries 6..10 after the snapshot"
    ):
        Server(config)


def test_a_graceful_restart_replays_nothing_twice(
    start_server: Callable[..., RunningServer], history: pa.Table, tmp_path: Path
) -> None:
    state, logs = tmp_path / "state", tmp_path / "log"
    settings = {"snapshot_dir": str(state), "snapshot_every_s": 0, "log_dir": str(logs)}
    orders = orders_of(history.slice(4_400, 30))
    srv = start_server(**settings)
    for o in orders[:20]:
        srv.stub.Score(o, timeout=TIMEOUT_S)
    srv.stop()
    again = start_server(**settings)
    assert again.server is not None and again.server.replayed is not None
    assert again.server.replayed.orders == 0  # the final snapshot holds them all
    assert again.server.engine.orders_seen == 20
    again.stub.Score(orders[20], timeout=TIMEOUT_S)
    seqs = [r["seq"] for r in _rows(logs)]
    again.stop()
    assert seqs == list(range(1, 22))


def test_the_cli_tails_exports_and_summarizes(
    start_server: Callable[..., RunningServer], history: pa.Table, tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:  # fmt: skip
    logs = tmp_path / "log"
    orders = orders_of(history.slice(4_500, 12))
    srv = start_server(log_dir=str(logs))
    for o in orders:
        srv.stub.Score(o, timeout=TIMEOUT_S)
    srv.stop()
    assert main(["log", "tail", "--dir", str(logs), "-n", "3"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert len(out) == 3 and [line.split()[3] for line in out] == [o.order_id for o in orders[-3:]]
    target = tmp_path / "all.parquet"
    assert main(["log", "export", "--dir", str(logs), "--to", str(target)]) == 0
    table = pq.read_table(target)
    assert table.column("order_id").to_pylist() == [o.order_id for o in orders]
    assert main(["log", "export", "--dir", str(logs), "--to", str(target), "--since",
                 "2999-01-01"]) == 0  # fmt: skip
    assert pq.read_table(target).num_rows == 0
    assert main(["log", "stats", "--dir", str(logs)]) == 0
    out = capsys.readouterr().out
    assert "1 segments" in out and "decision 12" in out and "whole" in out
    assert main(["log", "export", "--dir", str(logs), "--to", str(tmp_path / "x.json")]) == 2
    assert "must end in .parquet" in capsys.readouterr().err
    assert main(["log", "export", "--dir", str(logs), "--to", str(target), "--since", "soon"]) == 2
    assert "--since: 'soon' is not an ISO 8601 time" in capsys.readouterr().err
    assert main(["log", "stats", "--dir", str(tmp_path / "nowhere")]) == 2


# --- the writer on its own, on real files ------------------------------------------------------


def _entry(seq: int, n: int = 4) -> Entry:
    t = np.full(n, 1.7e9 + seq)
    d = Decisions(
        [f"o{seq}-{i}" for i in range(n)], np.ones(n, np.int8), np.zeros(n), np.zeros(n),
        np.zeros(n), np.ones(n, np.int8), [[]] * n, [[]] * n, [""] * n, "v",
    )  # fmt: skip
    X = np.zeros((n, N_FEATURES))
    return Entry(DECISION, seq, d.order_ids, t, [None] * n, None, X=X, decisions=d, champion="v")


def _write(log: DecisionLog, entries: list[Entry]) -> None:
    async def go() -> None:
        log.start(asyncio.get_running_loop())
        for e in entries:
            log.append(e)
        waiter = log.durable(entries[-1].seq)
        if waiter is not None:
            await waiter
        log.close()

    asyncio.run(go())


def test_entries_are_written_in_seq_order_whatever_order_they_arrive_in(tmp_path: Path) -> None:
    log = DecisionLog(tmp_path)
    seqs = [log.reserve() for _ in range(6)]
    _write(log, [_entry(s) for s in (seqs[2], seqs[0], seqs[1], seqs[5], seqs[3], seqs[4])])
    assert sorted(set(r["seq"] for r in _rows(tmp_path))) == seqs
    assert [r["seq"] for r in _rows(tmp_path)] == sorted(r["seq"] for r in _rows(tmp_path))


def test_segments_rotate_by_size_and_retention_keeps_what_a_restart_needs(tmp_path: Path) -> None:
    keep = {"after": 0}
    log = DecisionLog(
        tmp_path, "batched", segment_bytes=1, retention_bytes=1, keep_after=lambda: keep["after"]
    )
    entries = [_entry(log.reserve()) for _ in range(5)]

    async def go() -> None:
        log.start(asyncio.get_running_loop())
        for e in entries:  # one group each: every group starts a new segment
            log.append(e)
            while log.durable_seq < e.seq:
                await asyncio.sleep(0.005)
        keep["after"] = 3  # a snapshot now holds seqs 1..3: segments 1 and 2 may go
        log.append(_entry(log.reserve()))
        log.close()

    asyncio.run(go())
    names = [segments.first_seq(p) for p in segments.segments(tmp_path)]
    assert names == [4, 5, 6]  # every segment before the first with rows after seq 3 is gone
    assert {r["seq"] for r in _rows(tmp_path)} == {4, 5, 6}


def test_a_full_queue_makes_the_engine_wait_not_drop(tmp_path: Path) -> None:
    log = DecisionLog(tmp_path, "off", queue_max=2)
    entries = [_entry(log.reserve()) for _ in range(50)]
    t0 = time.monotonic()
    _write(log, entries)
    assert time.monotonic() - t0 < TIMEOUT_S
    assert len(_rows(tmp_path)) == 50 * 4


def test_a_score_batch_cancelled_while_its_orders_join_the_state_is_still_logged(
    start_server: Callable[..., RunningServer], history: pa.Table, tmp_path: Path
) -> None:
    """The caller gives up while the engine featurizes its chunk: the orders are in the
    state, so their entry is logged, and later fsync-mode calls are not stuck behind it."""
    srv = start_server(log_dir=str(tmp_path), log_durability="fsync")
    orders = orders_of(history.slice(4_600, 20))
    with featurize_held(srv) as entered:
        big = srv.stub.ScoreBatch.future(
            pb.ScoreBatchRequest(orders=pb.OrderList(orders=orders)), timeout=0.3
        )
        assert entered.wait(TIMEOUT_S)
        code = big.exception(timeout=TIMEOUT_S).code()  # type: ignore[union-attr]
        assert code == grpc.StatusCode.DEADLINE_EXCEEDED
    after = orders_of(history.slice(4_620, 1))[0]
    assert srv.stub.Score(after, timeout=TIMEOUT_S).order_id == after.order_id
    srv.stop()
    ids = [r["order_id"] for r in _rows(tmp_path)]
    assert ids == [o.order_id for o in orders] + [after.order_id]
