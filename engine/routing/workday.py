"""A discrete-event simulation of a working week of complex-order cases routed to agents, on
which routers are compared: the same week (arrivals, cases, agents, noise) for each.

    text = TextRouter.load(folder)                    # a model trained on other cases
    week = build_week(text, "default", seed=0)        # the world, fixed by (config, seed)
    result = run_week(week, "ordersight")             # a name of workday_agents.ROUTERS
    result.summary()                                  # resolution, SLA breaches, utilisation...
    result.cases                                      # routing_cases' columns + the truth

The world (`build_week`):
- arrivals: a Poisson process over Monday to Friday whose rate is constant within each hour
  (`HOURLY`: a morning peak, a lunch dip, nothing at night) and scaled per weekday;
- cases: text and order facts from `engine.routing.case_sim` (its `queue` is the true
  category, its `priority` the true priority), one per arrival in order; each gets a
  customer drawn from a per-tier population (a few key accounts who come back often, many
  new customers who rarely do), so a customer's tier is the same on every case, and
  customer_orders counts the customer's earlier orders;
- what routers see: the category and priority the text model predicts (GENERAL below its
  threshold), the language, the order features (`engine.routing.order_features`; a SKU
  ending R or X is built to order) and the creation time, never the truth;
- agents: `engine.routing.workday_agents.make_agents`, with their hidden performance.

The week (`run_week`, a heap of events):
- a case an agent cannot read (language) or has no skill for (its true category) is triaged
  for a few minutes and sent back; the agent corrects its category if it could read it, and
  the world routes it again; a resolved case fails its quality check with 1 - P(right) and
  comes back once, at once, to be routed again; either is rework;
- an agent works `capacity` cases at once, each at full speed, starts cases only on shift,
  and finishes the ones in hand after the shift (overtime); cases assigned to it beyond
  its slots (the Router allows `agent_queue_max`) go back to be routed when its shift ends;
- noise is drawn per case and attempt before any router runs (common random numbers), so
  differences between routers are not differences of luck.
Time is epoch seconds from Monday 2026-01-05 00:00 UTC, so shifts in UTC minutes line up.
"""

from __future__ import annotations

import heapq
import json
import math
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
import pyarrow as pa

from engine.routing.case_sim import CONFIGS as TEXT_CONFIGS
from engine.routing.case_sim import simulate_cases
from engine.routing.order_features import Line, features
from engine.routing.router import Agent, CaseInfo
from engine.routing.team import PRIORITIES
from engine.routing.text_model import TextRouter
from engine.routing.workday_agents import (
    LANGUAGE_TRIAGE_S,
    ROUTERS,
    SLA_S,
    TRIAGE_S,
    Assignment,
    Floor,
    Truth,
    WeekRouter,
    difficulty,
    make_agents,
    p_right,
    shift_length_s,
    shift_seconds,
)
from engine.store.routing import CASE_COLUMNS  # table routing_cases, in its order

EPOCH = 1_767_571_200.0  # Monday 2026-01-05 00:00 UTC
DAY_S = 86_400.0
HOURLY = {7: 0.5, 8: 1.0, 9: 1.3, 10: 1.4, 11: 1.2, 12: 0.8, 13: 0.9, 14: 1.2, 15: 1.1,
          16: 0.9, 17: 0.6}  # fmt: skip
"""Relative arrival rate per UTC hour (none outside these hours)."""
WEEKDAY = (1.1, 1.0, 1.0, 1.0, 0.9)
TEXT_COLS = ("subject", "body")
ATTEMPTS = 8  # noise drawn per case; a case's later attempts reuse it cyclically


@dataclass(frozen=True)
class WorldConfig:
    text_config: str = "default"
    """case_sim's configuration: wording, noise, German share, case mix."""
    agents: int = 18
    german_speakers: float = 0.45
    """The share of agents who speak German as well as English."""
    cases_per_day: float = 470.0
    """Expected arrivals on a Tuesday (Monday 10% more, Friday 10% fewer)."""
    days: int = 5
    customers: tuple[int, int, int] = (900, 700, 40)
    """Customers of tier new, standard and key."""


