"""Velocity and entity state: bounded, time-decayed counters per entity, in one Numba kernel.

Each entity (customer, device, card, IP, email domain, shipping address, and the pairs
customer+device and customer+card) has one slot in an open-addressing hash table. A slot
keeps exponentially decayed order counts (time constants 10 min, 1 h, 24 h, 7 d, 30 d) and
amount sums (1 h, 24 h, 30 d): after the update at time t, `cnt_w = sum_i exp(-(t - t_i)/w)`.
Decayed counters need O(1) memory per entity, where exact sliding windows would need
every event. They are what the model is trained on, so serving needs nothing else.
An event older than its entity's last event is counted at that last time (its "effective
time"), so late or future-stamped events can neither vanish nor age the entity.

Entity risk uses only labels that the stream has delivered: a label is an event at the time
it became known (`label_known_at`, or the order's time plus the label delay), applied to the
entities of its order. Per entity and per label window (1, 7 and 30 days) the kernel keeps
decayed counts of matured labels and of the frauds among them, both decayed from the time
each label became known, so `fraud_rate_w = frauds_w / (labelled_w + 1)` has numerator and
denominator over the same population: the entity's orders whose labels are known now. A
device compromised two weeks ago shows as soon as its first chargebacks arrive, and the
orders whose labels are not known yet dilute nothing. Orders read their features *before*
they are added, so an order never sees itself.

Memory is bounded by the table's capacity: when the probe window of a new key is full, the
entity in it with the fewest recent orders is evicted (it then counts as new if it comes
back).

One kernel (`_process`) handles both event kinds in stream order. Serving calls it with
order events only (and label events from `ReportOutcomes`); training and `score-file` call
it with the whole history merged in time order. That is the training/serving parity.
"""

from __future__ import annotations

import contextlib
import mmap

import numpy as np

from engine.jit import njit
from engine.orders.schema import ENTITY_COLUMNS, ENTITY_KINDS

WINDOWS_S = np.array([600.0, 3600.0, 86400.0, 7 * 86400.0, 30 * 86400.0])
WINDOW_NAMES = ("10m", "1h", "24h", "7d", "30d")
AMOUNT_WINDOWS = np.array([1, 2, 4], dtype=np.int64)  # indices into WINDOWS_S
LABEL_WINDOWS_S = np.array([86400.0, 7 * 86400.0, 30 * 86400.0])
LABEL_WINDOW_NAMES = ("1d", "7d", "30d")
_SWITCH_WINDOW = 4  # customer changes decay like the 30-day count
SWITCH_TAU_S = float(WINDOWS_S[_SWITCH_WINDOW])

# A slot is one row of 24 eight-byte words (192 bytes, three whole cache lines): the key and
# the entity's last customer as uint64, then the values as float64, so finding an entity and
# updating it touch the same three lines. 20 words are used; the row is padded to 24 so that
# no slot straddles a fourth line. Value columns (in the float64 view):
_KEY, _CUST = 0, 1  # in the uint64 view
_LAST_T, _FIRST_T, _CNT0 = 2, 3, 4
_NW = len(WINDOWS_S)
_AMT0 = _CNT0 + _NW
_NA = len(AMOUNT_WINDOWS)
_LAB_T = _AMT0 + _NA
_SWITCH = _LAB_T + 1
_NL = len(LABEL_WINDOWS_S)
_FRAUD0 = _SWITCH + 1  # frauds per label window
_LABELED0 = _FRAUD0 + _NL  # matured labels per label window
SLOT_WORDS = 24
assert _LABELED0 + _NL <= SLOT_WORDS and SLOT_WORDS * 8 % 64 == 0
_HUGE_PAGE = 2 << 20
_PREFETCH = 8  # orders whose slots are fetched together ahead of their updates

N_SINGLE = len(ENTITY_COLUMNS)
# Features of a single entity: counts per window, amount sums, age, known frauds and fraud
# rate per label window, and (all but the customer) how often the customer using it changed.
_SINGLE_FEATS = _NW + _NA + 1 + 2 * _NL
PAIR_FEATS = 2  # count over 30 d, age in days


