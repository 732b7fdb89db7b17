"""The router's arithmetic against plain formulas: shrinkage, shifts, the backlog assignment
against brute force, the difficulty model, eligibility."""

from __future__ import annotations

import itertools
import math
import random

import numpy as np
import pytest
from scipy.special import ndtr

from engine.routing.order_features import FEATURES, Line, features, vector
from engine.routing.router import PRIORITIES, Agent, CaseInfo, Router, RouterConfig
from engine.routing.text_prep import GENERAL

MONDAY_9 = 1767571200.0 + 9 * 3600  # 2026-01-05 09:00 UTC, a Monday


def _router(**config: object) -> Router:
    return Router(RouterConfig(**config))  # type: ignore[arg-type]


def test_the_estimate_is_the_shrunk_history_with_its_sla_risk() -> None:
    r = _router(shrinkage=5.0, level_step=0.1)
    r.upsert_agent(Agent("a", skills={"x": 4}, capacity=1))
    r.upsert_agent(Agent("b", skills={"x": 2}, capacity=1))
    case = CaseInfo("c", "x", "high", created_at=MONDAY_9 - 600)
    handles = {"a": [300.0, 420.0], "b": [900.0] * 10}
    for agent, hs in handles.items():
        for h in hs:
            r.assign(agent)
            r.complete(agent, case, handle_s=h, quality=1.0 if agent == "a" else 0.5)
    logs = [math.log(h) for hs in handles.values() for h in hs]
    team_mean, sigma = np.mean(logs), np.std(logs, ddof=1)
    prior_a = team_mean - 0.1 * (4 - 3)
    mu_a = (sum(math.log(h) for h in handles["a"]) + 5 * prior_a) / (2 + 5)
    team_q = (2 * 1.0 + 10 * 0.5) / 12
    q_a = (2 * 1.0 + 5 * team_q) / 7
    est = r.choose(case, MONDAY_9).estimate
    assert est is not None
    assert est.handle_s == pytest.approx(math.exp(mu_a + sigma**2 / 2))
    assert est.quality == pytest.approx(q_a)
    room = 4 * 3600 - 600
    assert est.p_breach == pytest.approx(1 - ndtr((math.log(room) - mu_a) / sigma))
    assert est.resolution_s == pytest.approx(600 + est.handle_s)


def test_a_full_agent_makes_the_case_wait_by_its_load() -> None:
    r = _router(agent_queue_max=3)
    r.upsert_agent(Agent("a", skills={"x": 3}, capacity=2, load=3))
    case = CaseInfo("c", "x", "normal", created_at=MONDAY_9)
    est = r.choose(case, MONDAY_9).estimate
    assert est is not None
    assert est.wait_s == pytest.approx(2 * est.handle_s / 2)  # two ahead of it, two slots
    r.set_state("a", load=5)
    assert r.choose(case, MONDAY_9).agent_id is None  # capacity 2 + a queue of 3


@pytest.mark.parametrize(
    ("start", "end", "days", "when", "on"),
    [
        (480, 1020, "1111100", MONDAY_9, True),
        (480, 1020, "1111100", MONDAY_9 + 5 * 86400, False),  # Saturday
        (480, 1020, "1111100", MONDAY_9 + 9 * 3600, False),  # 18:00
        (1320, 360, "1000000", MONDAY_9 + 14 * 3600, True),  # Monday 23:00, a night shift
        (1320, 360, "1000000", MONDAY_9 + 19 * 3600, True),  # Tuesday 04:00, same shift
        (1320, 360, "1000000", MONDAY_9 - 6 * 3600, False),  # Monday 03:00: Sunday's shift
    ],
)
def test_shifts(start: int, end: int, days: str, when: float, on: bool) -> None:
    assert Agent("a", shift_start=start, shift_end=end, shift_days=days).on_shift(when) is on


def test_who_can_take_a_case() -> None:
    r = _router()
    r.upsert_agent(Agent("en", skills={"x": 5}, languages=frozenset({"en"})))
    r.upsert_agent(Agent("away", skills={"x": 5}, state="away"))
    r.upsert_agent(Agent("night", skills={"x": 5}, shift_start=1320, shift_end=360))
    r.upsert_agent(Agent("gen", skills={"general": 1}))
    assert r.choose(CaseInfo("c", "x", "low", "de"), MONDAY_9).agent_id is None
    assert r.choose(CaseInfo("c", "x", "low", "en"), MONDAY_9).agent_id == "en"
    assert r.choose(CaseInfo("c", GENERAL, "low", "de"), MONDAY_9).agent_id == "gen"
    why = r.choose(CaseInfo("c", "y", "low"), MONDAY_9).reasons
    assert "no agent has the skill y" in why[0]


