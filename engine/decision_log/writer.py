"""The decision log's writer: entries in, Arrow IPC segments out, on a thread of its own.

The engine reserves a sequence number for every change of state (`reserve`, on its single
writer, in the order the changes are applied) and appends the entry (`append`), possibly
later and from another thread (a ScoreBatch chunk is logged once it is decided). The writer
thread puts state entries back in sequence order, so a segment's state rows are in the
order they were applied, and writes whatever has gathered as one record batch: one group
commit for every micro-batch (and call) that arrived while the last one was written.

Durability (`durability`):
- `fsync`: a group is written, then fsync'ed, and only then do the calls whose entries it
  holds get their answers (`durable(seq)`). What was acknowledged is on disk.
- `batched`: calls are answered at once; what gathers over `GATHER_S` is written as one
  group, and the log is fsync'ed every `flush_ms`. A kill -9 loses at most the last
  `GATHER_S` (entries not yet written), a power loss the last `flush_ms`.
- `off`: like batched, never fsync'ed (the OS writes back when it likes): a kill -9 loses at
  most the last `GATHER_S`, a power loss what the OS had not written. For benchmarks.

A write that fails (a full or unwritable disk) is counted and marks the log down (`error`)
until a probe writes and syncs `PROBE_BYTES` again; while it is down the writer probes every
`PROBE_S`. What happens to the calls is `on_failure`:
- `fail_closed`: the fsync-mode calls of the failed group get UNAVAILABLE, and while the log
  is down the engine refuses every call that would change state (`refusing`) with
  UNAVAILABLE: nothing is decided that is not logged.
- `fail_open`: calls are answered as if the group had been written, and its rows are
  counted as lost (`ordersight_log_lost_rows`): decisions go on without their record.
In the batched and off modes a failed group's calls were answered already: its rows are
counted as lost in either case.

Segments rotate past `segment_bytes` or `segment_s`; retention (`segments.retain`, at each
rotation) removes the oldest closed segments past `retention_s` or `retention_bytes`, but
never one whose rows a restart would still replay (after the last snapshot, `keep_after()`).
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import os
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pyarrow as pa
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from engine.decision_log import segments
from engine.decision_log.records import CHALLENGER, KINDS, SCHEMA, Entry, to_batch
from engine.errors import Unavailable

log = logging.getLogger(__name__)
DURABILITY = ("fsync", "batched", "off")
ON_FAILURE = ("fail_closed", "fail_open")
PROBE_S = 1.0
"""While the log is down, how often the writer tries the disk again."""
PROBE_BYTES = 1 << 20
"""What a probe writes and syncs (then removes): the log is up again only when this much
can reach the disk, not merely when a file can be created."""
GATHER_S = 0.01
"""Without fsync, the writer gathers entries this long (at most) into one group: a group
shares the cost of building and writing a batch, and a smaller one holds the interpreter
for less time at once (a long hold shows in the calls' tail latency)."""
_FAILURES_KEPT = 64


class DecisionLog:
    def __init__(
        self,
        folder: str | Path,
        durability: str = "fsync",
        *,
        flush_ms: float = 100.0,
        segment_bytes: int = 64 << 20,
        segment_s: float = 3600.0,
        retention_s: float = 7 * 86400.0,
        retention_bytes: int = 0,
        queue_max: int = 4096,
        on_failure: str = "fail_closed",
        keep_after: Callable[[], int | None] = lambda: None,
        metrics: CollectorRegistry | None = None,
    ) -> None:
        if durability not in DURABILITY:
            raise ValueError(
                f"durability must be one of {', '.join(DURABILITY)}, is {durability!r}"
            )
        if on_failure not in ON_FAILURE:
            raise ValueError(
                f"log_on_failure must be one of {', '.join(ON_FAILURE)}, is {on_failure!r}"
            )
        self.folder = Path(folder)
        self.durability = durability
        self.on_failure = on_failure
        self.flush_s = flush_ms / 1e3
        self.segment_bytes, self.segment_s = segment_bytes, segment_s
        self.retention_s, self.retention_bytes = retention_s, retention_bytes
        self.queue_max = queue_max
        self.keep_after = keep_after
        self.scans = segments.open_folder(self.folder)  # repairs a torn tail
        last = max((s.last_seq for s in self.scans), default=0)
        newest = segments.first_seq(self.scans[-1].path) if self.scans else 1
        self._next = max(last + 1, newest)  # the next seq to reserve
        self.first_new_seq = self._next  # entries from here on are this run's
        self._reserve = threading.Lock()
        self._cond = threading.Condition()
        self._inbox: collections.deque[Entry] = collections.deque()
        self._held: dict[int, Entry] = {}  # state entries waiting for an earlier seq
        self._write_next = self._next  # the next state seq to write
        self.durable_seq = self._next - 1  # highest seq written (and fsync'ed, if so)
        self._pending_durable = self.durable_seq  # written, not yet fsync'ed
        self._sink: pa.BufferedOutputStream | None = None
        self._fd = -1  # the open segment, for fsync
        self._path: Path | None = None
        self._good = 0  # bytes of the open segment known whole
        self._writer: pa.ipc.RecordBatchStreamWriter | None = None
        self._opened_at = 0.0
        self._unsynced = False
        self._unsynced_rows = 0  # rows written since the last fsync
        self._last_sync = time.monotonic()
        self._closing = False
        self._loop: asyncio.AbstractEventLoop | None = None
        self._waiters: list[tuple[int, asyncio.Future[None]]] = []  # on the loop only
        self._failed: collections.deque[tuple[int, int, str]] = collections.deque(
            maxlen=_FAILURES_KEPT
        )
        self.error = ""  # why the log is down ("" while the last write succeeded)
        self._define_metrics(metrics or CollectorRegistry())
        self._thread = threading.Thread(target=self._run, name="decision-log", daemon=True)

    def _define_metrics(self, r: CollectorRegistry) -> None:
        self.m_rows = Counter("ordersight_log_rows", "Rows written to the decision log", ["kind"],
                              registry=r)  # fmt: skip
        self.m_bytes = Counter("ordersight_log_bytes", "Bytes written to the decision log",
                               registry=r)  # fmt: skip
        self.m_errors = Counter("ordersight_log_errors", "Decision log writes that failed",
                                registry=r)  # fmt: skip
        self.m_lost = Counter(
            "ordersight_log_lost_rows", "Rows not logged because their write failed (fail_open)",
            registry=r,
        )  # fmt: skip
        self.m_fsync = Histogram(
            "ordersight_log_fsync_seconds", "fsync of one decision log group", registry=r,
            buckets=(0.0001, 0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.5),
        )  # fmt: skip
        self.m_group = Histogram(
            "ordersight_log_group_rows", "Rows per decision log group commit", registry=r,
            buckets=(1, 4, 16, 64, 256, 1024, 8192, 65536),
        )  # fmt: skip
        q = Gauge("ordersight_log_queue", "Entries waiting for the decision log writer",
                  registry=r)  # fmt: skip
        q.set_function(lambda: len(self._inbox) + len(self._held))
        seg = Gauge("ordersight_log_segments", "Decision log segments on disk", registry=r)
        seg.set_function(lambda: len(segments.segments(self.folder)))

    # --- the engine's side ------------------------------------------------------------------

    def continue_after(self, seq: int) -> None:
        """Number new entries after `seq` (a snapshot's), even if the log holds less; before
        `start`."""
        if seq >= self._next:
            self._next = self._write_next = self.first_new_seq = seq + 1
            self.durable_seq = self._pending_durable = seq

    def start(self, loop: asyncio.AbstractEventLoop | None = None) -> None:
        self._loop = loop
        self._thread.start()

    def reserve(self) -> int:
        """The next sequence number, for a change of state being applied now."""
        with self._reserve:
            seq = self._next
            self._next += 1
            return seq

    @property
    def refusing(self) -> bool:
        """True while the log is down and `fail_closed`: calls that change state are refused."""
        return bool(self.error) and self.on_failure == "fail_closed"

    def check_writable(self) -> None:
        """Raise UNAVAILABLE while the log refuses calls (see `refusing`)."""
        if self.refusing:
            raise Unavailable(f"decision log down, calls refused (fail_closed): {self.error}")

    @property
    def last_reserved(self) -> int:
        return self._next - 1

    def append_next(self, entry: Entry) -> int:
        """Give a state entry the next seq and queue it (built first, so nothing can fail
        between the two); returns the seq."""
        with self._reserve:
            entry.seq = self._next
            self._next += 1
        self.append(entry)
        return entry.seq

    def append(self, entry: Entry) -> None:
        """Queue an entry (a state entry must carry a reserved seq, and every reserved seq
        must be appended, or later entries wait for it). Blocks while `queue_max` entries
        wait: the engine slows to the disk's pace rather than holding unbounded memory."""
        with self._cond:
            while len(self._inbox) >= self.queue_max and not self._closing:
                self._cond.wait(0.1)
            self._inbox.append(entry)
            self._cond.notify_all()

    def durable(self, seq: int) -> asyncio.Future[None] | None:
        """On the event loop: None when the entry `seq` is as durable as the mode promises
        (always, but in fsync mode), else a future that completes when it is (or fails with
        UNAVAILABLE when its write failed)."""
        if self.durability != "fsync":
            return None
        durable = self.durable_seq  # read first: a failure is recorded before it moves
        failed = self._failure(seq)
        loop = asyncio.get_running_loop()
        if failed is None and seq <= durable:
            return None
        fut = loop.create_future()
        if failed is not None:
            fut.set_exception(Unavailable(f"decision log: {failed}"))
        else:
            self._waiters.append((seq, fut))
        return fut

    def _failure(self, seq: int) -> str | None:
        for lo, hi, why in tuple(self._failed):  # the writer thread appends to it
            if lo <= seq <= hi:
                return why
        return None

    def _settle(self, upto: int) -> None:
        """On the loop: complete the waiters whose entries are now durable (or failed)."""
        keep = []
        for seq, fut in self._waiters:
            if fut.done():
                continue
            failed = self._failure(seq)
            if failed is not None:
                fut.set_exception(Unavailable(f"decision log: {failed}"))
            elif seq <= upto:
                fut.set_result(None)
            else:
                keep.append((seq, fut))
        self._waiters = keep

    def close(self) -> None:
        """Write and sync everything queued, close the segment, stop the thread."""
        with self._cond:
            self._closing = True
            self._cond.notify_all()
        if self._thread.is_alive():
            self._thread.join()

    # --- the writer thread ------------------------------------------------------------------

    def _take(self) -> list[Entry]:
        """Wait for entries and return those that can be written now: state entries in seq
        order, challenger entries as they come. In fsync mode whatever arrived while the last
        group was written; otherwise what gathers over `GATHER_S` (or half the queue)."""
        with self._cond:
            while not self._inbox and not self._closing:
                if self.error:  # wake to try the disk again
                    if not self._cond.wait(PROBE_S):
                        return []
                elif self._unsynced and self.durability == "batched":  # wake for the fsync
                    left = self._last_sync + self.flush_s - time.monotonic()
                    if left <= 0:
                        return []
                    self._cond.wait(left)
                else:
                    self._cond.wait()
            if self.durability != "fsync":
                until = time.monotonic() + min(self.flush_s, GATHER_S)
                while (
                    not self._closing
                    and len(self._inbox) < self.queue_max // 2
                    and (left := until - time.monotonic()) > 0
                ):
                    self._cond.wait(left)
            got = list(self._inbox)
            self._inbox.clear()
            self._cond.notify_all()
        ready = []
        for e in got:
            if e.kind == CHALLENGER:
                ready.append(e)
            else:
                self._held[e.seq] = e
        while self._write_next in self._held:
            ready.append(self._held.pop(self._write_next))
            self._write_next += 1
        return ready

    def _run(self) -> None:
        while True:
            entries = self._take()
            if entries:
                self._commit(entries)
            elif self.error and not self._closing:
                self._probe()
            due = self.durability == "batched" and (
                time.monotonic() - self._last_sync >= self.flush_s
            )
            if self._unsynced and (self.durability == "fsync" or due or self._closing):
                self._sync()
                self._last_sync = time.monotonic()
            if self._closing and not self._inbox:
                if self._held:
                    log.error("decision log: %d entries never got their turn", len(self._held))
                self._close_segment()
                return

    def _commit(self, entries: list[Entry]) -> None:
        state = [e.seq for e in entries if e.kind != CHALLENGER]
        lo, hi = (min(state), max(state)) if state else (0, -1)
        try:
            batch = to_batch(entries)
            self._rotate(lo if state else self._write_next)
            assert self._writer is not None and self._sink is not None
            before = self._sink.tell()
            self._writer.write_batch(batch)
            self._sink.flush()  # one write(2) for the group
            self.m_bytes.inc(self._sink.tell() - before)
            self._unsynced = True
            self._unsynced_rows += sum(e.n for e in entries)
        except Exception as exc:  # a full disk, or a bug: the thread goes on, the calls fail
            self._failed_write(lo, hi, exc, sum(e.n for e in entries))
            return
        for e in entries:
            self.m_rows.labels(KINDS[e.kind]).inc(e.n)
        self.m_group.observe(batch.num_rows)
        self.error = ""
        self._good = self._sink.tell()
        if state and self.durability == "fsync":
            self._pending_durable = max(self._pending_durable, hi)
        elif state:
            self.durable_seq = max(self.durable_seq, hi)

    def _probe(self) -> None:
        """While down: write and sync PROBE_BYTES to a scratch file; the log is up again
        when that succeeds (the next group opens a new segment)."""
        path = self.folder / ".probe"
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            try:
                block = bytes(1 << 16)
                for _ in range(PROBE_BYTES // len(block)):
                    os.write(fd, block)
                os.fdatasync(fd)
            finally:
                os.close(fd)
        except OSError as exc:
            self.error = f"write to {self.folder} failed: {exc}"
            return
        finally:
            with contextlib.suppress(OSError):
                path.unlink()
        log.warning("decision log: %s is writable again", self.folder)
        self.error = ""

    def _sync(self) -> None:
        if self._sink is None:
            return
        t0 = time.perf_counter()
        try:
            os.fdatasync(self._fd)  # the data and the size: all a reader needs
        except OSError as exc:
            self._failed_write(
                self.durable_seq + 1, self._pending_durable, exc, self._unsynced_rows
            )
            return
        self.m_fsync.observe(time.perf_counter() - t0)
        self._unsynced = False
        self._unsynced_rows = 0
        upto = self._pending_durable
        if upto > self.durable_seq:
            self.durable_seq = upto
            if self._loop is not None and not self._loop.is_closed():
                self._loop.call_soon_threadsafe(self._settle, upto)

    def _failed_write(self, lo: int, hi: int, exc: BaseException, rows: int) -> None:
        self.error = f"write to {self.folder} failed: {exc}"
        log.error("decision log: %s (seq %d..%d)", self.error, lo, hi)
        self.m_errors.inc()
        if self.on_failure == "fail_open" or self.durability != "fsync":
            self.m_lost.inc(rows)  # answered (or to be) without their record
        if hi >= lo:
            if self.on_failure == "fail_closed":
                self._failed.append((lo, hi, self.error))
            self.durable_seq = max(self.durable_seq, hi)  # not durable, but no longer awaited
            if self._loop is not None and not self._loop.is_closed():
                self._loop.call_soon_threadsafe(self._settle, hi)
        self._close_segment(broken=True)

    def _rotate(self, first_seq: int) -> None:
        """Open a new segment when there is none, or the current one is full or old."""
        if self._writer is not None and self._sink is not None:
            full = self._sink.tell() >= self.segment_bytes
            old = time.monotonic() - self._opened_at >= self.segment_s
            if not (full or old):
                return
            self._close_segment()
        # A name already taken (by the segment of a failed write) is bumped: a segment's
        # name may exceed its first seq, never precede it, which is all readers assume.
        path = self.folder / segments.segment_name(self._next_free(first_seq))
        self._good = 0  # nothing of the new segment is whole until its schema is written
        self._path = path
        self._sink = pa.BufferedOutputStream(pa.OSFile(str(path), "wb"), 1 << 20)
        self._fd = os.open(path, os.O_RDONLY)  # fsync flushes the file, whatever the fd
        self._writer = None
        self._writer = pa.ipc.new_stream(self._sink, SCHEMA)
        self._sink.flush()
        self._good = self._sink.tell()
        self._opened_at = time.monotonic()
        segments.retain(self.folder, self.retention_s, self.retention_bytes, self.keep_after())

    def _next_free(self, seq: int) -> int:
        while (self.folder / segments.segment_name(seq)).exists():
            seq += 1
        return seq

    def _close_segment(self, broken: bool = False) -> None:
        """Close the open segment (also one whose opening failed half-way)."""
        if self._sink is None and self._path is None:
            return
        try:
            if not broken and self._writer is not None and self._sink is not None:
                self._writer.close()  # the end-of-stream marker
                self._sink.flush()
                os.fdatasync(self._fd)  # the data and the size: all a reader needs
            if self._sink is not None:
                self._sink.close()
        except (OSError, pa.ArrowException) as exc:
            log.error("decision log: closing a segment failed: %s", exc)
        finally:
            if self._fd >= 0:
                os.close(self._fd)
            self._fd = -1
        if broken and self._path is not None:  # cut the partial message: the file stays whole
            try:
                if self._good == 0:  # not even its schema: a segment that holds nothing
                    self._path.unlink()
                else:
                    os.truncate(self._path, self._good)
            except OSError as exc:
                log.error("decision log: could not truncate %s: %s", self._path, exc)
        self._writer = self._sink = self._path = None
        self._unsynced = False
        self._unsynced_rows = 0