def feature_names() -> list[str]:
    names: list[str] = []
    for e, ent in enumerate(ENTITY_COLUMNS):
        names += [f"{ent}.cnt_{w}" for w in WINDOW_NAMES]
        names += [f"{ent}.amt_{WINDOW_NAMES[w]}" for w in AMOUNT_WINDOWS]
        names.append(f"{ent}.age_days")
        names += [f"{ent}.known_frauds_{w}" for w in LABEL_WINDOW_NAMES]
        names += [f"{ent}.fraud_rate_{w}" for w in LABEL_WINDOW_NAMES]
        if e > 0:
            names.append(f"{ent}.customer_changes_30d")
    for kind in ENTITY_KINDS[N_SINGLE:]:
        names += [f"{kind}.cnt_30d", f"{kind}.age_days"]
    return names


N_FEATURES = len(feature_names())


@njit
def _slot(words, vals, key, t, probe):
    """Slot of `key`, inserting it if absent.

    When the key's probe window is full, the entity with the smallest 30-day order count
    (decayed to now) is evicted: one-off entities (a card used once, a bot's throwaway
    device) go before regular customers, which plain least-recently-seen eviction would
    drop under a flood of new entities.
    """
    mask = words.shape[0] - 1
    start = np.int64(key & np.uint64(mask))
    victim = start
    victim_score = np.inf
    found = -1
    for p in range(probe):
        s = (start + p) & mask
        k = words[s, _KEY]
        if k == key:
            return s
        if k == 0:
            found = s
            break
        age = max(t - vals[s, _LAST_T], 0.0)
        score = vals[s, _CNT0 + _NW - 1] * np.exp(-age / WINDOWS_S[_NW - 1])
        if score < victim_score:
            victim_score = score
            victim = s
    s = found if found >= 0 else victim
    vals[s, :] = 0.0
    words[s, _KEY] = key
    words[s, _CUST] = 0
    vals[s, _LAST_T] = t
    vals[s, _FIRST_T] = np.nan  # marks "no order seen yet"
    vals[s, _LAB_T] = t
    return s


@njit
def _order_event(
    row, t, amount, keys_mat, words, vals, probe, decay_tau, label_tau, decay, out, col0
):
    cust = keys_mat[row, 0]
    col = col0
    n_kinds = keys_mat.shape[1]
    for e in range(n_kinds):
        key = keys_mat[row, e]
        width = (_SINGLE_FEATS + (1 if e > 0 else 0)) if e < N_SINGLE else PAIR_FEATS
        if key == 0:
            for c in range(width):
                out[row, col + c] = np.nan
            col += width
            continue
        s = _slot(words, vals, key, t, probe)
        # An order older than the entity's last event counts at that last time: a late
        # order must not vanish (weight exp(-lateness/tau)), and one order stamped in the
        # future cannot make the entity's later orders look old.
        dt = max(t - vals[s, _LAST_T], 0.0)
        te = t if dt > 0.0 else vals[s, _LAST_T]
        if dt > 0.0:
            # One exp per window: amount sums and customer changes reuse the count windows'
            # decay factors (their time constants are among them).
            for w in range(_NW):
                decay[w] = np.exp(-dt / decay_tau[w])
                vals[s, _CNT0 + w] *= decay[w]
            for a in range(_NA):
                vals[s, _AMT0 + a] *= decay[AMOUNT_WINDOWS[a]]
            vals[s, _SWITCH] *= decay[_SWITCH_WINDOW]
        vals[s, _LAST_T] = te
        age = (te - vals[s, _FIRST_T]) / 86400.0  # NaN for a new entity
        if e < N_SINGLE:
            for w in range(_NW):
                out[row, col + w] = vals[s, _CNT0 + w]
            for a in range(_NA):
                out[row, col + _NW + a] = vals[s, _AMT0 + a]
            out[row, col + _NW + _NA] = age
            c = col + _NW + _NA + 1
            if vals[s, _LABELED0 + _NL - 1] == 0.0:  # no label yet (most entities): no exp
                for w in range(2 * _NL):
                    out[row, c + w] = 0.0
            else:
                since = max(te - vals[s, _LAB_T], 0.0)
                for w in range(_NL):
                    fl = np.exp(-since / label_tau[w])
                    frauds = vals[s, _FRAUD0 + w] * fl
                    out[row, c + w] = frauds
                    out[row, c + _NL + w] = frauds / (vals[s, _LABELED0 + w] * fl + 1.0)
            if e > 0:
                out[row, c + 2 * _NL] = vals[s, _SWITCH]
        else:
            out[row, col] = vals[s, _CNT0 + _NW - 1]
            out[row, col + 1] = age
        col += width
        # Add this order.
        for w in range(_NW):
            vals[s, _CNT0 + w] += 1.0
        for a in range(_NA):
            vals[s, _AMT0 + a] += amount
        if e > 0 and e < N_SINGLE and cust != 0:
            if words[s, _CUST] != 0 and words[s, _CUST] != cust:
                vals[s, _SWITCH] += 1.0
            words[s, _CUST] = cust
        if np.isnan(vals[s, _FIRST_T]):
            vals[s, _FIRST_T] = te


