"""A gRPC front process: takes `ordersight.v1.OrderRisk` calls on the shared port
(SO_REUSEPORT, one process per core) and moves their bytes to the engine process over its
link (`engine.serving.frames`); serves health and reflection itself. It loads no model and
holds no state, so any number of fronts see one velocity state, in one order of updates.

Started by the engine (`engine.serving.server.Server` with `workers >= 1`); it exits when
the engine tells it to stop (after finishing the calls in flight) or when the link drops.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import signal
import socket
import sys
import time
from collections.abc import AsyncIterator
from typing import Any

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection
from ordersight.v1 import risk_pb2 as pb

from engine.serving import frames
from engine.serving.auth import Authorizer, guard_stream, guard_unary, read_tokens
from engine.serving.tls import TlsFiles, add_port

log = logging.getLogger("engine.serving.front")
SERVICE = pb.DESCRIPTOR.services_by_name["OrderRisk"].full_name
STATUS = {s.value[0]: s for s in grpc.StatusCode}


class EngineLink:
    """The front's end of the link: calls out, answers and stream items back."""

    def __init__(self) -> None:
        self.protocol: frames.FrameProtocol | None = None
        self._calls: dict[int, asyncio.Future[tuple[int, frames.Body]]] = {}
        self._streams: dict[int, asyncio.Queue[tuple[int, int, frames.Body]]] = {}
        self._next = 0
        self.stop = asyncio.Event()
        self.lost = asyncio.Event()
        self.health: health.aio.HealthServicer | None = None  # served from the HEALTH frames
        self.status: dict[str, bool] = {}  # the engine's last HEALTH frame
        self.got_health = asyncio.Event()
        self._health_tasks: set[asyncio.Task[None]] = set()

    async def connect(self, path: str, timeout_s: float = 60.0) -> None:
        loop = asyncio.get_running_loop()
        end = time.monotonic() + timeout_s
        while True:
            try:
                _, self.protocol = await loop.create_unix_connection(
                    lambda: frames.FrameProtocol(self._on_frame, self._on_lost), path
                )
                return
            except (FileNotFoundError, ConnectionRefusedError):
                if time.monotonic() > end:
                    raise
                await asyncio.sleep(0.05)

    def _id(self) -> int:
        self._next = (self._next + 1) & 0xFFFFFFFF
        return self._next

    def _on_frame(
        self, kind: int, call: int, code: int, deadline: float, body: frames.Body
    ) -> None:
        if kind == frames.REPLY:
            fut = self._calls.pop(call, None)
            if fut is not None and not fut.done():
                fut.set_result((code, body))
            q = self._streams.get(call)
            if q is not None:
                q.put_nowait((frames.REPLY, code, body))
        elif kind == frames.ITEM:
            q = self._streams.get(call)
            if q is not None:
                q.put_nowait((frames.ITEM, 0, body))
        elif kind == frames.STOP:
            self.stop.set()
        elif kind == frames.HEALTH:
            self.status = json.loads(bytes(body))
            self.got_health.set()
            if self.health is not None:
                task = asyncio.get_running_loop().create_task(set_health(self.health, self.status))
                self._health_tasks.add(task)  # held until done
                task.add_done_callback(self._health_tasks.discard)

    def _on_lost(self, exc: Exception | None) -> None:
        gone = (grpc.StatusCode.UNAVAILABLE.value[0], b"the engine process went away")
        for fut in self._calls.values():
            if not fut.done():
                fut.set_result(gone)
        self._calls.clear()
        for q in self._streams.values():
            q.put_nowait((frames.REPLY, *gone))
        self.lost.set()

    async def call(self, method: int, request: bytes, deadline: float) -> tuple[int, frames.Body]:
        """(gRPC status, answer or message) of one unary call."""
        if self.protocol is None or self.protocol.closed:
            return grpc.StatusCode.UNAVAILABLE.value[0], b"the engine process went away"
        call = self._id()
        fut = asyncio.get_running_loop().create_future()
        self._calls[call] = fut
        self.protocol.send(frames.CALL, call, method, request, deadline)
        try:
            return await fut
        finally:
            self._calls.pop(call, None)

    async def watch(self, request: bytes) -> AsyncIterator[tuple[int, int, frames.Body]]:
        """(kind, status, body) of one server stream, ending with its REPLY."""
        assert self.protocol is not None
        call = self._id()
        q: asyncio.Queue[tuple[int, int, frames.Body]] = asyncio.Queue()
        self._streams[call] = q
        self.protocol.send(frames.WATCH, call, 0, request)
        try:
            while True:
                item = await q.get()
                yield item
                if item[0] == frames.REPLY:
                    return
        finally:
            del self._streams[call]
            if not self.protocol.closed:
                self.protocol.send(frames.CANCEL, call, 0)


async def set_health(hs: health.aio.HealthServicer, status: dict[str, bool]) -> None:
    """Serve the engine's health (`engine.serving.health`) as it is now."""
    for name, up in status.items():
        await hs.set(name, SERVING if up else NOT_SERVING)


SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING


