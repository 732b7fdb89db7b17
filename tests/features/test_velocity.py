"""Velocity kernel against a plain-Python reference; hashing; bounded memory."""

from __future__ import annotations

import math

import numpy as np
import pytest

from engine.features.matrix import replay_events
from engine.features.velocity import (
    AMOUNT_WINDOWS,
    LABEL_WINDOWS_S,
    N_FEATURES,
    N_SINGLE,
    SWITCH_TAU_S,
    WINDOWS_S,
    VelocityState,
    feature_names,
)
from engine.orders.hashing import hash_values
from engine.orders.schema import ENTITY_KINDS


def reference(kinds, rows, times, amounts, labels, keys):
    """Features straight from the definition: sums over every earlier event of the entity,
    each event at its effective time (its own time, or the entity's last one if later)."""
    n, n_kinds = keys.shape
    out = np.full((n, N_FEATURES), np.nan)
    orders: dict[tuple[int, int], list[tuple[float, float, int]]] = {}  # (te, amount, customer)
    last: dict[tuple[int, int], float] = {}  # entity -> effective time of its last order
    labs: dict[tuple[int, int], list[tuple[float, float]]] = {}  # (effective time, label)
    lab_t: dict[tuple[int, int], float] = {}  # entity -> label clock (starts at creation)
    for kind, r, t in zip(kinds, rows, times, strict=True):
        if kind == 1:
            for e in range(N_SINGLE):
                k = (e, keys[r, e])
                if keys[r, e]:
                    lab_t[k] = max(t, lab_t.get(k, t))
                    last.setdefault(k, t)
                    labs.setdefault(k, []).append((lab_t[k], float(labels[r])))
            continue
        col = 0
        for e in range(n_kinds):
            width = (
                (len(WINDOWS_S) + len(AMOUNT_WINDOWS) + 1 + 2 * len(LABEL_WINDOWS_S) + (e > 0))
                if e < N_SINGLE
                else 2
            )
            k = (e, keys[r, e])
            if keys[r, e]:
                te = max(t, last.get(k, t))
                last[k] = te
                lab_t.setdefault(k, t)
                past = orders.get(k, [])
                cnt = [sum(math.exp(-(te - ti) / w) for ti, _, _ in past) for w in WINDOWS_S]
                age = (te - past[0][0]) / 86400 if past else np.nan
                if e < N_SINGLE:
                    amt = [
                        sum(a * math.exp(-(te - ti) / WINDOWS_S[w]) for ti, a, _ in past)
                        for w in AMOUNT_WINDOWS
                    ]
                    read = max(te, lab_t[k])
                    ls = labs.get(k, [])
                    frauds = [
                        sum(y * math.exp(-(read - tl) / w) for tl, y in ls) for w in LABEL_WINDOWS_S
                    ]
                    labeled = [
                        sum(math.exp(-(read - tl) / w) for tl, _ in ls) for w in LABEL_WINDOWS_S
                    ]
                    rates = [f / (n + 1) for f, n in zip(frauds, labeled, strict=True)]
                    vals = cnt + amt + [age] + frauds + rates
                    if e > 0:
                        # A change of customer between consecutive orders with a known customer.
                        known = [(ti, c) for ti, _, c in past if c]
                        switches = sum(
                            math.exp(-(te - known[j][0]) / SWITCH_TAU_S)
                            for j in range(1, len(known))
                            if known[j][1] != known[j - 1][1]
                        )
                        vals.append(switches)
                else:
                    vals = [cnt[-1], age]
                out[r, col : col + width] = vals
                orders.setdefault(k, []).append((te, amounts[r], keys[r, 0]))
            col += width
    return out


def _stream(seed: int, n: int = 400):
    rng = np.random.default_rng(seed)
    keys = np.zeros((n, len(ENTITY_KINDS)), dtype=np.uint64)
    for e in range(len(ENTITY_KINDS)):
        pool = rng.integers(1, 2**63, size=int(rng.integers(3, 40)), dtype=np.uint64)
        keys[:, e] = rng.choice(pool, n)
        keys[rng.random(n) < 0.1, e] = 0  # unknown entity values
    t = np.cumsum(rng.exponential(900.0, n)) + 1.7e9
    amounts = rng.lognormal(4, 1, n)
    labels = rng.choice(np.array([-1, 0, 1], np.int8), n, p=[0.2, 0.6, 0.2])
    known_at = np.where(labels >= 0, t + rng.exponential(4 * 3600.0, n), np.nan)
    return keys, t, amounts, labels, known_at


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_kernel_matches_reference(seed: int) -> None:
    keys, t, amounts, labels, known_at = _stream(seed)
    kinds, rows, times = replay_events(t, known_at, labels)
    np.testing.assert_allclose(
        *_kernel_and_reference(kinds, rows, times, amounts, labels, keys), rtol=2e-6, atol=1e-6
    )


