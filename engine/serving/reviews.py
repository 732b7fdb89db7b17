"""The review queue and the outcomes store at run time, and the `ordersight.v1.Reviews`
methods.

Decision entries (the ones the decision log gets) are handed to `on_entry` on the engine's
thread; the store's own writer thread opens a case for every REVIEW row and indexes every
decision, a group of entries per transaction, and moves the store's watermark (the last
log seq it holds) in the same transaction. The inbox is bounded: past `queue_max` entries
an entry is dropped and counted, and the writer catches up from the decision log once the
inbox drains; at start-up it catches up from the watermark, so a crash loses no case the log
holds (without a log, dropped entries are lost, and counted in `ordersight_store_dropped`).

The writer commits at most once every `group_s` (a transaction's fixed cost is shared by every
entry that arrived meanwhile) and, with a decision log, without waiting for the disk
(`Store.relax`): whatever such a commit loses in a crash, the catch-up rewrites from the log.
Requests (listing, resolving, storing outcomes) run on a second connection on a thread of
their own, never on the event loop or the engine's thread.
"""

from __future__ import annotations

import asyncio
import base64
import logging
import threading
import time
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from ordersight.v1 import risk_pb2 as pb
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from engine.codec.alert_messages import timestamp
from engine.decision_log import segments
from engine.decision_log.records import Entry
from engine.errors import InvalidInput, Unconfigured
from engine.serving.methods import Unary, parse_request
from engine.store import Store, open_store
from engine.store.base import OPEN, RESOLVED, Case, CaseFilter, Outcome, Stored
from engine.store.cases import (
    cases_from_batch,
    cases_from_entry,
    decision_rows_from_batch,
    decision_rows_from_entry,
)
from engine.store.tables import check_reviewer_and_note

log = logging.getLogger(__name__)
SERVICE = pb.DESCRIPTOR.services_by_name["Reviews"].full_name
PAGE, MAX_PAGE = 50, 500
_PATHS = {v.name: v.number for v in pb.Path.DESCRIPTOR.values}
_VERDICT_NAMES = {pb.FRAUD: "FRAUD", pb.LEGITIMATE: "LEGITIMATE"}
_VERDICTS = {name: number for number, name in _VERDICT_NAMES.items()}


