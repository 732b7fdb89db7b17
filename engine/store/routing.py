"""The routing tables of the store (`migrations/0002.routing.sql`): agents, their history per
category, routed cases, and the difficulty model's sums. Statements only: the caller holds the
transaction (`Store._tx()`), so one group of Routing calls commits once
(`engine.serving.routing`).
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from engine.routing.router import Agent, Perf
from engine.store.base import Store

AGENT_COLUMNS = (
    "agent_id", "name", "team", "skills", "languages", "capacity", "shift_start", "shift_end",
    "shift_days", "state", "load", "updated_at",
)  # fmt: skip
CASE_COLUMNS = (
    "case_id", "order_id", "customer_id", "customer_tier", "customer_orders", "language",
    "amount", "currency", "category", "confidence", "priority", "source", "features", "status",
    "agent_id", "queue", "agent_experience", "agent_level", "predicted_handle_s",
    "predicted_resolution_s", "sla_s", "reasons", "routes", "created_at", "routed_at",
    "completed_at", "handle_s", "quality",
)  # fmt: skip
QUEUED, ASSIGNED, COMPLETED = "queued", "assigned", "completed"
"""A routed case's status: waiting in a queue, with an agent, resolved."""
DIFFICULTY_KEY = "routing_difficulty"


@dataclass
class RoutedCase:
    """One row of routing_cases."""

    case_id: str
    order_id: str
    customer_id: str
    customer_tier: str
    customer_orders: int
    language: str
    amount: float
    currency: str
    category: str
    confidence: float
    priority: str
    source: str
    features: dict[str, float]
    status: str
    agent_id: str | None
    queue: str
    agent_experience: int
    agent_level: int
    predicted_handle_s: float
    predicted_resolution_s: float
    sla_s: float
    reasons: list[str] = field(default_factory=list)
    routes: int = 0
    created_at: float = 0.0
    routed_at: float | None = None
    completed_at: float | None = None
    handle_s: float | None = None
    quality: float | None = None
    p_breach: float = 0.0  # not stored: the answer's
    context: list[str] = field(default_factory=list)
    """Not stored: where the category came from, put before the router's reasons."""
    priority_probs: dict[str, float] | None = None
    """Not stored: the text model's probability of each priority, when it read the priority."""
    bounced: list[str] = field(default_factory=list)
    """Not stored: agents who sent the case back (not given it again)."""

    def row(self) -> tuple[Any, ...]:
        d = dict(self.__dict__)
        for memory_only in ("context", "priority_probs", "bounced"):
            del d[memory_only]
        d["features"], d["reasons"] = json.dumps(self.features), json.dumps(self.reasons)
        return tuple(d[c] for c in CASE_COLUMNS)

    @classmethod
    def from_row(cls, row: Sequence[Any]) -> RoutedCase:
        d = dict(zip(CASE_COLUMNS, row, strict=True))
        d["features"], d["reasons"] = json.loads(d["features"]), json.loads(d["reasons"])
        return cls(**d)


def agent_row(a: Agent, now: float) -> tuple[Any, ...]:
    return (
        a.agent_id, a.name, a.team, json.dumps(a.skills, sort_keys=True),
        " ".join(sorted(a.languages)), a.capacity, a.shift_start, a.shift_end, a.shift_days,
        a.state, a.load, now,
    )  # fmt: skip


def agent_from_row(row: Sequence[Any]) -> Agent:
    d = dict(zip(AGENT_COLUMNS, row, strict=True))
    return Agent(
        agent_id=d["agent_id"], name=d["name"], team=d["team"],
        skills={k: int(v) for k, v in json.loads(d["skills"]).items()},
        languages=frozenset(d["languages"].split()), capacity=int(d["capacity"]),
        shift_start=int(d["shift_start"]), shift_end=int(d["shift_end"]),
        shift_days=d["shift_days"], state=d["state"], load=int(d["load"]),
    )  # fmt: skip


class RoutingTables:
    """The routing statements over one store connection (not thread-safe)."""

    def __init__(self, store: Store) -> None:
        self.store = store

    def tx(self) -> Any:
        return self.store._tx()

    def _run(self, sql: str, args: Sequence[Any] = ()) -> Any:
        return self.store._exec(self.store.conn.cursor(), sql, args)

    # agents
    def put_agent(self, a: Agent, now: float) -> None:
        cols = ", ".join(AGENT_COLUMNS)
        sets = ", ".join(f"{c} = excluded.{c}" for c in AGENT_COLUMNS[1:])
        self._run(
            f"INSERT INTO routing_agents ({cols}) VALUES ({', '.join('?' * len(AGENT_COLUMNS))}) "
            f"ON CONFLICT (agent_id) DO UPDATE SET {sets}",
            agent_row(a, now),
        )

    def agents(self) -> list[Agent]:
        rows = self._run(f"SELECT {', '.join(AGENT_COLUMNS)} FROM routing_agents").fetchall()
        return [agent_from_row(r) for r in rows]

    # history
    def put_perf(self, agent_id: str, category: str, p: Perf) -> None:
        self._run(
            "INSERT INTO routing_perf (agent_id, category, cases, sum_log_handle, "
            "sumsq_log_handle, sum_quality) VALUES (?, ?, ?, ?, ?, ?) "
            "ON CONFLICT (agent_id, category) DO UPDATE SET cases = excluded.cases, "
            "sum_log_handle = excluded.sum_log_handle, "
            "sumsq_log_handle = excluded.sumsq_log_handle, sum_quality = excluded.sum_quality",
            (agent_id, category, p.cases, p.sum_log, p.sumsq_log, p.sum_quality),
        )

    def perf(self) -> Iterator[tuple[str, str, Perf]]:
        for r in self._run(
            "SELECT agent_id, category, cases, sum_log_handle, sumsq_log_handle, sum_quality "
            "FROM routing_perf"
        ).fetchall():
            yield r[0], r[1], Perf(int(r[2]), float(r[3]), float(r[4]), float(r[5]))

    def put_difficulty(self, state: Mapping[str, object]) -> None:
        cur = self.store.conn.cursor()
        self.store._set_meta(cur, DIFFICULTY_KEY, json.dumps(state))

    def difficulty(self) -> dict[str, object] | None:
        got = self.store.meta(DIFFICULTY_KEY)
        return None if got is None else json.loads(got)

    # cases
    def put_case(self, c: RoutedCase) -> None:
        sets = ", ".join(f"{col} = excluded.{col}" for col in CASE_COLUMNS[1:])
        self._run(
            f"INSERT INTO routing_cases ({', '.join(CASE_COLUMNS)}) "
            f"VALUES ({', '.join('?' * len(CASE_COLUMNS))}) "
            f"ON CONFLICT (case_id) DO UPDATE SET {sets}",
            c.row(),
        )

    def case(self, case_id: str) -> RoutedCase | None:
        row = self._run(
            f"SELECT {', '.join(CASE_COLUMNS)} FROM routing_cases WHERE case_id = ?", (case_id,)
        ).fetchone()
        return None if row is None else RoutedCase.from_row(row)

    def open_cases(self) -> list[RoutedCase]:
        rows = self._run(
            f"SELECT {', '.join(CASE_COLUMNS)} FROM routing_cases WHERE status <> ? "
            "ORDER BY created_at, case_id",
            (COMPLETED,),
        ).fetchall()
        return [RoutedCase.from_row(r) for r in rows]