def handlers(
    link: EngineLink, auth: Authorizer | None = None
) -> dict[str, dict[str, grpc.RpcMethodHandler]]:
    """Every service's handlers (by service, then method), each passing bytes on once `auth`
    (when given) lets the call through."""

    def unary(index: int) -> grpc.RpcMethodHandler:
        async def handler(request: bytes, context: grpc.aio.ServicerContext) -> Any:
            remaining = context.time_remaining()
            deadline = frames.NO_DEADLINE if remaining is None else time.monotonic() + remaining
            code, body = await link.call(index, request, deadline)
            if code:
                await context.abort(STATUS[code], bytes(body).decode("utf-8", "replace"))
            return body if type(body) is bytes else bytes(body)

        return grpc.unary_unary_rpc_method_handler(
            guard_unary(auth, "/" + frames.UNARY[index], handler)
        )

    async def watch(request: bytes, context: grpc.aio.ServicerContext) -> AsyncIterator[bytes]:
        async for kind, code, body in link.watch(request):
            if kind == frames.ITEM:
                yield bytes(body)
            elif code:
                await context.abort(STATUS[code], bytes(body).decode("utf-8", "replace"))

    out: dict[str, dict[str, grpc.RpcMethodHandler]] = {s: {} for s in frames.SERVICES}
    for i, full in enumerate(frames.UNARY):
        service, name = full.split("/")
        out[service][name] = unary(i)
    out[SERVICE]["WatchAlerts"] = grpc.unary_stream_rpc_method_handler(
        guard_stream(auth, f"/{SERVICE}/WatchAlerts", watch)
    )
    return out


async def serve(args: argparse.Namespace) -> int:
    link = EngineLink()
    await link.connect(args.link)
    server = grpc.aio.server(
        maximum_concurrent_rpcs=args.max_in_flight or None,  # past it: RESOURCE_EXHAUSTED
        options=[
            ("grpc.so_reuseport", 1),
            ("grpc.max_receive_message_length", args.max_request_bytes),
            ("grpc.max_send_message_length", args.max_request_bytes),
        ],
    )
    hs = link.health = health.aio.HealthServicer()
    files = TlsFiles(args.tls_cert or "", args.tls_key or "", args.tls_client_ca or "")
    tokens = read_tokens(args.auth) if args.auth else ()
    auth = Authorizer(tokens, certs=files.mutual) if tokens or files.mutual else None
    for service, h in handlers(link, auth).items():
        server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(service, h),))
        server.add_registered_method_handlers(service, h)
    health_pb2_grpc.add_HealthServicer_to_server(hs, server)
    if args.reflection:
        names = (*frames.SERVICES, health_pb2.DESCRIPTOR.services_by_name["Health"].full_name)
        reflection.enable_server_reflection((*names, reflection.SERVICE_NAME), server)
    if add_port(server, f"{args.host}:{args.port}", files) == 0:
        log.error("front %d: cannot listen on %s:%d", os.getpid(), args.host, args.port)
        return 2
    await asyncio.wait_for(link.got_health.wait(), 60.0)  # the engine sends it on connecting
    await set_health(hs, link.status)  # before the port opens
    await server.start()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, link.stop.set)
    loop.add_signal_handler(signal.SIGHUP, lambda: None)  # the engine's: it reloads models
    assert link.protocol is not None
    link.protocol.send(frames.READY, 0, os.getpid())
    waits = [asyncio.ensure_future(e.wait()) for e in (link.stop, link.lost)]
    await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
    for w in waits:
        w.cancel()
    lost = link.lost.is_set()
    await hs.enter_graceful_shutdown()
    await server.stop(0 if lost else args.grace)
    if link.protocol is not None:
        link.protocol.close()
    if lost:
        log.error("front %d: the engine process went away", os.getpid())
    return 1 if lost else 0


def reserve_port(host: str, port: int) -> socket.socket:
    """A socket bound to host:port with SO_REUSEPORT and not listening: it keeps a free port
    (port 0) ours for the fronts to share, and it refuses a port another server listens on,
    which a front's own SO_REUSEPORT bind would otherwise join."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        probe.settimeout(1.0)
        if port and probe.connect_ex((host, port)) == 0:
            raise OSError(f"cannot listen on {host}:{port}: another server is listening there")
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        raise OSError(f"cannot listen on {host}:{port}: {exc.strerror}") from exc
    return sock


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--link", required=True, help="the engine's Unix socket")
    p.add_argument("--host", required=True)
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--max-request-bytes", type=int, required=True)
    p.add_argument("--grace", type=float, default=5.0)
    p.add_argument("--reflection", action=argparse.BooleanOptionalAction, default=True)
    p.add_argument("--log-level", default="INFO")
    p.add_argument("--max-in-flight", type=int, default=0, help="calls taken at once (0: no limit)")
    p.add_argument("--auth", help="the engine's token table (JSON); none = every RPC open")
    p.add_argument("--tls-cert", help="PEM certificate: serve TLS")
    p.add_argument("--tls-key", help="PEM key of --tls-cert")
    p.add_argument("--tls-client-ca", help="PEM CA of client certificates: mutual TLS")
    args = p.parse_args(argv)
    logging.basicConfig(
        level=args.log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    return asyncio.run(serve(args))


if __name__ == "__main__":
    sys.exit(main())
