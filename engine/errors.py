"""One error hierarchy for the engine; each error carries the gRPC status it maps to.

Scoring code raises these without knowing about gRPC; `engine.serving.server` maps them to a
status in one place (`OrderSightError.code`).
"""

from __future__ import annotations

import grpc


class OrderSightError(Exception):
    code: grpc.StatusCode = grpc.StatusCode.INTERNAL


class FieldError(OrderSightError):
    """An error about one field of the call; `field` names it (or the column)."""

    def __init__(self, message: str, field: str | None = None) -> None:
        super().__init__(message)
        self.field = field


class InvalidInput(FieldError, ValueError):
    """Bad input from a caller; `field` names the offending field or column."""

    code = grpc.StatusCode.INVALID_ARGUMENT


class ModelLoadError(OrderSightError):
    """An artifact folder is missing, incomplete or fails verification."""

    code = grpc.StatusCode.FAILED_PRECONDITION


class NotFound(OrderSightError):
    """What a call names does not exist (a model version, a folder)."""

    code = grpc.StatusCode.NOT_FOUND


class DeadlineExceeded(OrderSightError):
    """The call's deadline passed before its work was committed (nothing was changed)."""

    code = grpc.StatusCode.DEADLINE_EXCEEDED


class Unavailable(OrderSightError):
    """The engine is shutting down or overloaded."""

    code = grpc.StatusCode.UNAVAILABLE


class Conflict(FieldError):
    """What a call names exists already with other contents (an order id reused for
    another order)."""

    code = grpc.StatusCode.ALREADY_EXISTS


class Overloaded(OrderSightError):
    """The engine's queue is full: the call is refused at once rather than left to wait."""

    code = grpc.StatusCode.RESOURCE_EXHAUSTED


class Unconfigured(OrderSightError):
    """The call needs a part the engine was started without (the store, say)."""

    code = grpc.StatusCode.FAILED_PRECONDITION
