"""The data audit's checks, each over whole columns as NumPy/Arrow arrays (no loop over rows).

Each check returns a small dataclass the report renders and tests read. The thresholds are
constants here, each with the reason for its value.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

DAY_S = 86400.0
LEAK_AUC = 0.98
"""A column whose rank AUC against the label is this far from 0.5 (max(AUC, 1 - AUC)) alone
separates fraud from legitimate orders almost perfectly. No order-time signal does that in
fraud data: such a column was almost surely written once the outcome was known."""
LEAK_MIN_CLASS_ROWS = 20
"""Fewest labelled rows of each class with a value before a column's AUC is computed: on a
handful of rows any column can look perfect."""
TE_FOLDS = 5
"""Folds of the out-of-fold target encoding: each row is scored from the other 80%, so a
category that appears once (an order id) scores the prior and cannot memorise its label."""
TE_SMOOTHING = 1.0
"""Pseudo-rows at the prior added to every category's fraud share: a category absent from
the other folds gets the prior, and a small pure-fraud category still ranks above it."""
FOLD_SEED = 20260105
"""Fold assignment is a fixed draw, so the same file gives the same report."""
LOW_DAY_FRACTION = 0.25
"""A day with orders, but fewer than this share of the median day, is flagged as far below
the typical volume: weekly and seasonal cycles stay well above it, an export that lost most
of a day does not. The first and last day are not judged (an export may cut them)."""
PLACEHOLDER_SHARE = 0.05
"""An identifier (customer, device, card, IP, address) carried by this share of all orders
is more likely a placeholder ("guest", "unknown", "0") than one real entity; the engine
would treat all those orders as one busy entity. E-mail domains are exempt: a large
provider legitimately holds that many."""
PLACEHOLDER_EXEMPT = ("email_domain",)
PLACEHOLDER_MIN_ORDERS = 100
"""...and on at least this many orders: in a small file any one customer is a large share."""
QUANTILES = (0.1, 0.5, 0.9, 0.99)


def rank_auc(x: np.ndarray, y: np.ndarray) -> float:
    """Area under the ROC curve of score `x` for labels `y` (1 positive, 0 negative): the
    Mann-Whitney U over n1 n0, with ties at their average rank; NaN when a class is absent."""
    n1 = int(np.count_nonzero(y == 1))
    n0 = y.size - n1
    if n1 == 0 or n0 == 0:
        return math.nan
    order = np.argsort(x, kind="stable")
    xs = x[order]
    starts = np.r_[True, xs[1:] != xs[:-1]]
    first = np.flatnonzero(starts)
    last = np.r_[first[1:], xs.size]
    ranks = np.empty(xs.size)
    ranks[order] = ((first + last + 1) / 2.0)[np.cumsum(starts) - 1]
    return float((ranks[y == 1].sum() - n1 * (n1 + 1) / 2.0) / (n1 * n0))


def target_encoding_auc(codes: np.ndarray, y: np.ndarray, folds: np.ndarray) -> float:
    """AUC of an out-of-fold target encoding of categories `codes` (int, 0..k-1): each row
    scores its category's smoothed fraud share in the other folds."""
    k = int(codes.max()) + 1 if codes.size else 1
    yf = y.astype(np.float64)
    all_n = np.bincount(codes, minlength=k)
    all_s = np.bincount(codes, weights=yf, minlength=k)
    enc = np.empty(y.size)
    for f in range(TE_FOLDS):
        m = folds == f
        if not m.any():
            continue
        n = all_n - np.bincount(codes[m], minlength=k)
        s = all_s - np.bincount(codes[m], weights=yf[m], minlength=k)
        rest = y.size - int(m.sum())
        prior = float(yf.sum() - yf[m].sum()) / rest if rest else 0.0
        enc[m] = ((s + TE_SMOOTHING * prior) / (n + TE_SMOOTHING))[codes[m]]
    return rank_auc(enc, y)


def codes_of(text: pa.Array, present: np.ndarray) -> tuple[np.ndarray, pa.Array]:
    """(int64 category codes, the categories) of a text column; every missing or blank value
    is one more category, coded len(categories)."""
    enc = pc.dictionary_encode(text)
    missing = len(enc.dictionary)
    codes = np.asarray(enc.indices.fill_null(missing).to_numpy(), np.int64)
    codes[~present] = missing
    return codes, enc.dictionary


@dataclass
class Leak:
    column: str
    method: str
    auc: float
    rows: int

    @property
    def strength(self) -> float:
        """max(AUC, 1 - AUC): how well the column alone separates the labels."""
        return max(self.auc, 1.0 - self.auc)

    @property
    def flagged(self) -> bool:
        return self.strength >= LEAK_AUC


