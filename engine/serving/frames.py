"""The link between gRPC front processes and the engine process: frames on a Unix socket.

A frame is a fixed header and a body: body length (u32), kind (u8), call id (u32), a code
(i32: the method's index in `engine.serving.methods.UNARY` on a CALL, the gRPC status on a
REPLY, the sender's pid on READY) and a deadline (f64, CLOCK_MONOTONIC seconds, which every
process on a host shares; NaN for none). Each side writes every frame it has for the other
once per event-loop turn, so a burst of calls costs one system call each way, and the engine
scores what one read brought as one micro-batch.

Standard library only: a front process imports no numerical code.
"""

from __future__ import annotations

import asyncio
import math
import struct
from collections.abc import Callable

SERVICES = {
    "ordersight.v1.OrderRisk": (
        "Score",
        "ScoreBatch",
        "ReportOutcomes",
        "ReportEvent",
        "ListAlerts",
    ),
    "ordersight.v1.ModelAdmin": (
        "ListModels",
        "GetStatus",
        "LoadModel",
        "Rollback",
        "SetChallenger",
        "ClearChallenger",
    ),  # fmt: skip
    "ordersight.v1.Forecasting": (
        "Forecast",
        "GetForecastModel",
        "LoadForecastModel",
        "RollbackForecastModel",
    ),
    "ordersight.v1.Reviews": ("ListReviews", "GetReview", "ResolveReview"),
    "ordersight.v1.Routing": (
        "UpsertAgent",
        "SetAgentState",
        "ListAgents",
        "Route",
        "CompleteCase",
        "AssignBatch",
        "GetRoutedCase",
    ),
}
"""The unary methods the engine serves, by service (OrderRisk's WatchAlerts is a stream)."""
UNARY = tuple(f"{service}/{name}" for service, names in SERVICES.items() for name in names)
"""Full method names, numbered by their place here: a CALL's code (Score is 0)."""

HEADER = struct.Struct("<IBIid")
MAX_BODY = (1 << 32) - 1

CALL = 1  # front → engine: a unary call; code = method index, body = request
WATCH = 2  # front → engine: open a server stream (WatchAlerts); body = request
CANCEL = 3  # front → engine: the caller of stream `call id` went away
READY = 4  # front → engine: serving on its port; code = pid
REPLY = 5  # engine → front: a unary call's answer or a stream's end; code = gRPC status
ITEM = 6  # engine → front: one message of stream `call id`
STOP = 7  # engine → front: stop taking calls, finish those in flight, exit
HEALTH = 8  # engine → front: health to serve; body = JSON {service: serving (bool)}

NO_DEADLINE = math.nan

Body = bytes | bytearray
Handler = Callable[[int, int, int, float, Body], None]
"""(kind, call id, code, deadline, body) for each frame received."""


SCRATCH = 1 << 16
"""Bytes read at once while frames are small."""
LARGE = 1 << 20
"""A body at least this long is read straight into its own buffer (a ScoreBatch of many
orders), and written without being joined to its neighbours first."""


class FrameProtocol(asyncio.BufferedProtocol):
    """Frames in and out of one stream connection. Received frames go to `on_frame` in
    order (a body of LARGE bytes or more as a bytearray, others as bytes); `send` queues a
    frame, and everything queued in one event-loop turn goes out in one write."""

    def __init__(
        self,
        on_frame: Handler,
        on_lost: Callable[[Exception | None], None],
        on_open: Callable[[], None] | None = None,
    ) -> None:
        self.on_frame = on_frame
        self.on_lost = on_lost
        self.on_open = on_open  # called once the connection is made (frames can go out)
        self.transport: asyncio.Transport | None = None
        self._buf = bytearray(SCRATCH)
        self._held = 0  # bytes of _buf read and not yet taken as frames
        self._large: bytearray | None = None  # the body being read into its own buffer
        self._large_got = 0
        self._large_head: tuple[int, int, int, float] = (0, 0, 0, 0.0)
        self._out: list[bytes] = []
        self._flush_scheduled = False
        self.closed = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        if self.on_open is not None:
            self.on_open()

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self.on_lost(exc)

    def get_buffer(self, sizehint: int) -> memoryview:
        if self._large is not None:
            return memoryview(self._large)[self._large_got :]
        if self._held == len(self._buf):  # a frame longer than the buffer, under LARGE
            grown = bytearray(2 * len(self._buf))  # anew: the transport may hold a view
            grown[: self._held] = self._buf
            self._buf = grown
        return memoryview(self._buf)[self._held :]

    def buffer_updated(self, nbytes: int) -> None:
        if self._large is not None:
            self._large_got += nbytes
            if self._large_got == len(self._large):
                large, self._large = self._large, None
                kind, call, code, deadline = self._large_head
                self.on_frame(kind, call, code, deadline, large)
            return
        self._held += nbytes
        buf, end, size = self._buf, self._held, HEADER.size
        at = 0
        while end - at >= size:
            n, kind, call, code, deadline = HEADER.unpack_from(buf, at)
            have = end - at - size
            if have >= n:
                body = bytes(buf[at + size : at + size + n])
                at += size + n
                self.on_frame(kind, call, code, deadline, body)
            elif n >= LARGE:  # the rest of this body is read into its own buffer
                self._large = bytearray(n)
                self._large[:have] = buf[at + size : end]
                self._large_got = have
                self._large_head = (kind, call, code, deadline)
                at = end
                break
            else:
                break
        if at:
            rest = end - at
            buf[:rest] = buf[at:end]
            self._held = rest
            if rest == 0 and len(buf) > SCRATCH:
                self._buf = bytearray(SCRATCH)

    def send(
        self, kind: int, call: int, code: int, body: bytes = b"", deadline: float = 0.0
    ) -> None:
        if self.closed:
            return
        if len(body) > MAX_BODY:
            raise ValueError(f"frame body of {len(body):,} bytes")
        self._out.append(HEADER.pack(len(body), kind, call, code, deadline))
        self._out.append(body)
        if not self._flush_scheduled:
            self._flush_scheduled = True
            asyncio.get_running_loop().call_soon(self.flush)

    def flush(self) -> None:
        """Write what is queued now (otherwise it goes at the end of this loop turn)."""
        self._flush_scheduled = False
        out, self._out = self._out, []
        if not out or self.transport is None or self.closed:
            return
        if sum(map(len, out)) < LARGE:
            self.transport.write(b"".join(out))
        else:  # no joined copy of a large body: the transport buffers what the socket refuses
            for part in out:
                self.transport.write(part)

    def close(self) -> None:
        self.flush()
        if self.transport is not None:
            self.transport.close()
