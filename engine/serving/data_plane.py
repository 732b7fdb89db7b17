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
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any, NamedTuple

import numpy as np
import pyarrow as pa
from ordersight.v1 import risk_pb2 as pb

from engine.codec import decision_encoder, order_decoder
from engine.codec.arrow_orders import conform, read_ipc, to_columns
from engine.codec.decision_table import decisions_table, table_to_ipc
from engine.codec.score_batch import ARROW_IPC, ORDERS, split_score_batch
from engine.decision.cascade import Engine
from engine.decision.decisions import Decisions
from engine.decision_log.records import DECISION, EVENT, OUTCOME, Entry, texts
from engine.decision_log.replay import Applied
from engine.decision_log.writer import DecisionLog
from engine.errors import InvalidInput
from engine.models.artifacts import ModelSet
from engine.monitoring.alert_hub import AlertHub
from engine.monitoring.anomaly import Alert
from engine.orders.arrays import OrderArrays
from engine.orders.batch import OrderBatch, OrderRules
from engine.orders.rules import check_text, check_time, rule_name
from engine.serving.batcher import MicroBatcher, Pending
from engine.serving.replication import ARROW, OUTCOMES, Replication
from engine.serving.replication import ORDERS as REPLICATED_ORDERS
from engine.serving.shadow import Shadow

LONE_GAP_S = 500e-6
"""A lone Score call is scored on the event loop while micro-batches come further apart than
this (low load): it spares two thread hand-offs. Under load the loop is what limits
throughput, so the engine's work stays on its own thread. With `inline_scores` (the engine
process behind front processes, whose loop runs no gRPC) Score micro-batches are always
scored on the loop while the engine's thread is idle."""
BATCH_CHUNK = 8192
"""ScoreBatch orders featurized per step on the engine's thread: between steps, Score
micro-batches get their turn."""

Timestamp = tuple[int, int]  # (seconds, nanos)


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