class LeakScan:
    """Leak checks over labelled rows, one column at a time (`numeric`, `text`)."""

    def __init__(self, labels: np.ndarray) -> None:
        self.rows = np.flatnonzero(labels >= 0)
        self.y = labels[self.rows].astype(np.int8)
        rng = np.random.default_rng(FOLD_SEED)
        self.folds = rng.integers(0, TE_FOLDS, self.rows.size).astype(np.int8)
        self.ok = int((self.y == 1).sum()) > 0 and int((self.y == 0).sum()) > 0

    def numeric(self, name: str, values: np.ndarray) -> Leak | None:
        """Rank AUC of the values (rows with one), or of whether there is a value at all,
        whichever separates the labels better."""
        if not self.ok:
            return None
        v = values[self.rows]
        has = ~np.isnan(v)
        best: Leak | None = None
        y = self.y[has]
        if min(int((y == 1).sum()), int((y == 0).sum())) >= LEAK_MIN_CLASS_ROWS:
            best = Leak(name, "rank AUC", rank_auc(v[has], y), int(has.sum()))
        if 0 < int(has.sum()) < has.size:
            miss = Leak(
                name, "AUC of having a value", rank_auc(has.astype(np.float64), self.y), has.size
            )
            if best is None or miss.strength > best.strength:
                best = miss
        return best

    def text(self, name: str, text: pa.Array, present: np.ndarray) -> Leak | None:
        """Out-of-fold target-encoding AUC; a missing value is a category of its own."""
        if not self.ok:
            return None
        codes, _ = codes_of(text.take(pa.array(self.rows)), present[self.rows])
        return Leak(
            name,
            "target-encoding AUC",
            target_encoding_auc(codes, self.y, self.folds),
            self.rows.size,
        )


@dataclass
class Duplicates:
    extra_rows: int
    """Rows whose order_id appeared on an earlier row."""
    ids: int
    """Distinct order_ids that appear more than once."""
    empty: int
    examples: list[tuple[str, list[int]]] = field(default_factory=list)
    """The first few duplicated ids, with up to three of their rows (1-based)."""


def duplicates(text: pa.Array, present: np.ndarray, shown: int = 5) -> Duplicates:
    codes, ids = codes_of(text, present)
    kept = present
    counts = np.bincount(codes[kept], minlength=len(ids))
    dup = counts > 1
    out = Duplicates(int((counts[dup] - 1).sum()), int(dup.sum()), int((~kept).sum()))
    if out.ids:
        rows = np.flatnonzero(kept & dup[np.where(kept, codes, 0)])
        firsts = np.unique(codes[rows], return_index=True)[1]
        for code in codes[rows[np.sort(firsts)[:shown]]]:
            where = rows[codes[rows] == code][:3]
            out.examples.append((str(ids[int(code)]), [int(r) + 1 for r in where]))
    return out


@dataclass
class Volume:
    first_day: str
    per_day: np.ndarray
    """Orders per UTC day from the first order's day to the last's."""
    median: float
    missing: list[str]
    low: list[tuple[str, int]]
    gap_hours: float
    gap_from: str
    out_of_order: int
    """Rows older than the row before them (the engine sorts; a sign of a merged export)."""

    def day(self, k: int) -> str:
        return str(np.datetime64(self.first_day) + np.timedelta64(k, "D"))


def iso_time(seconds: float) -> str:
    return str(np.datetime64(int(seconds), "s")).replace("T", " ") + "Z"


def volume(t: np.ndarray) -> Volume:
    day = np.floor(t / DAY_S).astype(np.int64)
    d0 = int(day.min())
    per_day = np.bincount(day - d0)
    inner = per_day[1:-1] if per_day.size >= 3 else per_day
    median = float(np.median(inner[inner > 0])) if (inner > 0).any() else 0.0
    ts = np.sort(t)
    gaps = np.diff(ts)
    g = int(np.argmax(gaps)) if gaps.size else 0
    v = Volume(
        str(np.datetime64(d0, "D")),
        per_day,
        median,
        [],
        [],
        float(gaps[g] / 3600.0) if gaps.size else 0.0,
        iso_time(ts[g]),
        int((np.diff(t) < 0).sum()),
    )
    v.missing = [v.day(int(k)) for k in np.flatnonzero(per_day == 0)]
    low = (per_day > 0) & (per_day < LOW_DAY_FRACTION * median)
    low[[0, -1]] = False
    v.low = [(v.day(int(k)), int(per_day[k])) for k in np.flatnonzero(low)]
    return v


@dataclass
class Entity:
    column: str
    rows: int
    """Orders with a value."""
    distinct: int
    once: float
    """Share of entities seen on one order only."""
    quantiles: list[float]
    """Orders per entity at QUANTILES, then the most."""
    top: str
    top_share: float
    """Share of all orders carrying the most frequent value."""

    @property
    def placeholder(self) -> bool:
        return (
            self.column not in PLACEHOLDER_EXEMPT
            and self.top_share >= PLACEHOLDER_SHARE
            and self.quantiles[-1] >= PLACEHOLDER_MIN_ORDERS
        )


