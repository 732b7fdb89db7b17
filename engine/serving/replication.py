"""Replicas across hosts share what they accept through one NATS JetStream stream.

Each replica publishes the orders it accepts (a Score micro-batch's valid orders, a whole
ScoreBatch) and the outcomes reported to it, in the order it applied them, to
`<stream>.orders.<replica>` and `<stream>.outcomes.<replica>` (and, when asked, its decisions
to `<stream>.decisions.<replica>` for downstream consumers). It applies to its own velocity
state, in stream order, every message it did not publish itself since it started (other
replicas', and its own from before a restart under the same name): an ordered consumer from
the stream's start, so a new replica catches up on everything the stream still holds. Any
gRPC load balancer can then spread calls over the replicas: each one's features see every
order accepted anywhere, later by at most the replication lag, which is measured
(`ordersight_replication_lag_seconds`: from the origin's acceptance to the application
here) and logged when it passes `max_lag_s`.

Messages carry the origin's acceptance time (wall clock) in a header. A message is the
request as the origin accepted it: ScoreBatchRequest bytes for orders (a Score micro-batch
is written as one), ReportOutcomesRequest bytes for outcomes, with every `known_at` filled
in so that no replica has to guess it. Publishing never delays an answer: messages queue
and one task sends them, merging consecutive order messages into one.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import time
import uuid
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import nats
import pyarrow as pa
from nats.js import api
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from engine.codec.decision_encoder import length_delimited
from engine.codec.decision_table import table_to_ipc

log = logging.getLogger(__name__)
SENT = "Ordersight-Accepted"
RUN = "Ordersight-Run"
"""Header naming the process that published: a replica skips only what it published itself
since it started, so one restarted under the same name re-applies its own earlier orders."""
ORDERS, ARROW, OUTCOMES, DECISIONS = "orders", "arrow", "outcomes", "decisions"
MERGEABLE = (ORDERS, DECISIONS)  # concatenated messages parse as one with all their items


CATCH_UP_S = 600.0
"""Longest a starting replica may take to apply what the stream holds."""


def default_replica_id() -> str:
    return f"{socket.gethostname()}-{os.getpid()}"


def orders_request(orders: list[bytes]) -> bytes:
    """A ScoreBatchRequest holding `orders` (serialized Orders), written by hand: the same
    bytes protobuf writes, without parsing the orders again."""
    return length_delimited(1, b"".join(length_delimited(1, o) for o in orders))


def decisions_response(decisions: list[bytes]) -> bytes:
    """A ScoreBatchResponse holding `decisions` (serialized Decisions)."""
    return b"".join(length_delimited(1, d) for d in decisions)


class Replication:
    def __init__(
        self,
        url: str,
        stream: str,
        replica: str,
        apply: Callable[[str, bytes], Awaitable[Any]],
        *,
        max_age_s: float,
        max_lag_s: float,
        queue_max: int,
        queue_max_bytes: int,
        registry: CollectorRegistry,
        decisions: bool = False,
        wall: Callable[[], float] = time.time,
    ) -> None:
        self.url, self.stream, self.replica = url, stream, replica or default_replica_id()
        self.apply = apply
        self.decisions = decisions
        self.run = uuid.uuid4().hex
        self.max_age_s, self.max_lag_s = max_age_s, max_lag_s
        # Messages (and their bytes) waiting to be published; past either bound new ones are
        # dropped and counted (the stream then misses them: the lag bound cannot hold while
        # it is unreachable).
        self.queue_max, self.queue_max_bytes = queue_max, queue_max_bytes
        self._queued_bytes = 0
        self.wall = wall
        self._queue: deque[tuple[str, bytes, float]] = deque()  # (kind, body, accepted at)
        self._queued: asyncio.Event | None = None  # set while _queue holds something
        self._nc: Any = None
        self._js: Any = None
        self._sub: Any = None
        self._sender: asyncio.Task | None = None
        self._last_warned = 0.0
        self.n_dropped = 0  # messages dropped since start (the counter's value, readable)
        r = registry
        self.published = Counter(
            "ordersight_replication_published", "Messages published", ["kind"], registry=r
        )
        self.dropped = Counter(
            "ordersight_replication_dropped", "Messages not published (queue full)", registry=r
        )
        queued = Gauge(
            "ordersight_replication_queued", "Messages waiting to be published", registry=r
        )
        queued.set_function(lambda: len(self._queue))
        Gauge(
            "ordersight_replication_queued_bytes", "Bytes waiting to be published", registry=r
        ).set_function(lambda: self._queued_bytes)
        self.failed = Counter(
            "ordersight_replication_publish_failures", "Publish attempts that failed", registry=r
        )
        self.applied = Counter(
            "ordersight_replication_applied", "Other replicas' messages applied", ["kind"],
            registry=r,
        )  # fmt: skip
        self.lag = Histogram(
            "ordersight_replication_lag_seconds",
            "From acceptance at another replica to application here",
            buckets=(0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1, 2, 5, 10, 30, 60),
            registry=r,
        )
        self.last_lag = Gauge(
            "ordersight_replication_last_lag_seconds", "Lag of the last message applied",
            registry=r,
        )  # fmt: skip
        self.seq = 0  # stream sequence of the last message seen

    async def start(self) -> None:
        self._queued = asyncio.Event()
        self._nc = await nats.connect(
            self.url,
            name=f"ordersight-{self.replica}",
            max_reconnect_attempts=-1,
            reconnect_time_wait=0.5,
        )
        self._js = self._nc.jetstream()
        config = api.StreamConfig(
            name=self.stream,
            subjects=[f"{self.stream}.>"],
            storage=api.StorageType.FILE,
            max_age=self.max_age_s,
        )
        try:
            await self._js.add_stream(config)
        except nats.js.errors.BadRequestError:  # exists with other settings: use it as it is
            log.warning("stream %s exists with other settings; using it", self.stream)
        target = (await self._js.stream_info(self.stream)).state.last_seq
        self._sub = await self._js.subscribe(
            f"{self.stream}.>",
            cb=self._on_message,
            ordered_consumer=True,
            deliver_policy=api.DeliverPolicy.ALL,
        )
        await self._catch_up(target)
        self._sender = asyncio.get_running_loop().create_task(self._send(), name="replication")
        log.info(
            "replica %s on stream %s at %s: caught up on %d messages",
            self.replica, self.stream, self.url, target,
        )  # fmt: skip

    async def _catch_up(self, target: int) -> None:
        """Wait until the stream's messages up to `target` (its last when we subscribed)
        are applied: a replica that starts takes calls with every order the stream holds."""
        end = time.monotonic() + CATCH_UP_S
        while self.seq < target:
            if time.monotonic() > end:
                raise TimeoutError(
                    f"replica {self.replica}: applied {self.seq:,} of the stream's {target:,} "
                    f"messages in {CATCH_UP_S:.0f}s"
                )
            await asyncio.sleep(0.01)

    @property
    def max_message(self) -> int:
        """Largest message body the NATS server takes (its max_payload), less headers."""
        return int(getattr(self._nc, "max_payload", 1 << 20) or 1 << 20) - 4096

    def publish_orders(self, orders: Sequence[bytes]) -> None:
        """Queue accepted orders (serialized Orders), in messages the server takes."""
        self._chunked(ORDERS, orders, orders_request)

    def publish_decisions(self, decisions: Sequence[bytes]) -> None:
        """Queue decisions (serialized Decisions) for downstream consumers, when asked to
        (`decisions`): each message is a ScoreBatchResponse."""
        if self.decisions:
            self._chunked(DECISIONS, decisions, decisions_response)

    def _chunked(
        self, kind: str, items: Sequence[bytes], wrap: Callable[[list[bytes]], bytes]
    ) -> None:
        limit, size = self.max_message, 0
        chunk: list[bytes] = []
        for item in items:
            if chunk and size + len(item) + 16 > limit:
                self._put(kind, wrap(chunk))
                chunk, size = [], 0
            chunk.append(item)
            size += len(item) + 16
        if chunk:
            self._put(kind, wrap(chunk))

    def publish_table(self, table: pa.Table) -> None:
        """Queue accepted orders given as an Arrow table, as Arrow IPC messages."""
        if not table.num_rows:
            return
        rows = max(1, int(table.num_rows * self.max_message / 2 / max(table.nbytes, 1)))
        for lo in range(0, table.num_rows, rows):
            self._put(ARROW, table_to_ipc(table.slice(lo, rows)))

    def publish_outcomes(self, request: bytes) -> None:
        """Queue accepted outcomes (a ReportOutcomesRequest with every known_at set)."""
        self._put(OUTCOMES, request)

    def _put(self, kind: str, body: bytes) -> None:
        if self._queued is None:
            return
        if (
            len(self._queue) >= self.queue_max
            or self._queued_bytes + len(body) > self.queue_max_bytes
        ):
            self.dropped.inc()
            self.n_dropped += 1
            return
        self._queue.append((kind, body, self.wall()))
        self._queued_bytes += len(body)
        self._queued.set()

    @property
    def connected(self) -> bool:
        return self._nc is not None and bool(self._nc.is_connected)

    async def _send(self) -> None:
        assert self._queued is not None
        queue = self._queue
        while True:
            if not queue:
                self._queued.clear()
                await self._queued.wait()
                continue
            kind, body, accepted = queue.popleft()
            self._queued_bytes -= len(body)
            parts, size = [body], len(body)
            while (  # merge what waits behind, up to one message's size
                kind in MERGEABLE
                and queue
                and queue[0][0] == kind
                and size + len(queue[0][1]) <= self.max_message
            ):
                parts.append(queue.popleft()[1])
                size += len(parts[-1])
                self._queued_bytes -= len(parts[-1])
            subject = f"{self.stream}.{kind}.{self.replica}"
            payload = b"".join(parts)
            while True:
                try:
                    await self._js.publish(
                        subject, payload, headers={SENT: repr(accepted), RUN: self.run}
                    )
                    break
                except (nats.errors.TimeoutError, nats.errors.ConnectionClosedError,
                        nats.js.errors.APIError, nats.errors.NoRespondersError) as exc:  # fmt: skip
                    self.failed.inc()
                    log.warning("publish to %s failed (%s): retrying", subject, exc)
                    await asyncio.sleep(0.2)
            self.published.labels(kind).inc()

    async def _on_message(self, msg: Any) -> None:
        seq = msg.metadata.sequence.stream
        _, kind, origin = msg.subject.split(".", 2)
        headers = msg.headers or {}
        if headers.get(RUN) == self.run or kind == DECISIONS:
            self.seq = seq
            return  # applied when this process accepted it; decisions are for others
        try:
            await self.apply(kind, msg.data)
        except Exception:
            log.exception("message %s from %s could not be applied", kind, origin)
            return
        finally:
            self.seq = seq
        self.applied.labels(kind).inc()
        sent = float(headers.get(SENT, "nan"))
        if sent == sent:
            lag = max(self.wall() - sent, 0.0)
            self.lag.observe(lag)
            self.last_lag.set(lag)
            now = time.monotonic()
            if lag > self.max_lag_s and now - self._last_warned > 60:
                self._last_warned = now
                log.warning("replication lag %.3fs passes the bound of %.3fs", lag, self.max_lag_s)

    async def stop(self) -> None:
        """Publish what is queued, then disconnect."""
        if self._nc is None:
            return
        if self._queued is not None:
            end = time.monotonic() + 5.0
            while self._queue and time.monotonic() < end:
                await asyncio.sleep(0.01)
        if self._sender is not None:
            self._sender.cancel()
        try:
            await asyncio.wait_for(self._nc.drain(), 5.0)
        except (TimeoutError, OSError, nats.errors.Error) as exc:
            log.warning("replication: the NATS connection did not drain (%s)", exc)
            with contextlib.suppress(OSError, nats.errors.Error):  # the server is gone
                await self._nc.close()
        self._nc = None
