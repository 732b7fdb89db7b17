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
from typing import Any, NamedTuple

import grpc
import numpy as np
from google.protobuf.message import DecodeError
from ordersight.v1 import risk_pb2 as pb

from engine.codec.alert_messages import alert_to_pb
from engine.errors import InvalidInput, OrderSightError
from engine.serving.data_plane import DataPlane
from engine.serving.feedback import OutcomeDetails
from engine.serving.frames import UNARY, Body
from engine.store.tables import KIND_IS_FRAUD, check_reviewer_and_note

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


MAX_UNMATCHED_IDS = 100  # unmatched order ids named in one ReportOutcomes answer


class _Details(NamedTuple):
    kind: str
    is_fraud: bool
    reviewer: str
    note: str


def outcome_details(i: int, oc: Any) -> _Details:
    """An outcome's kind and the fields that go with it, checked (INVALID_ARGUMENT naming
    `outcomes[i].<field>` and the rule otherwise)."""
    at = f"outcomes[{i}]."
    kind = pb.OutcomeKind.Name(oc.kind) if oc.kind in pb.OutcomeKind.values() else ""
    has_flag = oc.HasField("is_fraud")
    if not kind:
        raise InvalidInput(f"{at}kind: {oc.kind} is not an outcome kind", at + "kind")
    if kind == "OUTCOME_KIND_UNSPECIFIED":
        if not has_flag:
            raise InvalidInput(
                f"{at}kind: required (CHARGEBACK, CONFIRMED_FRAUD, CONFIRMED_LEGITIMATE or "
                "REVIEW_VERDICT), or is_fraud for a plain confirmed outcome",
                at + "kind",
            )
        kind = "CONFIRMED_FRAUD" if oc.is_fraud else "CONFIRMED_LEGITIMATE"
    verdict = pb.Verdict.Name(oc.verdict) if oc.verdict in pb.Verdict.values() else "?"
    if kind == "REVIEW_VERDICT":
        if verdict not in ("FRAUD", "LEGITIMATE"):
            raise InvalidInput(
                f"{at}verdict: FRAUD or LEGITIMATE for a REVIEW_VERDICT", at + "verdict"
            )
        if not oc.reviewer.strip():
            raise InvalidInput(f"{at}reviewer: required for a REVIEW_VERDICT", at + "reviewer")
        fraud = verdict == "FRAUD"
    else:
        if oc.verdict or oc.reviewer:
            raise InvalidInput(
                f"{at}verdict: only a REVIEW_VERDICT has a verdict and a reviewer", at + "verdict"
            )
        fraud = KIND_IS_FRAUD[kind]
    if has_flag and oc.is_fraud != fraud:
        raise InvalidInput(
            f"{at}is_fraud: {str(oc.is_fraud).lower()} contradicts {kind}"
            + (f" {verdict}" if kind == "REVIEW_VERDICT" else ""),
            at + "is_fraud",
        )
    check_reviewer_and_note(oc.reviewer, oc.note, at)
    return _Details(kind, fraud, oc.reviewer.strip(), oc.note)


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
        details = [outcome_details(i, oc) for i, oc in enumerate(outcomes)]
        got = await self.plane.feedback.report_outcomes(
            [oc.order.SerializeToString() for oc in outcomes],
            np.array([d.is_fraud for d in details], np.int8),
            [_time(oc.known_at, oc.HasField("known_at")) for oc in outcomes],
            details=[OutcomeDetails(d.kind, d.reviewer, d.note) for d in details],
        )
        return pb.ReportOutcomesResponse(
            accepted=got.accepted, duplicates=got.duplicates, unmatched=len(got.unmatched),
            unmatched_order_ids=got.unmatched[:MAX_UNMATCHED_IDS],
        ).SerializeToString()  # fmt: skip

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