@njit
def _label_event(row, t, is_fraud, keys_mat, words, vals, probe, label_tau):
    for e in range(N_SINGLE):
        key = keys_mat[row, e]
        if key == 0:
            continue
        s = _slot(words, vals, key, t, probe)
        # As for orders, a label older than the entity's last label counts at that time.
        lt = max(t - vals[s, _LAB_T], 0.0)
        for w in range(_NL):
            f = np.exp(-lt / label_tau[w])
            vals[s, _FRAUD0 + w] = vals[s, _FRAUD0 + w] * f + is_fraud
            vals[s, _LABELED0 + w] = vals[s, _LABELED0 + w] * f + 1.0
        vals[s, _LAB_T] += lt


@njit
def _fetch_ahead(kinds, rows, keys_mat, words, lo, hi):
    """Load the home slots of events lo..hi-1 before they are applied (an order's entities
    and pairs, a label's entities): the loads are independent, so their cache (and TLB)
    misses overlap instead of coming one by one."""
    mask = words.shape[0] - 1
    acc = np.uint64(0)
    for i in range(lo, hi):
        r = rows[i]
        for e in range(keys_mat.shape[1] if kinds[i] == 0 else N_SINGLE):
            key = keys_mat[r, e]
            if key != 0:
                s = np.int64(key & np.uint64(mask))
                acc ^= words[s, _KEY] ^ words[s, 8] ^ words[s, 16]  # one word per line
    return acc


@njit
def _process(
    kinds, rows, times, amounts, labels, keys_mat, words, probe, tau, label_tau, out, col0
):
    """Apply events in order: kind 0 = order (writes its features to `out[row]`), 1 = label."""
    vals = words.view(np.float64)
    decay = np.empty(tau.shape[0])
    touched = np.uint64(0)  # returned, so the compiler cannot drop the fetch-ahead loads
    n = kinds.shape[0]
    for i in range(n):
        if i % _PREFETCH == 0:
            touched ^= _fetch_ahead(kinds, rows, keys_mat, words, i, min(i + _PREFETCH, n))
        r = rows[i]
        if kinds[i] == 0:
            _order_event(
                r,
                times[i],
                amounts[r],
                keys_mat,
                words,
                vals,
                probe,
                tau,
                label_tau,
                decay,
                out,
                col0,
            )
        else:
            _label_event(r, times[i], float(labels[r]), keys_mat, words, vals, probe, label_tau)
    return touched


