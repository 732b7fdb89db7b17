"""Warm start: a history replayed into a new engine's velocity state at start-up, so a
restarted engine does not see every returning customer as new."""

from __future__ import annotations

import numpy as np

from engine.codec.history import read_history
from engine.decision.cascade import Engine
from engine.features import matrix as features


def warm_state(engine: Engine, history: str, label_delay_days: float) -> int:
    """Replay `history` into the engine's state, with the labels known by its last order
    (later ones arrive through ReportOutcomes); returns how many orders it held."""
    hist = read_history(history, label_delay_days)
    enc = hist.arrays
    as_of = float(enc.t.max(initial=-np.inf))
    labels = np.where(hist.known_at <= as_of, hist.labels, -1).astype(np.int8)
    features.replay(enc, labels, hist.known_at, engine.state)
    if enc.n:
        engine.latest_order_time = max(engine.latest_order_time, float(enc.t.max()))
        engine.orders_seen += enc.n
    return enc.n
