"""Velocity snapshots: a restarted engine decides as an uninterrupted one would; a snapshot
that does not match or does not read stops the start with the reason."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest
from ordersight.v1 import risk_pb2 as pb

from engine.config import load_settings
from engine.errors import ModelLoadError
from engine.serving.server import Server
from engine.serving.snapshots import NAME
from tests.conftest import CAPACITY
from tests.grpc_harness import TIMEOUT_S, RunningServer, orders_of


def test_a_restart_from_the_snapshot_decides_as_an_uninterrupted_engine(
    start_server: Callable[..., RunningServer], history: pa.Table, tmp_path: Path
) -> None:
    before, after = orders_of(history.slice(5_000, 300)), orders_of(history.slice(5_300, 40))
    first = start_server(snapshot_dir=str(tmp_path), snapshot_every_s=0)
    first.stub.ScoreBatch(pb.ScoreBatchRequest(orders=pb.OrderList(orders=before)))
    first.stop()  # graceful: the final snapshot
    assert (tmp_path / NAME).is_file()
    restarted = start_server(snapshot_dir=str(tmp_path), snapshot_every_s=0)
    twin = start_server()
    twin.stub.ScoreBatch(pb.ScoreBatchRequest(orders=pb.OrderList(orders=before)))
    got = [restarted.stub.Score(o, timeout=TIMEOUT_S) for o in after]
    want = [twin.stub.Score(o, timeout=TIMEOUT_S) for o in after]
    assert [(d.action, d.score, d.path) for d in got] == [(d.action, d.score, d.path) for d in want]
    assert restarted.server is not None and twin.server is not None
    assert np.array_equal(restarted.server.engine.state.words, twin.server.engine.state.words)
    assert restarted.server.engine.orders_seen == twin.server.engine.orders_seen


def test_snapshots_are_taken_while_serving(
    start_server: Callable[..., RunningServer], history: pa.Table, tmp_path: Path
) -> None:
    srv = start_server(snapshot_dir=str(tmp_path), snapshot_every_s=0.2)
    for o in orders_of(history.slice(6_000, 20)):
        srv.stub.Score(o, timeout=TIMEOUT_S)
    assert srv.server is not None
    metrics, end = srv.server.hub.registry, time.monotonic() + TIMEOUT_S
    while not (metrics.get_sample_value("ordersight_snapshot_bytes") or 0) > 0:
        assert time.monotonic() < end, "no snapshot taken while serving"
        time.sleep(0.05)
    assert (tmp_path / NAME).is_file()
    age = metrics.get_sample_value("ordersight_snapshot_age_seconds")
    assert age is not None and age >= 0


def _snapshot(start_server: Callable[..., RunningServer], folder: Path) -> Path:
    start_server(snapshot_dir=str(folder), snapshot_every_s=0).stop()
    return folder / NAME


def test_a_snapshot_of_another_table_size_stops_the_start(
    start_server: Callable[..., RunningServer], models_dir: Path, tmp_path: Path
) -> None:
    _snapshot(start_server, tmp_path)
    settings = load_settings(
        env={}, models=str(models_dir), snapshot_dir=str(tmp_path), state_capacity=CAPACITY * 2
    )
    with pytest.raises(ModelLoadError, match="capacity is 65536, this engine's is 131072"):
        Server(settings)


def test_a_snapshot_that_does_not_read_stops_the_start(
    start_server: Callable[..., RunningServer], models_dir: Path, tmp_path: Path
) -> None:
    path = _snapshot(start_server, tmp_path)
    path.write_bytes(path.read_bytes()[:5000])  # torn, as if written without the rename
    settings = load_settings(
        env={}, models=str(models_dir), snapshot_dir=str(tmp_path), state_capacity=CAPACITY
    )
    with pytest.raises(ModelLoadError, match="does not read"):
        Server(settings)


def test_snapshots_and_replication_together_are_refused(models_dir: Path, tmp_path: Path) -> None:
    settings = load_settings(
        env={}, models=str(models_dir), snapshot_dir=str(tmp_path),
        replication_url="nats://127.0.0.1:4222",
    )  # fmt: skip
    with pytest.raises(ValueError, match="would count twice|count twice"):
        Server(settings)
