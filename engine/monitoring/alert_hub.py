"""Live monitoring: feeds the anomaly detector, fans its alerts out, keeps Prometheus metrics.

Knows nothing of gRPC. The server hands it every micro-batch's decisions and every batch of
checkout error events; `AlertHub` buffers them and hands them to `StreamMonitor`
(`engine.monitoring.anomaly`, event time) whenever a bucket may have closed, advances the
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
from bisect import bisect_left
from collections.abc import Callable, Iterator, Sequence
from dataclasses import replace
from typing import Any

import numpy as np
from prometheus_client import CollectorRegistry, Counter, Gauge
from prometheus_client.core import CounterMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector

from engine.decision.policy import ACTION_NAMES, DECLINE, FALLBACK, PATH_NAMES, SCREENED_OUT
from engine.monitoring.anomaly import Alert, StreamMonitor

log = logging.getLogger(__name__)
QUEUE_SIZE = 1000  # alerts buffered per watcher; the oldest are dropped beyond that
FLUSH_ROWS = 4096  # observations buffered before the monitor counts them
GRACE_S = 30.0  # how far the monitor's clock trails the newest event


class _CallMetrics(Collector):
    """Decisions by action and path, Score latency and calls per micro-batch, counted in
    plain Python numbers and exposed when Prometheus scrapes: a labelled Counter and two
    Histograms would take several locked updates per call on the event loop. Only the event
    loop's thread counts; a scrape reads each number once (a scrape during an update may
    see a histogram's buckets and sum one observation apart)."""

    LATENCY_BUCKETS = (1e-4, 2e-4, 5e-4, 1e-3, 2e-3, 5e-3, 1e-2, 5e-2, 0.1, 1.0)
    BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256)

    def __init__(self) -> None:
        self.decisions = np.zeros((8, 8), dtype=np.int64)  # [action, path]
        self.latency = [0] * (len(self.LATENCY_BUCKETS) + 1)  # per bucket, then +Inf
        self.latency_sum = 0.0
        self.batches = [0] * (len(self.BATCH_BUCKETS) + 1)
        self.batch_sum = 0

    def count(self, action: np.ndarray, path: np.ndarray, latency_s: Sequence[float]) -> None:
        if len(action) == 1:
            self.decisions[int(action[0]), int(path[0])] += 1
        elif len(action):
            np.add.at(self.decisions, (action, path), 1)
        if latency_s:
            self.batches[bisect_left(self.BATCH_BUCKETS, len(latency_s))] += 1
            self.batch_sum += len(latency_s)
            for s in latency_s:
                self.latency[bisect_left(self.LATENCY_BUCKETS, s)] += 1
                self.latency_sum += s

    def collect(self) -> Iterator[Metric]:
        decisions = CounterMetricFamily(
            "ordersight_decisions", "Decisions made", labels=["action", "path"]
        )
        for (a, p), n in np.ndenumerate(self.decisions):
            if n and a in ACTION_NAMES and p in PATH_NAMES:
                decisions.add_metric([ACTION_NAMES[a], PATH_NAMES[p]], float(n))
        yield decisions
        yield _histogram(
            "ordersight_engine_latency_seconds",
            "Time from a Score call's arrival in the batcher to its decision",
            self.LATENCY_BUCKETS,
            self.latency,
            self.latency_sum,
        )
        yield _histogram(
            "ordersight_batch_size",
            "Score calls per micro-batch",
            self.BATCH_BUCKETS,
            self.batches,
            self.batch_sum,
        )


