"""The log's files: Arrow IPC stream segments under one folder, read and repaired.

A segment is `decisions-<first seq, 20 digits>.arrows`, an Arrow IPC stream (schema, then
record batches) that any Arrow reader opens. Only the newest segment is ever written. A
crash can leave its last message torn (a prefix of it, or zeros where the file system had
allocated blocks): `scan` reads message by message, checks every batch
(`RecordBatch.validate(full=True)`, so a corrupt buffer never reaches a compute kernel),
and reports the byte offset after the last whole one; `repair` truncates the file there.
Older segments are closed and whole; a torn one among them is reported, never "fixed".
"""

from __future__ import annotations

import logging
import os
import re
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc

from engine.decision_log.records import SCHEMA
from engine.errors import ModelLoadError

log = logging.getLogger(__name__)
_EOS = b"\xff\xff\xff\xff\x00\x00\x00\x00"  # Arrow IPC's end-of-stream marker
_NAME = re.compile(r"^decisions-(\d{20})\.arrows$")


KEY_FILE = "key.id"
"""Beside the segments: the id of the entity key their rows' keys are hashed under
(`engine.orders.hashing.key_id`). One folder holds one key's rows."""


def claim_key(folder: Path, key_id: str) -> None:
    """Record the folder's entity key id when it has none yet (a new log); a folder whose
    rows were hashed under another key, or before keys were keyed, stops the start: its
    replay records would never match this engine's keys."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / KEY_FILE
    remedy = (
        "serve with the hash secret it was written with (hash_secret_file / hash_secret), "
        "or give this engine another log_dir and keep this one for audit (docs/SECURITY.md)"
    )
    try:
        held = path.read_text().strip()
    except FileNotFoundError:
        if segments(folder):
            raise ModelLoadError(
                f"decision log {folder} was written before entity keys were keyed (it has no "
                f"{KEY_FILE}): {remedy}"
            ) from None
        tmp = path.with_suffix(".tmp")
        with tmp.open("w") as f:
            f.write(key_id + "\n")
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
        fd = os.open(folder, os.O_RDONLY)  # the rename itself survives a power loss
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
        return
    if held != key_id:
        raise ModelLoadError(
            f"decision log {folder} was written under another hash secret (key id {held}, "
            f"this engine's {key_id}): {remedy}"
        )


def segment_name(first_seq: int) -> str:
    return f"decisions-{first_seq:020d}.arrows"


def segments(folder: Path) -> list[Path]:
    """The folder's segments, oldest first."""
    if not folder.is_dir():
        return []
    found = [p for p in folder.iterdir() if _NAME.match(p.name) and p.is_file()]
    return sorted(found, key=lambda p: p.name)


def first_seq(path: Path) -> int:
    m = _NAME.match(path.name)
    assert m is not None, path
    return int(m.group(1))


@dataclass
class Scan:
    """What one segment holds up to its last whole batch."""

    path: Path
    good_bytes: int  # offset after the last whole message
    size: int  # the file's size
    rows: int
    batches: int
    last_seq: int  # highest seq of a state-changing row (0: none)
    error: str  # why reading stopped before the end ("" when it did not)

    @property
    def torn(self) -> bool:
        return bool(self.error)


def _batches(path: Path) -> Iterator[tuple[pa.RecordBatch | None, int, str]]:
    """(batch, offset after it, "") for each whole batch; then (None, offset, why) when
    reading stops before the end of the file; the schema message counts as a batch None."""
    size = path.stat().st_size
    with pa.OSFile(str(path), "rb") as f:
        reader = pa.ipc.MessageReader.open_stream(f)
        good = 0
        schema = None
        while True:
            try:
                msg = reader.read_next_message()
            except StopIteration:  # the end of the file, or an end-of-stream marker
                break
            except (pa.ArrowInvalid, OSError) as exc:
                yield None, good, f"unreadable message at byte {good}: {exc}"
                return
            try:
                if schema is None:
                    schema = pa.ipc.read_schema(msg)
                    if not schema.equals(SCHEMA, check_metadata=False):
                        yield None, good, "the segment's schema is not this engine's"
                        return
                    good = f.tell()
                    continue
                batch = pa.ipc.read_record_batch(msg, schema)
                batch.validate(full=True)
            except (pa.ArrowInvalid, pa.ArrowTypeError, OSError) as exc:
                yield None, good, f"corrupt batch at byte {good}: {exc}"
                return
            good = f.tell()
            yield batch, good, ""
        if good < size:
            f.seek(good)
            rest = f.read(min(size - good, len(_EOS) + 1))
            if rest in (_EOS, _EOS[4:]):  # a segment closed cleanly
                return
            yield None, good, f"{size - good} bytes after the last whole batch"


