"""The `ordersight.v1.OrderRisk` servicer: moves bytes and values between gRPC and the data
plane, and maps errors to status codes in one place. It knows no model.

Score and ScoreBatch see the request's bytes and answer with bytes (decoded and encoded by
the codec inside the data plane); the other methods use the generated (de)serializers.
"""

from __future__ import annotations

import functools
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import grpc
import numpy as np
from ordersight.v1 import risk_pb2 as pb
from ordersight.v1 import risk_pb2_grpc as pb_grpc

from engine.codec.alert_messages import alert_to_pb
from engine.errors import OrderSightError
from engine.serving.data_plane import DataPlane

log = logging.getLogger(__name__)
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


def _time(ts: Any, present: bool) -> tuple[int, int] | None:
    return (int(ts.seconds), int(ts.nanos)) if present else None


class OrderRiskServicer(pb_grpc.OrderRiskServicer):
    def __init__(self, plane: DataPlane, clock: Callable[[], float] = time.monotonic) -> None:
        self.plane = plane
        self.clock = clock

    def _deadline(self, context: grpc.aio.ServicerContext) -> float | None:
        remaining = context.time_remaining()
        return None if remaining is None else self.clock() + remaining

    @_rpc
    async def Score(self, request: bytes, context: grpc.aio.ServicerContext) -> bytes:
        """`request` is a serialized Order; the answer a serialized Decision."""
        return await self.plane.score(request, self._deadline(context))

    @_rpc
    async def ScoreBatch(self, request: bytes, context: grpc.aio.ServicerContext) -> bytes:
        """`request` is a serialized ScoreBatchRequest; the answer a ScoreBatchResponse's."""
        return await self.plane.score_batch(request, self._deadline(context))

    @_rpc
    async def ReportOutcomes(
        self, request: pb.ReportOutcomesRequest, context: grpc.aio.ServicerContext
    ) -> pb.ReportOutcomesResponse:
        outcomes = request.outcomes
        accepted = await self.plane.report_outcomes(
            [oc.order.SerializeToString() for oc in outcomes],
            np.array([oc.is_fraud for oc in outcomes], np.int8),
            [_time(oc.known_at, oc.HasField("known_at")) for oc in outcomes],
        )
        return pb.ReportOutcomesResponse(accepted=accepted)

    @_rpc
    async def ReportEvent(
        self, request: pb.ReportEventRequest, context: grpc.aio.ServicerContext
    ) -> pb.ReportEventResponse:
        events = request.events
        accepted = self.plane.report_events(
            [ev.channel for ev in events],
            [ev.code for ev in events],
            [_time(ev.time, ev.HasField("time")) for ev in events],
        )
        return pb.ReportEventResponse(accepted=accepted)

    @_rpc
    async def ListAlerts(
        self, request: pb.ListAlertsRequest, context: grpc.aio.ServicerContext
    ) -> pb.ListAlertsResponse:
        return pb.ListAlertsResponse(alerts=[alert_to_pb(a) for a in self.plane.active_alerts()])

    async def WatchAlerts(
        self, request: pb.WatchAlertsRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[pb.Alert]:
        hub = self.plane.hub
        queue = hub.subscribe()
        try:
            if request.include_active:
                for a in self.plane.active_alerts():
                    yield alert_to_pb(a)
            while True:
                yield alert_to_pb(await queue.get())
        finally:
            hub.unsubscribe(queue)


def method_handlers(servicer: OrderRiskServicer) -> dict[str, grpc.RpcMethodHandler]:
    """The service's handlers, as `add_OrderRiskServicer_to_server` builds them, except that
    Score and ScoreBatch see the request's bytes and answer with bytes."""
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