@pytest.mark.parametrize("seed", [4, 5])
def test_out_of_order_events_match_reference(seed: int) -> None:
    """Events served in arrival order, some late, some stamped a day ahead."""
    keys, t, amounts, labels, known_at = _stream(seed)
    kinds, rows, times = replay_events(t, known_at, labels)
    rng = np.random.default_rng(seed)
    times = times + np.where(
        rng.random(times.size) < 0.05, rng.choice([-7200.0, 86400.0], times.size), 0.0
    )
    np.testing.assert_allclose(
        *_kernel_and_reference(kinds, rows, times, amounts, labels, keys), rtol=2e-6, atol=1e-6
    )


def test_future_stamped_order_does_not_hide_a_burst() -> None:
    keys = np.zeros((11, len(ENTITY_KINDS)), dtype=np.uint64)
    keys[:, 2] = 77  # one card
    t = 1.7e9 + np.concatenate([[86400.0], 60.0 * np.arange(10)])  # first one a day ahead
    out = np.empty((11, N_FEATURES), dtype=np.float32)
    VelocityState(1 << 10).score_orders(t, np.ones(11), keys, out)
    card_1h = feature_names().index("card_fingerprint.cnt_1h")
    assert out[-1, card_1h] > 9.5  # all ten earlier orders still count


def _kernel_and_reference(kinds, rows, times, amounts, labels, keys):
    out = np.empty((len(rows[kinds == 0]), N_FEATURES), dtype=np.float32)
    VelocityState(capacity=1 << 12).process(kinds, rows, times, amounts, labels, keys, out)
    return out, reference(kinds, rows, times, amounts, labels, keys)


def test_feature_names_match_width() -> None:
    assert len(feature_names()) == N_FEATURES
    assert len(set(feature_names())) == N_FEATURES


def test_serving_equals_replay_without_labels() -> None:
    keys, t, amounts, _, _ = _stream(4)
    a = np.empty((len(t), N_FEATURES), dtype=np.float32)
    b = np.empty_like(a)
    VelocityState(1 << 12).score_orders(t, amounts, keys, a)
    s = VelocityState(1 << 12)
    for lo in range(0, len(t), 7):  # in micro-batches of 7
        s.score_orders(t[lo : lo + 7], amounts[lo : lo + 7], keys[lo : lo + 7], b[lo : lo + 7])
    np.testing.assert_array_equal(a, b)


def _device_orders(t: np.ndarray) -> np.ndarray:
    keys = np.zeros((t.size, len(ENTITY_KINDS)), dtype=np.uint64)
    keys[:, ENTITY_KINDS.index("device_id")] = 99  # one shared device, new customers
    keys[:, 0] = np.arange(1, t.size + 1, dtype=np.uint64)
    return keys


def _col(name: str) -> int:
    return feature_names().index(name)


def test_label_windows_count_frauds_by_when_their_labels_came() -> None:
    """A chargeback that arrived two days ago: fully in the 30-day window, faded in the
    1-day one; rates are over labelled orders only."""
    day = 86400.0
    s = VelocityState(1 << 10)
    keys = _device_orders(np.zeros(3))
    out = np.empty((3, N_FEATURES), dtype=np.float32)
    s.score_orders(np.array([0.0, 1.0]), np.ones(2), keys[:2], out[:2])
    s.report_labels(np.array([day, day]), np.array([1, 0], np.int8), keys[:2])
    s.score_orders(np.array([3 * day]), np.ones(1), keys[2:], out[2:])
    for w, tau in zip(("1d", "7d", "30d"), LABEL_WINDOWS_S, strict=True):
        f = math.exp(-2 * day / tau)
        assert out[2, _col(f"device_id.known_frauds_{w}")] == pytest.approx(f, rel=1e-6)
        assert out[2, _col(f"device_id.fraud_rate_{w}")] == pytest.approx(f / (2 * f + 1), 1e-6)


