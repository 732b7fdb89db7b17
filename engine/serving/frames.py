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

UNARY = ("Score", "ScoreBatch", "ReportOutcomes", "ReportEvent", "ListAlerts")
"""The unary methods of `ordersight.v1.OrderRisk`, numbered by their place here."""

HEADER = struct.Struct("<IBIid")
MAX_BODY = (1 << 32) - 1

CALL = 1  # front → engine: a unary call; code = method index, body = request
WATCH = 2  # front → engine: open a server stream (WatchAlerts); body = request
CANCEL = 3  # front → engine: the caller of stream `call id` went away
READY = 4  # front → engine: serving on its port; code = pid
REPLY = 5  # engine → front: a unary call's answer or a stream's end; code = gRPC status
ITEM = 6  # engine → front: one message of stream `call id`
STOP = 7  # engine → front: stop taking calls, finish those in flight, exit

NO_DEADLINE = math.nan

Handler = Callable[[int, int, int, float, bytes], None]
"""(kind, call id, code, deadline, body) for each frame received."""


class FrameProtocol(asyncio.Protocol):
    """Frames in and out of one stream connection. Received frames go to `on_frame` in
    order; `send` queues a frame, and everything queued in one event-loop turn goes out in
    one write."""

    def __init__(self, on_frame: Handler, on_lost: Callable[[Exception | None], None]) -> None:
        self.on_frame = on_frame
        self.on_lost = on_lost
        self.transport: asyncio.Transport | None = None
        self._in = bytearray()
        self._out: list[bytes] = []
        self._flush_scheduled = False
        self.closed = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self.on_lost(exc)

    def data_received(self, data: bytes) -> None:
        buf = self._in
        buf += data
        at, end, size = 0, len(buf), HEADER.size
        while end - at >= size:
            n, kind, call, code, deadline = HEADER.unpack_from(buf, at)
            if end - at - size < n:
                break
            body = bytes(buf[at + size : at + size + n])
            at += size + n
            self.on_frame(kind, call, code, deadline, body)
        del buf[:at]

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
        if out and self.transport is not None and not self.closed:
            self.transport.write(b"".join(out))

    def close(self) -> None:
        self.flush()
        if self.transport is not None:
            self.transport.close()
