"""The data plane: everything a call does between the servicer's bytes and the answer's.

It owns the engine (models and velocity state), the micro-batcher, the engine's thread and
the alert hub, and knows nothing of gRPC: the servicer (`engine.serving.servicer`) hands it
request bytes or plain values and maps what it raises (`engine.errors`) to a status. All
engine work runs on one thread (the engine's own, or the event loop's), one job at a time,
so the velocity state sees orders in the order they were accepted.

Score micro-batches and ScoreBatch decode with the one order codec (the wire decoder for
protobuf bytes, the Arrow reader for Arrow IPC), are checked by the one rule table, and
answer with bytes from `engine.codec.decision_encoder`. A bad order fails its own call alone.

With a decision log (`engine.decision_log`), every change of state takes the log's next
sequence number on the engine's writer and its entry is appended; in the log's `fsync` mode
a call is answered only once its entry is on disk (the micro-batcher goes on meanwhile, so
the next batch is scored while this one's group commit runs).
"""

from __future__ import annotations

import asyncio
import functools
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any, NamedTuple

import numpy as np
from prometheus_client import Counter

from engine.codec import decision_encoder, order_decoder
from engine.decision.cascade import Engine
from engine.decision_log.records import DECISION, Entry, texts
from engine.decision_log.replay import Applied
from engine.decision_log.writer import DecisionLog
from engine.errors import Conflict, DeadlineExceeded, InvalidInput, Overloaded
from engine.monitoring.alert_hub import AlertHub
from engine.monitoring.anomaly import Alert
from engine.orders.batch import OrderBatch, OrderRules
from engine.orders.rules import rule_name
from engine.serving.batcher import MicroBatcher, Pending
from engine.serving.bulk import BulkScoring
from engine.serving.feedback import Feedback
from engine.serving.replication import Replication
from engine.serving.retries import RecentDecisions, digest
from engine.serving.shadow import Shadow

if TYPE_CHECKING:
    from engine.monitoring.drift import DriftMonitor
    from engine.serving.reviews import Reviews

LONE_GAP_S = 500e-6
"""A lone Score call is scored on the event loop while micro-batches come further apart than
this (low load): it spares two thread hand-offs. Under load the loop is what limits
throughput, so the engine's work stays on its own thread. With `inline_scores` (the engine
process behind front processes, whose loop runs no gRPC) Score micro-batches are always
scored on the loop while the engine's thread is idle."""


class ScoredBatch(NamedTuple):
    """One Score micro-batch's answers (bytes, or the call's own error) and what the alert
    hub counts."""

    results: list[bytes | InvalidInput]
    t: np.ndarray
    channels: list[str | None]
    action: np.ndarray
    path: np.ndarray
    waited: list[float]
    accepted: list[bytes]  # the valid orders' bytes, for the other replicas
    seq: int  # the decision log's entry (0: no log)
    call_seqs: list[int] | None  # per call, the entry its answer comes from (None: all `seq`)


def _settle_durable(call: Pending, answer: Any, fut: asyncio.Future[None]) -> None:
    exc = fut.exception()
    call.settle(exc if exc is not None else answer)


