"""A routing text model trained once per session on simulated cases (subject and body), and
the store fixtures of the governance tests (SQLite, and a real PostgreSQL)."""

from __future__ import annotations

from pathlib import Path

import pytest

from engine.routing.case_sim import simulate_cases
from engine.routing.text_fit import TrainOptions
from engine.routing.text_model import train
from tests.governance.conftest import postgres, store

__all__ = ["postgres", "routing_models", "store"]


@pytest.fixture(scope="session")
def routing_models(tmp_path_factory: pytest.TempPathFactory) -> Path:
    cases = simulate_cases(900, seed=3)
    out = tmp_path_factory.mktemp("routing") / "text"
    train(
        [cases.column(c).to_pylist() for c in ("subject", "body")],
        cases.column("queue").to_pylist(),
        cases.column("priority").to_pylist(),
        TrainOptions(c_grid=(1.0,)),
        out,
        text_cols=("subject", "body"),
        label_col="queue",
        priority_col="priority",
    )
    return out
