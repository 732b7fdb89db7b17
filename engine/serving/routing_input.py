"""The rules of Routing's requests: each field checked, InvalidInput naming it and its rule,
and the messages of agents and routed cases built from the router's objects."""

from __future__ import annotations

import math
import re
from typing import Any

from ordersight.v1 import risk_pb2 as pb

from engine.errors import InvalidInput
from engine.routing.order_features import TIERS, Line
from engine.routing.router import ALL_DAYS, PRIORITIES, Agent
from engine.store.routing import RoutedCase

MAX_ID, MAX_NAME, MAX_SKILLS, MAX_LANGUAGES, MAX_CAPACITY = 128, 200, 64, 16, 100
MAX_SUBJECT, MAX_BODY, MAX_LINES, MAX_AMOUNT = 1_000, 20_000, 500, 1e12
MAX_HANDLE_S = 30 * 86_400.0
MAX_AGE_S, MAX_AHEAD_S = 90 * 86_400.0, 300.0
_STATE_NAMES = {pb.AVAILABLE: "available", pb.AWAY: "away", pb.OFFLINE: "offline"}
_STATES = {name: number for number, name in _STATE_NAMES.items()}
_LANGUAGE = re.compile(r"[a-z]{2,3}")
_CURRENCY = re.compile(r"[A-Z]{3}")
_LABEL = re.compile(r"[A-Za-z0-9_.:-]{1,64}")


def _id(value: str, field: str, required: bool = True) -> str:
    if not value:
        if required:
            raise InvalidInput(f"{field}: required", field)
        return ""
    if len(value) > MAX_ID or not value.isprintable():
        raise InvalidInput(f"{field}: at most {MAX_ID} printable characters", field)
    return value


def label(value: str, field: str) -> str:
    if not _LABEL.fullmatch(value):
        raise InvalidInput(
            f"{field}: 1 to 64 letters, digits or _ . : - (not {value[:80]!r})", field
        )
    return value


def language(value: str, field: str) -> str:
    if value and not _LANGUAGE.fullmatch(value):
        raise InvalidInput(f"{field}: an ISO 639-1 code in lower case (not {value[:20]!r})", field)
    return value


def state_name(state: int, field: str = "state") -> str:
    if state not in _STATE_NAMES:
        raise InvalidInput(f"{field}: AVAILABLE, AWAY or OFFLINE", field)
    return _STATE_NAMES[state]


def agent_from_pb(m: pb.RoutingAgent, old: Agent | None) -> Agent:
    """The agent an upsert describes; a new agent's state defaults to available, a known one
    keeps its state and load unless told."""
    agent_id = _id(m.agent_id, "agent_id")
    if len(m.name) > MAX_NAME or len(m.team) > MAX_NAME:
        raise InvalidInput(f"name, team: at most {MAX_NAME} characters", "name")
    if not m.skills:
        raise InvalidInput("skills: at least one (a category and a level 1..5)", "skills")
    if len(m.skills) > MAX_SKILLS:
        raise InvalidInput(f"skills: at most {MAX_SKILLS}", "skills")
    skills: dict[str, int] = {}
    for i, s in enumerate(m.skills):
        where = f"skills[{i}]"
        label(s.skill, f"{where}.skill")
        if not 1 <= s.level <= 5:
            raise InvalidInput(f"{where}.level: 1 (learning) to 5 (expert), is {s.level}", where)
        if s.skill in skills:
            raise InvalidInput(f"{where}.skill: {s.skill!r} given twice", where)
        skills[s.skill] = s.level
    if len(m.languages) > MAX_LANGUAGES:
        raise InvalidInput(f"languages: at most {MAX_LANGUAGES}", "languages")
    langs = frozenset(language(v, f"languages[{i}]") for i, v in enumerate(m.languages))
    if not 1 <= m.capacity <= MAX_CAPACITY:
        raise InvalidInput(
            f"capacity: 1 to {MAX_CAPACITY} cases at once, is {m.capacity}", "capacity"
        )
    start, end, days = m.shift.start_minute, m.shift.end_minute, m.shift.days or ALL_DAYS
    if start == end == 0:
        end = 1440
    if start > 1439 or not 1 <= end <= 1440:
        raise InvalidInput("shift: start_minute 0..1439, end_minute 1..1440", "shift")
    if len(days) != 7 or set(days) - {"0", "1"}:
        raise InvalidInput("shift.days: seven characters 0 or 1, Monday first", "shift.days")
    state = state_name(m.state) if m.state else (old.state if old else "available")
    return Agent(
        agent_id=agent_id, skills=skills, languages=langs, capacity=m.capacity,
        shift_start=start, shift_end=end, shift_days=days, state=state,
        load=old.load if old else 0, name=m.name, team=m.team,
    )  # fmt: skip


def agent_to_pb(a: Agent, perf: list[tuple[str, int, float, float]]) -> pb.RoutingAgent:
    out = pb.RoutingAgent(
        agent_id=a.agent_id, name=a.name, team=a.team, languages=sorted(a.languages),
        capacity=a.capacity, state=_STATES[a.state], load=a.load,  # type: ignore[arg-type]
        shift=pb.AgentShift(start_minute=a.shift_start, end_minute=a.shift_end, days=a.shift_days),
    )  # fmt: skip
    for skill, level in sorted(a.skills.items()):
        out.skills.add(skill=skill, level=level)
    for category, cases, median, quality in perf:
        out.performance.add(
            category=category, cases=cases, median_handle_s=median, mean_quality=quality
        )
    return out


