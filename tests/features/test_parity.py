"""Training/serving parity and leakage: the same kernels give the same features both ways."""

from __future__ import annotations

import numpy as np
import pyarrow as pa

from engine.codec.arrow_orders import decode_table
from engine.codec.history import history_from_table
from engine.decision.cascade import Engine
from engine.decision.decisions import Decisions
from engine.decision.score_file import replay_history
from engine.features import matrix as features
from engine.features.velocity import VelocityState
from engine.models.artifacts import ModelSet
from tests.conftest import CAPACITY
from tests.grpc_harness import assert_decisions_equal


def _slice(history: pa.Table, n: int = 6000):
    """The first n orders, their labels known six hours later (so labels arrive inside)."""
    table = history.slice(0, n).drop_columns(["label_known_at"])
    return history_from_table(table, label_delay_days=0.25)


def test_offline_replay_equals_online_events(history) -> None:
    """Replaying a history offline == feeding the serving entry points event by event."""
    h = _slice(history)
    enc = h.arrays
    offline = features.replay(enc, h.labels, h.known_at, VelocityState(CAPACITY))

    state = VelocityState(CAPACITY)
    online = np.full_like(offline, np.nan)
    kinds, rows, times = features.replay_events(enc.t, h.known_at, h.labels)
    # Group consecutive events of one kind, as a server receives Score and ReportOutcomes calls.
    breaks = np.flatnonzero(np.diff(kinds)) + 1
    for seg in np.split(np.arange(kinds.size), breaks):
        r = rows[seg]
        sub = enc.take(r)
        if kinds[seg[0]] == 0:
            online[r] = features.compute(sub, state)
        else:
            state.report_labels(times[seg], h.labels[r], sub.keys)
    np.testing.assert_array_equal(online, offline)


def test_no_leakage_from_labels_not_yet_known(history, models: ModelSet) -> None:
    h = _slice(history)
    t = h.arrays.t
    cutoff = float(np.median(t))
    flipped = h.labels.copy()
    late = (h.known_at >= cutoff) & (h.labels >= 0)
    flipped[late] = 1 - flipped[late]

    def scores(labels):
        engine = Engine(models, VelocityState(CAPACITY))
        return replay_history(engine, h.ids, h.arrays, labels, h.known_at).score

    a, b = scores(h.labels), scores(flipped)
    before = t <= cutoff
    np.testing.assert_array_equal(a[before], b[before])
    assert not np.array_equal(a[~before], b[~before])  # the test can fail: later orders see them


def test_batch_and_single_order_scoring_agree(history, models: ModelSet) -> None:
    orders = decode_table(_slice(history, 1500).table.drop_columns(["is_fraud", "label_known_at"]))
    batch = Engine(models, VelocityState(CAPACITY)).score(orders)
    single_engine = Engine(models, VelocityState(CAPACITY))
    singles = [
        single_engine.score_arrays(orders.ids[i : i + 1], orders.arrays.take(slice(i, i + 1)))
        for i in range(orders.n)
    ]
    assert_decisions_equal(batch, Decisions.concat(singles))
