"""`score-file`: a history's orders decided by exactly the serving code, in time order.

The history is replayed through the velocity kernel (labels arriving when they became
known) and each chunk is decided by the same `Engine.decide` the server runs.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from engine.codec.history import read_history
from engine.decision.cascade import Engine
from engine.decision.decisions import Decisions
from engine.decision.policy import ACTION_NAMES, PATH_NAMES
from engine.errors import InvalidInput
from engine.features import matrix as features
from engine.features.velocity import VelocityState
from engine.models import artifacts
from engine.orders.arrays import OrderArrays

CHUNK = 1 << 14


def replay_history(
    engine: Engine,
    ids: list[str],
    enc: OrderArrays,
    labels: np.ndarray,
    known_at: np.ndarray,
    explain: bool = True,
) -> Decisions:
    """Features for every order as of its time (labels arriving when known), then the same
    `Engine.decide` the server runs, in chunks. Decisions come back in the table's row order.

    Two threads: while one chunk is decided, the next one's events go through the velocity
    kernel (which releases the GIL), so the replay takes about as long as its slower half.
    The state is only touched by the replaying thread, the models only by the deciding one.
    """
    X = np.empty((enc.n, features.N_FEATURES), dtype=np.float32)
    if enc.n == 0:
        return engine.decide(ids, enc, X, explain=explain)
    with ThreadPoolExecutor(1, thread_name_prefix="decide") as pool:
        pending = [
            pool.submit(engine.decide, ids[lo:hi], enc.take(slice(lo, hi)), X[lo:hi], None, explain)
            for lo, hi in features.replay_chunks(enc, labels, known_at, engine.state, X, CHUNK)
        ]
        return Decisions.concat([p.result() for p in pending])


def _names(names: dict[int, str], codes: np.ndarray) -> pa.Array:
    table = pa.array([names.get(c, "") for c in range(max(names) + 1)], pa.string())
    return pc.take(table, pa.array(codes))


def score_file(
    models: str | Path,
    orders: str | Path,
    out: str | Path,
    label_delay_days: float = 7.0,
    capacity: int = 1 << 20,
) -> int:
    out = Path(out)
    if out.suffix not in (".csv", ".parquet"):  # before the work, not after it
        raise InvalidInput(
            f"--out: {out} must end in .parquet or .csv (the formats written)", "out"
        )
    hist = read_history(orders, label_delay_days)
    engine = Engine(artifacts.load(models), VelocityState(capacity))
    # The output has no reason codes, so none are computed.
    d = replay_history(engine, hist.ids, hist.arrays, hist.labels, hist.known_at, explain=False)
    result = pa.table(
        {
            "order_id": hist.table.column("order_id"),  # decisions are in the table's order
            "score": pa.array(d.score, pa.float64()),
            "action": _names(ACTION_NAMES, d.action),
            "path": _names(PATH_NAMES, d.path),
        }
    )
    if out.suffix == ".csv":
        pacsv.write_csv(result, out)
    else:
        pq.write_table(result, out)
    return len(d)
