"""ScoreBatch: many orders in one call, as protobuf orders or an Arrow IPC stream.

The orders are checked by the one rule table (a bad one refuses the call, naming its row),
featurized on the engine's single writer in chunks of `BATCH_CHUNK` (so Score micro-batches
get their turn between chunks), and decided on the data plane's decide threads, every chunk
by the one model version read at the start of the call. Each chunk is logged (when there is
a decision log) once decided; in fsync mode the call is answered once the last is on disk.
"""

from __future__ import annotations

import asyncio
import logging
from concurrent.futures import Future
from typing import TYPE_CHECKING, Any

import numpy as np
import pyarrow as pa
from ordersight.v1 import risk_pb2 as pb

from engine.codec import decision_encoder, order_decoder
from engine.codec.arrow_orders import conform, read_ipc, to_columns
from engine.codec.decision_table import decisions_table, table_to_ipc
from engine.codec.score_batch import ARROW_IPC, ORDERS, split_score_batch
from engine.decision.decisions import Decisions
from engine.decision_log.records import DECISION, Entry, texts
from engine.errors import InvalidInput
from engine.models.artifacts import ModelSet
from engine.orders.arrays import OrderArrays
from engine.orders.batch import OrderBatch

if TYPE_CHECKING:
    from engine.serving.data_plane import DataPlane

log = logging.getLogger(__name__)
BATCH_CHUNK = 8192
"""ScoreBatch orders featurized per step on the engine's thread: between steps, Score
micro-batches get their turn."""


class BulkScoring:
    def __init__(self, plane: DataPlane) -> None:
        self.plane = plane

    async def score_batch(self, request: bytes | bytearray, deadline: float | None) -> bytes:
        """A serialized ScoreBatchRequest's serialized ScoreBatchResponse."""
        t0 = self.plane.clock()
        req = split_score_batch(request)
        if req.kind == ORDERS:
            if len(req.starts) > self.plane.rules.limits.max_batch_orders:
                raise InvalidInput(
                    f"orders.orders: {len(req.starts):,} orders, at most "
                    f"{self.plane.rules.limits.max_batch_orders:,}",
                    "orders.orders",
                )
            orders = await self.plane.engine_job(self._batch_orders, req)
            table = None
        elif req.kind == ARROW_IPC:
            assert req.arrow_ipc is not None
            orders, table = await self.plane.engine_job(self._arrow_orders, req.arrow_ipc)
        else:
            raise InvalidInput("payload: set either orders or arrow_ipc", "payload")
        parts = []
        seqs: list[int] = []
        enc = orders.arrays
        models = self.plane.engine.models  # every chunk of this call decided by one version
        for lo in range(0, max(enc.n, 1), BATCH_CHUNK):
            hi = min(lo + BATCH_CHUNK, enc.n)
            sub = enc.take(slice(lo, hi))
            deadlines = None if deadline is None else np.full(hi - lo, deadline)
            decided, seq = await self.plane.engine_job(
                self._featurize, orders, lo, sub, deadlines, req.arrow_response, models, t0
            )
            seqs.append(seq)
            parts.append(asyncio.wrap_future(decided))
        if self.plane.replication is not None:  # the state has them: so shall the other replicas
            if table is not None:
                self.plane.replication.publish_table(table)
            else:
                payload = req.payload
                self.plane.replication.publish_orders(
                    [
                        bytes(payload[a:b])
                        for a, b in zip(req.starts.tolist(), req.ends.tolist(), strict=True)
                    ]
                )
        try:
            done = await asyncio.gather(*parts)
            decisions = Decisions.concat([d for d, _ in done])
            self.plane.hub.on_decisions(enc.t, orders.channels, decisions.action, decisions.path)
        finally:  # counted by the detector now, or never (a call cancelled or failed)
            for seq in seqs:
                if seq:
                    self.plane.hub_applied.add(seq)
        for seq in seqs:  # every chunk's entry: any failed write fails the call
            await self.plane.durable(seq)
        elapsed = int((self.plane.clock() - t0) * 1e6)
        if self.plane.replication is not None and self.plane.replication.decisions:
            self.plane.replication.publish_decisions(
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

    def _batch_orders(self, req: Any) -> OrderBatch:
        orders = self.plane.rules.check(req.order_columns(), self.plane.latest())
        self.plane.count_refused(orders)
        bad = order_decoder.first_refusal(orders, "orders.orders[{i}].")
        if bad is not None:
            raise bad
        return orders

    def _arrow_orders(self, payload: memoryview) -> tuple[OrderBatch, pa.Table]:
        table = conform(read_ipc(payload, self.plane.rules.limits), where="arrow_ipc")
        orders = self.plane.rules.check(to_columns(table), self.plane.latest())
        self.plane.count_refused(orders)
        orders.raise_first(lambda i: orders.refusal_in(i, "arrow_ipc"))
        return orders, table

    def _featurize(
        self, orders: OrderBatch, lo: int, enc: OrderArrays, deadlines: np.ndarray | None,
        as_table: bool, models: ModelSet, t0: float,
    ) -> tuple[Future[tuple[Decisions, pa.Table | None]], int]:  # fmt: skip
        """On the engine's writer: a chunk's features (its orders join the state), its log
        entry's seq (0: none), and its decision started on a decide thread. Started here, not
        by the call, so a call cancelled meanwhile still logs what the state took in."""
        X = self.plane.engine.featurize(enc)
        seq = self.plane.log.reserve() if self.plane.log is not None and enc.n else 0
        decided = self.plane.decide_threads.submit(
            self._decide_chunk, orders, lo, enc, X, deadlines, as_table, models, seq, t0
        )
        return decided, seq

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
        reviews = self.plane.reviews
        try:
            d = self.plane.engine.decide(ids, enc, X, deadlines, models=models)
        finally:
            entry = None
            if seq and self.plane.log is not None:  # every reserved seq is appended
                entry = self._entry(orders, lo, enc, X, d, models, seq, t0)
                self.plane.log.append(entry)
        drift = self.plane.drift
        if drift is not None and d is not None:
            drift.observe(models.version, models.manifest, enc.t, d.score, X)
        if reviews is not None and enc.n:
            reviews.on_entry(entry or self._entry(orders, lo, enc, X, d, models, seq, t0))
        if self.plane.shadow is not None:
            self.plane.shadow.submit(ids, enc, X, d.action, seq)
        return d, decisions_table(d) if as_table else None

    def _entry(
        self, orders: OrderBatch, lo: int, enc: OrderArrays, X: np.ndarray,
        d: Decisions | None, models: ModelSet, seq: int, t0: float,
    ) -> Entry:  # fmt: skip
        """A chunk's log entry; the replay part alone if the rest cannot be built."""
        hi = lo + enc.n
        ids, channels = orders.ids[lo:hi], orders.channels[lo:hi]
        try:
            rows = np.arange(lo, hi)
            latency = np.full(enc.n, int((self.plane.clock() - t0) * 1e6), np.int64)
            return Entry(
                DECISION, seq, ids, enc.t, channels, enc,
                texts(orders.columns, "customer_id", rows),
                texts(orders.columns, "currency", rows), X, d, latency, models.version,
                self.plane.challenger_version(),
            )  # fmt: skip
        except Exception:
            log.exception("decision log: chunk %d's entry logged without its details", seq)
            return Entry(DECISION, seq, ids, enc.t, channels, enc, X=X, champion=models.version)