CONFIGS = {
    "default": WorldConfig(),
    "shifted": WorldConfig(text_config="shifted", agents=17, german_speakers=0.6),
}
"""`shifted`: case_sim's shifted text (other wordings, half the cases in German, another
mix), the same arrivals for one agent fewer, more of whom speak German."""


def _arrivals(cfg: WorldConfig, rng: np.random.Generator) -> np.ndarray:
    total = sum(HOURLY.values())
    times = []
    for day in range(cfg.days):
        for hour, w in HOURLY.items():
            k = rng.poisson(cfg.cases_per_day * WEEKDAY[day % 5] * w / total)
            start = EPOCH + day * DAY_S + hour * 3600.0
            times.append(start + np.sort(rng.uniform(0.0, 3600.0, k)))
    return np.concatenate(times)


def _customers(tiers: list[str], cfg: WorldConfig, rng: np.random.Generator, tag: str) -> tuple:
    """Per case: a customer of its tier and that customer's earlier orders."""
    pools, ids, orders = {}, [], []
    for t, n, skew in zip(("new", "standard", "key"), cfg.customers, (0.2, 0.9, 1.1), strict=True):
        w = (np.arange(1, n + 1) ** -skew).astype(float)
        history = {
            "new": rng.integers(0, 2, n),
            "standard": 2 + rng.geometric(0.08, n),
            "key": 30 + rng.geometric(0.01, n),
        }[t]
        pools[t] = (w / w.sum(), history)
    seen: dict[str, int] = {}
    for t in tiers:
        p, history = pools[t]
        k = int(rng.choice(len(p), p=p))
        cid = f"{tag}-{t[0]}{k:04d}"
        ids.append(cid)
        orders.append(int(history[k]) + seen.get(cid, 0))
        seen[cid] = seen.get(cid, 0) + 1
    return ids, orders


@dataclass
class Week:
    """One world: what every router is run on."""

    name: str
    seed: int
    config: WorldConfig
    cases: pa.Table
    """case_sim's columns + customer_id, customer_orders, created_at, predicted,
    confidence, predicted_priority, difficulty."""
    infos: list[CaseInfo]
    agents: list[Agent]
    truths: list[Truth]
    z: np.ndarray  # (cases, ATTEMPTS) standard normal: handle-time noise
    u: np.ndarray  # (cases, ATTEMPTS) uniform: quality checks

    @property
    def horizon(self) -> float:
        return EPOCH + self.config.days * DAY_S


def build_week(
    text: TextRouter, name: str = "default", seed: int = 0, config: WorldConfig | None = None
) -> Week:
    """The world of configuration `name` (a key of CONFIGS, or `config`) and `seed`; equal
    arguments and model, equal worlds. Its cases are case_sim's seed 1000 + `seed`: a model
    trained on another seed's cases has not seen them."""
    cfg = config or CONFIGS[name]
    if cfg.text_config not in TEXT_CONFIGS:
        raise ValueError(f"text_config must be one of {', '.join(TEXT_CONFIGS)}")
    streams = [np.random.default_rng(s) for s in np.random.SeedSequence([seed, 1776]).spawn(4)]
    times = _arrivals(cfg, streams[0])
    n = len(times)
    table = simulate_cases(max(n, 1), config=cfg.text_config, seed=1000 + seed).slice(0, n)
    col = {c: table.column(c).to_pylist() for c in table.column_names}
    cust, orders = _customers(col["customer_tier"], cfg, streams[1], f"{name}-{seed}")
    pred = text.route([col[c] for c in TEXT_COLS]) if n else None
    predicted = pred.predicted if pred else []
    priority = pred.priority if pred and pred.priority else col["priority"]
    probs = (
        [dict(zip(text.priority_labels, map(float, row), strict=True))
         for row in pred.priority_probs]
        if pred is not None and pred.priority_probs is not None
        else [None] * n
    )  # fmt: skip
    confidence = pred.confidence.astype(float).tolist() if pred else []
    agents, truths = make_agents(cfg.agents, streams[2], cfg.german_speakers)
    infos, diffs = [], []
    for i in range(n):
        built = col["sku"][i][-1] in "RX"
        f = features(
            amount=col["amount"][i], customer_tier=col["customer_tier"][i],
            customer_orders=orders[i],
            lines=[Line(col["sku"][i], col["category"][i], col["quantity"][i], built)],
        )  # fmt: skip
        infos.append(CaseInfo(col["case_id"][i], predicted[i], priority[i], col["language"][i],
                              f, float(times[i]), probs[i]))  # fmt: skip
        diffs.append(difficulty(col["amount"][i], col["quantity"][i], col["customer_tier"][i],
                                orders[i], built))  # fmt: skip
    for key, values in (("customer_id", cust), ("customer_orders", orders),
                        ("created_at", times.tolist()), ("predicted", predicted),
                        ("confidence", confidence), ("predicted_priority", priority),
                        ("difficulty", diffs)):  # fmt: skip
        table = table.append_column(key, pa.array(values))
    noise = streams[3].standard_normal((n, ATTEMPTS)), streams[3].random((n, ATTEMPTS))
    return Week(name, seed, cfg, table, infos, agents, truths, *noise)


