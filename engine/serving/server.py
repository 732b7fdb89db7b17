"""The running engine: load models, warm kernels and state, serve gRPC (health, reflection,
metrics), stop gracefully. The data plane (`engine.serving.data_plane`) does the work;
`engine.serving.methods` reads requests and writes answers.

gRPC calls are taken by `workers` front processes (`engine.serving.front`, started and kept
up by `engine.serving.fronts`) that share the port and move bytes to this process over a
Unix socket (`engine.serving.link`): the fronts add cores to the transport's work, this
process stays the one writer of the velocity state.
With `single_process` this process takes the calls itself (`engine.serving.servicer`).
"""

from __future__ import annotations

import asyncio
import gc
import logging
import os
import signal
from pathlib import Path
from typing import Any

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection
from prometheus_client import Gauge, ProcessCollector

from engine.codec import decision_encoder, order_decoder
from engine.config import Settings
from engine.decision.cascade import Engine
from engine.decision.control import check_fraction
from engine.decision_log import segments
from engine.decision_log.replay import Applied, Replayed, recover
from engine.decision_log.writer import DecisionLog
from engine.errors import ModelLoadError, Unconfigured
from engine.features.matrix import FEATURE_NAMES
from engine.features.velocity import VelocityState
from engine.models import artifacts
from engine.monitoring.alert_hub import AlertHub
from engine.monitoring.anomaly import StreamMonitor
from engine.monitoring.drift import HOUR_S, DriftMonitor
from engine.orders import hashing
from engine.orders.batch import OrderRules
from engine.orders.rules import Limits
from engine.serving import snapshots
from engine.serving.auth import Authorizer, parse_tokens
from engine.serving.data_plane import DataPlane
from engine.serving.forecasting import ForecastService
from engine.serving.frames import SERVICES
from engine.serving.fronts import Fronts
from engine.serving.health import Health
from engine.serving.http import HttpServer
from engine.serving.link import Link
from engine.serving.methods import SERVICE, Methods
from engine.serving.model_admin import ModelAdmin
from engine.serving.replication import Replication
from engine.serving.reviews import Reviews
from engine.serving.routing import RoutingService
from engine.serving.servicer import method_handlers
from engine.serving.shadow import Shadow
from engine.serving.tls import TlsFiles, add_port
from engine.serving.warm_start import warm_state

log = logging.getLogger(__name__)


