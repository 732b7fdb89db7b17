"""Route calls' texts read by the routing text model together, off the routing thread.

A call's subject and body wait in a list; while the model reads one group (on its own
thread, so neither the event loop nor the routing thread and its store transaction wait for
it), the texts of calls that arrive meanwhile gather and are read as the next group, at most
MAX_ROWS at once. One call alone is read at once (the model's sparse heads); many at once
cost less per case (its dense heads).
"""

from __future__ import annotations

import asyncio
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, NamedTuple

if TYPE_CHECKING:
    from engine.routing.text_model import TextRouter

MAX_ROWS = 64


class TextRead(NamedTuple):
    category: str  # the label, or GENERAL below the model's threshold
    confidence: float
    top: str  # the label, whatever its probability
    priority: str | None  # None: a model without a priority head
    priority_probs: dict[str, float] | None


class TextReader:
    def __init__(self, text: TextRouter) -> None:
        self.text = text
        self._pending: list[tuple[str, str, asyncio.Future[TextRead]]] = []
        self._running = False
        self._pool = ThreadPoolExecutor(1, thread_name_prefix="routing-text")

    async def read(self, subject: str, body: str) -> TextRead:
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[TextRead] = loop.create_future()
        self._pending.append((subject, body, fut))
        if not self._running:
            self._running = True
            loop.create_task(self._drain())
        return await fut

    async def _drain(self) -> None:
        loop = asyncio.get_running_loop()
        try:
            while self._pending:
                group, self._pending = self._pending[:MAX_ROWS], self._pending[MAX_ROWS:]
                columns = [[s for s, _, _ in group], [b for _, b, _ in group]]
                try:
                    reads = await loop.run_in_executor(
                        self._pool, self._read, columns[: len(self.text.text_cols)]
                    )
                except Exception as exc:
                    for _, _, fut in group:
                        if not fut.done():
                            fut.set_exception(exc)
                    continue
                for (_, _, fut), got in zip(group, reads, strict=True):
                    if not fut.done():  # the caller may have gone
                        fut.set_result(got)
        finally:
            self._running = False

    def _read(self, columns: list[list[str]]) -> list[TextRead]:
        got = self.text.route(columns)
        labels = self.text.priority_labels
        out = []
        for i, category in enumerate(got.predicted):
            probs = None
            if got.priority_probs is not None:
                probs = dict(zip(labels, map(float, got.priority_probs[i]), strict=True))
            out.append(TextRead(
                category, float(got.confidence[i]), got.top[i],
                got.priority[i] if got.priority is not None else None, probs,
            ))  # fmt: skip
        return out

    def close(self) -> None:
        self._pool.shutdown(wait=True)
