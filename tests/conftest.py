"""Shared fixtures: a simulated history and real models trained on it, built once per session."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from engine.models import artifacts
from engine.models.artifacts import ModelSet
from training.simulate import simulate
from training.train import train

if TYPE_CHECKING:
    from tests.grpc_harness import RunningServer

CAPACITY = 1 << 16  # velocity slots in tests: small enough to be cheap, large enough not to evict


@pytest.fixture(scope="session")
def history() -> pa.Table:
    return simulate(21, seed=11, orders_per_day=1500)


@pytest.fixture(scope="session")
def history_path(history: pa.Table, tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("history") / "orders.parquet"
    pq.write_table(history, path)
    return path


@pytest.fixture(scope="session")
def models_dir(history_path: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("models") / "m"
    train(history_path, out, capacity=CAPACITY, progress=False, max_rounds=150)
    return out


@pytest.fixture(scope="session")
def models(models_dir: Path) -> ModelSet:
    m = artifacts.load(models_dir)
    assert not m.problems, m.problems
    return m


@pytest.fixture
def start_server(models_dir: Path) -> Iterator[Callable[..., RunningServer]]:
    """Factory of fresh servers (fresh velocity state), all stopped and checked at teardown."""
    from tests.grpc_harness import RunningServer  # imports CAPACITY from here

    started: list[RunningServer] = []

    def start(**settings: Any) -> RunningServer:
        s = RunningServer(models_dir, **settings)
        started.append(s)
        return s.start()

    yield start
    problems = []
    for s in started:  # stop every server, then report the first that misbehaved
        try:
            s.stop()
        except AssertionError as exc:
            problems.append(exc)
    if problems:
        raise problems[0]


@pytest.fixture(params=["fronts", "one_process"])
def server(
    request: pytest.FixtureRequest, start_server: Callable[..., RunningServer]
) -> RunningServer:
    """A fresh server, once with two gRPC front processes before the engine (the default
    layout) and once taking calls in the engine's own process."""
    if request.param == "one_process":
        return start_server(single_process=True)
    return start_server()
