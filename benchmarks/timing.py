"""Timing helpers shared by the in-process benchmarks."""

from __future__ import annotations

import time
from collections.abc import Callable


def per_call_s(fn: Callable[[], object], min_time_s: float = 0.2, repeats: int = 5) -> float:
    """Median over `repeats` of the mean time of one call, each repeat lasting >= min_time_s."""
    fn()  # warm
    t0 = time.perf_counter()
    fn()
    once = max(time.perf_counter() - t0, 1e-7)
    loops = max(int(min_time_s / once), 1)
    samples = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        for _ in range(loops):
            fn()
        samples.append((time.perf_counter() - t0) / loops)
    samples.sort()
    return samples[len(samples) // 2]
