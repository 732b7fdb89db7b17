"""Choosing the agent for a case: expected time to resolution, quality and SLA risk from each
agent's history with cases of the same category, shrunk towards the team's, plus the agent's
current load. Pure and in memory; `engine.serving.routing` persists what it changes.

    r = Router(RouterConfig())
    r.upsert_agent(Agent("a1", skills={"hardware_config": 4}, languages=frozenset({"en"}),
                         capacity=2, shift_start=480, shift_end=1020, shift_days="1111100"))
    info = CaseInfo("c1", "hardware_config", "high", "en", features(...), created_at=t)
    choice = r.route(info, now=t)       # choose + take a slot; choice.agent_id None: queued
    r.complete("a1", info, handle_s=1500.0, quality=1.0)   # learn, free the slot
    r.release("a1")                     # free a slot without learning (a case sent back)
    r.assign_batch(backlog, now=t)      # the backlog at once, under every agent's capacity

How an agent a is scored for a case of category c, priority p, waiting since created_at:
- Handle time is log-normal. Its log-mean is the agent's mean log handle time in c over its
  n completed cases, shrunk towards the team's: (sum + k * prior) / (n + k) with k =
  `shrinkage` pseudo-cases, so an agent with two fast cases is not taken for the team's best.
  The prior is the team's mean in c (`default_handle_s` before anyone completed one), moved
  by `level_step` per skill level above or below 3: the level an agent declares counts until
  its history outweighs it. Its spread is the team's in c (`default_sigma` before that).
  The order lengthens it by exp(w . x): `Difficulty`, a ridge regression over the order's
  features (`engine.routing.order_features`) learnt from completed cases.
- Quality (resolved right first time, in [0, 1]) is shrunk the same way, towards the team's.
- Wait: with every slot taken, the cases ahead of this one divided by the capacity, each
  taking the agent's expected handle time.
- Cost, in seconds: wait + E[handle] + (1 - quality) * E[handle] (the rework expected) +
  sla_weight[p] * P(breach), where P(breach) is P(elapsed + wait + handle > sla_s[p]).
The chosen agent has the lowest cost among those who can take the case: available, on
shift, with a level in c (or the GENERAL skill for GENERAL cases), speaking the case's
language when both are known, and fewer than capacity + `agent_queue_max` cases. When no
one can, the case waits in the queue of its category.

`assign_batch` solves the backlog as one assignment (scipy's `linear_sum_assignment`): one
column per free slot of every agent (a slot's wait grows with its place), and one column per
case for leaving it queued, which costs what the case would cost when a slot frees for it
(its best cost with that wait added: the cases of its category in the backlog over the rate
at which the slots of everyone who can take it free up, at least `defer_s`). Urgent cases
close to their SLA therefore get slots first; a case is left waiting only when every slot is
better used by another.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import replace

import numpy as np
from scipy.optimize import linear_sum_assignment
from scipy.special import ndtr

from engine.routing.order_features import describe, vector
from engine.routing.team import (
    ALL_DAYS,
    GENERAL_SKILL,
    INFEASIBLE,
    PRIORITIES,
    STATES,
    Agent,
    CaseInfo,
    Choice,
    Difficulty,
    Estimate,
    Perf,
    RouterConfig,
    fmt_duration,
)

__all__ = [
    "ALL_DAYS", "GENERAL_SKILL", "PRIORITIES", "STATES", "Agent", "CaseInfo", "Choice",
    "Difficulty", "Estimate", "Perf", "Router", "RouterConfig",
]  # fmt: skip


class Router:
    """Agents, their performance and the difficulty model; one thread uses it."""

    def __init__(self, config: RouterConfig | None = None) -> None:
        self.config = config or RouterConfig()
        self.config.check()
        self.agents: dict[str, Agent] = {}
        self.perf: dict[tuple[str, str], Perf] = {}
        self.team: dict[str, Perf] = {}
        self.difficulty = Difficulty(self.config.ridge, self.config.difficulty_min_cases)

    # -- state -------------------------------------------------------------------------
    def upsert_agent(self, agent: Agent) -> Agent:
        """Adds or replaces an agent; its load is kept when it only changes its profile."""
        old = self.agents.get(agent.agent_id)
        if old is not None and agent.load == 0:
            agent = replace(agent, load=old.load)
        self.agents[agent.agent_id] = agent
        return agent

    def set_state(self, agent_id: str, state: str | None = None, load: int | None = None) -> Agent:
        agent = self.agents[agent_id]  # KeyError: the service names the agent
        if state is not None and state not in STATES:
            raise ValueError(f"state: one of {', '.join(STATES)}, not {state!r}")
        if state is not None:
            agent.state = state
        if load is not None:
            agent.load = load
        return agent

    def add_perf(self, agent_id: str, category: str, perf: Perf) -> None:
        """A stored history (at start): the agent's and the team's sums."""
        self.perf[(agent_id, category)] = perf
        team = self.team.setdefault(category, Perf())
        team.cases += perf.cases
        team.sum_log += perf.sum_log
        team.sumsq_log += perf.sumsq_log
        team.sum_quality += perf.sum_quality

    def assign(self, agent_id: str) -> None:
        self.agents[agent_id].load += 1

    def release(self, agent_id: str) -> None:
        agent = self.agents.get(agent_id)
        if agent is not None:
            agent.load = max(agent.load - 1, 0)

    def complete(
        self, agent_id: str, case: CaseInfo, handle_s: float, quality: float
    ) -> tuple[Perf, float]:
        """Learns one completed case and frees its slot; returns the agent's updated
        performance in the category and the log handle time it recorded."""
        x = vector(case.features)
        log_factor = float(self.difficulty.log_factor(x[None, :])[0])
        agent = self.agents.get(agent_id)
        level = agent.takes(case.category) if agent is not None else 0
        mu = self._mu(self.perf.get((agent_id, case.category), Perf()), case.category, level)
        log_handle = math.log(max(handle_s, 1.0))
        self.difficulty.add(x, log_handle - mu)
        recorded = log_handle - log_factor
        perf = self.perf.setdefault((agent_id, case.category), Perf())
        perf.add(recorded, quality)
        self.team.setdefault(case.category, Perf()).add(recorded, quality)
        self.release(agent_id)
        return perf, recorded

    def bounce(self, agent_id: str, case: CaseInfo) -> Perf:
        """A case the agent sent back (rework): one case of quality 0 at the agent's own
        expected handle time, so sending a case back never looks fast, and the slot is freed."""
        agent = self.agents.get(agent_id)
        level = agent.takes(case.category) if agent is not None else 0
        perf = self.perf.setdefault((agent_id, case.category), Perf())
        mu = self._mu(perf, case.category, level)
        perf.add(mu, 0.0)
        self.team.setdefault(case.category, Perf()).add(mu, 0.0)
        self.release(agent_id)
        return perf

    # -- scoring -----------------------------------------------------------------------
    def _team_prior(self, category: str) -> tuple[float, float, float]:
        """(log-mean, sigma, quality) of the team in `category`."""
        c = self.config
        t = self.team.get(category)
        if t is None or t.cases == 0:
            return math.log(c.default_handle_s), c.default_sigma, c.default_quality
        mean = t.sum_log / t.cases
        if t.cases >= 2:
            var = max(t.sumsq_log / t.cases - mean * mean, 0.0) * t.cases / (t.cases - 1)
            sigma = min(max(math.sqrt(var), 0.1), 2.0)
        else:
            sigma = c.default_sigma
        return mean, sigma, t.sum_quality / t.cases

    def _shrunk(self, total: float, cases: int, prior: float) -> float:
        """The mean of `cases` observations summing to `total`, shrunk towards `prior` by
        `shrinkage` pseudo-observations."""
        k = self.config.shrinkage
        return (total + k * prior) / (cases + k) if cases + k else prior

    def _level_prior(self, team_mean: float, level: int) -> float:
        """The team's log-mean moved by `level_step` per declared level above or below 3."""
        return team_mean - self.config.level_step * (max(level, 1) - 3)

    def _mu(self, perf: Perf, category: str, level: int) -> float:
        mean, _, _ = self._team_prior(category)
        return self._shrunk(perf.sum_log, perf.cases, self._level_prior(mean, level))

    def eligible(self, case: CaseInfo, now: float) -> list[Agent]:
        cap = self.config.agent_queue_max
        return [
            a for a in self.agents.values()
            if a.state == "available" and a.takes(case.category) > 0 and a.speaks(case.language)
            and a.load < a.capacity + cap and a.on_shift(now) and a.agent_id not in case.exclude
        ]  # fmt: skip

    def _arrays(self, category: str, agents: Sequence[Agent], now: float) -> dict[str, np.ndarray]:
        """Per agent: shrunk log-mean and quality in `category`, cases, level, load, capacity."""
        mean, sigma, quality = self._team_prior(category)
        n = len(agents)
        out = {name: np.empty(n) for name in ("mu", "q", "cases", "level", "load", "cap", "left")}
        for i, a in enumerate(agents):
            p = self.perf.get((a.agent_id, category)) or Perf()
            level = a.takes(category)
            out["mu"][i] = self._shrunk(p.sum_log, p.cases, self._level_prior(mean, level))
            out["q"][i] = self._shrunk(p.sum_quality, p.cases, quality)
            out["cases"][i], out["level"][i] = p.cases, level
            out["load"][i], out["cap"][i] = a.load, a.capacity
            out["left"][i] = a.shift_left(now)
        out["sigma"] = np.full(n, sigma)
        return out

    def _cost(
        self, arr: dict[str, np.ndarray], case: CaseInfo, log_factor: float, now: float,
        extra: np.ndarray | int = 0,
    ) -> dict[str, np.ndarray]:  # fmt: skip
        """Estimates for one case against the agents of `arr`, with `extra` cases ahead."""
        c = self.config
        mu = arr["mu"] + log_factor
        sigma = arr["sigma"]
        handle = np.exp(mu + 0.5 * sigma * sigma)
        ahead = np.maximum(arr["load"] + extra - arr["cap"] + 1, 0)
        wait = ahead * handle / arr["cap"]
        elapsed = max(now - case.created_at, 0.0)
        probs = case.priority_probs or {case.priority: 1.0}
        p_breach = np.zeros_like(handle)
        penalty = np.zeros_like(handle)
        for priority, prob in probs.items():
            room = c.sla_s[priority] - elapsed - wait
            with np.errstate(divide="ignore"):
                z = (np.log(np.maximum(room, 1e-9)) - mu) / sigma
            p = np.where(room > 0, 1.0 - ndtr(z), 1.0)
            p_breach += prob * p
            penalty += prob * c.sla_weight[priority] * p
        cost = wait + handle + (1.0 - arr["q"]) * handle + penalty
        # A case waiting for a slot must be done before the agent's shift ends.
        cost = np.where((wait > 0) & (wait + handle > arr["left"]), np.inf, cost)
        return {"handle": handle, "wait": wait, "p": p_breach, "cost": cost,
                "resolution": elapsed + wait + handle}  # fmt: skip

    def _log_factor(self, case: CaseInfo) -> float:
        return float(self.difficulty.log_factor(vector(case.features)[None, :])[0])

    def choose(self, case: CaseInfo, now: float) -> Choice:
        """The best agent for `case` now, or its queue; changes nothing."""
        sla = self.config.sla_s[case.priority]
        agents = self.eligible(case, now)
        if not agents:
            return Choice(case.case_id, case.category, None, case.category, sla, None,
                          self._why_queued(case, now))  # fmt: skip
        arr = self._arrays(case.category, agents, now)
        log_factor = self._log_factor(case)
        est = self._cost(arr, case, log_factor, now)
        i = int(np.argmin(est["cost"]))
        if not np.isfinite(est["cost"][i]):
            why = ["every agent who can take it is full until after the end of their shift"]
            return Choice(case.case_id, case.category, None, case.category, sla, None, why)
        return self._choice(case, agents[i], arr, est, i, log_factor, len(agents))

    def route(self, case: CaseInfo, now: float) -> Choice:
        """`choose`, then the chosen agent takes a slot."""
        choice = self.choose(case, now)
        if choice.agent_id is not None:
            self.assign(choice.agent_id)
        return choice

    def _choice(
        self, case: CaseInfo, agent: Agent, arr: dict[str, np.ndarray],
        est: dict[str, np.ndarray], i: int, log_factor: float, candidates: int,
    ) -> Choice:  # fmt: skip
        e = Estimate(
            handle_s=float(est["handle"][i]), wait_s=float(est["wait"][i]),
            resolution_s=float(est["resolution"][i]), quality=float(arr["q"][i]),
            p_breach=float(est["p"][i]), cost=float(est["cost"][i]),
            cases=int(arr["cases"][i]), level=int(arr["level"][i]),
        )  # fmt: skip
        team_mean, _, _ = self._team_prior(case.category)
        reasons = [
            f"skill {case.category}: level {e.level}, best of {candidates} who can take it",
            f"history: {e.cases} similar cases; expected handle {fmt_duration(e.handle_s)} "
            f"(team median {fmt_duration(math.exp(team_mean))})"
            + (", shrunk towards the team" if e.cases < 4 * self.config.shrinkage else ""),
            (
                f"waits about {fmt_duration(e.wait_s)} for a slot"
                if e.wait_s > 0
                else "a slot is free"
            )
            + f" (load {agent.load} of capacity {agent.capacity})",
            f"SLA {case.priority} {fmt_duration(self.config.sla_s[case.priority])}: "
            f"breach risk {e.p_breach:.0%}"
            + (" over the priorities the text model gives it" if case.priority_probs else "")
            + f", expected quality {e.quality:.0%}",
        ]
        if abs(log_factor) >= 0.05:
            words = describe(case.features)
            reasons.append(
                f"order: handle time x{math.exp(log_factor):.2f}"
                + (f" ({', '.join(words)})" if words else "")
            )
        if case.language and agent.languages:
            reasons.append(f"speaks {case.language}")
        return Choice(case.case_id, case.category, agent.agent_id, case.category,
                      self.config.sla_s[case.priority], e, reasons)  # fmt: skip

    def _why_queued(self, case: CaseInfo, now: float) -> list[str]:
        skilled = [a for a in self.agents.values() if a.takes(case.category) > 0]
        if not skilled:
            return [f"no agent has the skill {case.category}: waits in its queue"]
        speaking = [a for a in skilled if a.speaks(case.language)]
        if not speaking:
            return [f"no agent with the skill {case.category} speaks {case.language}"]
        here = [a for a in speaking if a.state == "available" and a.on_shift(now)]
        if not here:
            return [f"no agent with the skill {case.category} is available and on shift"]
        return [f"every agent with the skill {case.category} is at capacity: waits in its queue"]

    # -- backlog -----------------------------------------------------------------------
    def assign_batch(
        self, cases: Iterable[CaseInfo], now: float, max_cases: int = 500
    ) -> list[Choice]:
        """Assigns the backlog as one problem (see the module's docstring) and applies it.
        Every case gets a Choice, assigned or queued; at most `max_cases` are solved at once,
        by priority then age; the rest stay queued."""
        order = sorted(cases, key=lambda c: (-PRIORITIES.index(c.priority), c.created_at))
        solve, rest = order[:max_cases], order[max_cases:]
        slots: list[tuple[Agent, int]] = []
        cap = self.config.agent_queue_max
        for a in self.agents.values():
            if a.state == "available" and a.on_shift(now):
                slots.extend((a, k) for k in range(max(a.capacity + cap - a.load, 0)))
        out: dict[str, Choice] = {}
        if solve and slots:
            out = self._solve(solve, slots, now)
        for case in order:
            if case.case_id not in out:
                out[case.case_id] = self.choose_queued(case, now)
        for choice in out.values():
            if choice.agent_id is not None:
                self.assign(choice.agent_id)
        return [out[c.case_id] for c in (*solve, *rest)]

    def choose_queued(self, case: CaseInfo, now: float) -> Choice:
        why = self._why_queued_batch(case, now)
        sla = self.config.sla_s[case.priority]
        return Choice(case.case_id, case.category, None, case.category, sla, None, why)

    def _why_queued_batch(self, case: CaseInfo, now: float) -> list[str]:
        if self.eligible(case, now):
            return ["left queued: the free slots serve more pressing cases"]
        return self._why_queued(case, now)

    def _defer_s(self, case: CaseInfo, now: float, waiting: int) -> float:
        """How long a case left queued waits for a slot: the `waiting` cases of its category
        over the rate at which the slots of everyone who could take it free up (capacity /
        expected handle time, summed), and at least `defer_s`."""
        able = [
            a for a in self.agents.values()
            if a.state == "available" and a.on_shift(now) and a.takes(case.category) > 0
            and a.speaks(case.language)
        ]  # fmt: skip
        if not able:
            return self.config.defer_s
        arr = self._arrays(case.category, able, now)
        rate = float(np.sum(arr["cap"] / np.exp(arr["mu"] + 0.5 * arr["sigma"] ** 2)))
        return max(self.config.defer_s, waiting / rate)

    def _solve(
        self, cases: list[CaseInfo], slots: list[tuple[Agent, int]], now: float
    ) -> dict[str, Choice]:
        n, m = len(cases), len(slots)
        cost = np.full((n, m + n), INFEASIBLE)
        keep: dict[
            tuple[int, int], tuple[dict[str, np.ndarray], dict[str, np.ndarray], int, float]
        ] = {}
        by_agent: dict[str, list[int]] = {}
        for j, (a, _) in enumerate(slots):
            by_agent.setdefault(a.agent_id, []).append(j)
        agents = [self.agents[a] for a in by_agent]
        backlog = Counter(case.category for case in cases)
        for i, case in enumerate(cases):
            able = [
                a for a in agents
                if a.takes(case.category) > 0 and a.speaks(case.language)
                and a.agent_id not in case.exclude
            ]  # fmt: skip
            if not able:
                continue
            arr = self._arrays(case.category, able, now)
            lf = self._log_factor(case)
            best_late = math.inf
            for k in range(max(len(by_agent[a.agent_id]) for a in able)):
                est = self._cost(arr, case, lf, now, extra=k)
                for col, a in enumerate(able):
                    js = by_agent[a.agent_id]
                    if k < len(js):
                        cost[i, js[k]] = min(est["cost"][col], INFEASIBLE)
                        keep[(i, js[k])] = (arr, est, col, lf)
                if k == 0:
                    defer = self._defer_s(case, now, backlog[case.category])
                    later = replace(case, created_at=case.created_at - defer)
                    late = self._cost(arr, later, lf, now)
                    best_late = float(np.min(late["cost"])) + defer
            cost[i, m + i] = min(best_late, INFEASIBLE / 2)  # leaving it queued is always possible
        rows, cols = linear_sum_assignment(cost)
        out: dict[str, Choice] = {}
        for i, j in zip(rows, cols, strict=True):
            if j < m and cost[i, j] < INFEASIBLE:
                arr, est, col, lf = keep[(i, j)]
                agent = slots[j][0]
                choice = self._choice(cases[i], agent, arr, est, col, lf, len(arr["mu"]))
                choice.reasons.insert(0, f"assigned with {n - 1} other backlog cases at once")
                out[cases[i].case_id] = choice
        return out
