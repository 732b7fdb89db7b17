"""Drift: the population stability index (PSI) of the served score and of the model's top
features, per hour of order time, against reference distributions stored in the manifest
at training (the held-out period's, the latest the model was judged on).

A reference is a list of bin edges (deciles of the reference values, distinct ones) and the
reference's share of each bin; the bins are (-inf, e0], (e0, e1], ... (e_last, inf) and a
bin of its own for a missing value (NaN). PSI = sum over bins of (a - e) * ln(a / e), with
actual shares `a` and reference shares `e` each floored at EPS so that an empty bin counts
as a large, finite shift. Training, the live monitor and `ordersight report drift` use these
functions, so an hour's PSI is the same number online and offline.
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

BINS = 10
EPS = 1e-4
HOUR_S = 3600.0
BOUND = 0.2
"""PSI past which a distribution has shifted (the usual rule: < 0.1 stable, 0.1-0.2 some
shift, > 0.2 a shift worth acting on)."""
MIN_ORDERS = 200
"""Orders an hour needs before its PSI can raise an alert: with fewer, sampling noise alone
passes the bound."""
TOP_FEATURES = 10
RECENT = 24 * 7  # closed hours the monitor keeps (a week)
SCORE = "score"


def reference(values: np.ndarray, bins: int = BINS) -> dict[str, list[float]]:
    """The reference distribution of `values`: quantile edges and each bin's share (the
    last share is the missing values')."""
    v = np.asarray(values, np.float64)
    finite = v[np.isfinite(v)]
    if finite.size == 0:
        edges = np.zeros(0)
    else:
        edges = np.unique(np.quantile(finite, np.linspace(0, 1, bins + 1)[1:-1]))
    counts = counts_of(v, edges)
    return {"edges": edges.tolist(), "shares": (counts / max(v.size, 1)).tolist()}


def counts_of(values: np.ndarray, edges: np.ndarray) -> np.ndarray:
    """Counts per bin of `edges` (len(edges) + 1 bins), then the missing values' count."""
    v = np.asarray(values, np.float64)
    missing = ~np.isfinite(v)
    idx = np.searchsorted(edges, v[~missing], side="left")
    counts = np.bincount(idx, minlength=edges.size + 1).astype(np.float64)
    return np.append(counts, float(missing.sum()))


def psi(shares: Sequence[float] | np.ndarray, counts: np.ndarray) -> float:
    """PSI of observed `counts` against reference `shares` (same bins)."""
    total = counts.sum()
    if total <= 0:
        return float("nan")
    a = np.maximum(counts / total, EPS)
    e = np.maximum(np.asarray(shares, np.float64), EPS)
    return float(np.sum((a - e) * np.log(a / e)))


def build(
    score: np.ndarray, X: np.ndarray, names: Sequence[str], top: Sequence[str]
) -> dict[str, Any]:
    """The manifest's `drift` entry: the score's reference and the `top` features'."""
    col = {n: i for i, n in enumerate(names)}
    return {
        "bins": BINS,
        "score": reference(score),
        "features": {n: reference(X[:, col[n]]) for n in top},
    }


@dataclass
class Hour:
    """One closed hour of one model version: its orders and the PSI of every series."""

    start: float
    version: str
    orders: int
    psi: dict[str, float] = field(default_factory=dict)


class Series:
    """The references of one model version, and the running counts of the open hour."""

    def __init__(self, drift: dict[str, Any], names: Sequence[str]) -> None:
        col = {n: i for i, n in enumerate(names)}
        self.names = [SCORE, *[n for n in drift.get("features", {}) if n in col]]
        refs = [drift["score"], *[drift["features"][n] for n in self.names[1:]]]
        self.edges = [np.asarray(r["edges"], np.float64) for r in refs]
        self.shares = [np.asarray(r["shares"], np.float64) for r in refs]
        self.columns = [col[n] for n in self.names[1:]]
        self.counts = [np.zeros(e.size + 2) for e in self.edges]
        self.orders = 0

    def add(self, score: np.ndarray, X: np.ndarray | None) -> None:
        self.counts[0] += counts_of(score, self.edges[0])
        if X is not None:
            for k, c in enumerate(self.columns, start=1):
                self.counts[k] += counts_of(X[:, c], self.edges[k])
        self.orders += score.size

    def close(self, start: float, version: str) -> Hour:
        hour = Hour(start, version, self.orders)
        for name, shares, counts in zip(self.names, self.shares, self.counts, strict=True):
            hour.psi[name] = psi(shares, counts) if self.orders else float("nan")
        self.counts = [np.zeros_like(c) for c in self.counts]
        self.orders = 0
        return hour


class DriftMonitor:
    """Counts the served score and top features per hour of order time, per model version;
    `observe` may be called from any thread (a lock), `take_closed` hands the closed hours
    to whoever publishes them (the event loop). An hour closes when an order of a later hour
    is observed, or the version changes. A version without a `drift` entry is not watched."""

    def __init__(
        self, names: Sequence[str], bound: float = BOUND, min_orders: int = MIN_ORDERS
    ) -> None:
        self.names = list(names)
        self.bound, self.min_orders = bound, min_orders
        self._lock = threading.Lock()
        self._version = ""
        self._series: Series | None = None
        self._hour = -np.inf
        self._closed: list[Hour] = []
        self.recent: deque[Hour] = deque(maxlen=RECENT)  # the last closed hours, newest last

    def observe(self, version: str, manifest: dict[str, Any], t: np.ndarray, score: np.ndarray,
                X: np.ndarray | None) -> None:  # fmt: skip
        if not t.size:
            return
        with self._lock:
            if version != self._version:
                self._close()
                self._version = version
                ref = manifest.get("drift")
                self._series = Series(ref, self.names) if ref else None
            if self._series is None:
                return
            hours = np.floor(t / HOUR_S) * HOUR_S
            late = hours < self._hour
            if late.any():  # orders of a closed hour count in the open one
                self._series.add(score[late], None if X is None else X[late])
            for h in np.unique(hours[~late]).tolist():
                if h > self._hour:
                    self._close()
                    self._hour = h
                rows = hours == h
                self._series.add(score[rows], None if X is None else X[rows])

    def _close(self) -> None:
        if self._series is not None and self._series.orders:
            hour = self._series.close(self._hour, self._version)
            self._closed.append(hour)
            self.recent.append(hour)

    def flush(self) -> None:
        """Close the open hour now (the end of a replay: its last hour is complete)."""
        with self._lock:
            self._close()
            if self._series is not None:
                self._hour = np.inf  # later orders of that hour count in a new one

    def take_closed(self) -> list[Hour]:
        with self._lock:
            out, self._closed = self._closed, []
        return out
