"""Snapshots of the velocity state, so that a restart does not forget every entity.

The engine writes `velocity.snapshot` under `snapshot_dir` every `snapshot_every_s` and at a
graceful stop: the table is copied on the engine's single writer (between micro-batches, so
the copy is one consistent state), written beside the old snapshot on another thread,
flushed to disk and renamed over it, so a crash mid-write leaves the previous snapshot whole.
At start-up a snapshot that exists is loaded instead of `warm_history`; one that does not
match this engine (its table size, its probe, its feature layout) or does not read stops the
start with the reason, never a silent fresh start.

What a snapshot does not hold: the orders scored after it was taken (a kill -9 loses them
until the decision log can replay them) and the anomaly detector's buckets.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import os
import time
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
from prometheus_client import CollectorRegistry, Gauge

from engine.decision.cascade import Engine
from engine.errors import ModelLoadError
from engine.features.matrix import FEATURE_NAMES
from engine.features.velocity import SLOT_WORDS, WINDOWS_S, VelocityState
from engine.serving.data_plane import DataPlane

log = logging.getLogger(__name__)
NAME = "velocity.snapshot"
FORMAT = 1


def layout() -> str:
    """What a table's words mean: the slot width, the windows and the features they feed."""
    text = json.dumps([SLOT_WORDS, WINDOWS_S.tolist(), list(FEATURE_NAMES)])
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def write(path: Path, words: np.ndarray, meta: dict[str, Any]) -> int:
    """Write a snapshot atomically (temporary file, fsync, rename, fsync of the folder);
    returns its size in bytes."""
    tmp = path.with_suffix(".tmp")
    with tmp.open("wb") as f:
        np.savez(f, words=words, meta=np.frombuffer(json.dumps(meta).encode(), np.uint8))
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
    return path.stat().st_size


def read(path: Path, state: VelocityState) -> dict[str, Any]:
    """Load the snapshot at `path` into `state` (a fresh table of the configured size);
    returns its metadata. ModelLoadError names what does not match or does not read."""
    try:
        with np.load(path) as data:
            meta = json.loads(bytes(data["meta"]).decode())
            words = data["words"]
    except (OSError, ValueError, KeyError, zipfile.BadZipFile, json.JSONDecodeError) as exc:
        raise ModelLoadError(
            f"snapshot {path} does not read ({exc}): remove it to start empty"
        ) from exc
    want = {"format": FORMAT, "layout": layout(), "capacity": state.capacity, "probe": state.probe}
    for key, value in want.items():
        if meta.get(key) != value:
            raise ModelLoadError(
                f"snapshot {path}: {key} is {meta.get(key)!r}, this engine's is {value!r} "
                "(remove it, or serve with the settings it was taken with)"
            )
    if words.shape != state.words.shape or words.dtype != state.words.dtype:
        raise ModelLoadError(
            f"snapshot {path}: table of {words.shape}, expected {state.words.shape}"
        )
    state.words[...] = words
    return dict(meta)


def restore(folder: str | Path, engine: Engine) -> float | None:
    """Load the snapshot in `folder` into the engine, if there is one (before it serves);
    returns when it was taken (wall seconds), None when there was none."""
    path = Path(folder) / NAME
    Path(folder).mkdir(parents=True, exist_ok=True)
    if not path.exists():
        return None
    meta = read(path, engine.state)
    engine.latest_order_time = float(meta["latest_order_time"])
    engine.orders_seen = int(meta["orders_seen"])
    taken = float(meta["taken_at"])
    log.info(
        "velocity state restored from %s (taken %s, %d orders seen)",
        path, time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(taken)), engine.orders_seen,
    )  # fmt: skip
    return taken


class Snapshots:
    """Periodic and final snapshots of one engine's velocity state."""

    def __init__(
        self,
        folder: str | Path,
        every_s: float,
        engine: Engine,
        plane: DataPlane,
        metrics: CollectorRegistry,
        taken_at: float = 0.0,
    ) -> None:
        self.folder = Path(folder)
        self.path = self.folder / NAME
        self.every_s = every_s
        self.engine, self.plane = engine, plane
        self.taken_at = taken_at  # wall seconds of the last snapshot written or loaded
        self._task: asyncio.Task[None] | None = None
        age = Gauge(
            "ordersight_snapshot_age_seconds", "Since the last velocity snapshot (NaN: none)",
            registry=metrics,
        )  # fmt: skip
        age.set_function(lambda: time.time() - self.taken_at if self.taken_at else float("nan"))
        self.size = Gauge(
            "ordersight_snapshot_bytes", "Size of the last snapshot", registry=metrics
        )
        self.seconds = Gauge(
            "ordersight_snapshot_write_seconds", "How long the last snapshot took to write",
            registry=metrics,
        )  # fmt: skip

    def start(self) -> None:
        if self.every_s > 0:
            self._task = asyncio.get_running_loop().create_task(self._every(), name="snapshots")

    async def _every(self) -> None:
        while True:
            await asyncio.sleep(self.every_s)
            try:
                await self.take()
            except OSError as exc:  # a full disk must not stop scoring
                log.error("velocity snapshot to %s failed: %s", self.path, exc)

    def _copy(self) -> tuple[np.ndarray, dict[str, Any]]:
        """The table and what goes with it, on the engine's single writer."""
        e = self.engine
        meta = {
            "format": FORMAT, "layout": layout(), "capacity": e.state.capacity,
            "probe": e.state.probe, "latest_order_time": e.latest_order_time,
            "orders_seen": e.orders_seen, "taken_at": time.time(),
            "models": e.models.version,
        }  # fmt: skip
        return e.state.words.copy(), meta

    async def take(self) -> None:
        """A snapshot now, while scoring goes on (the copy waits for the current batch)."""
        words, meta = await self.plane.on_engine(self._copy)
        await asyncio.get_running_loop().run_in_executor(None, self._write, words, meta)

    def _write(self, words: np.ndarray, meta: dict[str, Any]) -> None:
        t0 = time.perf_counter()
        self.size.set(write(self.path, words, meta))
        self.seconds.set(time.perf_counter() - t0)
        self.taken_at = meta["taken_at"]

    async def stop(self) -> None:
        """The final snapshot, once nothing changes the state any more."""
        if self._task is not None:
            self._task.cancel()
        words, meta = self._copy()
        self._write(words, meta)
        log.info("velocity state snapshot written to %s", self.path)