def _huge_zeros(shape: tuple[int, int]) -> np.ndarray:
    """A zeroed uint64 array on anonymous memory advised to use transparent huge pages.

    Every order touches eight random slots of a table of 192 MB or more: with 4 KiB pages
    nearly every touch also misses the TLB; 2 MiB pages need 512 times fewer translations.
    Where the kernel has no THP (or it is off) the advice is ignored.
    """
    nbytes = int(np.prod(shape)) * 8
    buf = mmap.mmap(-1, max(nbytes, 1))
    if nbytes >= _HUGE_PAGE and hasattr(mmap, "MADV_HUGEPAGE"):
        with contextlib.suppress(OSError):  # advice only
            buf.madvise(mmap.MADV_HUGEPAGE)
    return np.frombuffer(buf, dtype=np.uint64, count=int(np.prod(shape))).reshape(shape)


class VelocityState:
    """The entity table. Not thread-safe: one engine feeds it from one thread at a time."""

    def __init__(self, capacity: int = 1 << 20, probe: int = 16) -> None:
        if capacity <= 0 or capacity & (capacity - 1):
            raise ValueError(f"capacity must be a power of two, is {capacity}")
        if not 1 <= probe <= capacity:
            raise ValueError(f"probe must be in [1, capacity], is {probe}")
        self.capacity = capacity
        self.probe = probe
        # Every page written once now: fresh memory is mapped lazily, and the first order to
        # touch a page would otherwise pay for the kernel zeroing it. The kernel zeroes it,
        # so one word per 4 KiB page is enough.
        self.words = _huge_zeros((capacity, SLOT_WORDS))
        self.words.reshape(-1)[:: 4096 // 8] = 0

    @property
    def nbytes(self) -> int:
        return int(self.words.nbytes)

    def process(
        self,
        kinds: np.ndarray,
        rows: np.ndarray,
        times: np.ndarray,
        amounts: np.ndarray,
        labels: np.ndarray,
        keys_mat: np.ndarray,
        out: np.ndarray,
        col0: int = 0,
    ) -> None:
        """Apply a stream of events; order features go to `out[row, col0:col0 + N_FEATURES]`.

        `out` must be a C-contiguous float32 array, so one compiled kernel serves every
        batch size (a column slice would be contiguous for one row and strided for two,
        and each layout compiles anew).
        """
        if keys_mat.ndim != 2 or keys_mat.shape[1] != len(ENTITY_KINDS):
            raise ValueError(
                f"keys must be of dimension (N, {len(ENTITY_KINDS)}), is {keys_mat.shape}"
            )
        if out.ndim != 2 or out.shape[0] != keys_mat.shape[0] or out.shape[1] < col0 + N_FEATURES:
            raise ValueError(
                f"out must be ({keys_mat.shape[0]}, >= {col0 + N_FEATURES}), is {out.shape}"
            )
        if out.dtype != np.float32 or not out.flags.c_contiguous:
            raise ValueError("out must be a C-contiguous float32 array")
        _process(
            np.ascontiguousarray(kinds, dtype=np.int8),
            np.ascontiguousarray(rows, dtype=np.int64),
            np.ascontiguousarray(times, dtype=np.float64),
            np.ascontiguousarray(amounts, dtype=np.float64),
            np.ascontiguousarray(labels, dtype=np.int8),
            np.ascontiguousarray(keys_mat, dtype=np.uint64),
            self.words,
            self.probe,
            WINDOWS_S,
            LABEL_WINDOWS_S,
            out,
            col0,
        )

    def score_orders(
        self,
        t: np.ndarray,
        amounts: np.ndarray,
        keys_mat: np.ndarray,
        out: np.ndarray,
        col0: int = 0,
    ) -> None:
        """Order events only, in row order (the serving path)."""
        n = keys_mat.shape[0]
        zeros = np.zeros(n, np.int8)
        self.process(zeros, np.arange(n), t, amounts, zeros, keys_mat, out, col0)

    def report_labels(self, t: np.ndarray, is_fraud: np.ndarray, keys_mat: np.ndarray) -> None:
        """Label events only (outcomes reported after the fact)."""
        n = keys_mat.shape[0]
        scratch = np.empty((n, N_FEATURES), dtype=np.float32)
        self.process(np.ones(n, np.int8), np.arange(n), t, np.zeros(n), is_fraud, keys_mat, scratch)