class Reviews:
    def __init__(
        self,
        dsn: str,
        metrics: CollectorRegistry,
        log_dir: str = "",
        replica: str = "",
        queue_max: int = 4096,
        retention_days: float = 180.0,
        group_s: float = 0.05,
        wall: Callable[[], float] = time.time,
    ) -> None:
        self.dsn = dsn
        self.log_dir = Path(log_dir) if log_dir else None
        self.mark = f"log_seq:{replica}" if replica else "log_seq"
        self.queue_max = queue_max
        self.group_s = group_s  # entries arriving this soon after a write join the next one
        self.retention_s = retention_days * 86400.0
        self.wall = wall
        self.writer_store: Store = open_store(dsn)  # migrates the schema once, first
        if self.log_dir is not None:  # what it writes, the log holds: a crash is caught up
            self.writer_store.relax()
        self.request_store: Store = open_store(dsn, migrate=False)
        self._requests = ThreadPoolExecutor(1, thread_name_prefix="store")
        self._inbox: deque[Entry] = deque()
        self._cond = threading.Condition()
        self._behind: int | None = None  # lowest seq dropped since the last catch-up
        self._closing = False
        self._pruned = 0.0
        self.problem = ""  # the writer's last failure ("" while it writes)
        self._thread = threading.Thread(target=self._write_loop, name="store-writer", daemon=True)
        self.m_cases = Counter("ordersight_review_cases", "Review cases opened", registry=metrics)
        self.m_resolved = Counter(
            "ordersight_review_resolved", "Review cases resolved, by verdict", ["verdict"],
            registry=metrics,
        )  # fmt: skip
        self.m_depth = Gauge("ordersight_review_queue_depth", "Open review cases", registry=metrics)
        self.m_age = Gauge(
            "ordersight_review_oldest_age_seconds", "Age of the oldest open review case",
            registry=metrics,
        )  # fmt: skip
        self.m_resolve_s = Histogram(
            "ordersight_review_resolve_seconds", "Time from a case's opening to its verdict",
            buckets=(60, 300, 900, 3600, 4 * 3600, 86400, 3 * 86400, 7 * 86400), registry=metrics,
        )  # fmt: skip
        self.m_dropped = Counter(
            "ordersight_store_dropped", "Decision entries the store's writer could not keep up "
            "with (caught up from the decision log when there is one)", registry=metrics,
        )  # fmt: skip
        self.m_labelled = Counter(
            "ordersight_labelled_decisions", "Decisions whose label became known (an order's "
            "first label, and again if a later outcome says fraud), by the decision and the "
            "label: catch rate, decline precision and false declines over time in PromQL",
            ["action", "label", "channel", "model_version", "arm"], registry=metrics,
        )  # fmt: skip
        self.m_unmatched = Counter(
            "ordersight_outcomes_unmatched", "Outcomes of orders the decisions index does not "
            "hold (kept all the same)", registry=metrics,
        )  # fmt: skip
        self.unary: dict[str, Unary] = {
            f"{SERVICE}/ListReviews": self._list,
            f"{SERVICE}/GetReview": self._get,
            f"{SERVICE}/ResolveReview": self._resolve,
        }

    # --- the writer ---------------------------------------------------------------------------

    def start(self) -> None:
        """Catch up from the decision log (cases and decisions it holds that the store
        lacks), then take entries."""
        self.catch_up()
        self._refresh_queue()
        self._thread.start()

    def catch_up(self, after: int | None = None) -> int:
        """Store the decisions of log entries after `after` (default: the watermark);
        idempotent. Returns the cases opened."""
        if self.log_dir is None or not self.log_dir.is_dir():
            return 0
        store = self.writer_store
        if after is None:
            after = int(store.meta(self.mark) or 0)
        opened = 0
        for batch in segments.read_folder(self.log_dir, after_seq=after):
            if not batch.num_rows:
                continue
            top = int(max(batch.column("seq").to_pylist()))
            opened += store.record(
                cases_from_batch(batch), decision_rows_from_batch(batch), (self.mark, top),
                self.wall(),
            )  # fmt: skip
        if opened:
            self.m_cases.inc(opened)
            log.info("store: %d review cases caught up from the decision log", opened)
        return opened

    def on_entry(self, entry: Entry) -> None:
        """A champion decision entry (engine thread): queued for the writer, never waited for."""
        with self._cond:
            if len(self._inbox) >= self.queue_max:
                self.m_dropped.inc()
                self._behind = entry.seq if self._behind is None else min(self._behind, entry.seq)
                return
            self._inbox.append(entry)
            self._cond.notify()

    def _write_loop(self) -> None:
        while True:
            with self._cond:
                while not self._inbox and not self._closing:
                    self._cond.wait(1.0)
                    if not self._inbox:
                        break
                taken = list(self._inbox)
                self._inbox.clear()
                entries = [e for e in taken if not isinstance(e, _Marker)]
                behind, self._behind = self._behind, None
                closing = self._closing and not taken
            try:
                if entries:
                    self._write(entries)
                if behind is not None and self.log_dir is not None:
                    self.catch_up(max(behind - 1, 0))
                self._housekeeping()
                self.problem = ""
            except Exception as exc:  # the store is down: entries stay in the log
                self.problem = f"{type(exc).__name__}: {exc}"
                log.error("store: writing failed (%s); the log keeps the decisions", exc)
                seqs = [e.seq for e in entries] + ([] if behind is None else [behind])
                if seqs:  # caught up from the log once the store answers again
                    seq = min(seqs)
                    with self._cond:
                        self._behind = seq if self._behind is None else min(self._behind, seq)
                time.sleep(1.0)
            for e in taken:
                if isinstance(e, _Marker):
                    e.done.set()
            if closing:
                return
            if entries and self.group_s:  # one transaction per group_s at most, not per batch
                time.sleep(self.group_s)

    def _write(self, entries: Sequence[Entry]) -> None:
        now = self.wall()
        cases: list[Case] = []
        rows: list[tuple[Any, ...]] = []
        for e in entries:
            cases += cases_from_entry(e, now)
            rows += decision_rows_from_entry(e)
        seqs = [e.seq for e in entries if e.seq]
        mark = (self.mark, max(seqs)) if seqs and self.log_dir is not None else None
        opened = self.writer_store.record(cases, rows, mark, now)
        self.m_cases.inc(opened)

    def _housekeeping(self) -> None:
        now = self.wall()
        self._refresh_queue()
        if now - self._pruned > 3600.0:
            self._pruned = now
            self.writer_store.prune_decisions(now - self.retention_s)

    def _refresh_queue(self) -> None:
        depth, oldest = self.writer_store.queue()
        self.m_depth.set(depth)
        self.m_age.set(0.0 if oldest is None else max(self.wall() - oldest, 0.0))

    def flush(self, timeout: float = 10.0) -> None:
        """Wait until every entry queued so far is written (tests, graceful stop)."""
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            with self._cond:
                if not self._inbox:
                    break
            time.sleep(0.005)
        # The entries taken last may still be in their transaction: one more turn of the loop.
        done = threading.Event()
        with self._cond:
            self._inbox.append(_Marker(done))  # type: ignore[arg-type]
            self._cond.notify()
        done.wait(max(end - time.monotonic(), 0.0))

    def close(self) -> None:
        if self._thread.is_alive():
            self.flush()
        with self._cond:
            self._closing = True
            self._cond.notify()
        if self._thread.is_alive():
            self._thread.join(10.0)
        self._requests.shutdown(wait=True)
        self.writer_store.close()
        self.request_store.close()

    # --- requests -------------------------------------------------------------------------------

    async def call(self, fn: Callable[..., Any], *args: Any) -> Any:
        """`fn(store, *args)` on the requests' thread."""
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._requests, lambda: fn(self.request_store, *args))

    async def add_outcomes(self, outcomes: Sequence[Outcome]) -> list[Stored]:
        stored: list[Stored] = await self.call(lambda s: s.add_outcomes(outcomes))
        for o, st in zip(outcomes, stored, strict=True):
            self.count(st, o.is_fraud)
        return stored

    def count(self, stored: Stored, is_fraud: bool) -> None:
        """The accuracy metrics of one stored outcome."""
        if not stored.new:
            return
        d = stored.decision
        if d is None:
            self.m_unmatched.inc()
        elif stored.apply:
            label = "fraud" if is_fraud else "legitimate"
            self.m_labelled.labels(
                d["action"], label, d["channel"], d["model_version"], d["arm"]
            ).inc()

    async def list_cases(
        self, f: CaseFilter, limit: int, after: tuple[float, str] | None
    ) -> tuple[list[Case], int]:
        def run(s: Store) -> tuple[list[Case], int]:
            return s.list_cases(f, limit, after), s.queue()[0]

        return await self.call(run)

    async def get_case(self, order_id: str) -> Case:
        case = await self.call(lambda s: s.get_case(order_id))
        if case is None:
            from engine.errors import NotFound

            raise NotFound(f"order_id: no review case for order {order_id!r}")
        return case

    async def resolve(
        self, order_id: str, verdict: str, reviewer: str, note: str, known_at: float
    ) -> tuple[Case, Stored]:
        """Resolve a case (store only; the caller applies the verdict to the state)."""
        at = self.wall()
        case, stored = await self.call(
            lambda s: s.resolve_case(order_id, verdict, reviewer, note, at, known_at)
        )
        self.m_resolved.labels(verdict).inc()
        self.count(stored, verdict == "FRAUD")
        self.m_resolve_s.observe(max(at - case.opened_at, 0.0))
        return case, stored

    # --- gRPC -----------------------------------------------------------------------------------

    async def _list(self, request: bytes | bytearray, deadline: float | None) -> bytes:
        req = parse_request(pb.ListReviewsRequest, request)
        f, limit, after = list_args(req, self.wall())
        cases, depth = await self.list_cases(f, limit + 1, after)
        out = pb.ListReviewsResponse(open=depth)
        for c in cases[:limit]:
            out.cases.append(case_to_pb(c))
        if len(cases) > limit:
            last = cases[limit - 1]
            out.next_page_token = page_token(last)
        return out.SerializeToString()

    async def _get(self, request: bytes | bytearray, deadline: float | None) -> bytes:
        req = parse_request(pb.GetReviewRequest, request)
        if not req.order_id:
            raise InvalidInput("order_id: required", "order_id")
        return case_to_pb(await self.get_case(req.order_id)).SerializeToString()

    resolver: Callable[[str, str, str, str], Awaitable[Case]] | None = None
    """Set by the server: resolves a case and applies its verdict to the state."""

    async def _resolve(self, request: bytes | bytearray, deadline: float | None) -> bytes:
        req = parse_request(pb.ResolveReviewRequest, request)
        order_id, verdict, reviewer, note = check_resolution(
            req.order_id, _VERDICT_NAMES.get(req.verdict, ""), req.reviewer, req.note
        )
        if self.resolver is None:
            raise Unconfigured("the review queue is not wired to the engine")
        case = await self.resolver(order_id, verdict, reviewer, note)
        return case_to_pb(case).SerializeToString()


