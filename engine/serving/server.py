"""The running engine: load models, warm kernels and state, serve gRPC (health, reflection,
metrics), stop gracefully. The servicer (`engine.serving.servicer`) moves bytes; the data
plane (`engine.serving.data_plane`) does the work.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import signal
from typing import Any

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection
from prometheus_client import start_http_server

from engine.codec import decision_encoder, order_decoder
from engine.config import Settings
from engine.decision.cascade import Engine
from engine.errors import ModelLoadError
from engine.features.velocity import VelocityState
from engine.models import artifacts
from engine.monitoring.alert_hub import AlertHub
from engine.monitoring.anomaly import StreamMonitor
from engine.orders.batch import OrderRules
from engine.orders.rules import Limits
from engine.serving.data_plane import DataPlane
from engine.serving.servicer import SERVICE, OrderRiskServicer, method_handlers
from engine.serving.warm_start import warm_state

log = logging.getLogger(__name__)


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
        rules = OrderRules(Limits.from_dict(settings.limits))
        state = VelocityState(settings.state_capacity, settings.state_probe)
        self.engine = Engine(models, state)
        self.engine.warm()
        _warm_codec(rules)
        if settings.warm_history:
            n = warm_state(self.engine, settings.warm_history, settings.warm_label_delay_days)
            log.info("velocity state warmed from %s (%d orders)", settings.warm_history, n)
        self.hub = AlertHub(StreamMonitor(settings.alert_bucket_s))
        self.hub.warm()
        self.plane = DataPlane(
            self.engine,
            self.hub,
            rules,
            max_batch=settings.max_batch,
            max_wait_s=settings.max_wait_us / 1e6,
            engine_thread=settings.engine_thread,
        )
        self.servicer = OrderRiskServicer(self.plane)
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
                ("grpc.max_receive_message_length", self.settings.max_request_bytes),
                ("grpc.max_send_message_length", self.settings.max_request_bytes),
            ]
        )
        handlers = method_handlers(self.servicer)
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
        self.plane.start()
        await self.server.start()
        self._ticker = asyncio.get_running_loop().create_task(self._tick(), name="alert-ticker")
        if self.settings.metrics_port:
            self._metrics, _ = start_http_server(
                self.settings.metrics_port, self.settings.host, registry=self.hub.registry
            )
        # Everything built so far (models, warmed state, the history's leftovers) lives as
        # long as the server: moved out of the collector's sight, it is not traversed by
        # every full collection, which otherwise stalls bulk scoring.
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
        await self.plane.stop()
        if self._ticker is not None:
            self._ticker.cancel()
        if self._metrics is not None:
            self._metrics.shutdown()
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


def _warm_codec(rules: OrderRules) -> None:
    """Compile the codec's kernels, or load them from Numba's cache, on one valid order."""
    from ordersight.v1 import risk_pb2 as pb

    from engine.codec.score_batch import split_score_batch

    order = pb.Order(order_id="w", customer_id="c", amount_minor=1, currency="USD")
    order.created_at.seconds = rules.limits.earliest_s + 1
    order.items.add(sku="s", category="c", quantity=1, unit_price_minor=1)
    rules.check(order_decoder.decode_orders([order.SerializeToString()]), float("inf"))
    request = pb.ScoreBatchRequest(orders=pb.OrderList(orders=[order]))
    rules.check(split_score_batch(request.SerializeToString()).order_columns(), float("inf"))
    decision_encoder.warm()