_OFF, _FINISH, _ON, _ARRIVE = range(4)  # the order of events at one instant


@dataclass
class _Job:
    case: int
    start: float
    end: float
    shift_end: float
    triage: bool


@dataclass
class WeekResult:
    week: str
    seed: int
    router: str
    cases: pa.Table
    """CASE_COLUMNS, then true_category, true_priority, true_sla_s, sent_back, reopened,
    reworked, resolution_s, breached."""
    busy_s: np.ndarray  # per agent: slot-seconds worked on shift
    overtime_s: np.ndarray  # per agent: slot-seconds worked after the shift ended
    slot_s: np.ndarray  # per agent: capacity x seconds on shift

    def summary(self) -> dict[str, Any]:
        """The router's figures on the week; a case open at the end breaches when its SLA
        had passed by then; mean and p90 are over the resolved cases (hours)."""
        t = {c: np.asarray(self.cases.column(c).to_pylist())
             for c in ("status", "resolution_s", "breached", "reworked", "true_priority",
                       "sent_back", "reopened")}  # fmt: skip

        def figures(mask: np.ndarray) -> dict[str, Any]:
            done = mask & (t["status"] == "completed")
            res = t["resolution_s"][done] / 3600.0
            return {
                "cases": int(mask.sum()), "open": int((mask & ~done).sum()),
                "mean_h": float(res.mean()) if len(res) else math.nan,
                "p90_h": float(np.quantile(res, 0.9)) if len(res) else math.nan,
                "sla_breach": float(t["breached"][mask].mean()) if mask.any() else math.nan,
                "rework": float(t["reworked"][mask].mean()) if mask.any() else math.nan,
            }  # fmt: skip

        every = np.ones(len(t["status"]), bool)
        out = figures(every)
        out["sent_back"] = float((t["sent_back"] > 0).mean()) if len(every) else math.nan
        out["reopened"] = float(t["reopened"].mean()) if len(every) else math.nan
        out["utilisation"] = float(self.busy_s.sum() / self.slot_s.sum())
        out["overtime_h"] = float(self.overtime_s.sum() / 3600.0)
        out["by_priority"] = {p: figures(t["true_priority"] == p) for p in PRIORITIES}
        return out


