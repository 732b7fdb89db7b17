"""kill -9 while cases are being opened: the restarted engine catches the store up from the
decision log, so every REVIEW that was answered has its case. And the reviews CLI."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pyarrow as pa
import pytest
from ordersight.v1 import risk_pb2 as pb
from ordersight.v1 import risk_pb2_grpc as pb_grpc

from engine.cli import main
from engine.store import open_store
from tests.fuzzing import ChildServer
from tests.grpc_harness import TIMEOUT_S, RunningServer, orders_of


def test_kill_9_loses_no_answered_review(
    models_dir: Path, history: pa.Table, tmp_path: Path
) -> None:
    settings = {
        "store": tmp_path / "store.db", "log_dir": tmp_path / "log", "log_durability": "fsync",
        "single_process": "true", "store_queue_max": 2,  # the writer falls behind: catch-ups
    }  # fmt: skip
    child = ChildServer(models_dir, **settings).start()
    stub = pb_grpc.OrderRiskStub(child.channel)
    orders = orders_of(history.slice(3_000, 2_000))
    reviewed: set[str] = set()
    for i in range(0, len(orders), 50):
        got = stub.ScoreBatch(
            pb.ScoreBatchRequest(orders=pb.OrderList(orders=orders[i : i + 50])), timeout=TIMEOUT_S
        )
        reviewed |= {d.order_id for d in got.decisions if d.action == pb.REVIEW}
    child.kill()
    assert len(reviewed) > 20
    restarted = ChildServer(models_dir, **settings).start()  # SERVING once caught up
    try:
        store = open_store(str(tmp_path / "store.db"), migrate=False)
        try:
            cases = {c.order_id for c in store.list_cases(_all(), 100_000)}
            indexed = store.count("decisions")
        finally:
            store.close()
        assert reviewed <= cases
        assert indexed == len(orders)
    finally:
        restarted.stop()


def _all():  # type: ignore[no-untyped-def]
    from engine.store.base import CaseFilter

    return CaseFilter(status="")


def test_the_reviews_command_lists_shows_and_resolves(
    history: pa.Table, tmp_path: Path, start_server: Callable[..., RunningServer],
    capsys: pytest.CaptureFixture[str],
) -> None:  # fmt: skip
    srv = start_server(single_process=True, store=str(tmp_path / "s.db"))
    got = srv.stub.ScoreBatch(
        pb.ScoreBatchRequest(orders=pb.OrderList(orders=orders_of(history.slice(0, 1_500)))),
        timeout=TIMEOUT_S,
    )
    srv.server.reviews.flush()
    first = next(d for d in got.decisions if d.action == pb.REVIEW)
    addr = ["--addr", f"127.0.0.1:{srv.port}"]
    assert main(["reviews", "list", *addr, "-n", "500"]) == 0
    out = capsys.readouterr().out
    assert first.order_id in out and "open in the queue" in out
    assert main(["reviews", "show", first.order_id, *addr]) == 0
    out = capsys.readouterr().out
    assert first.reasons[0].message in out
    assert main(["reviews", "resolve", first.order_id, "--verdict", "legitimate",
                 "--reviewer", "ana", *addr]) == 0  # fmt: skip
    assert "resolved LEGITIMATE by ana" in capsys.readouterr().out
    again = main(["reviews", "resolve", first.order_id, "--verdict", "fraud", "--reviewer", "bo",
                  *addr])  # fmt: skip
    assert again == 1 and "ALREADY_EXISTS" in capsys.readouterr().err
    assert main(["reviews", "show", "nope", *addr]) == 1
    assert "NOT_FOUND" in capsys.readouterr().err