class Server:
    """The running engine: load models, warm kernels, serve, stop gracefully."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        # The entity key first: everything below (warming, snapshot, log, history) encodes.
        secret = hashing.read_secret(settings.hash_secret, settings.hash_secret_file)
        hashing.set_secret(secret)
        if secret is None:
            log.warning(
                "no hash_secret_file or hash_secret configured: entity keys (card "
                "fingerprints, IPs, e-mail domains, addresses) in the state, snapshots and "
                "decision log use a fixed public key, so they are not secret (docs/SECURITY.md)"
            )
        self.tokens = parse_tokens(settings.tokens)  # a bad entry stops start-up at once
        self.tls = TlsFiles(settings.tls_cert, settings.tls_key, settings.tls_client_ca)
        self.tls.check()  # an unreadable file stops start-up at once, naming the setting
        if settings.reflection not in ("auto", "on", "off"):
            raise ValueError(f"reflection must be auto, on or off, is {settings.reflection!r}")
        self.reflection = settings.reflection == "on" or (
            settings.reflection == "auto" and not self.tls.on
        )
        if settings.snapshot_dir and settings.replication_url:
            raise ValueError(
                "snapshot_dir and replication_url together: a replica rebuilds its state from "
                "the stream, which also holds every order in the snapshot (they would count "
                "twice); set one of them"
            )
        if not self.tokens:
            log.warning(
                "no tokens configured: every RPC is open to any client that reaches the port "
                "(`ordersight token` makes one; see the README's Credentials)"
            )
        try:
            models = artifacts.load(settings.models, settings.policy or None)
        except ModelLoadError as exc:
            if not settings.allow_rules_only:
                raise
            log.error("no usable models (%s): serving with the rule fallback only", exc)
            models = artifacts.ModelSet.rules_only()
        if models.tier1 is None and models.tier2 is None and not settings.allow_rules_only:
            raise ModelLoadError(
                f"{settings.models}: neither tier loads ({'; '.join(models.problems)}); "
                "fix the folder, or set allow_rules_only to serve with the rule fallback alone"
            )
        rules = OrderRules(Limits.from_dict(settings.limits))
        state = VelocityState(settings.state_capacity, settings.state_probe)
        self.engine = Engine(models, state)
        self.engine.control_fraction = check_fraction(settings.control_fraction)
        self.engine.warm()
        _warm_codec(rules)
        self.hub = AlertHub(StreamMonitor(settings.alert_bucket_s))
        self.hub.warm()
        restored = (
            snapshots.restore(settings.snapshot_dir, self.engine, self.hub)
            if settings.snapshot_dir
            else None
        )
        if settings.warm_history and restored is not None:
            log.info(
                "warm_history %s not replayed: the snapshot holds the state", settings.warm_history
            )
        elif settings.warm_history:
            n = warm_state(self.engine, settings.warm_history, settings.warm_label_delay_days)
            log.info("velocity state warmed from %s (%d orders)", settings.warm_history, n)
        self.plane = DataPlane(
            self.engine,
            self.hub,
            rules,
            max_batch=settings.max_batch,
            max_wait_s=settings.max_wait_us / 1e6,
            max_queue=settings.max_queue,
            max_queue_ms=settings.max_queue_ms,
            idempotency_window_s=settings.idempotency_window_s,
            idempotency_max=settings.idempotency_max,
            engine_thread=settings.engine_thread,
            inline_scores=not settings.single_process,
        )
        self.snapshots = (
            snapshots.Snapshots(
                settings.snapshot_dir, settings.snapshot_every_s, self.engine, self.plane,
                self.hub.registry, restored,
            )
            if settings.snapshot_dir
            else None
        )  # fmt: skip
        self.shadow = self.plane.shadow = Shadow(self.engine, self.hub.registry)
        self.drift = self.plane.drift = DriftMonitor(
            FEATURE_NAMES, settings.drift_bound, settings.drift_min_orders
        )
        self.m_psi = Gauge(
            "ordersight_drift_psi", "PSI of the last closed hour against training, by series",
            ["series"], registry=self.hub.registry,
        )  # fmt: skip
        self.replayed: Replayed | None = None  # what the start-up replayed from the log
        self.log = self.plane.log = self.shadow.log = self._open_log(restored)
        self.admin = ModelAdmin(
            self.engine,
            settings.models,
            settings.registry or Path(settings.models).resolve().parent,
            self.hub.registry,
            self.shadow,
            settings.policy or None,
        )
        forecast_root = settings.forecast_registry or (
            str(Path(settings.forecast_models).resolve().parent) if settings.forecast_models else ""
        )
        self.forecasting = ForecastService(
            settings.forecast_models, forecast_root, self.hub.registry
        )
        self.reviews: Reviews | None = None
        if settings.store:
            self.reviews = self.plane.reviews = Reviews(
                settings.store, self.hub.registry, settings.log_dir, settings.replica_id,
                settings.store_queue_max, settings.store_decisions_days,
            )  # fmt: skip
            self.reviews.resolver = self.plane.feedback.resolve_review
        self.routing: RoutingService | None = None
        if settings.routing_models and not settings.store:
            log.warning("routing_models is set without a store: Routing is off (it needs `store`)")
        if settings.store:
            self.routing = RoutingService(
                settings.store, settings.routing_models, self.hub.registry,
                open_max=settings.routing_open_max,
            )  # fmt: skip
        review_methods = self.reviews.unary if self.reviews is not None else _no_store(REVIEWS)
        routing_methods = self.routing.unary if self.routing is not None else _no_store(ROUTING)
        self.methods = Methods(
            self.plane,
            {**self.admin.unary, **self.forecasting.unary, **review_methods, **routing_methods},
        )
        self.replication: Replication | None = None
        if settings.replication_url:
            self.replication = Replication(
                settings.replication_url,
                settings.replication_stream,
                settings.replica_id,
                self.plane.feedback.apply_replicated,
                max_age_s=settings.replication_max_age_s,
                max_lag_s=settings.replication_max_lag_s,
                queue_max=settings.replication_queue_max,
                queue_max_bytes=settings.replication_queue_max_bytes,
                registry=self.hub.registry,
                decisions=settings.replication_decisions,
            )
            self.plane.replication = self.replication
        self.status = Health(
            self.engine, hub=self.hub, decision_log=self.log, snapshots=self.snapshots,
            replication=self.replication, registry=self.hub.registry,
            report_s=settings.health_report_s,
            forecasting=self.forecasting if self.forecasting.configured_any else None,
            reviews=self.reviews,
            routing=self.routing,
        )  # fmt: skip
        ProcessCollector(registry=self.hub.registry)  # the engine's RSS, CPU, open files
        self.workers = 0 if settings.single_process else settings.workers or os.cpu_count() or 1
        self.health: health.aio.HealthServicer | None = None
        self.server: grpc.aio.Server | None = None
        self.link: Link | None = None
        self.fronts: Fronts | None = None
        self.port = 0
        self._ticker: asyncio.Task | None = None
        self._health_task: asyncio.Task | None = None
        self._health_sets: set[asyncio.Task[None]] = set()
        self._metrics: Any = None
        self._stopping = False

    def _open_log(self, restored: snapshots.Restored | None) -> DecisionLog | None:
        """Open the decision log (repairing a torn tail) and, with snapshots, replay what it
        holds after the snapshot into the state."""
        s = self.settings
        if not s.log_dir:
            return None
        kept = self.snapshots
        # A replay runs even with no snapshot yet (after seq 0): the folder's key is checked
        # whether or not one was restored.
        segments.claim_key(Path(s.log_dir), hashing.key_id())
        decisions = DecisionLog(
            s.log_dir, s.log_durability, flush_ms=s.log_flush_ms,
            segment_bytes=s.log_segment_bytes, segment_s=s.log_segment_s,
            retention_s=s.log_retention_s, retention_bytes=s.log_retention_bytes,
            queue_max=s.log_queue_max, on_failure=s.log_on_failure, metrics=self.hub.registry,
            keep_after=(lambda: kept.log_seq or 0) if kept is not None else lambda: None,
        )  # fmt: skip
        if kept is not None and (restored is None or restored.logged):
            after = restored.log_seq if restored else 0
            applied = restored.hub_applied if restored else Applied()
            self.replayed = recover(decisions, self.engine, self.hub, after, applied)
            self.plane.hub_applied = applied
        else:  # nothing to replay: what the log holds is older than the state
            if restored is not None:
                log.warning(
                    "the snapshot was taken without a decision log: %s is not replayed",
                    s.log_dir,
                )
                decisions.continue_after(restored.log_seq)
            self.plane.hub_applied = Applied(decisions.first_new_seq - 1)
        return decisions

    async def start(self) -> int:
        if self.log is not None:
            self.log.start(asyncio.get_running_loop())
        if self.reviews is not None:  # caught up from the log before taking calls
            await asyncio.get_running_loop().run_in_executor(None, self.reviews.start)
        if self.replication is not None:  # caught up on the stream before taking calls
            await self.replication.start()
        if self.workers:
            await self._start_fronts()
        else:
            await self._start_grpc()
        loop = asyncio.get_running_loop()
        self._ticker = loop.create_task(self._tick(), name="alert-ticker")
        self._health_task = loop.create_task(self.status.run(), name="health")
        if self.snapshots is not None:
            self.snapshots.start()
        if self.settings.metrics_port:  # /metrics and the review page
            self._metrics = HttpServer(self.hub.registry, self.reviews, self.tokens, self.tls)
            await self._metrics.start(
                self.settings.host, self.settings.metrics_port, self.settings.grace_s
            )
        # Everything built so far (models, warmed state, the history's leftovers) lives as
        # long as the server: moved out of the collector's sight, it is not traversed by
        # every full collection, which otherwise stalls bulk scoring.
        gc.collect()
        gc.freeze()
        m = self.engine.models
        log.info(
            "serving %s on %s:%d with %s (models %s%s)",
            SERVICE,
            self.settings.host,
            self.port,
            f"{self.workers} front processes" if self.workers else "one process",
            m.version,
            f"; problems: {m.problems}" if m.problems else "",
        )
        return self.port

    async def _start_grpc(self) -> None:
        self.health = health.aio.HealthServicer()
        self.server = grpc.aio.server(
            maximum_concurrent_rpcs=self.settings.max_in_flight or None,
            options=[
                ("grpc.so_reuseport", 0),
                ("grpc.max_receive_message_length", self.settings.max_request_bytes),
                ("grpc.max_send_message_length", self.settings.max_request_bytes),
            ],
        )
        mutual = self.tls.mutual
        auth = Authorizer(self.tokens, certs=mutual) if self.tokens or mutual else None
        for service, handlers in method_handlers(self.methods, auth=auth).items():
            self.server.add_generic_rpc_handlers(
                (grpc.method_handlers_generic_handler(service, handlers),)
            )
            self.server.add_registered_method_handlers(service, handlers)
        health_pb2_grpc.add_HealthServicer_to_server(self.health, self.server)
        if self.reflection:
            reflection.enable_server_reflection(
                (
                    *SERVICES,
                    health_pb2.DESCRIPTOR.services_by_name["Health"].full_name,
                    reflection.SERVICE_NAME,
                ),
                self.server,
            )
        address = f"{self.settings.host}:{self.settings.port}"
        self.port = add_port(self.server, address, self.tls)
        if self.port == 0:
            raise OSError(f"cannot listen on {self.settings.host}:{self.settings.port}")
        self.plane.start()
        self.status.check()  # before the port opens: nothing answers a status not yet known
        for name, up in self.status.current.items():
            await self.health.set(name, _SERVING[up])
        await self.server.start()
        self.status.subscribe(self._set_health)

    def _set_health(self, status: dict[str, bool]) -> None:
        hs = self.health
        if hs is None:
            return

        async def put() -> None:
            for name, up in status.items():
                await hs.set(name, _SERVING[up])

        task = asyncio.get_running_loop().create_task(put())
        self._health_sets.add(task)  # held until done
        task.add_done_callback(self._health_sets.discard)

    async def _start_fronts(self) -> None:
        self.link = Link(self.methods)
        self.hub.registry.register(self.link.metrics)
        self.status.check()
        self.status.subscribe(self.link.publish_health)  # each front gets it on connecting
        self.fronts = Fronts(
            self.settings, self.link, self.workers, self.tokens, self.tls, self.reflection
        )
        self.plane.start()
        self.port = await self.fronts.start()

    async def stop(self) -> None:
        if self._stopping or (self.server is None and self.link is None):
            return
        self._stopping = True
        if self._metrics is not None:  # first: the page's verdicts need the engine and store
            await self._metrics.stop()
        if self.server is not None and self.health is not None:
            await self.health.enter_graceful_shutdown()
            await self.server.stop(self.settings.grace_s)
        if self.fronts is not None:
            await self.fronts.stop()
            self.link = None
        await self.plane.stop()
        self.admin.close()
        self.forecasting.close()
        self.shadow.close()
        if self.replication is not None:
            await self.replication.stop()
        if self.reviews is not None:  # every decision taken is in the store
            self.reviews.close()
        if self.routing is not None:  # every routing answered is committed
            self.routing.close()
        if self.log is not None:  # after the shadow and the replicas, which append to it
            self.log.close()
        if self.snapshots is not None:  # nothing changes the state any more
            await self.snapshots.stop()
        if self._ticker is not None:
            self._ticker.cancel()
        if self._health_task is not None:
            self._health_task.cancel()
        self.server = None

    async def _tick(self) -> None:
        """Let the alert monitor see time pass when live traffic stops (AlertHub.tick)."""
        period = min(self.settings.alert_bucket_s / 5, 10.0)
        while True:
            await asyncio.sleep(period)
            self.hub.tick()
            self.publish_drift()

    def publish_drift(self) -> None:
        """The drift monitor's closed hours: gauges, and alerts past the bound."""
        for hour in self.drift.take_closed():
            judged = hour.orders >= self.drift.min_orders  # fewer: sampling noise alone
            for series, value in hour.psi.items():
                self.m_psi.labels(series).set(value)
                if judged:
                    self.hub.drift(series, value, self.drift.bound, hour.start, hour.start + HOUR_S)

    async def serve_forever(self) -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):  # before start: health may say SERVING
            loop.add_signal_handler(sig, stop.set)  # before start() returns
        reloads: set[asyncio.Task[None]] = set()  # held until done

        def reload() -> None:
            task = loop.create_task(self.admin.reload())
            reloads.add(task)
            task.add_done_callback(reloads.discard)

        # Before start too: a front may serve (and a deployment signal) before start()
        # returns, and SIGHUP's default action would end the engine.
        loop.add_signal_handler(signal.SIGHUP, reload)
        await self.start()
        await stop.wait()
        log.info("shutting down: finishing in-flight calls (grace %.1fs)", self.settings.grace_s)
        await self.stop()


_SERVING = {True: health_pb2.HealthCheckResponse.SERVING,
            False: health_pb2.HealthCheckResponse.NOT_SERVING}  # fmt: skip


REVIEWS, ROUTING = "ordersight.v1.Reviews", "ordersight.v1.Routing"


def _no_store(service: str) -> dict[str, Any]:
    """The methods of a service that needs the store, on an engine without one:
    FAILED_PRECONDITION, saying so."""

    async def refuse(request: bytes | bytearray, deadline: float | None) -> bytes:
        raise Unconfigured("no store: start the engine with `store` (a SQLite file or a DSN)")

    return {f"{service}/{name}": refuse for name in SERVICES[service]}


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
