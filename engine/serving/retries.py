"""Idempotent retries: the decisions of recent Score calls, by order id.

A checkout that times out and retries sends the same order again; scoring it twice would
count it twice in every velocity window. The data plane keeps, for `window_s`, each scored
order's digest (of its request bytes) and its answer: a call whose order id and bytes match
gets the stored answer, not counted again; one whose order id matches with other bytes is
refused with ALREADY_EXISTS (the id names another order). The table is bounded by `max_size`
(the oldest entry goes first) and lives in the data plane, not in the models, so a hot swap
keeps it; a restart starts it empty.
"""

from __future__ import annotations

import collections
import hashlib
import time
from collections.abc import Callable

from prometheus_client import CollectorRegistry, Counter

from engine.errors import Conflict


def digest(payload: bytes | bytearray | memoryview) -> bytes:
    return hashlib.blake2b(payload, digest_size=16).digest()


class RecentDecisions:
    def __init__(
        self,
        window_s: float,
        max_size: int,
        metrics: CollectorRegistry,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.window_s, self.max_size, self.clock = window_s, max_size, clock
        # order id -> (digest, answer, log seq, stored at), oldest first
        self._table: collections.OrderedDict[str, tuple[bytes, bytes, int, float]] = (
            collections.OrderedDict()
        )
        self.outcomes = Counter(
            "ordersight_retries", "Score calls for an order id already scored, by outcome",
            ["outcome"], registry=metrics,
        )  # fmt: skip

    @property
    def enabled(self) -> bool:
        return self.window_s > 0 and self.max_size > 0

    def __len__(self) -> int:
        return len(self._table)

    def lookup(self, order_id: str, key: bytes) -> tuple[bytes, int] | Conflict | None:
        """The stored (answer, log seq) of this order, a Conflict if the id was used for
        another order, or None (not seen within the window)."""
        hit = self._table.get(order_id)
        if hit is None:
            return None
        stored, answer, seq, at = hit
        age = self.clock() - at
        if age > self.window_s:
            del self._table[order_id]
            return None
        if stored != key:
            self.outcomes.labels("conflict").inc()
            return Conflict(
                f"order_id '{order_id}': another order was scored under this id {age:.1f} s "
                "ago; a retry must send the same order", "order_id",
            )  # fmt: skip
        self.outcomes.labels("replayed").inc()
        return answer, seq

    def forget_seq(self, seq: int) -> None:
        """Drop the answers of log entry `seq` (its write failed: they were never given)."""
        for oid in [k for k, v in self._table.items() if v[2] == seq]:
            del self._table[oid]

    def store(self, order_id: str, key: bytes, answer: bytes, seq: int) -> None:
        self._table[order_id] = (key, answer, seq, self.clock())
        self._table.move_to_end(order_id)
        while len(self._table) > self.max_size:
            self._table.popitem(last=False)
