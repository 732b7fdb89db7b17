"""gRPC server: grpc.aio, health checking, reflection, graceful shutdown.

The servicer only converts messages (engine.convert) and maps errors to status codes
(engine.errors); scoring happens in engine.pipeline, batching in engine.batcher. All engine
work runs on the event loop's thread, one call at a time, so velocity state sees orders in
the order they were accepted.
"""

from __future__ import annotations

import asyncio
import logging
import signal
import time
from collections.abc import Sequence

import grpc
import numpy as np
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection
from ordersight.v1 import risk_pb2 as pb
from ordersight.v1 import risk_pb2_grpc as pb_grpc

from engine import artifacts
from engine.batcher import MicroBatcher, Pending
from engine.config import Settings
from engine.convert import (
    arrow_to_table,
    check_timestamp,
    decisions_to_pb,
    encode_orders,
    validate_order,
)
from engine.encode import encode
from engine.errors import InvalidInput, ModelLoadError, OrderSightError
from engine.pipeline import Engine
from engine.velocity import VelocityState

log = logging.getLogger(__name__)
SERVICE = pb.DESCRIPTOR.services_by_name["OrderRisk"].full_name


async def _abort(context: grpc.aio.ServicerContext, exc: OrderSightError) -> None:
    await context.abort(exc.code, str(exc))


class OrderRiskServicer(pb_grpc.OrderRiskServicer):
    def __init__(self, engine: Engine, batcher: MicroBatcher, clock=time.monotonic) -> None:
        self.engine = engine
        self.batcher = batcher
        self.clock = clock

    def process(self, batch: Sequence[Pending]) -> list[pb.Decision]:
        """Score one micro-batch (called by the batcher)."""
        ids, enc = encode_orders([p.payload for p in batch])
        deadlines = np.array(
            [np.inf if p.deadline is None else p.deadline for p in batch], dtype=np.float64
        )
        decisions = self.engine.score_encoded(ids, enc, deadlines)
        now = self.clock()
        latency = [int((now - p.arrival) * 1e6) for p in batch]
        return decisions_to_pb(decisions, latency)

    def _deadline(self, context: grpc.aio.ServicerContext) -> float | None:
        remaining = context.time_remaining()
        return None if remaining is None else self.clock() + remaining

    async def Score(self, request: pb.Order, context: grpc.aio.ServicerContext) -> pb.Decision:
        try:
            validate_order(request)
            return await self.batcher.submit(request, self._deadline(context))
        except OrderSightError as exc:
            await _abort(context, exc)
            raise  # unreachable: abort raises

    async def ScoreBatch(
        self, request: pb.ScoreBatchRequest, context: grpc.aio.ServicerContext
    ) -> pb.ScoreBatchResponse:
        t0 = self.clock()
        try:
            kind = request.WhichOneof("payload")
            deadline = self._deadline(context)
            if kind == "orders":
                orders = list(request.orders.orders)
                for i, o in enumerate(orders):
                    validate_order(o, prefix=f"orders.orders[{i}].")
                ids, enc = encode_orders(orders)
            elif kind == "arrow_ipc":
                table = arrow_to_table(request.arrow_ipc)
                ids, enc = table.column("order_id").to_pylist(), encode(table)
            else:
                raise InvalidInput("payload: set either orders or arrow_ipc", "payload")
            deadlines = None if deadline is None else np.full(enc.n, deadline)
            decisions = self.engine.score_encoded(ids, enc, deadlines)
        except OrderSightError as exc:
            await _abort(context, exc)
            raise
        elapsed = int((self.clock() - t0) * 1e6)
        return pb.ScoreBatchResponse(
            decisions=decisions_to_pb(decisions, [elapsed] * len(decisions))
        )

    async def ReportOutcomes(
        self, request: pb.ReportOutcomesRequest, context: grpc.aio.ServicerContext
    ) -> pb.ReportOutcomesResponse:
        try:
            orders = []
            for i, oc in enumerate(request.outcomes):
                validate_order(oc.order, prefix=f"outcomes[{i}].order.")
                if oc.HasField("known_at"):
                    check_timestamp(oc.known_at, f"outcomes[{i}].known_at")
                orders.append(oc.order)
            _, enc = encode_orders(orders)
            # Unset known_at: known now, i.e. at the latest order time the engine has seen.
            now = max(self.engine.latest_order_time, float(enc.t.max(initial=-np.inf)))
            known = np.array(
                [
                    oc.known_at.seconds + oc.known_at.nanos / 1e9
                    if oc.HasField("known_at")
                    else now
                    for oc in request.outcomes
                ],
                dtype=np.float64,
            )
            is_fraud = np.array([oc.is_fraud for oc in request.outcomes], dtype=np.int8)
            self.engine.report_outcomes(enc, is_fraud, np.maximum(known, enc.t))
        except OrderSightError as exc:
            await _abort(context, exc)
            raise
        return pb.ReportOutcomesResponse(accepted=len(orders))


class Server:
    """The running engine: load models, warm kernels, serve, stop gracefully."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        try:
            models = artifacts.load(settings.models, settings.policy or None)
        except ModelLoadError as exc:
            log.error("no usable models (%s): serving with the rule fallback only", exc)
            models = artifacts.ModelSet.rules_only()
        state = VelocityState(settings.state_capacity, settings.state_probe)
        self.engine = Engine(models, state)
        self.engine.warm()
        self.batcher = MicroBatcher(
            lambda b: self.servicer.process(b), settings.max_batch, settings.max_wait_us / 1e6
        )
        self.servicer = OrderRiskServicer(self.engine, self.batcher)
        self.health: health.aio.HealthServicer | None = None
        self.server: grpc.aio.Server | None = None
        self.port = 0

    async def start(self) -> int:
        self.health = health.aio.HealthServicer()
        self.server = grpc.aio.server(
            options=[
                ("grpc.so_reuseport", 0),
                ("grpc.max_receive_message_length", 256 << 20),
                ("grpc.max_send_message_length", 256 << 20),
            ]
        )
        pb_grpc.add_OrderRiskServicer_to_server(self.servicer, self.server)
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
        self.server = None

    async def serve_forever(self) -> None:
        await self.start()
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        await stop.wait()
        log.info("shutting down: finishing in-flight calls (grace %.1fs)", self.settings.grace_s)
        await self.stop()
