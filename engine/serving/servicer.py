"""The servicers of a process that scores itself (OrderRisk, ModelAdmin): moves bytes
between gRPC and `engine.serving.methods`, and maps errors to status codes. It knows no
model and reads no message: every method sees the request's bytes and answers with bytes.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import grpc

from engine.errors import OrderSightError
from engine.serving.auth import Authorizer, guard_stream, guard_unary
from engine.serving.frames import SERVICES
from engine.serving.methods import SERVICE, Methods, Unary, status_of

__all__ = ["method_handlers"]


async def abort_with(context: grpc.aio.ServicerContext, exc: BaseException, method: str) -> None:
    await context.abort(*status_of(exc, method))


def deadline_of(context: grpc.aio.ServicerContext, clock: Callable[[], float]) -> float | None:
    remaining = context.time_remaining()
    return None if remaining is None else clock() + remaining


def method_handlers(
    methods: Methods, clock: Callable[[], float] = time.monotonic, auth: Authorizer | None = None
) -> dict[str, dict[str, grpc.RpcMethodHandler]]:
    """Every service's handlers (by service, then method), bytes in and out, each behind
    `auth` when given."""

    def unary(full: str, name: str, fn: Unary) -> grpc.RpcMethodHandler:
        async def handler(request: bytes, context: grpc.aio.ServicerContext) -> Any:
            try:
                return await fn(request, deadline_of(context, clock))
            except Exception as exc:
                await abort_with(context, exc, name)

        return grpc.unary_unary_rpc_method_handler(guard_unary(auth, f"/{full}", handler))

    async def watch(request: bytes, context: grpc.aio.ServicerContext) -> AsyncIterator[bytes]:
        try:
            async for alert in methods.watch_alerts(request):
                yield alert
        except OrderSightError as exc:
            await abort_with(context, exc, "WatchAlerts")

    handlers: dict[str, dict[str, grpc.RpcMethodHandler]] = {s: {} for s in SERVICES}
    for full, fn in methods.unary.items():
        service, name = full.split("/")
        handlers[service][name] = unary(full, name, fn)
    handlers[SERVICE]["WatchAlerts"] = grpc.unary_stream_rpc_method_handler(
        guard_stream(auth, f"/{SERVICE}/WatchAlerts", watch)
    )
    return handlers