class DataPlane:
    def __init__(
        self,
        engine: Engine,
        hub: AlertHub,
        rules: OrderRules,
        *,
        max_batch: int = 256,
        max_wait_s: float = 0.0005,
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
        self.hub_applied = Applied()  # log entries the anomaly detector has counted
        self._engine_thread = (
            ThreadPoolExecutor(1, thread_name_prefix="engine") if engine_thread else None
        )
        # ScoreBatch chunks are decided here while the engine's thread goes on with the next
        # chunk's features; deciding is stateless, so two chunks may be decided at once.
        self._decide_threads = ThreadPoolExecutor(2, thread_name_prefix="decide")
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
        self._decide_threads.shutdown(wait=True)

    def latest(self) -> float:
        """Latest time accepted now: the wall clock plus the allowed skew."""
        return self.rules.latest(self.wall())

    async def _on_engine(self, fn: Callable[..., Any], *args: Any, inline_ok: bool = False) -> Any:
        """Run engine work on its single thread (or inline): one job at a time, in order.
        `inline_ok` runs it on the event loop instead when the engine's thread has nothing
        queued or running, so the two never touch the engine's state at once."""
        if self._engine_thread is None or (inline_ok and self._engine_jobs == 0):
            return fn(*args)
        self._engine_jobs += 1
        try:
            loop = asyncio.get_running_loop()
            return await loop.run_in_executor(self._engine_thread, fn, *args)
        finally:
            self._engine_jobs -= 1

    async def on_engine(self, fn: Callable[[], Any]) -> Any:
        """`fn()` on the engine's single writer, between two jobs (a consistent state)."""
        return await self._on_engine(fn)

    # --- Score ------------------------------------------------------------------------------

    async def score(self, order: bytes | bytearray, deadline: float | None) -> bytes:
        """A serialized Order's serialized Decision (`deadline`: monotonic seconds)."""
        return await self.batcher.submit(order, deadline)

    async def process(self, batch: Sequence[Pending]) -> list[bytes | InvalidInput] | None:
        """Score one micro-batch of Score calls (the batcher calls this); None when its
        calls are answered later, once their log entry is durable."""
        now = self.clock()
        gap, self._last_batch = now - self._last_batch, now
        self._mean_gap += 0.2 * (min(gap, 1.0) - self._mean_gap)
        lone = self.inline_scores or (len(batch) == 1 and self._mean_gap > LONE_GAP_S)
        scored: ScoredBatch = await self._on_engine(self.score_calls, batch, inline_ok=lone)
        self._observe(scored)
        if self._answer_when_durable(batch, scored):
            return None
        return scored.results

    def _answer_when_durable(self, batch: Sequence[Pending], scored: ScoredBatch) -> bool:
        """In the log's fsync mode, answer the batch's calls once its entry is on disk (True:
        they will be); False: answer them now."""
        if self.log is None or not scored.seq:
            return False
        durable = self.log.durable(scored.seq)
        if durable is None:
            return False

        def settle(fut: asyncio.Future[None]) -> None:
            exc = fut.exception()
            for p, r in zip(batch, scored.results, strict=True):
                p.settle(exc if exc is not None else r)

        durable.add_done_callback(settle)
        return True

    def score_now(self, batch: Sequence[Pending]) -> bool:
        """Score `batch` on the calling thread (the event loop) and settle its calls, when
        no engine work is queued or running (so the state's order of updates holds);
        False, and nothing done, otherwise. Spares a lone burst the batcher's hand-off."""
        if self._engine_jobs or self.batcher.waiting:
            return False
        self.batcher.batches += 1
        self.batcher.items += len(batch)
        scored = self.score_calls(batch)
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

    def score_calls(self, batch: Sequence[Pending]) -> ScoredBatch:
        """Decode, score and serialize one micro-batch; a bad order fails its call alone."""
        orders = self.rules.check(
            order_decoder.decode_orders([p.payload for p in batch]), self.latest()
        )
        ok = orders.ok.tolist()
        clean = all(ok)
        if not clean:
            self._count_refused(orders)
        rows = np.flatnonzero(orders.ok)
        arrays = orders.arrays if clean else orders.arrays.take(rows)
        ids = orders.ids if clean else [orders.ids[i] for i in rows.tolist()]
        channels = orders.channels if clean else [orders.channels[i] for i in rows.tolist()]
        live = batch if clean else [batch[i] for i in rows.tolist()]
        deadlines = np.array(
            [np.inf if p.deadline is None else p.deadline for p in live], dtype=np.float64
        )
        X = self.engine.featurize(arrays)
        decisions = self.engine.decide(ids, arrays, X, deadlines)
        now = self.clock()
        waited = [now - p.arrival for p in live]
        latency = [int(w * 1e6) for w in waited]
        seq = 0
        if self.log is not None and arrays.n:
            seq = self.log.reserve()
            sel, cols = None if clean else rows, orders.columns
            self.log.append(
                Entry(
                    DECISION, seq, ids, arrays.t, channels, arrays,
                    texts(cols, "customer_id", sel), texts(cols, "currency", sel), X,
                    decisions, np.array(latency, np.int64), decisions.model_version,
                    self._challenger(),
                )
            )  # fmt: skip
        if self.shadow is not None:
            self.shadow.submit(ids, arrays, X, decisions.action, seq)
        answers = iter(decision_encoder.decision_bytes(decisions, latency))
        results: list[bytes | InvalidInput] = [
            next(answers) if good else order_decoder.refusal(orders, i) for i, good in enumerate(ok)
        ]
        accepted = [p.payload for p in live]
        return ScoredBatch(
            results, arrays.t, channels, decisions.action, decisions.path, waited, accepted, seq
        )

    def _challenger(self) -> str | None:
        models = None if self.shadow is None else self.shadow.models
        return None if models is None else models.version

    # --- ScoreBatch -------------------------------------------------------------------------

    async def score_batch(self, request: bytes | bytearray, deadline: float | None) -> bytes:
        """A serialized ScoreBatchRequest's serialized ScoreBatchResponse."""
        t0 = self.clock()
        req = split_score_batch(request)
        if req.kind == ORDERS:
            if len(req.starts) > self.rules.limits.max_batch_orders:
                raise InvalidInput(
                    f"orders.orders: {len(req.starts):,} orders, at most "
                    f"{self.rules.limits.max_batch_orders:,}",
                    "orders.orders",
                )
            orders = await self._on_engine(self._batch_orders, req)
            table = None
        elif req.kind == ARROW_IPC:
            assert req.arrow_ipc is not None
            orders, table = await self._on_engine(self._arrow_orders, req.arrow_ipc)
        else:
            raise InvalidInput("payload: set either orders or arrow_ipc", "payload")
        loop = asyncio.get_running_loop()
        parts = []
        seqs: list[int] = []
        enc = orders.arrays
        models = self.engine.models  # every chunk of this call decided by one version
        for lo in range(0, max(enc.n, 1), BATCH_CHUNK):
            hi = min(lo + BATCH_CHUNK, enc.n)
            sub = enc.take(slice(lo, hi))
            X, seq = await self._on_engine(self._featurize, sub)
            seqs.append(seq)
            deadlines = None if deadline is None else np.full(hi - lo, deadline)
            parts.append(
                loop.run_in_executor(
                    self._decide_threads, self._decide_chunk, orders, lo, sub, X, deadlines,
                    req.arrow_response, models, seq, t0,
                )
            )  # fmt: skip
        if self.replication is not None:  # the state has them: so shall the other replicas
            if table is not None:
                self.replication.publish_table(table)
            else:
                payload = req.payload
                self.replication.publish_orders(
                    [
                        bytes(payload[a:b])
                        for a, b in zip(req.starts.tolist(), req.ends.tolist(), strict=True)
                    ]
                )
        done = await asyncio.gather(*parts)
        decisions = Decisions.concat([d for d, _ in done])
        self.hub.on_decisions(enc.t, orders.channels, decisions.action, decisions.path)
        for seq in seqs:
            if seq:
                self.hub_applied.add(seq)
        await self._durable(max(seqs))
        elapsed = int((self.clock() - t0) * 1e6)
        if self.replication is not None and self.replication.decisions:
            self.replication.publish_decisions(
                decision_encoder.decision_bytes(decisions, [elapsed] * len(decisions))
            )
        if req.arrow_response:
            table = pa.concat_tables([t for _, t in done])
            latency = pa.array(np.full(table.num_rows, elapsed, np.int64))
            table = table.set_column(
                table.schema.get_field_index("latency_us"), "latency_us", latency
            )
            return pb.ScoreBatchResponse(
                decisions_arrow_ipc=table_to_ipc(table)
            ).SerializeToString()
        return decision_encoder.batch_response_bytes(decisions, [elapsed] * len(decisions))

    def _count_refused(self, orders: OrderBatch) -> None:
        """Refused orders by rule, in `ordersight_orders_refused`."""
        for code in orders.errors[~orders.ok, 0].tolist():
            self.hub.refused.labels(rule_name(code)).inc()

    def _batch_orders(self, req: Any) -> OrderBatch:
        orders = self.rules.check(req.order_columns(), self.latest())
        self._count_refused(orders)
        bad = order_decoder.first_refusal(orders, "orders.orders[{i}].")
        if bad is not None:
            raise bad
        return orders

    def _arrow_orders(self, payload: memoryview) -> tuple[OrderBatch, pa.Table]:
        table = conform(read_ipc(payload, self.rules.limits), where="arrow_ipc")
        orders = self.rules.check(to_columns(table), self.latest())
        self._count_refused(orders)
        orders.raise_first(lambda i: orders.refusal_in(i, "arrow_ipc"))
        return orders, table

    def _featurize(self, enc: OrderArrays) -> tuple[np.ndarray, int]:
        """Features of new orders (added to the state) and their log entry's seq (0: none)."""
        X = self.engine.featurize(enc)
        return X, self.log.reserve() if self.log is not None and enc.n else 0

    async def _durable(self, seq: int) -> None:
        """Return once the log entry `seq` is as durable as the log's mode promises."""
        if self.log is not None and seq:
            waiter = self.log.durable(seq)
            if waiter is not None:
                await waiter

    def _decide_chunk(
        self,
        orders: OrderBatch,
        lo: int,
        enc: OrderArrays,
        X: np.ndarray,
        deadlines: np.ndarray | None,
        as_table: bool,
        models: ModelSet,
        seq: int,
        t0: float,
    ) -> tuple[Decisions, pa.Table | None]:
        """One ScoreBatch chunk's decisions, and their Arrow table when the answer is Arrow
        (built here, off the event loop; the call's latency is filled in at the end). Its
        log entry is appended even if deciding fails: the state has its orders."""
        hi = lo + enc.n
        ids = orders.ids[lo:hi]
        d = None
        try:
            d = self.engine.decide(ids, enc, X, deadlines, models=models)
        finally:
            if seq and self.log is not None:
                rows = np.arange(lo, hi)
                latency = np.full(enc.n, int((self.clock() - t0) * 1e6), np.int64)
                self.log.append(
                    Entry(
                        DECISION, seq, ids, enc.t, orders.channels[lo:hi], enc,
                        texts(orders.columns, "customer_id", rows),
                        texts(orders.columns, "currency", rows), X, d, latency, models.version,
                        self._challenger(),
                    )
                )  # fmt: skip
        if self.shadow is not None:
            self.shadow.submit(ids, enc, X, d.action, seq)
        return d, decisions_table(d) if as_table else None

    # --- feedback and alerts ----------------------------------------------------------------

    async def report_outcomes(
        self,
        orders: list[bytes],
        is_fraud: np.ndarray,
        known_at: Sequence[Timestamp | None],
        replicate: bool = True,
    ) -> int:
        """Known outcomes of orders (serialized Orders with at least their entity fields);
        an unset `known_at` means now, the latest order time the engine has scored."""
        if not orders:
            return 0
        latest = self.latest()
        batch = self.rules.check(order_decoder.decode_orders(orders), latest)
        self._count_refused(batch)
        bad = order_decoder.first_refusal(batch, "outcomes[{i}].order.")
        if bad is not None:
            raise bad
        known = np.empty(len(orders))
        now = max(self.engine.latest_order_time, float(batch.arrays.t.max()))
        for i, k in enumerate(known_at):
            name = f"outcomes[{i}].known_at"
            known[i] = now if k is None else check_time(*k, name, self.rules.limits, latest)
        is_fraud = np.asarray(is_fraud, np.int8)
        known = np.maximum(known, batch.arrays.t)
        seq = await self._on_engine(self._apply_outcomes, batch, is_fraud, known)
        if seq:
            self.hub_applied.add(seq)
        if replicate and self.replication is not None:
            self.replication.publish_outcomes(_outcomes_request(orders, is_fraud, known))
        await self._durable(seq)
        return len(orders)

    def _apply_outcomes(self, batch: OrderBatch, is_fraud: np.ndarray, known: np.ndarray) -> int:
        """Apply outcomes to the state and log them; their entry's seq (0: no log)."""
        self.engine.report_outcomes(batch.arrays, is_fraud, known)
        if self.log is None:
            return 0
        seq = self.log.reserve()
        self.log.append(
            Entry(
                OUTCOME, seq, batch.ids, batch.arrays.t, batch.channels, batch.arrays,
                texts(batch.columns, "customer_id", None), texts(batch.columns, "currency", None),
                is_fraud=is_fraud, known_at=known, champion=self.engine.models.version,
            )
        )  # fmt: skip
        return seq

    async def apply_replicated(self, kind: str, body: bytes) -> None:
        """Apply another replica's accepted orders or outcomes to the velocity state, in
        the stream's order, on the engine's single writer."""
        if kind == OUTCOMES:
            outcomes = pb.ReportOutcomesRequest.FromString(body).outcomes
            await self.report_outcomes(
                [oc.order.SerializeToString() for oc in outcomes],
                np.array([oc.is_fraud for oc in outcomes], np.int8),
                [(oc.known_at.seconds, oc.known_at.nanos) for oc in outcomes],
                replicate=False,
            )
            return
        if kind == ARROW:
            cols = to_columns(
                conform(read_ipc(memoryview(body), self.rules.limits), where="stream")
            )
        elif kind == REPLICATED_ORDERS:
            cols = split_score_batch(body).order_columns()
        else:
            raise InvalidInput(f"replicated message of unknown kind {kind!r}", "kind")
        # Accepted by its origin, whose clock may run ahead of this one: no time limit.
        orders = self.rules.check(cols, np.inf)
        arrays = (
            orders.arrays.take(np.flatnonzero(orders.ok)) if not orders.ok.all() else orders.arrays
        )
        await self._on_engine(self.engine.featurize, arrays, inline_ok=True)
        self.replicated_orders += arrays.n

    async def report_events(
        self, channels: Sequence[str], codes: Sequence[str], times: Sequence[Timestamp | None]
    ) -> int:
        """Checkout error events, checked by the same rules as orders' fields."""
        latest = self.latest()
        limits = self.rules.limits
        t = np.empty(len(codes))
        for i, (channel, code, when) in enumerate(zip(channels, codes, times, strict=True)):
            check_text(code, f"events[{i}].code", limits, required=True)
            check_text(channel, f"events[{i}].channel", limits)
            if when is None:
                raise InvalidInput(f"events[{i}].time: required", f"events[{i}].time")
            t[i] = check_time(*when, f"events[{i}].time", limits, latest)
        if not t.size:
            return 0
        self.hub.on_events(t, list(channels), list(codes))
        if self.log is not None:
            seq = self.log.reserve()
            self.log.append(
                Entry(EVENT, seq, [""] * t.size, t, list(channels), codes=list(codes),
                      champion=self.engine.models.version)
            )  # fmt: skip
            self.hub_applied.add(seq)
            await self._durable(seq)
        return int(t.size)

    def active_alerts(self) -> list[Alert]:
        return self.hub.monitor.active_alerts()


def _outcomes_request(orders: list[bytes], is_fraud: np.ndarray, known: np.ndarray) -> bytes:
    """A ReportOutcomesRequest of accepted outcomes, each with the known_at applied here."""
    req = pb.ReportOutcomesRequest()
    for o, f, k in zip(orders, is_fraud.tolist(), known.tolist(), strict=True):
        oc = req.outcomes.add(is_fraud=bool(f))
        oc.order.MergeFromString(o)
        sec = int(np.floor(k))
        oc.known_at.seconds, oc.known_at.nanos = sec, min(int(round((k - sec) * 1e9)), 999_999_999)
    return req.SerializeToString()
