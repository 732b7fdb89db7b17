"""Alerts of the anomaly detector as `ordersight.v1.Alert` messages."""

from __future__ import annotations

from google.protobuf.timestamp_pb2 import Timestamp
from ordersight.v1 import risk_pb2 as pb

from engine.monitoring.anomaly import Alert


def timestamp(epoch_s: float) -> Timestamp:
    """Epoch seconds as a protobuf Timestamp, to the nanosecond."""
    ts = Timestamp()
    ts.FromNanoseconds(int(round(epoch_s * 1e9)))
    return ts


def alert_to_pb(a: Alert) -> pb.Alert:
    return pb.Alert(
        series=a.series,
        kind=a.kind,
        severity=a.severity,
        start=timestamp(a.start),
        at=timestamp(a.at),
        expected=a.expected,
        actual=a.actual,
        score=a.score,
        explanation=a.explanation,
        end=timestamp(a.end) if a.end is not None else None,
    )