def _histogram(
    name: str, doc: str, bounds: Sequence[float], counts: list[int], total: float
) -> HistogramMetricFamily:
    cumulative = np.cumsum(counts).tolist()
    buckets = [(str(float(b)), float(c)) for b, c in zip(bounds, cumulative, strict=False)]
    buckets.append(("+Inf", float(cumulative[-1])))
    return HistogramMetricFamily(name, doc, buckets=buckets, sum_value=float(total))


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
        self._orders: list[tuple[np.ndarray, list[str | None], np.ndarray, np.ndarray]] = []
        self._events: list[tuple[np.ndarray, list[str], list[str]]] = []
        self._buffered = 0
        self.components: dict[str, Alert] = {}  # open component alerts, by component
        r = self.registry
        self.calls = _CallMetrics()
        r.register(self.calls)
        self.events = Counter("ordersight_checkout_events", "Checkout error events", registry=r)
        self.refused = Counter(
            "ordersight_orders_refused",
            "Orders refused with INVALID_ARGUMENT, by the rule they broke",
            ["rule"],
            registry=r,
        )
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
        """One micro-batch's (or ScoreBatch call's) decisions: counted, and buffered for the
        detector. `latency_s` is given for a micro-batch of Score calls, one per call."""
        self.calls.count(action, path, latency_s)
        self._orders.append((t, list(channels), action, path))
        self._buffered += len(t)
        self._seen(t)

    def on_events(self, t: np.ndarray, channels: Sequence[str], codes: Sequence[str]) -> int:
        """Buffer checkout error events for the detector; how many it will count (an event
        whose bucket has closed, or lies past the detector's lead, is not)."""
        counted = int(self.monitor.counts(t).sum())
        self.events.inc(len(t))
        self._events.append((t, list(channels), list(codes)))
        self._buffered += len(t)
        self._seen(t)
        return counted

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

    def state(self) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
        """The detector's state with every buffered row counted (`StreamMonitor.state`)."""
        self._flush()
        arrays, meta = self.monitor.state()
        meta["hub"] = {"latest": self.latest, "bucket": self._bucket}
        return arrays, meta

    def restore(self, arrays: dict[str, np.ndarray], meta: dict[str, Any]) -> None:
        self.monitor.restore(arrays, meta)
        self.latest, self._bucket = float(meta["hub"]["latest"]), int(meta["hub"]["bucket"])
        active = self.monitor.active_alerts()
        for sev in ("warning", "critical"):
            self.alerts_open.labels(sev).set(sum(a.severity == sev for a in active))

    def component(self, name: str, problem: str) -> None:
        """Open (a non-empty `problem`) or resolve the critical alert of an engine component
        (series `component{name=...}`, kind `down`), pushed to watchers like the detector's."""
        now = self.wall()
        open_ = self.components.get(name)
        if problem and open_ is None:
            a = Alert(f"component{{name={name}}}", "down", "critical", now, now, 1.0, 0.0, 1.0,
                      f"{name} is down: {problem}")  # fmt: skip
            self.components[name] = a
        elif not problem and open_ is not None:
            del self.components[name]
            a = replace(open_, at=now, actual=1.0, score=0.0, end=now,
                        explanation=f"{name} works again")  # fmt: skip
        else:
            return
        self._push(a)

    def drift(self, series: str, psi: float, bound: float, start: float, end: float) -> None:
        """Open (PSI over `bound`) or resolve the warning that a distribution drifted from
        training (series `drift{series=...}`, kind `drift`), for the hour [start, end)."""
        key = f"drift{{series={series}}}"
        open_ = self.components.get(key)
        if psi > bound and open_ is None:
            why = f"{series}: PSI {psi:.3f} against training's distribution, over {bound:g}"
            score = min(psi / (2 * bound), 1.0)  # 0.5 at the bound, like the detector's
            a = Alert(key, "drift", "warning", start, end, bound, psi, score, why)
            self.components[key] = a
        elif psi <= bound and open_ is not None:
            del self.components[key]
            a = replace(open_, at=end, actual=psi, score=0.0, end=end,
                        explanation=f"{series}: PSI {psi:.3f}, back within {bound:g}")  # fmt: skip
        else:
            return
        self._push(a)

    def _push(self, a: Alert) -> None:
        """To every watcher; a watcher that fell behind loses its oldest alert."""
        for q in self._watchers:
            if q.full():
                q.get_nowait()
            q.put_nowait(a)

    def active_alerts(self) -> list[Alert]:
        """The detector's open alerts, then the components' that are down and drifts."""
        return [*self.monitor.active_alerts(), *self.components.values()]

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
            self.latest = max(self.latest, float(t[0] if len(t) == 1 else t.max()))
        if (
            self._buffered >= FLUSH_ROWS
            or int(self.latest // self.monitor.bucket_s) != self._bucket
        ):
            self._advance(self.latest)

    def _flush(self) -> None:
        if self._orders:
            t, ch, action, path = (list(x) for x in zip(*self._orders, strict=True))
            a, p = np.concatenate(action), np.concatenate(path)
            self.monitor.observe_orders(
                np.concatenate(t),
                [c for part in ch for c in part],
                a == DECLINE,
                p != SCREENED_OUT,
                p == FALLBACK,
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
            self._push(a)
        active = self.monitor.active_alerts()
        for sev in ("warning", "critical"):
            self.alerts_open.labels(sev).set(sum(a.severity == sev for a in active))
        for s in self.monitor.series_snapshot():
            self.expected.labels(s.series).set(s.expected)
            self.actual.labels(s.series).set(s.actual)
