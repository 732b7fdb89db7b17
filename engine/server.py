"""gRPC server: grpc.aio, health checking, reflection, graceful shutdown.

The servicer only converts messages (engine.wire, engine.convert) and maps errors to status
codes (engine.errors); scoring happens in engine.pipeline, batching in engine.batcher. All
engine work runs on one thread (the engine's own, or the event loop's), one batch at a time,
so velocity state sees orders in the order they were accepted.

Score and ScoreBatch take the request's bytes: one kernel per micro-batch decodes and
validates the serialized orders (engine.wire) off the event loop, and both answer with
bytes written by engine.respond (Score's on the engine's thread too). The other methods use the
generated protobuf (de)serializers.
"""

from __future__ import annotations

import asyncio
import functools
import gc
import logging
import signal
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import grpc
import numpy as np
import pyarrow as pa
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection
from ordersight.v1 import risk_pb2 as pb
from ordersight.v1 import risk_pb2_grpc as pb_grpc
from prometheus_client import start_http_server

from engine import artifacts, features, respond, wire
from engine.anomaly import StreamMonitor
from engine.batcher import MicroBatcher, Pending
from engine.config import Settings
from engine.convert import (
    alert_to_pb,
    arrow_to_table,
    check_timestamp,
    decisions_table,
    encode_orders,
    table_to_ipc,
    validate_order,
)
from engine.encode import Encoded, encode
from engine.errors import InvalidInput, ModelLoadError, OrderSightError
from engine.history import read_history
from engine.monitoring import AlertHub
from engine.pipeline import Decisions, Engine
from engine.velocity import VelocityState

log = logging.getLogger(__name__)
LONE_GAP_S = 500e-6
SERVICE = pb.DESCRIPTOR.services_by_name["OrderRisk"].full_name


def _rpc(method: Callable[..., Awaitable[Any]]) -> Callable[..., Awaitable[Any]]:
    """Map every error to a gRPC status in one place: OrderSightError to its own code, and
    anything else to INTERNAL (logged), never the UNKNOWN that grpc would send by default."""

    @functools.wraps(method)
    async def handler(self: Any, request: Any, context: grpc.aio.ServicerContext) -> Any:
        try:
            return await method(self, request, context)
        except OrderSightError as exc:
            await context.abort(exc.code, str(exc))
        except Exception as exc:
            log.exception("%s failed", method.__name__)
            await context.abort(grpc.StatusCode.INTERNAL, f"internal error: {type(exc).__name__}")

    return handler


