"""The engine's end of the link to its gRPC front processes (`engine.serving.front`).

Each front connects to the engine's Unix socket. Score calls go straight into the data
plane's micro-batcher, so everything the fronts sent since the last batch is scored as one
(no timer: a batch forms while the previous one is scored); the other methods run as they
do in one process (`engine.serving.methods`). The engine process is the velocity state's
single writer, whichever front took a call.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
from collections.abc import Callable, Iterator
from typing import Any

import grpc
from prometheus_client import ProcessCollector
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from engine.errors import OrderSightError
from engine.serving import frames
from engine.serving.batcher import Pending
from engine.serving.methods import Methods, status_of

log = logging.getLogger(__name__)
OK = grpc.StatusCode.OK.value[0]


def _error_reply(exc: BaseException, method: str) -> tuple[int, bytes]:
    """(status number, message) of a REPLY frame for an error (`methods.status_of`)."""
    code, message = status_of(exc, method)
    return code.value[0], message.encode()


class FrontConnection:
    """One front process's connection: its calls in, their answers out."""

    def __init__(self, link: Link) -> None:
        self.link = link
        self.protocol = frames.FrameProtocol(self._on_frame, self._on_lost, self.send_health)
        self.pid = 0
        self.calls = 0  # calls this front has passed on
        self._tasks: dict[int, asyncio.Task] = {}

    def _reply(self, call: int) -> Callable[[Any], None]:
        send = self.protocol.send

        def reply(result: Any) -> None:
            if isinstance(result, BaseException):
                code, body = _error_reply(result, "Score")
                send(frames.REPLY, call, code, body)
            else:
                send(frames.REPLY, call, OK, result)

        return reply

    def _on_frame(
        self, kind: int, call: int, code: int, deadline: float, body: frames.Body
    ) -> None:
        d = None if deadline != deadline else deadline  # NaN: no deadline
        self.calls += kind == frames.CALL
        if kind == frames.CALL and code == 0:  # Score
            self.link.score(body, d, self._reply(call))
        elif kind == frames.CALL and 0 < code < len(frames.UNARY):
            self._start(call, self._unary(call, frames.UNARY[code], body, d))
        elif kind == frames.WATCH:
            self._start(call, self._watch(call, body))
        elif kind == frames.CANCEL:
            task = self._tasks.get(call)
            if task is not None:
                task.cancel()
        elif kind == frames.READY:
            self.pid = code
            self.link.ready(self)
        else:
            log.error("front %d sent an unknown frame (kind %d, code %d)", self.pid, kind, code)

    def _start(self, call: int, coro: Any) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks[call] = task
        task.add_done_callback(lambda _t: self._tasks.pop(call, None))

    async def _unary(
        self, call: int, method: str, body: frames.Body, deadline: float | None
    ) -> None:
        try:
            answer = await self.link.methods.unary[method](body, deadline)
        except Exception as exc:
            self.protocol.send(frames.REPLY, call, *_error_reply(exc, method))
        else:
            self.protocol.send(frames.REPLY, call, OK, answer)

    async def _watch(self, call: int, body: frames.Body) -> None:
        try:
            async for item in self.link.methods.watch_alerts(body):
                self.protocol.send(frames.ITEM, call, 0, item)
        except asyncio.CancelledError:
            return
        except Exception as exc:
            self.protocol.send(frames.REPLY, call, *_error_reply(exc, "WatchAlerts"))

    def _on_lost(self, exc: Exception | None) -> None:
        for task in list(self._tasks.values()):
            task.cancel()
        self.link.connections.discard(self)

    def stop(self) -> None:
        self.protocol.send(frames.STOP, 0, 0)

    def send_health(self) -> None:
        """The engine's health as it is now, for the front to serve."""
        self.protocol.send(frames.HEALTH, 0, 0, json.dumps(self.link.health).encode())


