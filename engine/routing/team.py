"""What the router reasons about: agents (skills, languages, capacity, shifts, state, load),
their completed cases per category (`Perf`), a case (`CaseInfo`), the router's settings, its
estimates and choices, and the difficulty model (`Difficulty`). `engine.routing.router`
scores with them; the store (`engine.store.routing`) keeps agents and `Perf` rows."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np

from engine.routing.order_features import FEATURES
from engine.routing.text_prep import GENERAL

PRIORITIES = ("low", "normal", "high", "urgent")
STATES = ("available", "away", "offline")
GENERAL_SKILL = "general"
ALL_DAYS = "1111111"
DAY_S = 86_400.0
INFEASIBLE = 1e15


@dataclass
class Agent:
    agent_id: str
    skills: dict[str, int] = field(default_factory=dict)  # category -> level 1..5
    languages: frozenset[str] = frozenset()  # empty: any language
    capacity: int = 1
    shift_start: int = 0  # minute of the UTC day, 0..1439
    shift_end: int = 1440  # 1..1440; at or below start: the shift runs over midnight
    shift_days: str = ALL_DAYS  # Monday first, "1" = works that day (the day a shift starts)
    state: str = "available"
    load: int = 0
    name: str = ""
    team: str = ""

    def on_shift(self, t: float) -> bool:
        day = int(t // DAY_S)
        minute = (t - day * DAY_S) / 60.0
        weekday = (day + 3) % 7  # 1970-01-01 was a Thursday
        s, e = self.shift_start, self.shift_end
        if s < e:
            return self.shift_days[weekday] == "1" and s <= minute < e
        return (self.shift_days[weekday] == "1" and minute >= s) or (
            self.shift_days[(weekday - 1) % 7] == "1" and minute < e
        )

    def shift_left(self, t: float) -> float:
        """Seconds until the shift under way at `t` ends (inf for a shift of the whole day)."""
        if self.shift_end - self.shift_start in (1440, 0) and self.shift_days == ALL_DAYS:
            return math.inf
        minute = (t % DAY_S) / 60.0
        left = (self.shift_end - minute) % 1440.0
        return left * 60.0

    def takes(self, category: str) -> int:
        """The agent's level for `category` (0: it does not take such cases)."""
        if category == GENERAL:
            return self.skills.get(GENERAL_SKILL, 0)
        return self.skills.get(category, 0)

    def speaks(self, language: str) -> bool:
        return not language or not self.languages or language in self.languages


@dataclass
class Perf:
    """Completed cases of one agent (or the whole team) in one category."""

    cases: int = 0
    sum_log: float = 0.0  # of ln(handle seconds) less the order's difficulty
    sumsq_log: float = 0.0
    sum_quality: float = 0.0

    def add(self, log_handle: float, quality: float) -> None:
        self.cases += 1
        self.sum_log += log_handle
        self.sumsq_log += log_handle * log_handle
        self.sum_quality += quality


@dataclass(frozen=True)
class CaseInfo:
    case_id: str
    category: str  # the skill it needs (the text model's prediction, GENERAL, or given)
    priority: str  # one of PRIORITIES
    language: str = ""
    features: Mapping[str, float] = field(default_factory=dict)
    created_at: float = 0.0
    priority_probs: Mapping[str, float] | None = None
    """When the priority was read from text: each priority's probability. The SLA risk is
    then the expectation over them, so a case the model is unsure of is not treated as low."""
    exclude: frozenset[str] = frozenset()
    """Agents who sent the case back: not given it again."""