class OrderRiskServicer(pb_grpc.OrderRiskServicer):
    def __init__(
        self,
        engine: Engine,
        batcher: MicroBatcher,
        hub: AlertHub,
        max_future_s: float = 300.0,
        engine_thread: ThreadPoolExecutor | None = None,
        decide_thread: ThreadPoolExecutor | None = None,
        batch_chunk: int = 8192,
        clock: Callable[[], float] = time.monotonic,
        wall: Callable[[], float] = time.time,
    ) -> None:
        self.engine = engine
        self.batcher = batcher
        self.hub = hub
        self.max_future_s = max_future_s
        self.engine_thread = engine_thread
        self.decide_thread = decide_thread
        self._engine_jobs = 0  # submitted to the engine's thread and not finished
        self._last_batch = -np.inf  # when the last Score micro-batch was dispatched
        self._mean_gap = 1.0  # recent seconds between Score micro-batches (EWMA)
        self.batch_chunk = batch_chunk
        self.clock = clock
        self.wall = wall

    def _latest(self) -> float:
        """Latest `created_at` accepted: the wall clock plus the allowed skew."""
        return self.wall() + self.max_future_s

    async def process(self, batch: Sequence[Pending]) -> list[bytes | InvalidInput]:
        """Score one micro-batch (called by the batcher) on the engine's thread; a lone call
        while calls are sparse (the last ones came more than `LONE_GAP_S` apart) is scored
        on the event loop itself, which spares two thread hand-offs. Under load the loop is
        what limits throughput, so the engine's work stays off it."""
        now = self.clock()
        gap, self._last_batch = now - self._last_batch, now
        self._mean_gap += 0.2 * (min(gap, 1.0) - self._mean_gap)
        lone = len(batch) == 1 and self._mean_gap > LONE_GAP_S
        results, t, channels, action, path, waited = await self._on_engine(
            self._score, batch, inline_ok=lone
        )
        if len(t):
            self.hub.on_decisions(t, channels, action, path, waited)
        return results

    def _score(self, batch: Sequence[Pending]) -> tuple[Any, ...]:
        """Decode, score and serialize one micro-batch; a bad order fails its call alone."""
        dec = wire.decode_orders([p.payload for p in batch], self._latest())
        ok = dec.ok
        rows = np.flatnonzero(ok)
        clean = rows.size == len(batch)
        enc = dec.enc if clean else dec.enc.take(rows)
        ids = dec.ids if clean else [dec.ids[i] for i in rows.tolist()]
        live = batch if clean else [batch[i] for i in rows.tolist()]
        deadlines = np.array(
            [np.inf if p.deadline is None else p.deadline for p in live], dtype=np.float64
        )
        decisions = self.engine.score_encoded(ids, enc, deadlines)
        now = self.clock()
        waited = [now - p.arrival for p in live]
        channels = dec.channels if clean else [dec.channels[i] for i in rows.tolist()]
        out = respond.decision_bytes(decisions, [int(w * 1e6) for w in waited])
        results: list[bytes | InvalidInput | None] = list(out)
        if not clean:
            results = list(dec.errors)
            for k, i in enumerate(rows.tolist()):
                results[i] = out[k]
        return results, enc.t, channels, decisions.action, decisions.path, waited

    async def _on_engine(self, fn: Callable[..., Any], *args: Any, inline_ok: bool = False) -> Any:
        """Run engine work on its single thread (or inline): one call at a time, in order.

        `inline_ok` runs it on the event loop instead when the engine's thread has nothing
        queued or running, so the two never touch the engine's state at once."""
        if self.engine_thread is None or (inline_ok and self._engine_jobs == 0):
            return fn(*args)
        self._engine_jobs += 1
        try:
            return await asyncio.get_running_loop().run_in_executor(self.engine_thread, fn, *args)
        finally:
            self._engine_jobs -= 1

    def _deadline(self, context: grpc.aio.ServicerContext) -> float | None:
        remaining = context.time_remaining()
        return None if remaining is None else self.clock() + remaining

    @_rpc
    async def Score(self, request: bytes, context: grpc.aio.ServicerContext) -> bytes:
        """`request` is a serialized Order; the answer a serialized Decision."""
        return await self.batcher.submit(request, self._deadline(context))

    @_rpc
    async def ScoreBatch(self, request: bytes, context: grpc.aio.ServicerContext) -> bytes:
        """`request` is a serialized ScoreBatchRequest; the answer a serialized
        ScoreBatchResponse."""
        t0 = self.clock()
        req = wire.split_score_batch(request)
        deadline = self._deadline(context)
        if req.kind == "orders":
            dec = await self._on_engine(req.decode, self._latest())
            bad = dec.first_error()
            if bad is not None:
                raise bad
            ids, enc, channels = dec.ids, dec.enc, dec.channels
        elif req.kind == "arrow_ipc":
            assert req.arrow_ipc is not None
            ids, enc, channels = await self._on_engine(_arrow_orders, req.arrow_ipc, self._latest())
        else:
            raise InvalidInput("payload: set either orders or arrow_ipc", "payload")
        # In chunks: the engine's thread computes a chunk's features (in arrival order, between
        # Score micro-batches), then the decide thread scores it while the engine's thread
        # goes on with the next chunk.
        loop = asyncio.get_running_loop()
        parts = []
        for lo in range(0, max(enc.n, 1), self.batch_chunk):
            hi = min(lo + self.batch_chunk, enc.n)
            sub = enc.take(slice(lo, hi))
            X = await self._on_engine(self.engine.featurize, sub)
            deadlines = None if deadline is None else np.full(hi - lo, deadline)
            parts.append(
                loop.run_in_executor(
                    self.decide_thread,
                    self._decide_chunk,
                    ids[lo:hi],
                    sub,
                    X,
                    deadlines,
                    req.arrow_response,
                )
            )
        done = await asyncio.gather(*parts)
        decisions = Decisions.concat([d for d, _ in done])
        self.hub.on_decisions(enc.t, channels, decisions.action, decisions.path)
        elapsed = int((self.clock() - t0) * 1e6)
        if req.arrow_response:
            table = pa.concat_tables([t for _, t in done])
            latency = pa.array(np.full(table.num_rows, elapsed, np.int64))
            table = table.set_column(
                table.schema.get_field_index("latency_us"), "latency_us", latency
            )
            return pb.ScoreBatchResponse(
                decisions_arrow_ipc=table_to_ipc(table)
            ).SerializeToString()
        return respond.batch_response_bytes(decisions, [elapsed] * len(decisions))

    def _decide_chunk(
        self,
        ids: list[str],
        enc: Encoded,
        X: np.ndarray,
        deadlines: np.ndarray | None,
        as_table: bool,
    ) -> tuple[Decisions, pa.Table | None]:
        """One ScoreBatch chunk's decisions, and their Arrow table when the answer is Arrow
        (built here, off the event loop; the call's latency is filled in at the end)."""
        d = self.engine.decide(ids, enc, X, deadlines)
        return d, decisions_table(d) if as_table else None

    @_rpc
    async def ReportOutcomes(
        self, request: pb.ReportOutcomesRequest, context: grpc.aio.ServicerContext
    ) -> pb.ReportOutcomesResponse:
        orders = []
        latest = self._latest()
        for i, oc in enumerate(request.outcomes):
            validate_order(oc.order, prefix=f"outcomes[{i}].order.", latest=latest)
            if oc.HasField("known_at"):
                check_timestamp(oc.known_at, f"outcomes[{i}].known_at", latest)
            orders.append(oc.order)
        if not orders:
            return pb.ReportOutcomesResponse(accepted=0)
        _, enc = encode_orders(orders)
        # Unset known_at: known now, i.e. at the latest order time the engine has seen.
        now = max(self.engine.latest_order_time, float(enc.t.max()))
        known = np.array(
            [
                oc.known_at.seconds + oc.known_at.nanos / 1e9 if oc.HasField("known_at") else now
                for oc in request.outcomes
            ],
            dtype=np.float64,
        )
        is_fraud = np.array([oc.is_fraud for oc in request.outcomes], dtype=np.int8)
        await self._on_engine(self.engine.report_outcomes, enc, is_fraud, np.maximum(known, enc.t))
        return pb.ReportOutcomesResponse(accepted=len(orders))

    @_rpc
    async def ReportEvent(
        self, request: pb.ReportEventRequest, context: grpc.aio.ServicerContext
    ) -> pb.ReportEventResponse:
        latest = self._latest()
        t = np.empty(len(request.events))
        for i, ev in enumerate(request.events):
            if not ev.code:
                raise InvalidInput(f"events[{i}].code: required", f"events[{i}].code")
            if not ev.HasField("time"):
                raise InvalidInput(f"events[{i}].time: required", f"events[{i}].time")
            check_timestamp(ev.time, f"events[{i}].time", latest)
            t[i] = ev.time.seconds + ev.time.nanos / 1e9
        if t.size:
            self.hub.on_events(
                t, [ev.channel or "" for ev in request.events], [ev.code for ev in request.events]
            )
        return pb.ReportEventResponse(accepted=t.size)

    @_rpc
    async def ListAlerts(
        self, request: pb.ListAlertsRequest, context: grpc.aio.ServicerContext
    ) -> pb.ListAlertsResponse:
        return pb.ListAlertsResponse(
            alerts=[alert_to_pb(a) for a in self.hub.monitor.active_alerts()]
        )

    async def WatchAlerts(
        self, request: pb.WatchAlertsRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[pb.Alert]:
        queue = self.hub.subscribe()
        try:
            if request.include_active:
                for a in self.hub.monitor.active_alerts():
                    yield alert_to_pb(a)
            while True:
                yield alert_to_pb(await queue.get())
        finally:
            self.hub.unsubscribe(queue)


def _arrow_orders(payload: memoryview, latest: float) -> tuple[list[str], Encoded, list[Any]]:
    """An Arrow IPC ScoreBatch payload, checked and encoded: ids, arrays, channels."""
    table = arrow_to_table(payload, latest=latest)
    return table.column("order_id").to_pylist(), encode(table), table.column("channel").to_pylist()


def _handlers(servicer: OrderRiskServicer) -> dict[str, grpc.RpcMethodHandler]:
    """The service's method handlers, as `add_OrderRiskServicer_to_server` builds them, except
    that Score and ScoreBatch see the request's bytes (decoded by engine.wire) and answer
    with bytes (encoded by engine.respond)."""
    unary, stream = grpc.unary_unary_rpc_method_handler, grpc.unary_stream_rpc_method_handler

    def typed(method: Callable[..., Any], request: Any, response: Any, kind: Any = unary) -> Any:
        return kind(
            method,
            request_deserializer=request.FromString,
            response_serializer=response.SerializeToString,
        )

    return {
        "Score": unary(servicer.Score),
        "ScoreBatch": unary(servicer.ScoreBatch),
        "ReportOutcomes": typed(
            servicer.ReportOutcomes, pb.ReportOutcomesRequest, pb.ReportOutcomesResponse
        ),
        "ReportEvent": typed(servicer.ReportEvent, pb.ReportEventRequest, pb.ReportEventResponse),
        "WatchAlerts": typed(servicer.WatchAlerts, pb.WatchAlertsRequest, pb.Alert, stream),
        "ListAlerts": typed(servicer.ListAlerts, pb.ListAlertsRequest, pb.ListAlertsResponse),
    }


def warm_state(engine: Engine, history: str, label_delay_days: float) -> int:
    """Replay a history into the engine's velocity state, labels as they became known up to
    its last order, so a restarted engine does not see every returning customer as new."""
    hist = read_history(history, label_delay_days)
    enc = encode(hist.table)
    # Only labels known by the history's last order: later ones arrive via ReportOutcomes.
    as_of = float(enc.t.max(initial=-np.inf))
    labels = np.where(hist.known_at <= as_of, hist.labels, -1).astype(np.int8)
    features.replay(enc, labels, hist.known_at, engine.state)
    if enc.n:
        engine.latest_order_time = max(engine.latest_order_time, float(enc.t.max()))
    return enc.n


class Server:
    """The running engine: load models, warm kernels, serve, stop gracefully."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        try:
            models = artifacts.load(settings.models, settings.policy or None)
        except ModelLoadError as exc:
            if not settings.allow_rules_only:
                raise
            log.error("no usable models (%s): serving with the rule fallback only", exc)
            models = artifacts.ModelSet.rules_only()
        state = VelocityState(settings.state_capacity, settings.state_probe)
        self.engine = Engine(models, state)
        self.engine.warm()
        wire.warm()
        respond.warm()
        if settings.warm_history:
            n = warm_state(self.engine, settings.warm_history, settings.warm_label_delay_days)
            log.info("velocity state warmed from %s (%d orders)", settings.warm_history, n)
        self.batcher = MicroBatcher(
            lambda b: self.servicer.process(b), settings.max_batch, settings.max_wait_us / 1e6
        )
        self.hub = AlertHub(StreamMonitor(settings.alert_bucket_s))
        self.hub.warm()
        self._engine_thread = (
            ThreadPoolExecutor(1, thread_name_prefix="engine") if settings.engine_thread else None
        )
        # Bulk ScoreBatch chunks are decided here while the engine's thread goes on with the
        # next chunk's features; deciding is stateless, so two chunks may be decided at once.
        self._decide_thread = ThreadPoolExecutor(2, thread_name_prefix="decide")
        self.servicer = OrderRiskServicer(
            self.engine,
            self.batcher,
            self.hub,
            settings.max_future_s,
            self._engine_thread,
            self._decide_thread,
        )
        self.health: health.aio.HealthServicer | None = None
        self.server: grpc.aio.Server | None = None
        self.port = 0
        self._ticker: asyncio.Task | None = None
        self._metrics: Any = None

    async def start(self) -> int:
        self.health = health.aio.HealthServicer()
        self.server = grpc.aio.server(
            options=[
                ("grpc.so_reuseport", 0),
                ("grpc.max_receive_message_length", 256 << 20),
                ("grpc.max_send_message_length", 256 << 20),
            ]
        )
        handlers = _handlers(self.servicer)
        self.server.add_generic_rpc_handlers(
            (grpc.method_handlers_generic_handler(SERVICE, handlers),)
        )
        self.server.add_registered_method_handlers(SERVICE, handlers)
        health_pb2_grpc.add_HealthServicer_to_server(self.health, self.server)
        reflection.enable_server_reflection(
            (
                SERVICE,
                health_pb2.DESCRIPTOR.services_by_name["Health"].full_name,
                reflection.SERVICE_NAME,
            ),
            self.server,
        )
        self.port = self.server.add_insecure_port(f"{self.settings.host}:{self.settings.port}")
        if self.port == 0:
            raise OSError(f"cannot listen on {self.settings.host}:{self.settings.port}")
        self.batcher.start()
        await self.server.start()
        self._ticker = asyncio.get_running_loop().create_task(self._tick(), name="alert-ticker")
        if self.settings.metrics_port:
            self._metrics, _ = start_http_server(
                self.settings.metrics_port, self.settings.host, registry=self.hub.registry
            )
        # Everything built so far (models, warmed state, the history's leftovers) lives as
        # long as the server: moved out of the collector's sight, it is no longer traversed
        # by every full collection (in an in-process run, not committed, those took about a
        # third of deciding a 100k-order ScoreBatch).
        gc.collect()
        gc.freeze()
        serving = health_pb2.HealthCheckResponse.SERVING
        await self.health.set("", serving)
        await self.health.set(SERVICE, serving)
        m = self.engine.models
        log.info(
            "serving %s on %s:%d (models %s%s)",
            SERVICE,
            self.settings.host,
            self.port,
            m.version,
            f"; problems: {m.problems}" if m.problems else "",
        )
        return self.port

    async def stop(self) -> None:
        if self.server is None or self.health is None:
            return
        await self.health.enter_graceful_shutdown()
        await self.server.stop(self.settings.grace_s)
        await self.batcher.stop()
        if self._ticker is not None:
            self._ticker.cancel()
        if self._metrics is not None:
            self._metrics.shutdown()
        if self._engine_thread is not None:
            self._engine_thread.shutdown(wait=True)
        self._decide_thread.shutdown(wait=True)
        self.server = None

    async def _tick(self) -> None:
        """Let the alert monitor see time pass when live traffic stops (AlertHub.tick)."""
        period = min(self.settings.alert_bucket_s / 5, 10.0)
        while True:
            await asyncio.sleep(period)
            self.hub.tick()

    async def serve_forever(self) -> None:
        await self.start()
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        await stop.wait()
        log.info("shutting down: finishing in-flight calls (grace %.1fs)", self.settings.grace_s)
        await self.stop()