class _Marker:
    """A flush marker in the writer's inbox: set once the loop reaches it."""

    kind = -1
    seq = 0
    decisions = arrays = None

    def __init__(self, done: threading.Event) -> None:
        self.done = done


def check_resolution(
    order_id: str, verdict: str, reviewer: str, note: str
) -> tuple[str, str, str, str]:
    """The fields of a resolution, checked (InvalidInput naming the field otherwise)."""
    if not order_id:
        raise InvalidInput("order_id: required", "order_id")
    if verdict not in _VERDICTS:
        raise InvalidInput("verdict: FRAUD or LEGITIMATE is required", "verdict")
    reviewer = reviewer.strip()
    if not reviewer:
        raise InvalidInput("reviewer: required (who decided is kept with the verdict)", "reviewer")
    check_reviewer_and_note(reviewer, note)
    return order_id, verdict, reviewer, note


def list_args(
    req: pb.ListReviewsRequest, now: float
) -> tuple[CaseFilter, int, tuple[float, str] | None]:
    status = {"": OPEN, "open": OPEN, "resolved": RESOLVED, "all": ""}.get(req.status)
    if status is None:
        raise InvalidInput(f"status: open, resolved or all, not {req.status!r}", "status")
    if req.page_size > MAX_PAGE:
        raise InvalidInput(f"page_size: at most {MAX_PAGE}, is {req.page_size}", "page_size")
    if req.min_amount < 0 or req.max_amount < 0:
        raise InvalidInput("min_amount, max_amount: must not be negative", "min_amount")
    if req.max_amount and req.min_amount > req.max_amount:
        raise InvalidInput("min_amount: above max_amount", "min_amount")
    f = CaseFilter(
        status=status, trigger=req.trigger, channel=req.channel,
        opened_before=now - req.min_age_s if req.min_age_s else None,
        min_amount=req.min_amount or None, max_amount=req.max_amount or None,
    )  # fmt: skip
    return f, req.page_size or PAGE, parse_page_token(req.page_token)


