"""The agents of the simulated working week (`engine.routing.workday`), their hidden
performance, and the routers compared on it, behind one interface.

Agents are `engine.routing.router.Agent` profiles (skills with levels 1..5, languages,
capacity, an early or a late shift, Monday to Friday), so every router and the world read a
shift the same way (`Agent.on_shift`). What an agent really does is hidden in `Truth`, which
only the world reads:
- handle time = category base x level factor x learning x the agent's own speed x the
  order's difficulty (`difficulty`: amount, key account, new customer, built to order,
  quantity, repeat customer) x log-normal noise; learning falls with the cases the agent has
  completed in the category (it starts with a prior experience that grows with its level);
- P(resolved right first time) rises with level and experience.

Routers (`WeekRouter`) see a case only as a `CaseInfo` (the predicted category, predicted
priority, language, order features, creation time) and learn only from what the world
reports back: a completion with its handle time and quality (`completed`), or a case sent
back without learning (`sent_back`). A router holds its own backlog.
- `RoundRobin`: the next agent on shift with a free slot, in turn, skills and language
  ignored; a freed slot takes the oldest waiting case of any category.
- `SkillsOnly`: among agents on shift with a free slot, the predicted skill and the case's
  language, the highest level; a freed slot takes the oldest case it can take.
- `LeastLoaded`: the same agents, the lowest load / capacity.
- `OrderSight`: `engine.routing.router.Router`: `route` at arrival, `assign_batch` on its
  backlog when a slot frees or a shift starts; `complete` when a case is resolved, `bounce`
  when an agent sends it back (as the Routing service's CompleteCase does), `release` for a
  case handed back unstarted at the end of a shift.
The three baselines treat the language as a skill, as a contact centre's skills-based
routing does, so they are not beaten merely by sending German cases to English speakers;
each waits in a FIFO queue per predicted category and never assigns beyond capacity.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field, replace
from typing import Protocol

import numpy as np

from engine.routing.case_sim import CONFIGS as TEXT_CONFIGS
from engine.routing.case_sim import QUEUES
from engine.routing.router import GENERAL_SKILL, Agent, CaseInfo, Choice, Router, RouterConfig

SLA_S = {"urgent": 3600.0, "high": 4 * 3600.0, "normal": 8 * 3600.0, "low": 24 * 3600.0}
"""Wall time from creation to resolution each priority promises (the Router is given it)."""
EARLY = (420, 930)  # 07:00-15:30 UTC
LATE = (630, 1140)  # 10:30-19:00 UTC
WEEKDAYS = "1111100"
BASE_HANDLE_S = {
    "hardware_config": 2400.0, "installation": 2100.0, "payment_terms": 1200.0,
    "service_agreement": 1800.0, "volume_discount": 1500.0, "delivery_exception": 900.0,
    "returns_rma": 1200.0, "fraud_review": 1500.0,
}  # fmt: skip
"""Seconds a level-3 agent without experience takes on an average order."""
LEVEL_FACTOR = (math.nan, 1.5, 1.25, 1.0, 0.85, 0.72)
PRIOR_EXPERIENCE = ((0, 0), (0, 10), (10, 40), (30, 120), (80, 300), (200, 600))
"""Per level, the range of cases an agent completed in a category before the week."""
NOISE_SIGMA = 0.35
SPEED_SIGMA = 0.15
TRIAGE_S = 300.0  # reading a case outside one's skills and sending it back
LANGUAGE_TRIAGE_S = 120.0  # seeing a case is in a language one does not speak
_DEMAND = np.array(
    [m * BASE_HANDLE_S[q] for q, m in zip(QUEUES, TEXT_CONFIGS["default"].queue_mix, strict=True)]
)
_DEMAND /= _DEMAND.sum()
"""Skills are drawn in proportion to the work of case_sim's default mix: the team was
hired for the usual cases (the shifted world's mix is not what it was hired for)."""
_CAPACITIES = (1, 2, 3, 2, 1, 2, 3, 2, 2, 1)
_KINDS = ("specialist", "broad", "generalist", "specialist", "broad", "specialist",
          "generalist", "broad", "specialist", "broad")  # fmt: skip


def learning(experience: int) -> float:
    """Handle-time factor after `experience` completed cases in a category (1 at none)."""
    return 0.7 + 0.3 / math.sqrt(1.0 + experience / 8.0)


def p_right(level: int, experience: int) -> float:
    """P(a case is resolved right first time) at `level` after `experience` cases."""
    return min(0.78 + 0.035 * level + 0.06 * (1.0 - math.exp(-experience / 40.0)), 0.98)


def difficulty(amount: float, quantity: int, tier: str, orders: int, built: bool) -> float:
    """The order's factor in the true handle time; routers see only the order's features
    (`engine.routing.order_features`), from which they must learn it."""
    d = min(max((max(amount, 500.0) / 10_000.0) ** 0.08, 0.75), 1.4)
    d *= 1.25 if tier == "key" else 1.0
    d *= 1.15 if tier == "new" or orders == 0 else 1.0
    d *= 1.15 if built else 1.0
    d *= 1.1 if quantity >= 100 else 1.0
    return d * (0.92 if orders >= 20 else 1.0)


@dataclass
class Truth:
    """What the world knows of one agent and no router does."""

    speed: float
    experience: dict[str, int]

    def handle_s(self, agent: Agent, category: str, difficulty: float, z: float) -> float:
        level = agent.skills[category]
        return (
            BASE_HANDLE_S[category] * LEVEL_FACTOR[level] * learning(self.experience[category])
            * self.speed * difficulty * math.exp(NOISE_SIGMA * z)
        )  # fmt: skip


def _skills(kind: str, rng: np.random.Generator) -> dict[str, int]:
    cats = [str(c) for c in rng.choice(QUEUES, len(QUEUES), replace=False, p=_DEMAND)]
    if kind == "specialist":
        return {cats[0]: int(rng.integers(4, 6)), cats[1]: int(rng.integers(2, 4))}
    if kind == "broad":
        return {c: int(rng.integers(2, 5)) for c in cats[: int(rng.integers(3, 5))]}
    skills = {c: int(rng.integers(1, 4)) for c in cats[: int(rng.integers(5, 8))]}
    skills[GENERAL_SKILL] = int(rng.integers(2, 4))
    return skills


def make_agents(
    n: int, rng: np.random.Generator, german: float = 0.5
) -> tuple[list[Agent], list[Truth]]:
    """`n` agents: specialists, broad agents and generalists (who also take GENERAL cases),
    a share `german` of them speaking English and German (the rest English only),
    capacities from a fixed mix, 55% on the early shift, the rest on the late one.
    Every skill (GENERAL's too) is then covered on each shift in each language, at level 2
    at least, so no case waits for a skill nobody on shift has."""
    if n < 4:
        raise ValueError(f"a working week needs at least 4 agents, is {n}")
    caps = rng.permutation(np.resize(_CAPACITIES, n))
    kinds = rng.permutation(np.resize(_KINDS, n))
    speaks_de = rng.permutation(np.arange(n) < round(german * n))
    agents = []
    for i in range(n):
        shift = EARLY if i < math.ceil(0.55 * n) else LATE
        langs = frozenset({"en", "de"}) if speaks_de[i] else frozenset({"en"})
        skills = _skills(str(kinds[i]), rng)
        agents.append(Agent(f"agent-{i:02d}", skills, langs, int(caps[i]), *shift, WEEKDAYS))
    for shift in (EARLY, LATE):
        crew = [a for a in agents if a.shift_start == shift[0]]
        for lang in ("de", "en"):
            if not any(lang in a.languages for a in crew):
                a = crew[int(rng.integers(len(crew)))]
                a.languages = a.languages | {lang}
            speakers = [a for a in crew if lang in a.languages]
            for skill in (*QUEUES, GENERAL_SKILL):
                if not any(a.skills.get(skill, 0) for a in speakers):
                    a = speakers[int(rng.integers(len(speakers)))]
                    a.skills[skill] = 2
    truths = []
    for a in agents:
        exp = {}
        for c in QUEUES:
            lo, hi = PRIOR_EXPERIENCE[a.skills.get(c, 0)]
            exp[c] = int(rng.integers(lo, hi + 1))
        truths.append(Truth(float(np.exp(SPEED_SIGMA * rng.standard_normal())), exp))
    return agents, truths


@dataclass
class Assignment:
    case_id: str
    agent_id: str
    queue: str
    handle_s: float = math.nan  # the router's expectation; NaN: it makes none
    resolution_s: float = math.nan
    reasons: list[str] = field(default_factory=list)


@dataclass
class Floor:
    """What the world shows of its agents: profiles and the cases each holds now."""

    agents: list[Agent]
    held: dict[str, int]

    def free(self, agent: Agent, now: float) -> bool:
        return agent.on_shift(now) and self.held[agent.agent_id] < agent.capacity


class WeekRouter(Protocol):
    name: str

    def arrive(self, case: CaseInfo, now: float) -> Assignment | None:
        """Assign `case` now, or keep it in the router's backlog (None)."""

    def freed(self, now: float) -> list[Assignment]:
        """Slots freed or a shift started: assignments from the backlog."""

    def completed(self, agent_id: str, case: CaseInfo, handle_s: float, quality: float) -> None:
        """The agent resolved `case` (quality 1: right, 0: it failed its check)."""

    def sent_back(
        self, agent_id: str, case: CaseInfo, rejected: bool = True, category: str = ""
    ) -> None:
        """The agent gave `case` back unresolved (rejected: it could not take it; else its
        shift ended before it started the case); `category`: the one it really needs, when
        the agent could read it. The world routes it again."""


class _Fifo:
    """The baselines' backlog: a FIFO queue per predicted category, oldest first."""

    name = "fifo"

    def __init__(self, floor: Floor) -> None:
        self.floor = floor
        self.queues: dict[str, deque[tuple[int, CaseInfo]]] = {}
        self.returned: dict[str, set[str]] = {}
        """Per case, the agents who sent it back: it is not given to them again."""
        self._seq = 0

    def choose(self, case: CaseInfo, now: float) -> Agent | None:
        raise NotImplementedError

    def fresh(self, agent: Agent, case: CaseInfo) -> bool:
        return agent.agent_id not in self.returned.get(case.case_id, ())

    def can_take(self, agent: Agent, case: CaseInfo) -> bool:
        return (
            agent.takes(case.category) > 0 and agent.speaks(case.language)
            and self.fresh(agent, case)
        )  # fmt: skip

    def order(self, now: float) -> Iterator[Agent]:
        """The agents with a free slot, in the order they take from the backlog."""
        return (a for a in self.floor.agents if self.floor.free(a, now))

    def taken(self, agent: Agent) -> None:
        """`agent` was given a case."""

    def arrive(self, case: CaseInfo, now: float) -> Assignment | None:
        agent = self.choose(case, now)
        if agent is None:
            self.queues.setdefault(case.category, deque()).append((self._seq, case))
            self._seq += 1
            return None
        self.taken(agent)
        return Assignment(case.case_id, agent.agent_id, case.category, reasons=[self.name])

    def _take(self, agent: Agent) -> CaseInfo | None:
        best: tuple[int, str, int] | None = None
        for cat, q in self.queues.items():
            for k, (seq, case) in enumerate(q):
                if self.can_take(agent, case):
                    if best is None or seq < best[0]:
                        best = (seq, cat, k)
                    break
        if best is None:
            return None
        q = self.queues[best[1]]
        case = q[best[2]][1]
        del q[best[2]]
        return case

    def freed(self, now: float) -> list[Assignment]:
        out: list[Assignment] = []
        progress = True
        while progress:
            progress = False
            for agent in list(self.order(now)):
                if not self.floor.free(agent, now):
                    continue
                case = self._take(agent)
                if case is not None:
                    # counted at once, so one pass never fills a slot twice; the world
                    # counts it again when it applies the assignment
                    self.floor.held[agent.agent_id] += 1
                    self.taken(agent)
                    out.append(Assignment(case.case_id, agent.agent_id, case.category,
                                          reasons=[f"{self.name}: from the backlog"]))  # fmt: skip
                    progress = True
        for a in out:
            self.floor.held[a.agent_id] -= 1
        return out

    def completed(self, agent_id: str, case: CaseInfo, handle_s: float, quality: float) -> None:
        pass

    def sent_back(
        self, agent_id: str, case: CaseInfo, rejected: bool = True, category: str = ""
    ) -> None:
        if rejected:
            self.returned.setdefault(case.case_id, set()).add(agent_id)


class RoundRobin(_Fifo):
    name = "round_robin"

    def __init__(self, floor: Floor) -> None:
        super().__init__(floor)
        self.turn = 0

    def can_take(self, agent: Agent, case: CaseInfo) -> bool:
        return self.fresh(agent, case)

    def _ring(self) -> list[Agent]:
        n = len(self.floor.agents)
        return [self.floor.agents[(self.turn + k) % n] for k in range(n)]

    def taken(self, agent: Agent) -> None:
        self.turn = (self.floor.agents.index(agent) + 1) % len(self.floor.agents)

    def order(self, now: float) -> Iterator[Agent]:
        return (a for a in self._ring() if self.floor.free(a, now))

    def choose(self, case: CaseInfo, now: float) -> Agent | None:
        return next((a for a in self.order(now) if self.can_take(a, case)), None)


class SkillsOnly(_Fifo):
    name = "skills_only"

    def choose(self, case: CaseInfo, now: float) -> Agent | None:
        able = [a for a in self.order(now) if self.can_take(a, case)]
        return max(able, key=lambda a: a.takes(case.category), default=None)


class LeastLoaded(_Fifo):
    name = "least_loaded"

    def _load(self, agent: Agent) -> tuple[float, int]:
        return self.floor.held[agent.agent_id] / agent.capacity, self.floor.held[agent.agent_id]

    def choose(self, case: CaseInfo, now: float) -> Agent | None:
        able = [a for a in self.order(now) if self.can_take(a, case)]
        return min(able, key=self._load, default=None)

    def order(self, now: float) -> Iterator[Agent]:
        return iter(sorted(super().order(now), key=self._load))


class OrderSight:
    """`engine.routing.router.Router` behind the week's interface. It gets copies of the
    agents' profiles (the Router keeps their load itself) and nothing of the truth."""

    name = "ordersight"

    def __init__(self, floor: Floor, config: RouterConfig | None = None) -> None:
        self.router = Router(config or RouterConfig(sla_s=SLA_S))
        for a in floor.agents:
            self.router.upsert_agent(replace(a, skills=dict(a.skills), load=0))
        self.queued: dict[str, CaseInfo] = {}
        self.returned: dict[str, set[str]] = {}

    @staticmethod
    def _assignment(choice: Choice) -> Assignment:
        est, agent = choice.estimate, str(choice.agent_id)
        if est is None:
            return Assignment(choice.case_id, agent, choice.queue, reasons=list(choice.reasons))
        return Assignment(choice.case_id, agent, choice.queue, est.handle_s, est.resolution_s,
                          list(choice.reasons))  # fmt: skip

    def arrive(self, case: CaseInfo, now: float) -> Assignment | None:
        case = replace(case, exclude=frozenset(self.returned.get(case.case_id, ())))
        choice = self.router.route(case, now)
        if choice.agent_id is None:
            self.queued[case.case_id] = case
            return None
        return self._assignment(choice)

    def freed(self, now: float) -> list[Assignment]:
        if not self.queued:
            return []
        out = []
        for choice in self.router.assign_batch(list(self.queued.values()), now):
            if choice.agent_id is not None:
                del self.queued[choice.case_id]
                out.append(self._assignment(choice))
        return out

    def completed(self, agent_id: str, case: CaseInfo, handle_s: float, quality: float) -> None:
        self.router.complete(agent_id, case, handle_s=handle_s, quality=quality)

    def sent_back(
        self, agent_id: str, case: CaseInfo, rejected: bool = True, category: str = ""
    ) -> None:
        # What CompleteCase(rework) does: a case sent back in its own category is a quality-0
        # case of the agent's, and the agent is not given it again; one the agent read as
        # another category only frees the slot (the misreading was the text model's). A case
        # the agent never started at its shift's end is no evidence.
        if rejected:
            self.returned.setdefault(case.case_id, set()).add(agent_id)
        if rejected and (not category or category == case.category):
            self.router.bounce(agent_id, case)
        else:
            self.router.release(agent_id)


ROUTERS: dict[str, Callable[[Floor], WeekRouter]] = {
    "round_robin": RoundRobin, "skills_only": SkillsOnly, "least_loaded": LeastLoaded,
    "ordersight": OrderSight,
}  # fmt: skip
"""The routers a week compares, by name, each made from the world's Floor."""


def shift_length_s(agent: Agent) -> float:
    """Seconds from the start of one of the agent's shifts to its end."""
    return ((agent.shift_end - agent.shift_start) % 1440 or 1440) * 60.0


def shift_seconds(agents: Sequence[Agent], days: int) -> np.ndarray:
    """Seconds each agent is on shift over the first `days` days (from a Monday)."""
    return np.array(
        [sum(a.shift_days[d % 7] == "1" for d in range(days)) * shift_length_s(a) for a in agents]
    )
