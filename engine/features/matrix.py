"""The feature matrix: order features plus velocity features, for serving and training alike.

`compute` is the serving path (orders only, in arrival order); `replay` is the offline path
(a whole history with its label events merged in time order). Both end in the same
`VelocityState.process` kernel and the same `_order_block`, so a model never sees a feature
computed differently from the one it was trained on (tested in tests/features/test_parity.py).

Features are float32: onnxruntime's tree ensembles compare in float32, so training,
tier one, tier two and the explanations all see the same float32 values.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np

from engine.features.velocity import VelocityState, feature_names
from engine.jit import njit, njit_inline
from engine.orders.arrays import OrderArrays

ORDER_FEATURES: tuple[str, ...] = (
    "amount",
    "amount_vs_customer_avg",
    "account_age_days",
    "key_account",
    "billing_shipping_mismatch",
    "ip_billing_mismatch",
    "ip_shipping_mismatch",
    "n_lines",
    "n_units",
    "risky_category_share",
    "hour_utc",
    "note_len",
)
FEATURE_NAMES: tuple[str, ...] = ORDER_FEATURES + tuple(feature_names())
N_FEATURES = len(FEATURE_NAMES)
_V0 = len(ORDER_FEATURES)
_CUST_CNT_30D = FEATURE_NAMES.index("customer_id.cnt_30d")
_CUST_AMT_30D = FEATURE_NAMES.index("customer_id.amt_30d")


@njit
def _order_columns(
    t, amount, age, key_account, billing, shipping, ip, n_lines, n_units, risky, note_len, X
):
    """The ORDER_FEATURES columns of X, row by row, in float64 and stored as float32.

    A country mismatch is 1.0 or 0.0, NaN when either side is unknown (hash 0)."""
    for i in range(X.shape[0]):
        X[i, 0] = amount[i]
        cnt = np.float64(X[i, _CUST_CNT_30D])
        amt = np.float64(X[i, _CUST_AMT_30D])
        X[i, 1] = amount[i] / (amt / cnt) if cnt > 0.05 else np.nan
        X[i, 2] = age[i]
        X[i, 3] = key_account[i]
        X[i, 4] = _mismatch(billing[i], shipping[i])
        X[i, 5] = _mismatch(ip[i], billing[i])
        X[i, 6] = _mismatch(ip[i], shipping[i])
        X[i, 7] = n_lines[i]
        X[i, 8] = n_units[i]
        X[i, 9] = risky[i]
        X[i, 10] = (t[i] % 86400.0) / 3600.0
        X[i, 11] = note_len[i]


@njit_inline
def _mismatch(a, b):
    if a == 0 or b == 0:
        return np.nan
    return 1.0 if a != b else 0.0


def _order_block(enc: OrderArrays, X: np.ndarray) -> None:
    """Per-order features (no state); velocity columns must already be filled."""
    _order_columns(
        enc.t,
        enc.amount,
        enc.account_age_days,
        enc.key_account,
        enc.billing_country,
        enc.shipping_country,
        enc.ip_country,
        enc.n_lines,
        enc.n_units,
        enc.risky_share,
        enc.note_len,
        X,
    )


def compute(enc: OrderArrays, state: VelocityState) -> np.ndarray:
    """Features of a batch of new orders, in row order; the orders are added to `state`."""
    X = np.empty((enc.n, N_FEATURES), dtype=np.float32)
    state.score_orders(enc.t, enc.amount, enc.keys, X, _V0)
    _order_block(enc, X)
    return X


def replay_events(
    t: np.ndarray, known_at: np.ndarray, labels: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Merge order and label events in time order.

    An order's label is an event at `known_at` (NaN = never known). At equal times orders
    come first, so a label known at time t is seen only by orders strictly after t; a
    label can never precede its own order.
    """
    n = t.shape[0]
    has_label = ~np.isnan(known_at) & (labels >= 0)
    lab_rows = np.flatnonzero(has_label)
    lab_t = np.maximum(known_at[lab_rows], t[lab_rows])
    kinds = np.concatenate([np.zeros(n, np.int8), np.ones(lab_rows.size, np.int8)])
    rows = np.concatenate([np.arange(n), lab_rows])
    times = np.concatenate([t, lab_t])
    # Stable sort by (time, kind, row): orders keep their file order at equal times.
    order = np.lexsort((rows, kinds, times))
    return kinds[order], rows[order], times[order]


def replay(
    enc: OrderArrays, labels: np.ndarray, known_at: np.ndarray, state: VelocityState
) -> np.ndarray:
    """Features of every order in a history as they were at the order's own time.

    `labels` is int8 (1 fraud, 0 legitimate, -1 unknown); `known_at` float64 seconds
    (NaN where the label never became known).
    """
    X = np.empty((enc.n, N_FEATURES), dtype=np.float32)
    for _ in replay_chunks(enc, labels, known_at, state, X, max(enc.n, 1)):
        pass
    return X


def replay_chunks(
    enc: OrderArrays,
    labels: np.ndarray,
    known_at: np.ndarray,
    state: VelocityState,
    X: np.ndarray,
    chunk: int,
) -> Iterator[tuple[int, int]]:
    """`replay` into `X` (n, N_FEATURES) float32, yielding (lo, hi) as soon as rows lo..hi-1
    have their features, so a caller can score a chunk while the next one is replayed.

    The event stream is the same as `replay`'s, cut where a chunk's last order event falls;
    label events after the last order are applied too, so `state` ends the same.
    """
    kinds, rows, times = replay_events(enc.t, known_at, labels)
    pos = np.empty(enc.n, dtype=np.int64)
    is_order = np.flatnonzero(kinds == 0)
    pos[rows[is_order]] = is_order
    start = 0
    for lo in range(0, enc.n, chunk):
        hi = min(lo + chunk, enc.n)
        end = max(start, int(pos[lo:hi].max()) + 1)
        if end > start:
            state.process(
                kinds[start:end],
                rows[start:end],
                times[start:end],
                enc.amount,
                labels,
                enc.keys,
                X,
                _V0,
            )
        start = end
        _order_block(enc.take(slice(lo, hi)), X[lo:hi])
        yield lo, hi
    if start < kinds.shape[0]:
        state.process(
            kinds[start:], rows[start:], times[start:], enc.amount, labels, enc.keys, X, _V0
        )
