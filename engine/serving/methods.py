"""Every method the engine serves as bytes in, bytes out: OrderRisk's over the data plane,
ModelAdmin's (`engine.serving.model_admin`) beside them.

This is the one place where requests are read and answers written: the in-process servicer
(`engine.serving.servicer`) and the engine side of the front processes' link
(`engine.serving.link`) both call it, so a method behaves the same whichever process took
the call. A method raises `OrderSightError` (its `code` is the gRPC status); a request that
is not the method's message is INVALID_ARGUMENT.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import grpc
import numpy as np
from google.protobuf.message import DecodeError
from ordersight.v1 import risk_pb2 as pb

from engine.codec.alert_messages import alert_to_pb
from engine.errors import InvalidInput, OrderSightError
from engine.serving.data_plane import DataPlane
from engine.serving.frames import UNARY, Body

SERVICE = pb.DESCRIPTOR.services_by_name["OrderRisk"].full_name

Unary = Callable[[Body, "float | None"], Awaitable[bytes]]
log = logging.getLogger(__name__)


def status_of(exc: BaseException, method: str) -> tuple[grpc.StatusCode, str]:
    """The one mapping of errors to statuses, whichever process answers: OrderSightError to
    its own code, anything else to INTERNAL (logged), never the UNKNOWN that grpc would send
    by default."""
    if isinstance(exc, OrderSightError):
        return exc.code, str(exc)
    log.error("%s failed", method, exc_info=exc)
    return grpc.StatusCode.INTERNAL, f"internal error: {type(exc).__name__}"


def parse_request(message: Any, request: Body) -> Any:
    """`request` as `message`, or INVALID_ARGUMENT naming what it is not."""
    try:
        return message.FromString(request)
    except DecodeError as exc:
        raise InvalidInput(f"request: not a {message.DESCRIPTOR.name} ({exc})", "request") from exc


def _time(ts: Any, present: bool) -> tuple[int, int] | None:
    return (int(ts.seconds), int(ts.nanos)) if present else None


class Methods:
    """The unary methods by full name (`frames.UNARY`), over one data plane and the model
    admin's (`deadline`: monotonic seconds or None)."""

    def __init__(self, plane: DataPlane, admin: dict[str, Unary]) -> None:
        self.plane = plane
        self.unary: dict[str, Unary] = {
            f"{SERVICE}/Score": self.score,
            f"{SERVICE}/ScoreBatch": self.score_batch,
            f"{SERVICE}/ReportOutcomes": self.report_outcomes,
            f"{SERVICE}/ReportEvent": self.report_event,
            f"{SERVICE}/ListAlerts": self.list_alerts,
            **admin,
        }
        assert tuple(self.unary) == UNARY

    async def score(self, request: Body, deadline: float | None) -> bytes:
        """A serialized Order's serialized Decision."""
        return await self.plane.score(request, deadline)

    async def score_batch(self, request: Body, deadline: float | None) -> bytes:
        self._writable()
        return await self.plane.bulk.score_batch(request, deadline)

    def _writable(self) -> None:
        """Refuse a call that changes state while the decision log refuses them."""
        self.plane.check_log()

    async def report_outcomes(self, request: Body, deadline: float | None) -> bytes:
        self._writable()
        outcomes = parse_request(pb.ReportOutcomesRequest, request).outcomes
        accepted = await self.plane.feedback.report_outcomes(
            [oc.order.SerializeToString() for oc in outcomes],
            np.array([oc.is_fraud for oc in outcomes], np.int8),
            [_time(oc.known_at, oc.HasField("known_at")) for oc in outcomes],
        )
        return pb.ReportOutcomesResponse(accepted=accepted).SerializeToString()

    async def report_event(self, request: Body, deadline: float | None) -> bytes:
        self._writable()
        events = parse_request(pb.ReportEventRequest, request).events
        accepted = await self.plane.feedback.report_events(
            [ev.channel for ev in events],
            [ev.code for ev in events],
            [_time(ev.time, ev.HasField("time")) for ev in events],
        )
        return pb.ReportEventResponse(accepted=accepted).SerializeToString()

    async def list_alerts(self, request: Body, deadline: float | None) -> bytes:
        parse_request(pb.ListAlertsRequest, request)
        alerts = [alert_to_pb(a) for a in self.plane.active_alerts()]
        return pb.ListAlertsResponse(alerts=alerts).SerializeToString()

    async def watch_alerts(self, request: Body) -> AsyncIterator[bytes]:
        """Serialized Alerts: the open ones first when asked, then each change, until the
        caller stops iterating."""
        include_active = parse_request(pb.WatchAlertsRequest, request).include_active
        hub = self.plane.hub
        queue = hub.subscribe()
        try:
            if include_active:
                for a in self.plane.active_alerts():
                    yield alert_to_pb(a).SerializeToString()
            while True:
                yield alert_to_pb(await queue.get()).SerializeToString()
        finally:
            hub.unsubscribe(queue)