class FrontMetrics(Collector):
    """The fronts an operator watches: how many are connected, the calls each passed on
    (labelled by process id, so a replaced front starts a new series), and how many were
    replaced after they died (`Server` counts those in `restarts`)."""

    def __init__(self, link: Link) -> None:
        self.link = link
        self.restarts = 0

    def collect(self) -> Iterator[Metric]:
        conns = list(self.link.connections)
        yield GaugeMetricFamily(
            "ordersight_fronts", "Front processes connected to the engine", value=len(conns)
        )
        calls = CounterMetricFamily(
            "ordersight_front_calls",
            "Calls each front process passed to the engine",
            labels=["pid"],
        )
        rss = GaugeMetricFamily(
            "ordersight_front_resident_memory_bytes", "Resident memory of each front process",
            labels=["pid"],
        )  # fmt: skip
        cpu = CounterMetricFamily(
            "ordersight_front_cpu_seconds", "CPU time (user and system) of each front process",
            labels=["pid"],
        )  # fmt: skip
        for conn in conns:
            if conn.pid:
                calls.add_metric([str(conn.pid)], float(conn.calls))
                usage = _process_usage(conn.pid)
                if "process_resident_memory_bytes" in usage:
                    rss.add_metric([str(conn.pid)], usage["process_resident_memory_bytes"])
                if "process_cpu_seconds_total" in usage:
                    cpu.add_metric([str(conn.pid)], usage["process_cpu_seconds_total"])
        yield calls
        yield rss
        yield cpu
        yield CounterMetricFamily(
            "ordersight_front_restarts", "Front processes started in place of one that died",
            value=float(self.restarts),
        )  # fmt: skip


def _process_usage(pid: int) -> dict[str, float]:
    """prometheus_client's own process figures (RSS, CPU, ...) of another process, by
    sample name; empty once it is gone."""
    collector = ProcessCollector(pid=lambda: pid, registry=None)
    return {smp.name: smp.value for family in collector.collect() for smp in family.samples}


class Link:
    """The engine's Unix socket and the fronts connected to it."""

    def __init__(self, methods: Methods) -> None:
        self.methods = methods
        self.connections: set[FrontConnection] = set()
        self.metrics = FrontMetrics(self)
        self.health: dict[str, bool] = {}  # what every front serves (engine.serving.health)
        self._expected: dict[int, asyncio.Future[FrontConnection]] = {}
        self.path = ""
        self._server: asyncio.AbstractServer | None = None
        self._waiting: list[Pending] = []
        self._drain_scheduled = False

    def score(
        self, order: frames.Body, deadline: float | None, reply: Callable[[Any], None]
    ) -> None:
        """Take a Score call; every call taken in this event-loop turn, from every front, is
        scored as one micro-batch at its end."""
        plane = self.methods.plane
        try:
            plane.admit(len(self._waiting), deadline)
        except OrderSightError as exc:  # refused by admission: answered at once
            reply(exc)
            return
        self._waiting.append(Pending(order, deadline, plane.clock(), reply=reply))
        if not self._drain_scheduled:
            self._drain_scheduled = True
            asyncio.get_running_loop().call_soon(self._drain)

    def _drain(self) -> None:
        """Score what is waiting now on this loop; while the engine's thread is busy (a
        ScoreBatch), queue it behind that work in the batcher instead, in order."""
        self._drain_scheduled = False
        waiting, self._waiting = self._waiting, []
        plane = self.methods.plane
        step = plane.batcher.max_batch
        for lo in range(0, len(waiting), step):
            batch = waiting[lo : lo + step]
            try:
                if plane.score_now(batch):
                    continue
            except Exception as exc:  # every call of the batch gets the error
                for p in batch:
                    p.settle(exc)
                continue
            for p in batch:
                plane.batcher.enqueue(p)
        for conn in self.connections:  # the answers go now, not one loop turn later
            conn.protocol.flush()

    async def start(self, path: str) -> None:
        self.path = path
        loop = asyncio.get_running_loop()
        self._server = await loop.create_unix_server(self._accept, path)
        os.chmod(path, 0o600)

    def expect(self, pid: int) -> asyncio.Future[FrontConnection]:
        """Done when the front process `pid` says it serves."""
        fut = self._expected[pid] = asyncio.get_running_loop().create_future()
        return fut

    def publish_health(self, status: dict[str, bool]) -> None:
        self.health = status
        for conn in self.connections:
            conn.send_health()

    def ready(self, conn: FrontConnection) -> None:
        fut = self._expected.pop(conn.pid, None)
        if fut is None:
            log.error("a front that was not started (pid %d) connected: closed", conn.pid)
            conn.protocol.close()
        elif not fut.done():
            fut.set_result(conn)

    def _accept(self) -> frames.FrameProtocol:
        conn = FrontConnection(self)
        self.connections.add(conn)
        return conn.protocol

    async def close(self) -> None:
        for conn in list(self.connections):
            conn.protocol.close()
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
        if self.path:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self.path)