def _brute_force(r: Router, cases: list[CaseInfo], now: float) -> float:
    """The least total cost over every way to give each case a slot or leave it queued."""
    slots = [(a, k) for a in r.agents.values() for k in range(a.capacity + 1 - a.load)]
    best = math.inf
    options = list(range(-1, len(slots)))
    for pick in itertools.product(options, repeat=len(cases)):
        used = [p for p in pick if p >= 0]
        if len(used) != len(set(used)):
            continue
        total = 0.0
        for case, p in zip(cases, pick, strict=True):
            if p < 0:
                total += _defer_cost(r, case, now, cases)
                continue
            agent, k = slots[p]
            if agent.takes(case.category) == 0:
                total = math.inf
                break
            arr = r._arrays(case.category, [agent], now)
            total += float(r._cost(arr, case, r._log_factor(case), now, extra=k)["cost"][0])
        best = min(best, total)
    return best


def _defer_cost(r: Router, case: CaseInfo, now: float, backlog: list[CaseInfo]) -> float:
    able = [a for a in r.agents.values() if a.takes(case.category)]
    arr = r._arrays(case.category, able, now)
    defer = r._defer_s(case, now, sum(c.category == case.category for c in backlog))
    later = CaseInfo(case.case_id, case.category, case.priority, case.language, case.features,
                     case.created_at - defer)  # fmt: skip
    return float(np.min(r._cost(arr, later, r._log_factor(case), now)["cost"])) + defer


@pytest.mark.parametrize("seed", range(4))
def test_the_backlog_assignment_is_the_least_total_cost(seed: int) -> None:
    rng = random.Random(seed)
    r = _router()
    for name in ("a", "b"):
        r.upsert_agent(Agent(name, skills={"x": rng.randint(1, 5), "y": rng.randint(1, 5)},
                             capacity=1, load=rng.randint(0, 1)))  # fmt: skip
    for _ in range(20):  # some history, different per agent
        a = rng.choice("ab")
        r.assign(a)
        r.complete(a, CaseInfo("h", rng.choice("xy"), "normal"), rng.uniform(300, 3000), 1.0)
    cases = [
        CaseInfo(
            f"c{i}",
            rng.choice("xy"),
            rng.choice(PRIORITIES),
            created_at=MONDAY_9 - rng.uniform(0, 20_000),
        )  # fmt: skip
        for i in range(4)
    ]
    want = _brute_force(r, cases, MONDAY_9)
    defer = {c.case_id: _defer_cost(r, c, MONDAY_9, cases) for c in cases}  # before loads change
    choices = {c.case_id: c for c in r.assign_batch(cases, MONDAY_9)}
    got = 0.0
    for case in cases:
        ch = choices[case.case_id]
        got += ch.estimate.cost if ch.estimate is not None else defer[case.case_id]
    assert got == pytest.approx(want, rel=1e-9)


def test_under_contention_urgent_cases_get_the_slots() -> None:
    r = _router()
    r.upsert_agent(Agent("a", skills={"x": 3}, capacity=1))
    cases = [CaseInfo(f"low{i}", "x", "low", created_at=MONDAY_9 - 60) for i in range(5)]
    cases.append(CaseInfo("urgent", "x", "urgent", created_at=MONDAY_9 - 600))
    got = [c for c in r.assign_batch(cases, MONDAY_9) if c.agent_id is not None]
    assert got[0].case_id == "urgent"  # the free slot; a low case may take the queue's
    assert r.agents["a"].load == len(got) <= 2


def test_the_difficulty_model_learns_what_lengthens_a_case() -> None:
    r = _router(difficulty_min_cases=30)
    r.upsert_agent(Agent("a", skills={"x": 3}, capacity=1000))
    rng = random.Random(1)
    plain = features(amount=500.0, lines=[Line("s", "server", 1)])
    custom = features(amount=500.0, lines=[Line("s", "server", 1, True)], payment_terms="net120")
    for i in range(400):
        f = custom if i % 2 else plain
        base = 3.0 if i % 2 else 1.0  # built to order with negotiated terms: three times as long
        r.assign("a")
        r.complete(
            "a",
            CaseInfo(f"h{i}", "x", "normal", features=f),
            600 * base * rng.lognormvariate(0, 0.1),
            1.0,
        )
    ratio = math.exp(r._log_factor(CaseInfo("c", "x", "normal", features=custom))
                     - r._log_factor(CaseInfo("c", "x", "normal", features=plain)))  # fmt: skip
    assert ratio == pytest.approx(3.0, rel=0.1)
    ch = r.choose(CaseInfo("c", "x", "normal", features=custom, created_at=MONDAY_9), MONDAY_9)
    assert any("built to order" in reason for reason in ch.reasons)


