"""Shared fixtures: a simulated history and real models trained on it, built once per session."""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from engine import artifacts
from engine.artifacts import ModelSet
from training.simulate import simulate
from training.train import train

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