def scan(path: Path) -> Scan:
    rows = batches = last_seq = 0
    good, error = 0, ""
    for batch, offset, why in _batches(path):
        good = offset
        if batch is None:
            error = why
            break
        rows += batch.num_rows
        batches += 1
        if batch.num_rows:
            last_seq = max(last_seq, int(pc.max(batch.column("seq")).as_py()))
    return Scan(path, good, path.stat().st_size, rows, batches, last_seq, error)


def read(path: Path) -> Iterator[pa.RecordBatch]:
    """The whole batches of one segment, in order (a torn tail ends the iteration)."""
    for batch, _, _ in _batches(path):
        if batch is None:
            return
        yield batch


def repair(s: Scan) -> None:
    """Truncate a torn newest segment after its last whole batch (a segment torn before its
    schema is removed: it holds nothing)."""
    if not s.torn:
        return
    log.warning(
        "decision log %s: %s; truncated from %d to %d bytes", s.path, s.error, s.size, s.good_bytes
    )
    if s.good_bytes == 0:
        s.path.unlink()
        return
    with s.path.open("r+b") as f:
        f.truncate(s.good_bytes)
        f.flush()
        os.fsync(f.fileno())


def open_folder(folder: Path) -> list[Scan]:
    """Scan every segment of the log folder, repair a torn newest one, and return the scans
    (oldest first). A torn segment that is not the newest stops the start: rows after it
    exist, so truncating it would lose them silently."""
    folder.mkdir(parents=True, exist_ok=True)
    paths = segments(folder)
    scans = [scan(p) for p in paths]
    for s in scans[:-1]:
        if s.torn:
            raise ModelLoadError(
                f"decision log segment {s.path} is damaged ({s.error}) and newer segments "
                "follow it: move it aside to start"
            )
    if scans and scans[-1].torn:
        repair(scans[-1])
        if scans[-1].good_bytes == 0:
            scans.pop()
        else:
            s = scans[-1]
            s.size = s.good_bytes
            s.error = ""
    if scans and scans[-1].rows == 0:  # a schema alone: nothing to keep, its name is reused
        scans.pop().path.unlink()
    return scans


def retain(folder: Path, max_age_s: float, max_bytes: int, keep_after: int | None) -> None:
    """Remove the oldest closed segments past `max_age_s` or while the folder holds more
    than `max_bytes` (0: no such limit), but none whose state rows come after `keep_after`
    (a restart replays them; None: no snapshot to keep them for). The newest segment is
    being written and is never removed."""
    all_paths = segments(folder)
    now = time.time()
    sizes = [p.stat().st_size for p in all_paths]
    total = sum(sizes)
    for i, (p, size) in enumerate(zip(all_paths[:-1], sizes, strict=False)):
        too_old = max_age_s > 0 and now - p.stat().st_mtime > max_age_s
        too_big = max_bytes > 0 and total > max_bytes
        if not (too_old or too_big):
            break
        if keep_after is not None and first_seq(all_paths[i + 1]) > keep_after + 1:
            break  # its rows are still needed after the last snapshot
        p.unlink()
        total -= size
        log.info("decision log: removed %s (retention)", p.name)


def read_folder(folder: Path, after_seq: int = 0) -> Iterator[pa.RecordBatch]:
    """Every whole batch of the folder's segments, oldest first, skipping segments whose
    state rows all come at or before `after_seq` (they come before the next segment's
    first seq)."""
    paths = segments(folder)
    for i, path in enumerate(paths):
        if i + 1 < len(paths) and first_seq(paths[i + 1]) <= after_seq + 1:
            continue
        yield from read(path)