def page_token(case: Case) -> str:
    return base64.urlsafe_b64encode(f"{case.opened_at!r}|{case.order_id}".encode()).decode()


def parse_page_token(token: str) -> tuple[float, str] | None:
    if not token:
        return None
    try:
        at, order_id = base64.urlsafe_b64decode(token.encode()).decode().split("|", 1)
        return float(at), order_id
    except (ValueError, UnicodeDecodeError) as exc:
        raise InvalidInput("page_token: not a token this engine gave", "page_token") from exc


def case_to_pb(c: Case) -> pb.ReviewCase:
    out = pb.ReviewCase(
        order_id=c.order_id, customer_id=c.customer_id, amount=c.amount, currency=c.currency,
        channel=c.channel, score=c.score, path=_PATHS.get(c.path, 0),  # type: ignore[arg-type]
        model_version=c.model_version, review_triggers=c.triggers, status=c.status,
        verdict=_VERDICTS.get(c.verdict or "", 0),  # type: ignore[arg-type]
        reviewer=c.reviewer or "", note=c.note or "",
    )  # fmt: skip
    out.created_at.CopyFrom(timestamp(c.created_at))
    out.opened_at.CopyFrom(timestamp(c.opened_at))
    if c.resolved_at is not None:
        out.resolved_at.CopyFrom(timestamp(c.resolved_at))
    for r in c.reasons:
        out.reasons.add(**r)
    for name, value in c.facts.items():
        out.facts.add(name=name, value=float(value))
    return out
