"""Micro-batcher: gathers concurrent calls into one engine call.

A batch is dispatched when it reaches `max_batch`, when `max_wait` has passed since its first
call, or as soon as a yield to the event loop brings no new call: an idle engine serves a
lone request at once, and batches grow only while calls really arrive together (typically
while the previous batch was being scored). The clock is injected (monotonic seconds).
`process` returns the batch's results, or None when it answers the calls itself (the next
batch is then formed at once).
"""

from __future__ import annotations

import asyncio
import inspect
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from engine.errors import Unavailable


@dataclass(slots=True)
class Pending:
    """One call waiting: its answer goes to `future` (`submit`) or to `reply` (`enqueue`)."""

    payload: Any
    deadline: float | None  # monotonic seconds, None = no deadline
    arrival: float
    future: asyncio.Future | None = field(default=None, repr=False)
    reply: Callable[[Any], None] | None = field(default=None, repr=False)

    def settle(self, result: Any) -> None:
        """Answer with `result`, or fail with it when it is an exception."""
        if self.reply is not None:
            self.reply(result)
        elif self.future is not None and not self.future.done():
            if isinstance(result, BaseException):
                self.future.set_exception(result)
            else:
                self.future.set_result(result)


class MicroBatcher:
    def __init__(
        self,
        process: Callable[
            [Sequence[Pending]], Sequence[Any] | None | Awaitable[Sequence[Any] | None]
        ],
        max_batch: int = 256,
        max_wait_s: float = 0.0005,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if max_batch < 1:
            raise ValueError(f"max_batch must be >= 1, is {max_batch}")
        if max_wait_s < 0:
            raise ValueError(f"max_wait must be >= 0, is {max_wait_s}")
        self.process = process
        self.max_batch = max_batch
        self.max_wait_s = max_wait_s
        self.clock = clock
        self._queue: list[Pending] = []
        self._wakeup: asyncio.Event | None = None
        self._task: asyncio.Task | None = None
        self._closing = False
        self.batches = 0
        self.items = 0
        self.in_dispatch = 0  # calls taken into a batch whose `process` has not returned

    def start(self) -> None:
        self._wakeup = asyncio.Event()
        self._task = asyncio.get_running_loop().create_task(self._run(), name="micro-batcher")

    async def stop(self) -> None:
        """Finish every call already accepted, then stop."""
        self._closing = True
        if self._wakeup is not None:
            self._wakeup.set()
        if self._task is not None:
            await self._task

    async def submit(self, payload: Any, deadline: float | None = None) -> Any:
        if self._closing or self._wakeup is None:
            raise Unavailable("the engine is shutting down")
        fut = asyncio.get_running_loop().create_future()
        self._queue.append(Pending(payload, deadline, self.clock(), fut))
        self._wakeup.set()
        return await fut

    @property
    def waiting(self) -> int:
        """Calls accepted and not yet taken into a batch."""
        return len(self._queue)

    def enqueue(self, call: Pending) -> None:
        """Like `submit`, for a call taken elsewhere (its `reply` gets the result or the
        exception); it keeps its arrival time."""
        if self._closing or self._wakeup is None:
            call.settle(Unavailable("the engine is shutting down"))
            return
        self._queue.append(call)
        self._wakeup.set()

    async def _run(self) -> None:
        assert self._wakeup is not None
        while True:
            if not self._queue:
                if self._closing:
                    return
                self._wakeup.clear()
                await self._wakeup.wait()
                continue
            start = self.clock()
            seen = len(self._queue)
            while seen < self.max_batch and self.clock() - start < self.max_wait_s:
                await asyncio.sleep(0)  # let calls that are ready reach the queue
                if len(self._queue) == seen:
                    break
                seen = len(self._queue)
            batch = self._queue[: self.max_batch]
            del self._queue[: self.max_batch]
            await self._dispatch(batch)

    async def _dispatch(self, batch: list[Pending]) -> None:
        live = [p for p in batch if p.future is None or not p.future.cancelled()]
        if not live:
            return
        self.batches += 1
        self.items += len(live)
        self.in_dispatch += len(live)
        try:
            results = self.process(live)
            if inspect.isawaitable(results):  # e.g. scored on the engine's own thread
                results = await results
        except Exception as exc:  # every caller gets the error; the batcher goes on
            for p in live:
                p.settle(exc)
            return
        finally:
            self.in_dispatch -= len(live)
        if results is None:  # `process` answers the calls itself, later
            return
        for p, r in zip(live, results, strict=True):
            p.settle(r)  # an exception: this call alone failed (e.g. a bad order)