class CaseFields:
    """A RoutingCase's checked fields."""

    def __init__(self, m: pb.RoutingCase, now: float) -> None:
        self.case_id = _id(m.case_id, "case.case_id")
        self.order_id = _id(m.order_id, "case.order_id", required=False)
        self.customer_id = _id(m.customer_id, "case.customer_id", required=False)
        if m.customer_tier not in ("", *TIERS):
            raise InvalidInput("case.customer_tier: new, standard, key or ''", "case.customer_tier")
        self.customer_tier = m.customer_tier
        self.customer_orders = m.customer_orders if m.HasField("customer_orders") else -1
        self.language = language(m.language, "case.language")
        for name, limit in (("subject", MAX_SUBJECT), ("body", MAX_BODY)):
            if len(getattr(m, name)) > limit:
                raise InvalidInput(f"case.{name}: at most {limit} characters", f"case.{name}")
        self.subject, self.body = m.subject, m.body
        if len(m.lines) > MAX_LINES:
            raise InvalidInput(f"case.lines: at most {MAX_LINES}", "case.lines")
        self.lines = [_line(line, i) for i, line in enumerate(m.lines)]
        if not math.isfinite(m.amount) or not 0 <= m.amount <= MAX_AMOUNT:
            raise InvalidInput(f"case.amount: 0 to {MAX_AMOUNT:.0e}, finite", "case.amount")
        self.amount = m.amount
        if m.currency and not _CURRENCY.fullmatch(m.currency):
            raise InvalidInput("case.currency: an ISO 4217 code (3 capitals)", "case.currency")
        self.currency = m.currency
        if len(m.payment_terms) > 64:
            raise InvalidInput("case.payment_terms: at most 64 characters", "case.payment_terms")
        self.payment_terms = m.payment_terms
        self.category = label(m.category, "case.category") if m.category else ""
        if m.priority and m.priority not in PRIORITIES:
            raise InvalidInput(
                f"case.priority: one of {', '.join(PRIORITIES)} or ''", "case.priority"
            )
        self.priority = m.priority
        self.review_order_id = _id(m.review_order_id, "case.review_order_id", required=False)
        if self.review_order_id and self.category:
            raise InvalidInput(
                "case.category: not with review_order_id (a REVIEW case is fraud_review)",
                "case.category",
            )
        self.created_at = now
        if m.HasField("created_at"):
            t = m.created_at.seconds + m.created_at.nanos * 1e-9
            if not now - MAX_AGE_S <= t <= now + MAX_AHEAD_S:
                raise InvalidInput(
                    "case.created_at: within the last 90 days, not in the future",
                    "case.created_at",
                )
            self.created_at = t
        if not (self.category or self.review_order_id or self.subject or self.body):
            raise InvalidInput(
                "case: a category, a review_order_id, or text (subject, body) to read it from",
                "case",
            )


def _line(m: pb.RoutingLine, i: int) -> Line:
    where = f"case.lines[{i}]"
    if len(m.sku) > MAX_ID or len(m.category) > 64:
        raise InvalidInput(f"{where}: sku at most {MAX_ID}, category 64 characters", where)
    if m.quantity > 1_000_000:
        raise InvalidInput(f"{where}.quantity: at most 1,000,000", f"{where}.quantity")
    return Line(m.sku, m.category, m.quantity, m.built_to_order)


def check_completion(m: pb.CompleteCaseRequest) -> tuple[str, float, float, bool, str]:
    case_id = _id(m.case_id, "case_id")
    if not math.isfinite(m.handle_s) or not 0 < m.handle_s <= MAX_HANDLE_S:
        raise InvalidInput("handle_s: seconds worked, above 0 and at most 30 days", "handle_s")
    if not math.isfinite(m.quality) or not 0 <= m.quality <= 1:
        raise InvalidInput("quality: 0 to 1", "quality")
    category = label(m.category, "category") if m.category else ""
    if category and not m.rework:
        raise InvalidInput(
            "category: only with rework (the category to route the case to)", "category"
        )
    return case_id, m.handle_s, m.quality, m.rework, category


def decision_to_pb(c: RoutedCase) -> pb.RouteDecision:
    return pb.RouteDecision(
        case_id=c.case_id, agent_id=c.agent_id or "", queue=c.queue, category=c.category,
        confidence=c.confidence, priority=c.priority, predicted_handle_s=c.predicted_handle_s,
        predicted_resolution_s=c.predicted_resolution_s, sla_s=c.sla_s, p_sla_breach=c.p_breach,
        reasons=c.reasons, status=c.status, routes=c.routes,
    )  # fmt: skip


def review_priority(triggers: list[str]) -> str:
    """A REVIEW case's priority: urgent when its value or account raised it, else high."""
    return "urgent" if {"HIGH_VALUE", "KEY_ACCOUNT"} & set(triggers) else "high"


def jsonable(features: dict[str, float]) -> dict[str, Any]:
    return {k: round(float(v), 6) for k, v in features.items()}
