"""`score-file`: replay a history in time order through the serving code."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from engine import artifacts, features
from engine.encode import encode
from engine.history import read_history
from engine.pipeline import Decisions, Engine
from engine.policy import ACTION_NAMES, PATH_NAMES
from engine.velocity import VelocityState

CHUNK = 1 << 16


def replay_history(
    engine: Engine,
    table: pa.Table,
    labels: np.ndarray,
    known_at: np.ndarray,
    explain: bool = True,
) -> Decisions:
    """Features for every order as of its time (labels arriving when known), then the same
    `Engine.decide` the server runs, in chunks. Decisions come back in the table's row order."""
    enc = encode(table)
    X = features.replay(enc, labels, known_at, engine.state)
    ids = table.column("order_id").to_pylist()
    parts = [
        engine.decide(
            ids[lo : lo + CHUNK],
            enc.take(slice(lo, lo + CHUNK)),
            X[lo : lo + CHUNK],
            explain=explain,
        )
        for lo in range(0, max(enc.n, 1), CHUNK)
    ]
    return Decisions.concat(parts)


def score_file(
    models: str | Path,
    orders: str | Path,
    out: str | Path,
    label_delay_days: float = 7.0,
    capacity: int = 1 << 20,
) -> int:
    hist = read_history(orders, label_delay_days)
    engine = Engine(artifacts.load(models), VelocityState(capacity))
    # The output has no reason codes, so none are computed.
    d = replay_history(engine, hist.table, hist.labels, hist.known_at, explain=False)
    result = pa.table(
        {
            "order_id": pa.array(d.order_ids, pa.string()),
            "score": pa.array(d.score, pa.float64()),
            "action": pa.array([ACTION_NAMES[a] for a in d.action.tolist()], pa.string()),
            "path": pa.array([PATH_NAMES[p] for p in d.path.tolist()], pa.string()),
        }
    )
    out = Path(out)
    if out.suffix == ".csv":
        pacsv.write_csv(result, out)
    else:
        pq.write_table(result, out)
    return len(d)