def test_order_features_are_bounded_and_named() -> None:
    lines = [Line("s", c, 1, True) for c in "abcdefg"] * 5
    f = features(amount=1e12, lines=lines, payment_terms="NET30", customer_tier="key",
                 customer_orders=0, risk_reasons=9)  # fmt: skip
    assert tuple(f) == FEATURES
    assert all(0.0 <= v <= 1.5 for v in f.values())
    assert f["nonstandard_terms"] == 0.0 and f["new_customer"] == 1.0
    assert vector(f)[0] == 1.0 and len(vector(f)) == len(FEATURES) + 1


def test_a_bounced_case_counts_as_quality_zero_at_the_agents_own_pace() -> None:
    r = _router()
    r.upsert_agent(Agent("a", skills={"x": 3}, capacity=2))
    case = CaseInfo("c", "x", "normal", created_at=MONDAY_9)
    for _ in range(10):
        r.assign("a")
        r.complete("a", case, 1200.0, 1.0)
    before = r.choose(case, MONDAY_9).estimate
    r.assign("a")
    r.bounce("a", case)
    after = r.choose(case, MONDAY_9).estimate
    assert before is not None and after is not None
    assert after.quality < before.quality
    assert after.handle_s == pytest.approx(before.handle_s, rel=0.05)
    assert r.agents["a"].load == 0


def test_an_unsure_priority_weighs_every_priority_it_may_be() -> None:
    r = _router()
    r.upsert_agent(Agent("a", skills={"x": 3}, capacity=1))
    old = MONDAY_9 - 3000  # 50 minutes old: an urgent case (1 h) is close to its SLA
    sure = r.choose(CaseInfo("c", "x", "low", created_at=old), MONDAY_9).estimate
    unsure = r.choose(
        CaseInfo("c", "x", "low", created_at=old,
                 priority_probs={"low": 0.6, "normal": 0.1, "high": 0.1, "urgent": 0.2}),
        MONDAY_9,
    ).estimate  # fmt: skip
    assert sure is not None and unsure is not None
    urgent = r.choose(CaseInfo("c", "x", "urgent", created_at=old), MONDAY_9).estimate
    assert urgent is not None
    assert sure.p_breach < 0.01 < unsure.p_breach
    assert unsure.p_breach >= 0.2 * urgent.p_breach
    assert unsure.cost > sure.cost


def test_a_case_never_waits_for_a_slot_past_the_end_of_a_shift() -> None:
    r = _router(agent_queue_max=2)
    ends_soon = Agent("a", skills={"x": 3}, capacity=1, load=1, shift_start=480, shift_end=550)
    r.upsert_agent(ends_soon)  # 09:10 ends its shift: ten minutes after MONDAY_9
    assert ends_soon.shift_left(MONDAY_9) == pytest.approx(600)
    got = r.choose(CaseInfo("c", "x", "normal", created_at=MONDAY_9), MONDAY_9)
    assert got.agent_id is None and "end of their shift" in got.reasons[0]
    r.set_state("a", load=0)  # a free slot: the agent finishes the case after its shift
    assert r.choose(CaseInfo("c", "x", "normal", created_at=MONDAY_9), MONDAY_9).agent_id == "a"
    with pytest.raises(ValueError, match="state"):
        r.set_state("a", state="lunch")


def test_an_agent_who_sent_a_case_back_is_not_given_it_again() -> None:
    r = _router()
    for name in ("a", "b"):
        r.upsert_agent(Agent(name, skills={"x": 3}, capacity=1))
    case = CaseInfo("c", "x", "normal", created_at=MONDAY_9)
    first = r.choose(case, MONDAY_9).agent_id
    again = r.choose(
        CaseInfo("c", "x", "normal", created_at=MONDAY_9, exclude=frozenset({first})), MONDAY_9
    )
    assert again.agent_id not in (None, first)


def test_an_average_order_has_a_handle_time_factor_of_one() -> None:
    r = _router(difficulty_min_cases=30)
    r.upsert_agent(Agent("a", skills={"x": 3}, capacity=1000))
    rng = random.Random(2)
    for i in range(300):
        f = features(amount=rng.uniform(200, 90_000), customer_tier=rng.choice(["key", "new", ""]))
        r.assign("a")
        r.complete(
            "a", CaseInfo(f"h{i}", "x", "normal", features=f), 900 * rng.lognormvariate(0, 0.3), 1.0
        )
    mean = dict(zip(FEATURES, r.difficulty.mean[1:], strict=True))
    assert abs(r._log_factor(CaseInfo("m", "x", "normal", features=mean))) < 1e-9