@dataclass(frozen=True)
class RouterConfig:
    sla_s: Mapping[str, float] = field(
        default_factory=lambda: {"urgent": 3600.0, "high": 4 * 3600.0,
                                 "normal": 8 * 3600.0, "low": 24 * 3600.0}
    )  # fmt: skip
    """Time to resolution each priority promises, from the case's creation."""
    sla_weight: Mapping[str, float] = field(
        default_factory=lambda: {"urgent": 8 * 3600.0, "high": 4 * 3600.0,
                                 "normal": 2 * 3600.0, "low": 3600.0}
    )  # fmt: skip
    """What a certain breach costs, in seconds of resolution time."""
    shrinkage: float = 5.0
    default_handle_s: float = 1800.0
    default_sigma: float = 0.6
    default_quality: float = 0.9
    level_step: float = 0.1
    agent_queue_max: int = 1
    """Cases an agent may hold beyond its capacity (waiting for one of its slots)."""
    defer_s: float = 900.0
    difficulty_min_cases: int = 30
    """Completed cases before the order's difficulty scales handle times."""
    ridge: float = 3.0

    def check(self) -> None:
        for name in ("sla_s", "sla_weight"):
            got = getattr(self, name)
            if set(got) != set(PRIORITIES) or not all(v > 0 for v in got.values()):
                raise ValueError(f"routing {name}: a positive value for each of {PRIORITIES}")
        if self.shrinkage < 0 or self.default_handle_s <= 0 or self.default_sigma <= 0:
            raise ValueError("routing: shrinkage >= 0, default_handle_s and default_sigma > 0")
        if not 0 <= self.default_quality <= 1 or self.agent_queue_max < 0 or self.defer_s <= 0:
            raise ValueError(
                "routing: default_quality in [0, 1], agent_queue_max >= 0, defer_s > 0"
            )


@dataclass
class Estimate:
    handle_s: float
    wait_s: float
    resolution_s: float  # from the case's creation
    quality: float
    p_breach: float
    cost: float
    cases: int  # the agent's completed cases in the category
    level: int


@dataclass
class Choice:
    case_id: str
    category: str
    agent_id: str | None  # None: waits in `queue`
    queue: str
    sla_s: float
    estimate: Estimate | None
    reasons: list[str]


class Difficulty:
    """Ridge regression of ln(handle / the agent's expected handle) on the order's features,
    from sufficient statistics, so one completed case updates it exactly in O(k^2). The
    intercept is fitted and not applied, and features are taken from their mean: an order
    like the average one has factor 1, and only what sets an order apart moves it."""

    def __init__(self, ridge: float, min_cases: int) -> None:
        k = len(FEATURES) + 1
        self.xtx = np.eye(k) * ridge
        self.xtx[0, 0] = 1e-6  # the intercept is not shrunk
        self.xty = np.zeros(k)
        self.cases = 0
        self.min_cases = min_cases
        self._w: np.ndarray | None = None

    def add(self, x: np.ndarray, residual: float) -> None:
        self.xtx += np.outer(x, x)
        self.xty += x * residual
        self.cases += 1
        self._w = None

    @property
    def weights(self) -> np.ndarray:
        """The features' weights (intercept first), solved once per change."""
        if self._w is None:
            self._w = np.linalg.solve(self.xtx, self.xty)
        return self._w

    @property
    def mean(self) -> np.ndarray:
        """The mean feature vector of the cases learnt (intercept column included)."""
        return self.xtx[0] / max(self.cases, 1)

    def log_factor(self, x: np.ndarray) -> np.ndarray:
        """ln of the handle-time factor per row of x (0 before min_cases)."""
        if self.cases < self.min_cases:
            return np.zeros(x.shape[0])
        w = self.weights
        return np.clip((x[:, 1:] - self.mean[1:]) @ w[1:], -1.5, 1.5)

    def state(self) -> dict[str, object]:
        return {"xtx": self.xtx.tolist(), "xty": self.xty.tolist(), "cases": self.cases}

    def restore(self, state: Mapping[str, object]) -> None:
        xtx, xty = np.asarray(state["xtx"], float), np.asarray(state["xty"], float)
        if xtx.shape == self.xtx.shape and xty.shape == self.xty.shape:
            self.xtx, self.xty, self._w = xtx, xty, None
            self.cases = int(state["cases"])  # type: ignore[call-overload]


def fmt_duration(s: float) -> str:
    if s < 90:
        return f"{s:.0f} s"
    if s < 5400:
        return f"{s / 60:.0f} min"
    return f"{s / 3600:.1f} h"
