"""Live monitoring: feeds the anomaly detector, fans its alerts out, keeps Prometheus metrics.

Knows nothing of gRPC. The server hands it every micro-batch's decisions and every batch of
checkout error events; `AlertHub` buffers them and hands them to
`engine.anomaly.StreamMonitor` (event time) whenever a bucket may have closed, advances the
monitor to the newest event time it has seen, and pushes new or changed alerts to the queues
of `WatchAlerts` subscribers. Buffering keeps the monitor's per-call cost off the per-order
hot path: alerts are only evaluated when a bucket closes anyway. The monitor runs `GRACE_S`
behind the newest event, so a straggler from another checkout host still lands in its
bucket. When traffic is live (event time within `live_window_s` of the wall clock), `tick`
also advances the monitor by the wall clock, so a stream that stops altogether is seen as a
drop rather than as silence that never ends.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Sequence

import numpy as np
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from engine.anomaly import Alert, StreamMonitor
from engine.policy import ACTION_NAMES, DECLINE, FALLBACK, PATH_NAMES, SCREENED_OUT

log = logging.getLogger(__name__)
QUEUE_SIZE = 1000  # alerts buffered per watcher; the oldest are dropped beyond that
FLUSH_ROWS = 4096  # observations buffered before the monitor counts them
GRACE_S = 30.0  # how far the monitor's clock trails the newest event


class AlertHub:
    def __init__(
        self,
        monitor: StreamMonitor,
        registry: CollectorRegistry | None = None,
        wall: Callable[[], float] = time.time,
        live_window_s: float = 3600.0,
    ) -> None:
        self.monitor = monitor
        self.registry = registry or CollectorRegistry()
        self.wall = wall
        self.live_window_s = live_window_s
        self.latest = -np.inf  # newest event time seen
        self._watchers: set[asyncio.Queue[Alert]] = set()
        self._bucket = -1
        self._orders: list[
            tuple[np.ndarray, list[str | None], np.ndarray, np.ndarray, np.ndarray]
        ] = []
        self._events: list[tuple[np.ndarray, list[str], list[str]]] = []
        self._buffered = 0
        r = self.registry
        self.decisions = Counter(
            "ordersight_decisions", "Decisions made", ["action", "path"], registry=r
        )
        self.latency = Histogram(
            "ordersight_engine_latency_seconds",
            "Time from a Score call's arrival in the batcher to its decision",
            buckets=(1e-4, 2e-4, 5e-4, 1e-3, 2e-3, 5e-3, 1e-2, 5e-2, 0.1, 1.0),
            registry=r,
        )
        self.batch_size = Histogram(
            "ordersight_batch_size",
            "Score calls per micro-batch",
            buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256),
            registry=r,
        )
        self.events = Counter("ordersight_checkout_events", "Checkout error events", registry=r)
        self.alerts_open = Gauge(
            "ordersight_alerts_open", "Open operational alerts", ["severity"], registry=r
        )
        self.expected = Gauge(
            "ordersight_series_expected",
            "Expected value of a watched series",
            ["series"],
            registry=r,
        )
        self.actual = Gauge(
            "ordersight_series_actual",
            "Last closed bucket of a watched series",
            ["series"],
            registry=r,
        )

    def on_decisions(
        self,
        t: np.ndarray,
        channels: Sequence[str | None],
        action: np.ndarray,
        path: np.ndarray,
        latency_s: Sequence[float] = (),
    ) -> None:
        if len(t) == 1:
            self.decisions.labels(ACTION_NAMES[int(action[0])], PATH_NAMES[int(path[0])]).inc()
        elif len(t):
            pairs, counts = np.unique(action.astype(np.int64) * 8 + path, return_counts=True)
            for pair, count in zip(pairs.tolist(), counts.tolist(), strict=True):
                self.decisions.labels(ACTION_NAMES[pair // 8], PATH_NAMES[pair % 8]).inc(count)
        if latency_s:  # a micro-batch of Score calls
            self.batch_size.observe(len(latency_s))
        for s in latency_s:
            self.latency.observe(s)
        self._orders.append(
            (t, list(channels), action == DECLINE, path != SCREENED_OUT, path == FALLBACK)
        )
        self._buffered += len(t)
        self._seen(t)

    def on_events(self, t: np.ndarray, channels: Sequence[str], codes: Sequence[str]) -> None:
        self.events.inc(len(t))
        self._events.append((t, list(channels), list(codes)))
        self._buffered += len(t)
        self._seen(t)

    def tick(self) -> None:
        """Advance by the wall clock when the traffic is live (see the module docstring)."""
        now = self.wall()
        if now - self.latest <= self.live_window_s:
            self._advance(now - self.monitor.bucket_s)

    def warm(self) -> None:
        """Compile the detector's kernels on a scratch monitor, so no request pays for it."""
        scratch = StreamMonitor(self.monitor.bucket_s, max_series=4)
        t = np.array([0.0, 1.0])
        scratch.observe_orders(
            t, ["a", "b"], np.zeros(2, bool), np.zeros(2, bool), np.zeros(2, bool)
        )
        scratch.observe_events(t, ["a", "b"], ["E", "E"])
        scratch.advance(3 * self.monitor.bucket_s)
        scratch.series_snapshot()

    def subscribe(self) -> asyncio.Queue[Alert]:
        q: asyncio.Queue[Alert] = asyncio.Queue(QUEUE_SIZE)
        self._watchers.add(q)
        return q

    def unsubscribe(self, q: asyncio.Queue[Alert]) -> None:
        self._watchers.discard(q)

    def _seen(self, t: np.ndarray) -> None:
        """Note the newest event time; hand the buffer to the monitor when a bucket may
        close (alerts are only evaluated then) or the buffer is large."""
        if len(t):
            self.latest = max(self.latest, float(np.max(t)))
        if (
            self._buffered >= FLUSH_ROWS
            or int(self.latest // self.monitor.bucket_s) != self._bucket
        ):
            self._advance(self.latest)

    def _flush(self) -> None:
        if self._orders:
            t, ch, declined, escalated, fallback = (
                list(x) for x in zip(*self._orders, strict=True)
            )
            self.monitor.observe_orders(
                np.concatenate(t),
                [c for part in ch for c in part],
                np.concatenate(declined),
                np.concatenate(escalated),
                np.concatenate(fallback),
            )
        if self._events:
            t, ch, codes = (list(x) for x in zip(*self._events, strict=True))
            self.monitor.observe_events(
                np.concatenate(t),
                [c for part in ch for c in part],
                [c for part in codes for c in part],
            )
        self._orders.clear()
        self._events.clear()
        self._buffered = 0

    def _advance(self, t: float) -> None:
        self._flush()
        if not np.isfinite(t):
            return
        self.latest = max(self.latest, t)
        bucket = int(self.latest // self.monitor.bucket_s)
        alerts = self.monitor.advance(self.latest - GRACE_S)
        if bucket == self._bucket and not alerts:
            return  # no bucket closed: nothing new to report
        self._bucket = bucket
        for a in alerts:
            log.warning("alert %s %s %s: %s", a.severity, a.kind, a.series, a.explanation)
            for q in self._watchers:
                if q.full():
                    q.get_nowait()
                q.put_nowait(a)
        active = self.monitor.active_alerts()
        for sev in ("warning", "critical"):
            self.alerts_open.labels(sev).set(sum(a.severity == sev for a in active))
        for s in self.monitor.series_snapshot():
            self.expected.labels(s.series).set(s.expected)
            self.actual.labels(s.series).set(s.actual)