def entity(name: str, text: pa.Array, present: np.ndarray) -> Entity:
    if not present.any():
        return Entity(name, 0, 0, math.nan, [math.nan] * (len(QUANTILES) + 1), "", 0.0)
    codes, dictionary = codes_of(text, present)
    per_code = np.bincount(codes[present])
    top = int(np.argmax(per_code))
    counts = per_code[per_code > 0]
    return Entity(
        name,
        int(present.sum()),
        int(counts.size),
        float((counts == 1).mean()),
        [float(q) for q in np.quantile(counts, QUANTILES)] + [float(counts.max())],
        str(dictionary[top]),
        float(counts.max() / present.size),
    )


@dataclass
class Labels:
    """What the label columns say; `labelled == 0` means no labels."""

    has_column: bool
    has_time: bool
    rows: int
    labelled: int
    frauds: int
    horizon_days: float
    settled: int
    """Orders placed at least the horizon before the last order: their labels should be in."""
    settled_labelled: int
    with_time: int
    """Labelled rows that say when their label became known."""
    delays: dict[str, list[float]] = field(default_factory=dict)
    """Days from order to label per class ("all", "fraud", "legitimate"): QUANTILES, then
    min and max."""
    delay_days: np.ndarray = field(default_factory=lambda: np.zeros(0))
    delay_fraud: np.ndarray = field(default_factory=lambda: np.zeros(0, np.bool_))
    negative: int = 0
    after_end: int = 0
    """Labels known only after the last order: no order in the file can see them."""
    frauds_in_span: int = 0
    """Fraud labels known by the last order: all the label windows can count in this file."""
    fraud_in_horizon: float = math.nan
    delay_auc: float = math.nan

    @property
    def coverage(self) -> float:
        return self.labelled / self.rows

    @property
    def settled_coverage(self) -> float:
        return self.settled_labelled / self.settled if self.settled else math.nan

    @property
    def time_share(self) -> float:
        return self.with_time / self.labelled if self.labelled else math.nan


def labels(
    t: np.ndarray, y: np.ndarray | None, known_at: np.ndarray | None, horizon_days: float
) -> Labels:
    n = t.size
    if y is None:
        return Labels(False, known_at is not None, n, 0, 0, horizon_days, 0, 0, 0)
    has = y >= 0
    settled = t <= t.max() - horizon_days * DAY_S
    out = Labels(
        True,
        known_at is not None,
        n,
        int(has.sum()),
        int((y == 1).sum()),
        horizon_days,
        int(settled.sum()),
        int((settled & has).sum()),
        0,
    )
    if known_at is None or not out.labelled:
        return out
    timed = has & ~np.isnan(known_at)
    out.with_time = int(timed.sum())
    if not out.with_time:
        return out
    d = (known_at[timed] - t[timed]) / DAY_S
    fraud = y[timed] == 1
    out.delay_days, out.delay_fraud = d, fraud
    for name, part in (("all", d), ("fraud", d[fraud]), ("legitimate", d[~fraud])):
        if part.size:
            q = np.quantile(part, QUANTILES)
            out.delays[name] = [float(v) for v in q] + [float(part.min()), float(part.max())]
    out.negative = int((d < 0).sum())
    late = known_at[timed] > t.max()
    out.after_end = int(late.sum())
    out.frauds_in_span = int((fraud & ~late).sum())
    if fraud.any():
        out.fraud_in_horizon = float((d[fraud] <= horizon_days).mean())
    out.delay_auc = rank_auc(d, fraud.astype(np.int8))
    return out


@dataclass
class Week:
    start: str
    orders: int
    labelled: int
    frauds: int

    @property
    def fraud_share(self) -> float:
        return self.frauds / self.labelled if self.labelled else math.nan


def weeks(t: np.ndarray, y: np.ndarray | None) -> list[Week]:
    """Orders, labels and frauds per week (Monday to Sunday, UTC)."""
    w = np.floor((np.floor(t / DAY_S) + 3) / 7).astype(np.int64)  # 1970-01-05 was a Monday
    w0 = int(w.min())
    k = w - w0
    orders = np.bincount(k)
    lab: np.ndarray = np.zeros(orders.size)
    fr: np.ndarray = np.zeros(orders.size)
    if y is not None:
        lab = np.bincount(k, weights=(y >= 0).astype(np.float64), minlength=orders.size)
        fr = np.bincount(k, weights=(y == 1).astype(np.float64), minlength=orders.size)
    return [
        Week(str(np.datetime64(7 * (w0 + i) - 3, "D")), int(orders[i]), int(lab[i]), int(fr[i]))
        for i in range(orders.size)
    ]
