"""Alerts of the anomaly detector as `ordersight.v1.Alert` messages."""

from __future__ import annotations

from google.protobuf.timestamp_pb2 import Timestamp
from ordersight.v1 import risk_pb2 as pb

from engine.monitoring.anomaly import Alert


def _ts(epoch_s: float) -> Timestamp:
    ts = Timestamp()
    ts.FromNanoseconds(int(round(epoch_s * 1e9)))
    return ts


def alert_to_pb(a: Alert) -> pb.Alert:
    return pb.Alert(
        series=a.series,
        kind=a.kind,
        severity=a.severity,
        start=_ts(a.start),
        at=_ts(a.at),
        expected=a.expected,
        actual=a.actual,
        score=a.score,
        explanation=a.explanation,
        end=_ts(a.end) if a.end is not None else None,
    )