class _Run:
    def __init__(self, week: Week, router: WeekRouter, floor: Floor) -> None:
        self.w, self.router, self.floor = week, router, floor
        self.agents = {a.agent_id: i for i, a in enumerate(week.agents)}
        self.exp = [dict(t.experience) for t in week.truths]
        self.done: dict[tuple[str, str], int] = {}
        n, m = len(week.infos), len(week.agents)
        self.jobs: list[list[_Job]] = [[] for _ in range(m)]
        self.waiting: list[list[int]] = [[] for _ in range(m)]
        self.shift_end = np.zeros(m)
        self.busy, self.overtime = np.zeros(m), np.zeros(m)
        self.info = list(week.infos)
        self.true = week.cases.column("queue").to_pylist()
        self.diff = week.cases.column("difficulty").to_pylist()
        self.c: dict[str, list[Any]] = {
            k: [v] * n for k, v in (
                ("status", "queued"), ("agent_id", None), ("queue", ""), ("routes", 0),
                ("attempts", 0), ("sent_back", 0), ("reopened", False), ("routed_at", None),
                ("completed_at", None), ("handle_s", None), ("quality", None),
                ("agent_level", 0), ("agent_experience", 0), ("predicted_handle_s", math.nan),
                ("predicted_resolution_s", math.nan), ("reasons", "[]"))
        }  # fmt: skip
        self.index = {info.case_id: i for i, info in enumerate(week.infos)}
        self.events: list[tuple[float, int, int, int, int]] = []
        self.seq = 0

    def push(self, t: float, kind: int, a: int, b: int = 0) -> None:
        heapq.heappush(self.events, (t, kind, self.seq, a, b))
        self.seq += 1

    def run(self) -> None:
        for i, info in enumerate(self.w.infos):
            self.push(info.created_at, _ARRIVE, i)
        length = [shift_length_s(a) for a in self.w.agents]
        for j, agent in enumerate(self.w.agents):
            for d in range(self.w.config.days):
                if agent.shift_days[d % 7] == "1":
                    start = EPOCH + d * DAY_S + agent.shift_start * 60.0
                    self.push(start, _ON, j)
                    self.push(start + length[j], _OFF, j)
        while self.events and self.events[0][0] < self.w.horizon:
            t, kind, _, a, b = heapq.heappop(self.events)
            if kind == _ARRIVE:
                self.route(a, t)
            elif kind == _FINISH:
                self.finish(a, b, t)
            elif kind == _ON:
                self.shift_end[a] = t + length[a]
                self.apply(self.router.freed(t), t)
            else:
                self.hand_back(a, t)
        for j, jobs in enumerate(self.jobs):
            for job in jobs:
                self.account(j, job, self.w.horizon)

    def route(self, i: int, now: float) -> None:
        self.c["status"][i], self.c["agent_id"][i] = "queued", None
        self.c["queue"][i] = self.info[i].category
        got = self.router.arrive(self.info[i], now)
        if got is not None:
            self.apply([got], now)

    def apply(self, assignments: list[Assignment], now: float) -> None:
        for a in assignments:
            j, i = self.agents[a.agent_id], self.index[a.case_id]
            agent = self.w.agents[j]
            if not agent.on_shift(now) or self.c["status"][i] != "queued":
                raise RuntimeError(
                    f"router {self.router.name} gave case {a.case_id} ({self.c['status'][i]}) "
                    f"to {a.agent_id}, who is {'on' if agent.on_shift(now) else 'off'} shift"
                )
            cat = self.info[i].category
            self.floor.held[a.agent_id] += 1
            c = self.c
            c["status"][i], c["agent_id"][i], c["queue"][i] = "assigned", a.agent_id, a.queue
            c["routes"][i] += 1
            c["routed_at"][i], c["agent_level"][i] = now, agent.takes(cat)
            c["agent_experience"][i] = self.done.get((a.agent_id, cat), 0)
            c["predicted_handle_s"][i], c["predicted_resolution_s"][i] = a.handle_s, a.resolution_s
            c["reasons"][i] = json.dumps(a.reasons)
            if len(self.jobs[j]) < agent.capacity:
                self.start(j, i, now)
            else:
                self.waiting[j].append(i)

    def start(self, j: int, i: int, now: float) -> None:
        agent, info, cat = self.w.agents[j], self.info[i], self.true[i]
        k = self.c["attempts"][i] % ATTEMPTS
        self.c["attempts"][i] += 1
        noise = math.exp(0.3 * self.w.z[i, k])
        if not agent.speaks(info.language):
            dur, triage = LANGUAGE_TRIAGE_S * noise, True
        elif agent.skills.get(cat, 0) == 0:
            dur, triage = TRIAGE_S * noise, True
        else:
            dur = self.w.truths[j].handle_s(agent, cat, self.diff[i], float(self.w.z[i, k]))
            triage = False
        job = _Job(i, now, now + dur, self.shift_end[j], triage)
        self.jobs[j].append(job)
        self.push(job.end, _FINISH, j, i)

    def account(self, j: int, job: _Job, end: float) -> None:
        inside = max(min(end, job.shift_end) - job.start, 0.0)
        self.busy[j] += inside
        self.overtime[j] += max(end - job.start - inside, 0.0)

    def finish(self, j: int, i: int, now: float) -> None:
        job = next(x for x in self.jobs[j] if x.case == i)
        self.jobs[j].remove(job)
        self.account(j, job, now)
        agent, c = self.w.agents[j], self.c
        self.floor.held[agent.agent_id] -= 1
        before = self.info[i]
        if agent.speaks(before.language):  # it read the case: its category is now known
            self.info[i] = replace(before, category=self.true[i])
        if job.triage:
            c["sent_back"][i] += 1
            self.router.sent_back(agent.agent_id, before, category=self.info[i].category)
            self.route(i, now)
        else:
            cat = self.true[i]
            right = self.w.u[i, (c["attempts"][i] - 1) % ATTEMPTS] < p_right(
                agent.skills[cat], self.exp[j][cat]
            )
            self.exp[j][cat] += 1
            self.done[(agent.agent_id, cat)] = self.done.get((agent.agent_id, cat), 0) + 1
            handle = now - job.start
            self.router.completed(agent.agent_id, self.info[i], handle, 1.0 if right else 0.0)
            c["handle_s"][i], c["quality"][i] = handle, 1.0 if right else 0.0
            if right or c["reopened"][i]:
                c["status"][i], c["completed_at"][i] = "completed", now
            else:
                c["reopened"][i] = True
                self.route(i, now)
        if self.waiting[j] and agent.on_shift(now):
            self.start(j, self.waiting[j].pop(0), now)
        self.apply(self.router.freed(now), now)

    def hand_back(self, j: int, now: float) -> None:
        agent = self.w.agents[j]
        for i in self.waiting[j]:
            self.floor.held[agent.agent_id] -= 1
            self.router.sent_back(agent.agent_id, self.info[i], rejected=False)
            self.route(i, now)
        self.waiting[j] = []

    def table(self) -> pa.Table:
        w, c, n = self.w, self.c, len(self.info)
        col = {k: w.cases.column(k).to_pylist() for k in (*CASE_COLUMNS, "created_at")
               if k in w.cases.column_names}  # fmt: skip
        created = np.array(col["created_at"])
        end = np.array([w.horizon if x is None else x for x in c["completed_at"]])
        true_sla = np.array([SLA_S[p] for p in col["priority"]])
        data: dict[str, Any] = {
            **col, **c, "currency": ["EUR"] * n, "source": ["order"] * n,
            "category": [x.category for x in self.info],
            "priority": [x.priority for x in self.info],
            "features": [json.dumps(x.features) for x in self.info],
            "sla_s": [SLA_S[x.priority] for x in self.info],
        }  # fmt: skip
        truth = {
            "true_category": self.true, "true_priority": col["priority"], "true_sla_s": true_sla,
            "sent_back": c["sent_back"], "reopened": c["reopened"],
            "reworked": [s > 0 or r for s, r in zip(c["sent_back"], c["reopened"], strict=True)],
            "resolution_s": np.where(np.array(c["status"]) == "completed", end - created, np.nan),
            "breached": end - created > true_sla,
        }  # fmt: skip
        types = {k: pa.float64() for k in ("routed_at", "completed_at", "handle_s", "quality")}
        types |= {"agent_id": pa.string(), "customer_orders": pa.int64()}
        cols = {k: pa.array(data[k], types.get(k)) for k in CASE_COLUMNS}
        return pa.table(cols | {k: pa.array(v) for k, v in truth.items()})


def run_week(week: Week, router: str | Callable[[Floor], WeekRouter]) -> WeekResult:
    """The week under `router`: a key of `workday_agents.ROUTERS`, or a function making a
    WeekRouter from the world's Floor; equal weeks and routers, equal results."""
    if isinstance(router, str) and router not in ROUTERS:
        raise ValueError(f"router must be one of {', '.join(ROUTERS)}, is {router!r}")
    make = ROUTERS[router] if isinstance(router, str) else router
    agents = [replace(a, skills=dict(a.skills)) for a in week.agents]
    floor = Floor(agents, {a.agent_id: 0 for a in agents})
    run = _Run(week, make(floor), floor)
    run.run()
    caps = np.array([a.capacity for a in week.agents], float)
    return WeekResult(
        week.name, week.seed, run.router.name, run.table(), run.busy, run.overtime,
        caps * shift_seconds(week.agents, week.config.days),
    )  # fmt: skip
