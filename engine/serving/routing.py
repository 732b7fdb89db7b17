"""`ordersight.v1.Routing` at run time: agents, routed cases and the router
(`engine.routing.router`) on one thread of their own, in the engine's store.

Every call runs on the routing thread, which owns the router's memory and a store
connection. The thread takes every call waiting, runs them in order, each updating the store
and then the router, and commits once for the group: a call is answered only after its
group's commit, so an acknowledged routing survives a crash, and the commit's wait for the
disk is shared by the calls that came meanwhile. A call refused by its rules (INVALID_ARGUMENT,
NOT_FOUND, ...) is refused before it writes or changes anything. If a commit fails, every
call of the group fails UNAVAILABLE and the router is reloaded from the store, which holds
exactly the calls answered before.

The text model (setting `routing_models`, a folder of `ordersight route train`) reads a
case's subject and body when the caller gives no category, on the routing thread before the
group's transaction begins (`engine.serving.routing_text`: the texts of a group in one model
run); a case of the risk engine's review queue (`review_order_id`) is a fraud_review case,
with the review's facts.
"""

from __future__ import annotations

import asyncio
import logging
import math
import threading
import time
from collections import Counter as Tally
from collections import deque
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

from ordersight.v1 import risk_pb2 as pb
from prometheus_client import CollectorRegistry, Counter, Gauge

from engine.errors import (
    Conflict,
    InvalidInput,
    ModelLoadError,
    NotFound,
    OrderSightError,
    Overloaded,
    Unavailable,
    Unconfigured,
)
from engine.routing.order_features import features
from engine.routing.router import CaseInfo, Choice, Router, RouterConfig
from engine.serving import routing_input as ri
from engine.serving.methods import Unary, parse_request
from engine.serving.routing_text import TextRead, read_texts
from engine.store import open_store
from engine.store.routing import ASSIGNED, COMPLETED, QUEUED, RoutedCase, RoutingTables

log = logging.getLogger(__name__)
SERVICE = pb.DESCRIPTOR.services_by_name["Routing"].full_name
TEXT_COLUMNS = ("subject", "body")
FRAUD_REVIEW = "fraud_review"


