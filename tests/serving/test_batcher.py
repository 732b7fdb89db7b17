"""Micro-batcher: a lone call never waits; concurrent calls share a batch; limits hold."""

from __future__ import annotations

import asyncio

import pytest

from engine.errors import Unavailable
from engine.serving.batcher import MicroBatcher


class FrozenClock:
    """Time stands still: only the batcher's own logic can end a batch."""

    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def _run(coro):
    return asyncio.run(coro)


def test_lone_request_is_dispatched_without_waiting() -> None:
    async def main():
        # max_wait is an hour and the clock never moves: only "idle" can dispatch.
        b = MicroBatcher(lambda batch: [p.payload * 2 for p in batch], 64, 3600.0, FrozenClock())
        b.start()
        result = await asyncio.wait_for(b.submit(21), timeout=30)
        await b.stop()
        return result, b.batches

    assert _run(main()) == (42, 1)


def test_concurrent_calls_share_batches_within_max_batch() -> None:
    sizes: list[int] = []

    def process(batch):
        sizes.append(len(batch))
        return [p.payload for p in batch]

    async def main():
        b = MicroBatcher(process, 4, 3600.0, FrozenClock())
        b.start()
        results = await asyncio.gather(*(b.submit(i) for i in range(10)))
        await b.stop()
        return results

    assert _run(main()) == list(range(10))
    assert sizes == [4, 4, 2]


class TickingClock:
    """Every reading is one millisecond after the previous one."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        self.now += 0.001
        return self.now


def _trickle(clock) -> list[int]:
    """20 calls arriving one per event-loop turn; returns the batch sizes."""
    sizes: list[int] = []

    def process(batch):
        sizes.append(len(batch))
        return [None] * len(batch)

    async def main():
        b = MicroBatcher(process, 100, 0.0025, clock)
        b.start()
        calls = []
        for i in range(20):
            calls.append(asyncio.ensure_future(b.submit(i)))
            await asyncio.sleep(0)
        await asyncio.gather(*calls)
        await b.stop()

    _run(main())
    assert sum(sizes) == 20
    return sizes


def test_batch_gathers_while_calls_keep_arriving() -> None:
    assert max(_trickle(FrozenClock())) > 3


def test_max_wait_ends_a_batch() -> None:
    assert max(_trickle(TickingClock())) <= 3


def test_errors_reach_every_caller_and_the_batcher_goes_on() -> None:
    def process(batch):
        if any(p.payload == "bad" for p in batch):
            raise RuntimeError("boom")
        return [p.payload for p in batch]

    async def main():
        b = MicroBatcher(process, 8, 0.0, FrozenClock())
        b.start()
        with pytest.raises(RuntimeError, match="boom"):
            await b.submit("bad")
        ok = await b.submit("good")
        await b.stop()
        with pytest.raises(Unavailable):
            await b.submit("late")
        return ok

    assert _run(main()) == "good"


def test_settings_are_checked() -> None:
    with pytest.raises(ValueError, match="max_batch"):
        MicroBatcher(lambda b: b, 0)


def test_an_exception_returned_for_one_call_fails_that_call_alone() -> None:
    def process(batch):
        return [ValueError(f"bad {p.payload}") if p.payload % 2 else p.payload for p in batch]

    async def main():
        b = MicroBatcher(process, 8, 3600.0, FrozenClock())
        b.start()
        results = await asyncio.gather(*(b.submit(i) for i in range(4)), return_exceptions=True)
        await b.stop()
        return results

    results = _run(main())
    assert results[0] == 0 and results[2] == 2
    assert [str(r) for r in results[1::2]] == ["bad 1", "bad 3"]
    assert all(isinstance(r, ValueError) for r in results[1::2])
