"""Snapshots of the state, so that a restart forgets neither entities nor open alerts.

The engine writes `state.snapshot` under `snapshot_dir` every `snapshot_every_s` and at a
graceful stop. It holds the velocity table, copied on the engine's single writer (between
micro-batches, so the copy is one consistent state) with the decision log's last sequence
number at that moment, and the anomaly detector's state, copied on the event loop that
feeds it, with the set of log entries it has counted. It is written beside the old snapshot
on another thread, flushed and renamed over it, so a crash mid-write leaves the previous
snapshot whole. At start-up a snapshot that exists is loaded instead of `warm_history`, and
the log's entries after it are replayed (`engine.decision_log.replay`); one that does not
match this engine (its table size, its probe, its feature layout, the detector's settings,
the entity key it was hashed under) or does not read stops the start with the reason, never
a silent fresh start. The velocity table holds entity keys only (keyed hashes,
`engine.orders.hashing`); `key_id` names the key, never gives it.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import logging
import os
import time
import zipfile
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
from prometheus_client import CollectorRegistry, Gauge

from engine.decision.cascade import Engine
from engine.decision_log.replay import Applied
from engine.errors import InvalidInput, ModelLoadError
from engine.features.matrix import FEATURE_NAMES
from engine.features.velocity import SLOT_WORDS, WINDOWS_S, VelocityState
from engine.monitoring.alert_hub import AlertHub
from engine.orders import hashing
from engine.serving.data_plane import DataPlane

log = logging.getLogger(__name__)
NAME = "state.snapshot"
FORMAT = 3  # 3: entity keys are keyed SipHash with the key's id in "key_id" (2: FNV)


def layout() -> str:
    """What a table's words mean: the slot width, the windows and the features they feed."""
    text = json.dumps([SLOT_WORDS, WINDOWS_S.tolist(), list(FEATURE_NAMES)])
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def _text(value: str) -> np.ndarray:
    return np.frombuffer(value.encode(), np.uint8)


def write(path: Path, words: np.ndarray, meta: dict[str, Any], hub: Any = None) -> int:
    """Write a snapshot atomically (temporary file, fsync, rename, fsync of the folder);
    `hub`: the detector's (arrays, JSON text), if any. Returns the size in bytes."""
    tmp = path.with_suffix(".tmp")
    extra = {}
    if hub is not None:
        extra = {f"hub.{k}": v for k, v in hub[0].items()}
        extra["hub.meta"] = _text(hub[1])
    try:
        with tmp.open("wb") as f:
            np.savez(f, words=words, meta=_text(json.dumps(meta)), **extra)
            f.flush()
            os.fsync(f.fileno())
    except BaseException:  # a full disk: the last whole snapshot stays, the part goes
        tmp.unlink(missing_ok=True)
        raise
    os.replace(tmp, path)
    fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
    return path.stat().st_size


def read(path: Path, state: VelocityState) -> tuple[dict[str, Any], Any]:
    """Load the snapshot at `path` into `state` (a fresh table of the configured size);
    returns its metadata and the detector's (arrays, metadata) or None. ModelLoadError names
    what does not match or does not read."""
    try:
        with np.load(path) as data:
            meta = json.loads(bytes(data["meta"]).decode())
            words = data["words"]
            hub = None
            if "hub.meta" in data.files:
                arrays = {k[4:]: data[k] for k in data.files if k.startswith("hub.")}
                hub = (arrays, json.loads(bytes(arrays.pop("meta")).decode()))
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
    if meta.get("key_id") != hashing.key_id():
        raise ModelLoadError(
            f"snapshot {path} was taken under another hash secret (key id {meta.get('key_id')}, "
            f"this engine's {hashing.key_id()}): its entity keys would match none of this "
            "engine's. Serve with the secret it was taken with (setting hash_secret_file or "
            "hash_secret), or, to rotate the secret, start with an empty snapshot_dir and a new "
            "log_dir, warmed from the order history (docs/SECURITY.md)"
        )
    if words.shape != state.words.shape or words.dtype != state.words.dtype:
        raise ModelLoadError(
            f"snapshot {path}: table of {words.shape}, expected {state.words.shape}"
        )
    state.words[...] = words
    return dict(meta), hub


class Restored(NamedTuple):
    taken_at: float  # wall seconds
    log_seq: int  # the velocity table holds every log entry up to this one
    hub_applied: Applied  # the log entries the detector had counted
    logged: bool  # taken while a decision log was written


