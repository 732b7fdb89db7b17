"""Training/serving parity and leakage: the same kernels give the same features both ways."""

from __future__ import annotations

import numpy as np
import pyarrow as pa

from engine import features
from engine.artifacts import ModelSet
from engine.encode import encode
from engine.history import history_from_table
from engine.pipeline import Engine
from engine.replay import replay_history
from engine.velocity import VelocityState
from tests.conftest import CAPACITY


def _slice(history: pa.Table, n: int = 6000):
    """The first n orders, their labels known six hours later (so labels arrive inside)."""
    table = history.slice(0, n).drop_columns(["label_known_at"])
    return history_from_table(table, label_delay_days=0.25)


def test_offline_replay_equals_online_events(history) -> None:
    """Replaying a history offline == feeding the serving entry points event by event."""
    h = _slice(history)
    enc = encode(h.table)
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
    t = encode(h.table).t
    cutoff = float(np.median(t))
    flipped = h.labels.copy()
    late = (h.known_at >= cutoff) & (h.labels >= 0)
    flipped[late] = 1 - flipped[late]

    def scores(labels):
        engine = Engine(models, VelocityState(CAPACITY))
        return replay_history(engine, h.table, labels, h.known_at).score

    a, b = scores(h.labels), scores(flipped)
    before = t <= cutoff
    np.testing.assert_array_equal(a[before], b[before])
    assert not np.array_equal(a[~before], b[~before])  # the test can fail: later orders see them


def test_batch_and_single_order_scoring_agree(history, models: ModelSet) -> None:
    table = _slice(history, 1500).table.drop_columns(["is_fraud", "label_known_at"])
    batch = Engine(models, VelocityState(CAPACITY)).score(table)
    single_engine = Engine(models, VelocityState(CAPACITY))
    singles = [single_engine.score(table.slice(i, 1)) for i in range(table.num_rows)]
    np.testing.assert_allclose(batch.score, [d.score[0] for d in singles], rtol=0, atol=1e-12)
    np.testing.assert_array_equal(batch.action, [d.action[0] for d in singles])
    np.testing.assert_array_equal(batch.path, [d.path[0] for d in singles])
    assert batch.order_ids == [d.order_ids[0] for d in singles]
