"""A challenger in shadow: a second model version decides the champion's orders off the hot
path, so its decisions can be compared before it is promoted.

Each micro-batch (and each ScoreBatch chunk) hands the challenger its features, computed
once for the champion, and the champion's actions. A thread of its own decides them with the
challenger's models (no reasons: the comparison needs actions and scores) from a bounded
queue; when the queue is full the batch is dropped and counted, so the champion's answers
never wait. Deciding is stateless (`Engine.decide` reads the models and the features), so it
runs beside the engine's writer safely. With a decision log, each batch the challenger
decides is logged as `challenger` rows carrying the champion entry's seq.
"""

from __future__ import annotations

import collections
import logging
import threading
import time
from typing import Any

import numpy as np
from prometheus_client import CollectorRegistry, Counter, Histogram

from engine.decision.cascade import Engine
from engine.decision_log.records import CHALLENGER, Entry
from engine.decision_log.writer import DecisionLog
from engine.models.artifacts import ModelSet
from engine.orders.arrays import OrderArrays

log = logging.getLogger(__name__)
QUEUE_MAX = 256
"""Batches waiting for the challenger; past this they are dropped (and counted)."""


class Shadow:
    def __init__(self, engine: Engine, metrics: CollectorRegistry, queue_max: int = QUEUE_MAX):
        self.engine = engine
        self.queue_max = queue_max
        self.models: ModelSet | None = None
        self.log: DecisionLog | None = None  # where its decisions go, when there is a log
        self.decided = self.dropped = self.agreed = 0  # since the challenger was set
        self._queue: collections.deque[tuple[Any, ...]] = collections.deque()
        self._wake = threading.Event()
        self._stop = False
        self._thread = threading.Thread(target=self._run, name="challenger", daemon=True)
        self._thread.start()
        self.decisions = Counter(
            "ordersight_challenger_decisions", "Orders the challenger decided", registry=metrics
        )
        self.drops = Counter(
            "ordersight_challenger_dropped", "Orders the challenger dropped (queue full)",
            registry=metrics,
        )  # fmt: skip
        self.agreements = Counter(
            "ordersight_challenger_agreements", "Orders the challenger gave the champion's action",
            registry=metrics,
        )  # fmt: skip
        self.lag = Histogram(
            "ordersight_challenger_lag_seconds", "From the champion's decision to the challenger's",
            buckets=(0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1, 5), registry=metrics,
        )  # fmt: skip

    def set(self, models: ModelSet | None) -> None:
        """Shadow with `models` from the next batch on (None: stop shadowing)."""
        self.models = models
        self.decided = self.dropped = self.agreed = 0

    @property
    def agreement(self) -> float:
        return self.agreed / self.decided if self.decided else 0.0

    def submit(
        self, ids: list[str], enc: OrderArrays, X: np.ndarray, action: np.ndarray, seq: int = 0
    ) -> None:
        """One batch the champion decided, with its log entry's seq (called on the engine's
        side, never blocks)."""
        models = self.models
        if models is None or not len(ids):
            return
        if len(self._queue) >= self.queue_max:
            self.dropped += len(ids)
            self.drops.inc(len(ids))
            return
        champion = self.engine.models.version
        self._queue.append((time.monotonic(), models, ids, enc, X, action, seq, champion))
        self._wake.set()

    def _run(self) -> None:
        while not self._stop:
            if not self._queue:
                self._wake.wait(0.5)
                self._wake.clear()
                continue
            t0, models, ids, enc, X, action, seq, champion = self._queue.popleft()
            try:
                d = self.engine.decide(ids, enc, X, None, explain=False, models=models)
            except Exception:  # a broken challenger must not stop the thread
                log.exception("challenger %s failed on %d orders", models.version, len(ids))
                continue
            if models is not self.models:  # cleared or replaced meanwhile: not counted
                continue
            agreed = int(np.count_nonzero(d.action == action))
            self.decided += len(ids)
            self.agreed += agreed
            self.decisions.inc(len(ids))
            self.agreements.inc(agreed)
            lag = time.monotonic() - t0
            self.lag.observe(lag)
            if self.log is not None and seq:
                self.log.append(
                    Entry(
                        CHALLENGER, seq, ids, enc.t, [None] * len(ids), decisions=d,
                        latency_us=np.full(len(ids), int(lag * 1e6), np.int64),
                        champion=champion, challenger=d.model_version,
                    )
                )  # fmt: skip

    def close(self) -> None:
        self._stop = True
        self._wake.set()
        self._thread.join(5.0)