def test_orders_without_labels_do_not_dilute_the_fraud_rate() -> None:
    """Numerator and denominator over the same matured population: a device's fraud rate
    is the same whether or not many orders whose labels are not known yet came since."""
    rates = []
    for extra in (0, 200):
        s = VelocityState(1 << 12)
        t = np.arange(10.0)
        keys = _device_orders(np.zeros(10 + extra + 1))
        s.score_orders(t, np.ones(10), keys[:10], np.empty((10, N_FEATURES), np.float32))
        labels = np.array([1, 1, 1, 0, 0, 0, 0, 0, 0, 0], np.int8)
        s.report_labels(t + 3600.0, labels, keys[:10])
        if extra:  # unlabelled orders, in the same hour
            later = 3601.0 + np.arange(extra) * 0.1
            out = np.empty((extra, N_FEATURES), np.float32)
            s.score_orders(later, np.ones(extra), keys[10 : 10 + extra], out)
        last = np.empty((1, N_FEATURES), np.float32)
        s.score_orders(np.array([3700.0]), np.ones(1), keys[-1:], last)
        rates.append(last[0, _col("device_id.fraud_rate_7d")])
        assert last[0, _col("device_id.cnt_24h")] > 9 + extra * 0.99
    assert rates[0] == rates[1] and rates[0] == pytest.approx(3 / 11, rel=1e-3)


def test_memory_is_bounded() -> None:
    """80,000 distinct entities through 256 slots: the table keeps the ones still active."""
    s = VelocityState(capacity=256, probe=8)
    rng = np.random.default_rng(0)
    regular = np.zeros((1, len(ENTITY_KINDS)), dtype=np.uint64)
    regular[0, 0] = 12345
    out1 = np.empty((1, N_FEATURES), dtype=np.float32)
    for k in range(3):  # the regular has a few orders before the churn starts
        s.score_orders(np.array([1.7e9 - 3600.0 + k]), np.ones(1), regular, out1)
    for day in range(20):  # 20 x 500 orders, all with new entities, and one regular customer
        n = 500
        keys = rng.integers(1, 2**63, size=(n, len(ENTITY_KINDS)), dtype=np.uint64)
        t = np.full(n, 1.7e9 + day * 86400.0) + np.arange(n)
        out = np.empty((n, N_FEATURES), dtype=np.float32)
        s.score_orders(t, np.ones(n), keys, out)
        assert (out[:, 0] == 0).all()  # every new entity reads as new
        s.score_orders(np.array([t[-1] + 1]), np.ones(1), regular, out1)
    assert out1[0, 4] > 3  # the regular customer's 30-day count survived the churn


def test_eviction_keeps_regulars_over_one_offs() -> None:
    s = VelocityState(capacity=4, probe=4)
    keys = np.zeros((1, len(ENTITY_KINDS)), dtype=np.uint64)
    out = np.empty((1, N_FEATURES), dtype=np.float32)
    now = 1.7e9

    def order(customer: int) -> float:
        nonlocal now
        now += 60
        keys[0, 0] = customer
        s.score_orders(np.array([now]), np.ones(1), keys, out)
        return float(out[0, 4])  # customer_id.cnt_30d before this order

    for _ in range(3):
        order(11)  # a regular
    for k in (12, 13, 14, 15):  # four one-off customers through the three free slots
        order(k)
    assert order(11) > 2.9  # the regular was kept
    assert order(12) == 0.0  # the oldest one-off was evicted: it counts as new


def test_hash_is_stable_and_null_is_zero() -> None:
    h = hash_values(["alice", None, "", "alice", "bob"])
    assert h[0] == h[3] and h[0] != h[4]
    assert h[1] == 0 and h[2] == 0
    # Stable across processes and versions under one key (here the public default one):
    # a snapshot's keys must match the ones computed after a restart.
    assert int(h[0]) == 9841336711679580318
    assert hash_values(["alice"], salt=1)[0] != h[0]


def test_shape_errors() -> None:
    s = VelocityState(64)
    with pytest.raises(ValueError, match="keys must be of dimension"):
        s.score_orders(
            np.zeros(2),
            np.zeros(2),
            np.zeros((2, 3), np.uint64),
            np.empty((2, N_FEATURES), np.float32),
        )
    with pytest.raises(ValueError, match="power of two"):
        VelocityState(100)