class DataPlane:
    def __init__(
        self,
        engine: Engine,
        hub: AlertHub,
        rules: OrderRules,
        *,
        max_batch: int = 256,
        max_wait_s: float = 0.0005,
        max_queue: int = 0,
        max_queue_ms: float = 50.0,
        idempotency_window_s: float = 0.0,
        idempotency_max: int = 0,
        engine_thread: bool = True,
        inline_scores: bool = False,
        clock: Callable[[], float] = time.monotonic,
        wall: Callable[[], float] = time.time,
    ) -> None:
        self.engine = engine
        self.hub = hub
        self.rules = rules
        self.clock = clock
        self.wall = wall
        # Late-bound, so that `process` can be wrapped (tests gate micro-batches with it).
        self.batcher = MicroBatcher(lambda b: self.process(b), max_batch, max_wait_s, clock)
        self.inline_scores = inline_scores
        self.replication: Replication | None = None  # set when replicas share a stream
        self.replicated_orders = 0  # other replicas' orders applied to the state
        self.shadow: Shadow | None = None  # the challenger, when one is set
        self.log: DecisionLog | None = None  # the decision log, when there is one
        self.reviews: Reviews | None = None  # the store's review queue, when there is one
        self.drift: DriftMonitor | None = None  # the score's and features' PSI per hour
        self.max_queue, self.max_queue_s = max_queue, max_queue_ms / 1e3
        self._per_call_s = 100e-6  # recent engine seconds per Score call (EWMA)
        self.rejected = Counter(
            "ordersight_rejected", "Score calls refused before scoring, by reason",
            ["reason"], registry=hub.registry,
        )  # fmt: skip
        self.recent = RecentDecisions(idempotency_window_s, idempotency_max, hub.registry)
        self.bulk = BulkScoring(self)  # ScoreBatch
        self.feedback = Feedback(self)  # outcomes, events, other replicas' orders
        self.hub_applied = Applied()  # log entries the anomaly detector has counted
        self._engine_thread = (
            ThreadPoolExecutor(1, thread_name_prefix="engine") if engine_thread else None
        )
        # ScoreBatch chunks are decided here while the engine's thread goes on with the next
        # chunk's features; deciding is stateless, so two chunks may be decided at once.
        self.decide_threads = ThreadPoolExecutor(2, thread_name_prefix="decide")
        self._engine_jobs = 0  # submitted to the engine's thread and not finished
        self._last_batch = -np.inf  # when the last Score micro-batch was dispatched
        self._mean_gap = 1.0  # recent seconds between Score micro-batches (EWMA)

    def start(self) -> None:
        self.batcher.start()

    async def stop(self) -> None:
        """Finish every call already accepted, then release the threads."""
        await self.batcher.stop()
        if self._engine_thread is not None:
            self._engine_thread.shutdown(wait=True)
        self.decide_threads.shutdown(wait=True)

    def latest(self) -> float:
        """Latest time accepted now: the wall clock plus the allowed skew."""
        return self.rules.latest(self.wall())

    async def engine_job(self, fn: Callable[..., Any], *args: Any, inline_ok: bool = False) -> Any:
        """Run engine work on its single thread (or inline): one job at a time, in order.
        `inline_ok` runs it on the event loop instead when the engine's thread has nothing
        queued or running, so the two never touch the engine's state at once."""
        if self._engine_thread is None or (inline_ok and self._engine_jobs == 0):
            return fn(*args)
        loop = asyncio.get_running_loop()
        job = self._engine_thread.submit(fn, *args)
        self._engine_jobs += 1
        # Counted until the job itself ends, not until its caller stops waiting: a cancelled
        # call's job still runs, and nothing may touch the state beside it meanwhile.
        job.add_done_callback(lambda _job: loop.call_soon_threadsafe(self._job_done))
        return await asyncio.wrap_future(job)

    def _job_done(self) -> None:
        self._engine_jobs -= 1

    async def on_engine(self, fn: Callable[[], Any]) -> Any:
        """`fn()` on the engine's single writer, between two jobs (a consistent state)."""
        return await self.engine_job(fn)

    # --- Score ------------------------------------------------------------------------------

    async def score(self, order: bytes | bytearray, deadline: float | None) -> bytes:
        """A serialized Order's serialized Decision (`deadline`: monotonic seconds)."""
        self.admit(deadline=deadline)
        return await self.batcher.submit(order, deadline)

    def queue_limit(self) -> int:
        """Score calls that may wait: `max_queue`, or what the engine scores in
        `max_queue_s` at its recent pace (at least a full micro-batch)."""
        if self.max_queue:
            return self.max_queue
        return max(self.batcher.max_batch, int(self.max_queue_s / self._per_call_s))

    def admit(self, taken: int = 0, deadline: float | None = None) -> None:
        """Refuse a new Score call (Overloaded) when the calls waiting for the engine (queued,
        or in a batch not yet scored) are at the bound; `taken`: calls accepted elsewhere
        and not yet queued (the link's current turn). DeadlineExceeded when calls are queued
        ahead and `deadline` comes before the engine would reach this one at its recent pace
        (not even the fallback's answer could be on time; with nothing ahead a call is always
        taken, so a stale pace never refuses calls on an idle engine); Unavailable while the
        decision log is down and fail_closed."""
        self.check_log()
        b = self.batcher
        waiting, limit = b.waiting + b.in_dispatch + taken, self.queue_limit()
        if waiting >= limit:
            self.rejected.labels("queue_full").inc()
            raise Overloaded(
                f"the engine's queue is full ({waiting} Score calls waiting, at most {limit}); "
                "retry with backoff"
            )
        if deadline is not None and waiting:
            wait = waiting * self._per_call_s
            left = deadline - self.clock()
            if left < wait:
                self.rejected.labels("deadline").inc()
                raise DeadlineExceeded(
                    f"the deadline cannot be met: {max(left, 0) * 1e3:.1f} ms left, the engine "
                    f"reaches this call in about {wait * 1e3:.1f} ms ({waiting} calls before it)"
                )

    def check_log(self) -> None:
        """Unavailable (counted, reason log_down) while the decision log refuses calls that
        change state."""
        if self.log is not None and self.log.refusing:
            self.rejected.labels("log_down").inc()
            self.log.check_writable()

    async def process(self, batch: Sequence[Pending]) -> list[bytes | InvalidInput] | None:
        """Score one micro-batch of Score calls (the batcher calls this); None when its
        calls are answered later, once their log entry is durable."""
        now = self.clock()
        gap, self._last_batch = now - self._last_batch, now
        self._mean_gap += 0.2 * (min(gap, 1.0) - self._mean_gap)
        lone = self.inline_scores or (len(batch) == 1 and self._mean_gap > LONE_GAP_S)
        scored: ScoredBatch = await self.engine_job(self._timed, batch, inline_ok=lone)
        self._observe(scored)
        if self._answer_when_durable(batch, scored):
            return None
        return scored.results

    def _answer_when_durable(self, batch: Sequence[Pending], scored: ScoredBatch) -> bool:
        """In the log's fsync mode, answer the batch's calls once its entry is on disk (True:
        they will be); False: answer them now."""
        if self.log is None:
            return False
        seqs = scored.call_seqs or [scored.seq] * len(batch)
        waits = {s: self.log.durable(s) for s in set(seqs) if s}
        if all(w is None for w in waits.values()):
            return False
        for s, w in waits.items():
            if w is not None:  # a failed write's answers were never given: no retry gets them
                w.add_done_callback(functools.partial(self._forget_if_failed, s))
        for p, r, s in zip(batch, scored.results, seqs, strict=True):
            w = waits.get(s)
            if w is None:
                p.settle(r)
            else:
                w.add_done_callback(functools.partial(_settle_durable, p, r))
        return True

    def score_now(self, batch: Sequence[Pending]) -> bool:
        """Score `batch` on the calling thread (the event loop) and settle its calls, when
        no engine work is queued or running (so the state's order of updates holds);
        False, and nothing done, otherwise. Spares a lone burst the batcher's hand-off."""
        if self._engine_jobs or self.batcher.waiting:
            return False
        self.batcher.batches += 1
        self.batcher.items += len(batch)
        scored = self._timed(batch)
        self._observe(scored)
        if not self._answer_when_durable(batch, scored):
            for p, r in zip(batch, scored.results, strict=True):
                p.settle(r)
        return True

    def _observe(self, scored: ScoredBatch) -> None:
        if len(scored.t):
            if self.replication is not None:
                self.replication.publish_orders(scored.accepted)
                if self.replication.decisions:
                    self.replication.publish_decisions(
                        [r for r in scored.results if isinstance(r, bytes)]
                    )
            self.hub.on_decisions(
                scored.t, scored.channels, scored.action, scored.path, scored.waited
            )
            if scored.seq:
                self.hub_applied.add(scored.seq)

    def _forget_if_failed(self, seq: int, fut: asyncio.Future[None]) -> None:
        if fut.exception() is not None:
            self.recent.forget_seq(seq)

    def _timed(self, batch: Sequence[Pending]) -> ScoredBatch:
        """`score_calls`, measuring the engine's pace for the queue bound."""
        t0 = time.perf_counter()
        scored = self.score_calls(batch)
        per_call = (time.perf_counter() - t0) / len(batch)
        self._per_call_s += 0.1 * (per_call - self._per_call_s)
        return scored

    def _settled_early(self, batch: Sequence[Pending], orders: OrderBatch) -> dict[int, Any]:
        """Calls of the batch answered without scoring: a deadline already passed
        (DeadlineExceeded), a retry (its stored answer and log seq), another order under a
        used id (Conflict), the same order twice in the batch (the index of its first)."""
        out: dict[int, Any] = {}
        now = self.clock()
        first: dict[str, tuple[int, bytes]] = {}
        for i, good in enumerate(orders.ok.tolist()):
            if not good:
                continue
            p = batch[i]
            if p.deadline is not None and p.deadline <= now:
                self.rejected.labels("deadline").inc()
                out[i] = DeadlineExceeded(
                    f"the deadline passed while the call waited {(now - p.arrival) * 1e3:.0f} "
                    "ms for the engine; it was not scored"
                )
                continue
            if not self.recent.enabled:
                continue
            oid, key = orders.ids[i], digest(p.payload)
            if oid in first:
                j, seen = first[oid]
                out[i] = j if seen == key else Conflict(
                    f"order_id '{oid}': another order under this id in the same batch",
                    "order_id",
                )  # fmt: skip
                continue
            hit = self.recent.lookup(oid, key)
            if hit is not None:
                out[i] = hit
            else:
                first[oid] = (i, key)
        return out

    def score_calls(self, batch: Sequence[Pending]) -> ScoredBatch:
        """Decode, score and serialize one micro-batch; a bad order fails its call alone."""
        orders = self.rules.check(
            order_decoder.decode_orders([p.payload for p in batch]), self.latest()
        )
        if not orders.ok.all():
            self.count_refused(orders)
        early = self._settled_early(batch, orders)
        scored_rows = orders.ok.copy()
        if early:
            scored_rows[list(early)] = False
        ok = scored_rows.tolist()
        clean = all(ok)
        rows = np.flatnonzero(scored_rows)
        arrays = orders.arrays if clean else orders.arrays.take(rows)
        ids = orders.ids if clean else [orders.ids[i] for i in rows.tolist()]
        channels = orders.channels if clean else [orders.channels[i] for i in rows.tolist()]
        live = batch if clean else [batch[i] for i in rows.tolist()]
        deadlines = np.array(
            [np.inf if p.deadline is None else p.deadline for p in live], dtype=np.float64
        )
        X = self.engine.featurize(arrays)
        models = self.engine.models
        decisions = self.engine.decide(ids, arrays, X, deadlines, models=models)
        if self.drift is not None:
            self.drift.observe(models.version, models.manifest, arrays.t, decisions.score, X)
        now = self.clock()
        waited = [now - p.arrival for p in live]
        latency = [int(w * 1e6) for w in waited]
        seq = 0
        if (self.log is not None or self.reviews is not None) and arrays.n:
            sel, cols = None if clean else rows, orders.columns
            entry = Entry(
                DECISION, 0, ids, arrays.t, channels, arrays,
                texts(cols, "customer_id", sel), texts(cols, "currency", sel), X,
                decisions, np.array(latency, np.int64), decisions.model_version,
                self.challenger_version(),
            )  # fmt: skip
            if self.log is not None:
                seq = self.log.append_next(entry)
            if self.reviews is not None:
                self.reviews.on_entry(entry)
        if self.shadow is not None:
            self.shadow.submit(ids, arrays, X, decisions.action, seq)
        answers = iter(decision_encoder.decision_bytes(decisions, latency))
        results: list[Any] = [
            next(answers) if good else None if i in early else order_decoder.refusal(orders, i)
            for i, good in enumerate(ok)
        ]
        call_seqs = None
        if self.recent.enabled:
            for i in rows.tolist():
                self.recent.store(orders.ids[i], digest(batch[i].payload), results[i], seq)
        for i, v in early.items():
            if isinstance(v, tuple):  # a retry: the stored answer, once its entry is durable
                results[i] = v[0]
                call_seqs = call_seqs or [seq] * len(batch)
                call_seqs[i] = v[1]
            elif isinstance(v, int):  # the same order earlier in this batch
                results[i] = results[v]
            else:
                results[i] = v
        accepted = [p.payload for p in live]
        return ScoredBatch(
            results, arrays.t, channels, decisions.action, decisions.path, waited, accepted, seq,
            call_seqs,
        )  # fmt: skip

    def challenger_version(self) -> str | None:
        models = None if self.shadow is None else self.shadow.models
        return None if models is None else models.version

    def count_refused(self, orders: OrderBatch) -> None:
        """Refused orders by rule, in `ordersight_orders_refused`."""
        for code in orders.errors[~orders.ok, 0].tolist():
            self.hub.refused.labels(rule_name(code)).inc()

    async def durable(self, seq: int) -> None:
        """Return once the log entry `seq` is as durable as the log's mode promises."""
        if self.log is not None and seq:
            waiter = self.log.durable(seq)
            if waiter is not None:
                await waiter

    def active_alerts(self) -> list[Alert]:
        return self.hub.active_alerts()