def restore(folder: str | Path, engine: Engine, hub: AlertHub) -> Restored | None:
    """Load the snapshot in `folder` into the engine and the detector, if there is one
    (before serving); None when there is none."""
    path = Path(folder) / NAME
    Path(folder).mkdir(parents=True, exist_ok=True)
    if not path.exists():
        return None
    meta, detector = read(path, engine.state)
    engine.latest_order_time = float(meta["latest_order_time"])
    engine.orders_seen = int(meta["orders_seen"])
    taken = float(meta["taken_at"])
    applied = Applied.from_json(meta["hub_applied"])
    if detector is not None:
        try:
            hub.restore(*detector)
        except InvalidInput as exc:
            raise ModelLoadError(
                f"snapshot {path}: {exc} (remove it, or serve with the settings it was taken with)"
            ) from exc
    log.info(
        "state restored from %s (taken %s, %d orders seen, log seq %d)",
        path, time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(taken)), engine.orders_seen,
        meta["log_seq"],
    )  # fmt: skip
    return Restored(taken, int(meta["log_seq"]), applied, bool(meta.get("logged", True)))


class Snapshots:
    """Periodic and final snapshots of one engine's velocity state."""

    def __init__(
        self,
        folder: str | Path,
        every_s: float,
        engine: Engine,
        plane: DataPlane,
        metrics: CollectorRegistry,
        restored: Restored | None = None,
    ) -> None:
        self.folder = Path(folder)
        self.path = self.folder / NAME
        self.every_s = every_s
        self.engine, self.plane = engine, plane
        # wall seconds and log seq of the last snapshot written or loaded
        self.taken_at = restored.taken_at if restored else 0.0
        self.log_seq: int | None = restored.log_seq if restored else None
        self._task: asyncio.Task[None] | None = None
        self._taking: asyncio.Future[None] | None = None  # the periodic snapshot under way
        # The copy goes into one buffer kept for the server's life and touched now: a fresh
        # one would take a page fault per 4 KiB while the engine's thread copies, which
        # stalls scoring for as long as that takes. One snapshot at a time uses it.
        self._buffer = np.empty_like(engine.state.words)
        np.copyto(self._buffer, engine.state.words)
        self.error = ""  # why the last snapshot failed ("" when it was written)
        age = Gauge(
            "ordersight_snapshot_age_seconds", "Since the last state snapshot (NaN: none)",
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
            self._taking = asyncio.ensure_future(self.take())
            try:  # shielded: a stop waits for it instead of leaving a write half done
                await asyncio.shield(self._taking)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # a full disk, or a bug, stops neither scoring nor this
                self._failed(exc)

    def _copy(self) -> tuple[np.ndarray, dict[str, Any]]:
        """The table and what goes with it, on the engine's single writer."""
        e = self.engine
        log_ = self.plane.log
        meta = {
            "format": FORMAT, "layout": layout(), "capacity": e.state.capacity,
            "probe": e.state.probe, "key_id": hashing.key_id(),
            "latest_order_time": e.latest_order_time,
            "orders_seen": e.orders_seen, "taken_at": time.time(),
            "models": e.models.version,
            "log_seq": 0 if log_ is None else log_.last_reserved,
            "logged": log_ is not None,  # without a log, there is nothing after it to replay
        }  # fmt: skip
        np.copyto(self._buffer, e.state.words)
        return self._buffer, meta

    def _copy_hub(self, meta: dict[str, Any]) -> tuple[dict[str, np.ndarray], str]:
        """The detector's state, on the event loop that feeds it (copied: it goes on)."""
        arrays, hub_meta = self.plane.hub.state()
        meta["hub_applied"] = self.plane.hub_applied.to_json()
        return {k: v.copy() for k, v in arrays.items()}, json.dumps(hub_meta)

    async def take(self) -> None:
        """A snapshot now, while scoring goes on (the copy waits for the current batch)."""
        words, meta = await self.plane.on_engine(self._copy)
        hub = self._copy_hub(meta)
        await asyncio.get_running_loop().run_in_executor(None, self._write, words, meta, hub)

    def _write(self, words: np.ndarray, meta: dict[str, Any], hub: Any) -> None:
        t0 = time.perf_counter()
        self.size.set(write(self.path, words, meta, hub))
        self.seconds.set(time.perf_counter() - t0)
        self.taken_at = meta["taken_at"]
        self.log_seq = meta["log_seq"]
        self.error = ""

    def _failed(self, exc: BaseException) -> None:
        self.error = f"writing {self.path} failed: {exc}"
        log.error("state snapshot: %s", self.error, exc_info=not isinstance(exc, OSError))

    async def stop(self) -> None:
        """The final snapshot, once nothing changes the state any more."""
        if self._taking is not None and not self._taking.done():
            with contextlib.suppress(Exception):  # it has reported its own failure
                await self._taking
        if self._task is not None:
            self._task.cancel()
        words, meta = self._copy()
        try:
            self._write(words, meta, self._copy_hub(meta))
        except Exception as exc:  # the stop goes on; a restart replays the log instead
            self._failed(exc)
            return
        log.info("state snapshot written to %s", self.path)