class RoutingService:
    def __init__(
        self,
        dsn: str,
        models: str | Path,
        metrics: CollectorRegistry,
        config: RouterConfig | None = None,
        open_max: int = 100_000,
        wall: Callable[[], float] = time.time,
    ) -> None:
        self.config = config or RouterConfig()
        self.wall = wall
        self.open_max = open_max
        self.text = _load_text(models) if models else None
        self.store = open_store(dsn)
        self.tables = RoutingTables(self.store)
        self.router = Router(self.config)
        self.open: dict[str, RoutedCase] = {}
        self._load()
        self._inbox: deque[tuple[Callable[..., Any], asyncio.Future[Any], Any]] = deque()
        self._cond = threading.Condition()
        self._closing = False
        self.problem = ""  # the last commit's failure ("" while commits succeed)
        self.m_routed = Counter(
            "ordersight_routing_routed", "Cases routed, by category and whether an agent took it",
            ["category", "outcome"], registry=metrics,
        )  # fmt: skip
        self.m_completed = Counter(
            "ordersight_routing_completed", "Cases completed or sent back, by category",
            ["category", "outcome"], registry=metrics,
        )  # fmt: skip
        self.m_queued = Gauge(
            "ordersight_routing_queued", "Cases waiting for an agent", registry=metrics
        )
        self.m_queued.set_function(
            lambda: sum(c.status == QUEUED for c in list(self.open.values()))
        )
        self.m_failed = Counter(
            "ordersight_routing_commit_failures", "Groups of Routing calls whose commit failed",
            registry=metrics,
        )  # fmt: skip
        self._thread = threading.Thread(target=self._work, name="routing", daemon=True)
        self._thread.start()

    @property
    def unary(self) -> dict[str, Unary]:
        names = {
            "UpsertAgent": self._upsert, "SetAgentState": self._set_state,
            "ListAgents": self._list_agents, "Route": self._route,
            "CompleteCase": self._complete, "AssignBatch": self._assign_batch,
            "GetRoutedCase": self._get,
        }  # fmt: skip
        return {f"{SERVICE}/{name}": fn for name, fn in names.items()}

    def _load(self) -> None:
        """The router's memory from the store: agents, their history, the open cases."""
        router = Router(self.config)
        for agent in self.tables.agents():
            router.upsert_agent(agent)
        for agent_id, category, perf in self.tables.perf():
            router.add_perf(agent_id, category, perf)
        state = self.tables.difficulty()
        if state is not None:
            router.difficulty.restore(state)
        self.router = router
        self.open = {c.case_id: c for c in self.tables.open_cases()}

    # --- the routing thread ---------------------------------------------------------------------

    async def _call(self, fn: Callable[..., Any], text: tuple[str, str] | None = None) -> Any:
        """`fn()` on the routing thread; with `text` (subject, body), `fn(reading)`."""
        fut: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        with self._cond:
            if self._closing:
                raise Unavailable("routing: the engine is stopping")
            self._inbox.append((fn, fut, text))
            self._cond.notify()
        return await fut

    def _work(self) -> None:
        while True:
            with self._cond:
                while not self._inbox and not self._closing:
                    self._cond.wait()
                if not self._inbox:
                    return
                group = list(self._inbox)
                self._inbox.clear()
            done: list[tuple[asyncio.Future[Any], Any, BaseException | None]] = []
            try:
                reads = self._read(group)
            except Exception as exc:  # the calls that need the text model fail, not the group
                log.exception("routing: the text model failed on %d cases", len(group))
                reads, unread = {}, Unavailable(f"routing: the text model failed ({exc}); retry")
            try:
                with self.tables.tx():
                    for fn, fut, text in group:
                        if text is not None and id(text) not in reads:
                            done.append((fut, None, unread))
                            continue
                        try:
                            value = fn(reads[id(text)]) if text is not None else fn()
                            done.append((fut, value, None))
                        except OrderSightError as exc:  # refused before it changed anything
                            done.append((fut, None, exc))
                self.problem = ""
            except Exception as exc:
                log.exception("routing: a group of %d calls failed to commit", len(group))
                self.m_failed.inc()
                self.problem = f"a commit failed: {type(exc).__name__}: {exc}"
                failed = Unavailable(f"routing: the store failed ({type(exc).__name__}); retry")
                done = [(fut, None, failed) for _, fut, _ in group]
                try:
                    self._load()
                except Exception:
                    log.exception("routing: reloading from the store failed")
            for fut, value, error in done:
                fut.get_loop().call_soon_threadsafe(_settle, fut, value, error)

    def _read(self, group: list[tuple[Any, Any, Any]]) -> dict[int, TextRead]:
        """The text model's reading of every text of the group, in one run."""
        texts = [text for _, _, text in group if text is not None]
        if not texts or self.text is None:
            return {}
        return {id(t): r for t, r in zip(texts, read_texts(self.text, texts), strict=True)}

    def close(self) -> None:
        with self._cond:
            self._closing = True
            self._cond.notify()
        self._thread.join(10.0)
        self.store.close()

    # --- agents ---------------------------------------------------------------------------------

    def _agent_pb(self, agent_id: str) -> pb.RoutingAgent:
        a = self.router.agents[agent_id]
        perf = []
        for (owner, category), p in sorted(self.router.perf.items()):
            if owner == agent_id and p.cases:
                median = math.exp(p.sum_log / p.cases)
                perf.append((category, p.cases, median, p.sum_quality / p.cases))
        return ri.agent_to_pb(a, perf)

    async def _upsert(self, request: bytes | bytearray, deadline: float | None) -> bytes:
        req = parse_request(pb.RoutingAgent, request)

        def run() -> bytes:
            agent = ri.agent_from_pb(req, self.router.agents.get(req.agent_id))
            self.tables.put_agent(agent, self.wall())
            self.router.upsert_agent(agent)
            return self._agent_pb(agent.agent_id).SerializeToString()

        return await self._call(run)

    async def _set_state(self, request: bytes | bytearray, deadline: float | None) -> bytes:
        req = parse_request(pb.SetAgentStateRequest, request)
        state = ri.state_name(req.state) if req.state else None
        load = req.load if req.HasField("load") else None
        if state is None and load is None:
            raise InvalidInput("state: required (or load)", "state")
        if load is not None and load > 10_000:
            raise InvalidInput("load: at most 10,000", "load")

        def run() -> bytes:
            if req.agent_id not in self.router.agents:
                raise NotFound(f"agent_id: no agent {req.agent_id[:128]!r}")
            agent = self.router.agents[req.agent_id]
            new = replace(
                agent, state=state or agent.state, load=agent.load if load is None else load
            )
            self.tables.put_agent(new, self.wall())
            self.router.set_state(req.agent_id, state, load)
            return self._agent_pb(req.agent_id).SerializeToString()

        return await self._call(run)

    async def _list_agents(self, request: bytes | bytearray, deadline: float | None) -> bytes:
        parse_request(pb.ListAgentsRequest, request)

        def run() -> bytes:
            out = pb.ListAgentsResponse()
            for agent_id in sorted(self.router.agents):
                out.agents.append(self._agent_pb(agent_id))
            for queue, n in Tally(
                c.queue for c in self.open.values() if c.status == QUEUED
            ).items():
                out.queued[queue] = n
            return out.SerializeToString()

        return await self._call(run)

    # --- cases ----------------------------------------------------------------------------------

    def _case_from(self, f: ri.CaseFields, read: TextRead | None) -> tuple[RoutedCase, CaseInfo]:
        """The routed case a request describes, before routing (reads the review queue;
        `read`: the text model's reading of the case's text; changes nothing)."""
        category, confidence, priority, source = f.category, 1.0, f.priority, "order"
        order_id, customer_id, amount, currency = f.order_id, f.customer_id, f.amount, f.currency
        risk_reasons = 0
        priority_probs: dict[str, float] | None = None
        context = [f"category {category} given by the caller"] if category else []
        if f.review_order_id:
            review = self.store.get_case(f.review_order_id)
            if review is None:
                raise NotFound(f"case.review_order_id: no review case {f.review_order_id!r}")
            category, source = FRAUD_REVIEW, "review"
            priority = priority or ri.review_priority(review.triggers)
            order_id, customer_id = review.order_id, review.customer_id
            amount, currency = amount or review.amount, currency or review.currency
            risk_reasons = len(review.reasons)
            codes = ", ".join(r["code"] for r in review.reasons[:3]) or "none"
            context = [
                f"risk engine REVIEW of order {review.order_id}: score {review.score:.2f}, "
                f"triggers {', '.join(review.triggers) or 'none'}; top reasons {codes}"
            ]
        elif not category:
            if read is None or self.text is None:
                raise Unconfigured(
                    "case.category: required without a routing text model "
                    "(start the engine with `routing_models`)"
                )
            category, confidence = read.category, read.confidence
            context = [
                f"text model {self.text.version}: {read.top} at confidence {confidence:.2f}"
                + (" (below its threshold: GENERAL)" if category != read.top else "")
            ]
            if not priority and read.priority is not None:
                priority, priority_probs = read.priority, read.priority_probs
        priority = priority or "normal"
        named = features(
            amount=amount, lines=f.lines, payment_terms=f.payment_terms,
            customer_tier=f.customer_tier, customer_orders=f.customer_orders,
            risk_reasons=risk_reasons,
        )  # fmt: skip
        if priority_probs is not None and set(priority_probs) != set(self.config.sla_s):
            priority_probs = None  # a model of other priorities: its label only
        info = CaseInfo(
            f.case_id, category, priority, f.language, named, f.created_at, priority_probs
        )
        rc = RoutedCase(
            case_id=f.case_id, order_id=order_id, customer_id=customer_id,
            customer_tier=f.customer_tier, customer_orders=f.customer_orders, language=f.language,
            amount=amount, currency=currency, category=category, confidence=confidence,
            priority=priority, source=source, features=ri.jsonable(named), status=QUEUED,
            agent_id=None, queue=category, agent_experience=0, agent_level=0,
            predicted_handle_s=0.0, predicted_resolution_s=0.0,
            sla_s=self.config.sla_s[priority], created_at=f.created_at,
        )  # fmt: skip
        rc.context, rc.priority_probs = context, priority_probs
        return rc, info

    def _apply(self, rc: RoutedCase, choice: Choice, now: float) -> None:
        """The choice into the case's row (memory and store) and the agent's load."""
        rc.reasons = [*rc.context, *choice.reasons]
        rc.queue = choice.queue
        if choice.agent_id is None or choice.estimate is None:
            rc.status, rc.agent_id, rc.p_breach = QUEUED, None, 0.0
            self.m_routed.labels(rc.category, "queued").inc()
        else:
            e = choice.estimate
            rc.status, rc.agent_id, rc.routed_at, rc.routes = (
                ASSIGNED,
                choice.agent_id,
                now,
                rc.routes + 1,
            )
            rc.agent_experience, rc.agent_level = e.cases, e.level
            rc.predicted_handle_s, rc.predicted_resolution_s = e.handle_s, e.resolution_s
            rc.p_breach = e.p_breach
            self.tables.put_agent(self.router.agents[choice.agent_id], now)
            self.m_routed.labels(rc.category, "assigned").inc()
        self.tables.put_case(rc)
        self.open[rc.case_id] = rc

    @staticmethod
    def _info(rc: RoutedCase) -> CaseInfo:
        return CaseInfo(
            rc.case_id, rc.category, rc.priority, rc.language, rc.features, rc.created_at,
            rc.priority_probs, frozenset(rc.bounced),
        )  # fmt: skip

    def _put_agent(self, agent_id: str, now: float) -> None:
        if agent_id in self.router.agents:  # an agent may be gone from memory after a reload
            self.tables.put_agent(self.router.agents[agent_id], now)

    def _known(self, case_id: str) -> RoutedCase | None:
        return self.open.get(case_id) or self.tables.case(case_id)

    async def _route(self, request: bytes | bytearray, deadline: float | None) -> bytes:
        req = parse_request(pb.RouteRequest, request)
        if not req.HasField("case"):
            raise InvalidInput("case: required", "case")
        now = self.wall()
        fields = ri.CaseFields(req.case, now)
        needs_text = self.text is not None and not (fields.category or fields.review_order_id)

        def run(read: TextRead | None = None) -> bytes:
            known = self._known(fields.case_id)
            if known is not None:  # a retry, or a case routed before: its routing as it is
                return ri.decision_to_pb(known).SerializeToString()
            if len(self.open) >= self.open_max:
                raise Overloaded(
                    f"routing: {self.open_max} cases open (routing_open_max); complete some first"
                )
            rc, info = self._case_from(fields, read)
            choice = self.router.route(info, now)
            self._apply(rc, choice, now)
            return ri.decision_to_pb(rc).SerializeToString()

        return await self._call(run, (fields.subject, fields.body) if needs_text else None)

    async def _complete(self, request: bytes | bytearray, deadline: float | None) -> bytes:
        req = parse_request(pb.CompleteCaseRequest, request)
        case_id, handle_s, quality, rework, category = ri.check_completion(req)

        def run() -> bytes:
            rc = self._known(case_id)
            if rc is None:
                raise NotFound(f"case_id: no routed case {case_id!r}")
            if rc.status == COMPLETED:
                raise Conflict(f"case_id: case {case_id!r} was completed already", "case_id")
            if rc.status == QUEUED or rc.agent_id is None:
                raise Unconfigured(f"case_id: case {case_id!r} waits in a queue; no agent has it")
            now, info, agent_id = self.wall(), self._info(rc), rc.agent_id
            out = pb.CompleteCaseResponse()
            if rework:
                self.m_completed.labels(rc.category, "rework").inc()
                if category and category != rc.category:
                    # Misread, not badly worked: the agent's history is not charged for it.
                    self.router.release(agent_id)
                    rc.context = [f"sent back by {agent_id} as {category} (was {rc.category})"]
                    rc.category = category
                else:
                    perf = self.router.bounce(agent_id, info)
                    self.tables.put_perf(agent_id, rc.category, perf)
                self._put_agent(agent_id, now)
                out.completed.CopyFrom(ri.decision_to_pb(rc))
                rc.status, rc.agent_id = QUEUED, None
                rc.bounced.append(agent_id)
                self._apply(rc, self.router.route(self._info(rc), now), now)
                out.next.CopyFrom(ri.decision_to_pb(rc))
                return out.SerializeToString()
            perf, _ = self.router.complete(agent_id, info, handle_s, quality)
            self.tables.put_perf(agent_id, rc.category, perf)
            self.tables.put_difficulty(self.router.difficulty.state())
            self._put_agent(agent_id, now)
            rc.status, rc.completed_at, rc.handle_s, rc.quality = COMPLETED, now, handle_s, quality
            self.tables.put_case(rc)
            del self.open[case_id]
            self.m_completed.labels(rc.category, "completed").inc()
            out.completed.CopyFrom(ri.decision_to_pb(rc))
            return out.SerializeToString()

        return await self._call(run)

    async def _assign_batch(self, request: bytes | bytearray, deadline: float | None) -> bytes:
        req = parse_request(pb.AssignBatchRequest, request)
        if req.max_cases > 5_000:
            raise InvalidInput("max_cases: at most 5,000", "max_cases")

        def run() -> bytes:
            now = self.wall()
            queued = [rc for rc in self.open.values() if rc.status == QUEUED]
            choices = self.router.assign_batch(
                [self._info(rc) for rc in queued], now, req.max_cases or 500
            )
            out = pb.AssignBatchResponse()
            by_id = {rc.case_id: rc for rc in queued}
            for choice in choices:
                if choice.agent_id is not None:
                    rc = by_id[choice.case_id]
                    self._apply(rc, choice, now)
                    out.assigned.append(ri.decision_to_pb(rc))
            out.still_queued = len(queued) - len(out.assigned)
            return out.SerializeToString()

        return await self._call(run)

    async def _get(self, request: bytes | bytearray, deadline: float | None) -> bytes:
        req = parse_request(pb.GetRoutedCaseRequest, request)
        case_id = ri._id(req.case_id, "case_id")

        def run() -> bytes:
            rc = self._known(case_id)
            if rc is None:
                raise NotFound(f"case_id: no routed case {case_id!r}")
            return ri.decision_to_pb(rc).SerializeToString()

        return await self._call(run)


def _settle(fut: asyncio.Future[Any], value: Any, error: BaseException | None) -> None:
    if fut.done():
        return
    if error is not None:
        fut.set_exception(error)
    else:
        fut.set_result(value)


def _load_text(path: str | Path) -> Any:
    from engine.routing.text_model import TextRouter

    text = TextRouter.load(path)
    if tuple(text.text_cols) != TEXT_COLUMNS[: len(text.text_cols)] or not text.text_cols:
        raise ModelLoadError(
            f"routing_models: {path} reads text columns {', '.join(text.text_cols)}; the "
            f"Routing service gives it {', '.join(TEXT_COLUMNS)} (train with "
            "--text-cols subject,body)"
        )
    text.route([["warm up"], ["the session and its kernels"]][: len(text.text_cols)])
    return text
