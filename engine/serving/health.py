"""What the engine tells health checkers, and how it keeps telling them.

gRPC health (`grpc.health.v1.Health`) answers for:
- `""` and each served API (`ordersight.v1.OrderRisk`, `ordersight.v1.ModelAdmin`): SERVING
  while the engine can make decisions. The rule fallback always can, so only a decision log
  that cannot be written under `log_on_failure = "fail_closed"` (every call refused) makes
  them NOT_SERVING. `ordersight.v1.Forecasting`: SERVING while a forecast model serves.
- one service per component, SERVING while that part works, NOT_SERVING while it is down:
  `ordersight.tier_one` and `ordersight.tier_two` (the served model set holds it),
  `ordersight.decision_log` (its last write succeeded), `ordersight.snapshots` (the last
  snapshot was written), `ordersight.replication` (connected to NATS, no message dropped
  in the last `report_s`), `ordersight.forecast` (a forecast model serves). A component
  that is not configured is not listed (NOT_FOUND).

`Health.run` re-evaluates every `check_s` and publishes changes at once (to the server's own
health servicer, or to every front process over the link); while anything is down it logs
one line naming what and why every `report_s`, and `ordersight_component_up{component}` and
`ordersight_degraded` carry the same as metrics.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

from prometheus_client import CollectorRegistry, Gauge

from engine.serving.frames import SERVICES

if TYPE_CHECKING:
    from engine.decision.cascade import Engine
    from engine.decision_log.writer import DecisionLog
    from engine.monitoring.alert_hub import AlertHub
    from engine.serving.forecasting import ForecastService
    from engine.serving.replication import Replication
    from engine.serving.reviews import Reviews
    from engine.serving.routing import RoutingService
    from engine.serving.snapshots import Snapshots

log = logging.getLogger(__name__)

TIER_ONE, TIER_TWO = "ordersight.tier_one", "ordersight.tier_two"
DECISION_LOG, SNAPSHOTS, REPLICATION, FORECAST = (
    "ordersight.decision_log",
    "ordersight.snapshots",
    "ordersight.replication",
    "ordersight.forecast",
)
OVERALL = ("", *SERVICES)
FORECASTING = "ordersight.v1.Forecasting"
STORE, REVIEWS = "ordersight.store", "ordersight.v1.Reviews"
ROUTER, ROUTING = "ordersight.routing", "ordersight.v1.Routing"

Status = dict[str, bool]
"""Service name → SERVING (True) or NOT_SERVING."""
Publish = Callable[[Status], object]


class Health:
    def __init__(
        self,
        engine: Engine,
        *,
        hub: AlertHub | None = None,
        decision_log: DecisionLog | None = None,
        snapshots: Snapshots | None = None,
        replication: Replication | None = None,
        forecasting: ForecastService | None = None,
        reviews: Reviews | None = None,
        routing: RoutingService | None = None,
        registry: CollectorRegistry | None = None,
        check_s: float = 1.0,
        report_s: float = 60.0,
    ) -> None:
        self.engine = engine
        self.hub = hub
        self.decision_log = decision_log
        self.snapshots = snapshots
        self.replication = replication
        self.forecasting = forecasting
        self.reviews = reviews
        self.routing = routing
        self.check_s, self.report_s = check_s, report_s
        self.current: Status = {}
        self.why: dict[str, str] = {}
        self._publishers: list[Publish] = []
        self._dropped_seen = 0  # replication drops already reported
        r = registry or CollectorRegistry()
        self.m_up = Gauge(
            "ordersight_component_up", "1 while the component works, 0 while it is down",
            ["component"], registry=r,
        )  # fmt: skip
        self.m_degraded = Gauge(
            "ordersight_degraded", "1 while any component is down (see ordersight_component_up)",
            registry=r,
        )  # fmt: skip
        self._dropped_at = -float("inf")  # when replication last dropped a message

    def components(self) -> dict[str, str]:
        """Each configured component's problem ("" while it works)."""
        m = self.engine.models
        out = {
            TIER_ONE: "" if m.tier1 is not None else _problem(m.problems, "tier one", m.version),
            TIER_TWO: "" if m.tier2 is not None else _problem(m.problems, "tier two", m.version),
        }
        if self.decision_log is not None:
            out[DECISION_LOG] = self.decision_log.error
        if self.snapshots is not None:
            out[SNAPSHOTS] = self.snapshots.error
        if self.replication is not None:
            out[REPLICATION] = self._replication_problem()
        if self.forecasting is not None:
            out[FORECAST] = self.forecasting.problem()
        if self.reviews is not None:
            out[STORE] = self.reviews.problem
        if self.routing is not None:
            out[ROUTER] = self.routing.problem
        return out

    def _replication_problem(self) -> str:
        r = self.replication
        assert r is not None
        if not r.connected:
            return "not connected to the NATS server"
        now = time.monotonic()
        if r.n_dropped > self._dropped_seen:
            self._dropped_seen, self._dropped_at = r.n_dropped, now
        if now - self._dropped_at < self.report_s:  # down for a while after the last drop
            return f"messages dropped ({r.n_dropped} in all): the stream is slower than the orders"
        return ""

    def evaluate(self) -> Status:
        problems = self.components()
        self.why = {k: v for k, v in problems.items() if v}
        log_ = self.decision_log
        decide = not (log_ is not None and log_.refusing)
        status = {name: decide for name in OVERALL}
        # Forecasting serves while a forecast model is loaded, whatever the risk engine does.
        status[FORECASTING] = FORECAST in problems and not problems[FORECAST]
        status[REVIEWS] = STORE in problems and not problems[STORE]  # no store: no queue
        status[ROUTING] = ROUTER in problems and not problems[ROUTER]
        status.update({k: not v for k, v in problems.items()})
        for k, v in problems.items():
            self.m_up.labels(k).set(0 if v else 1)
            if self.hub is not None:
                self.hub.component(k, v)
        self.m_degraded.set(1 if self.why else 0)
        return status

    def subscribe(self, publish: Publish) -> None:
        """`publish(status)` now and on every change."""
        self._publishers.append(publish)
        publish(dict(self.current or self.evaluate()))

    def check(self) -> bool:
        """Re-evaluate and publish a change; True when something changed."""
        status = self.evaluate()
        changed = status != self.current
        if changed:
            went = [k for k, up in status.items() if not up and self.current.get(k, True)]
            back = [k for k, up in status.items() if up and not self.current.get(k, True)]
            for k in went:
                log.error("health: %s is NOT_SERVING: %s", k or "the engine", self._reason(k))
            for k in back:
                log.info("health: %s is SERVING again", k or "the engine")
            self.current = status
            for publish in self._publishers:
                publish(dict(status))
        return changed

    def _reason(self, name: str) -> str:
        if name in self.why:
            return self.why[name]
        if name == REVIEWS:
            return self.why.get(STORE, "no store configured")
        if name == ROUTING:
            return self.why.get(ROUTER, "no store configured")
        if name == FORECASTING:
            return self.why.get(FORECAST, "no forecast model configured")
        return f"the decision log refuses every call ({self.why.get(DECISION_LOG, '')})"

    def report(self) -> None:
        """One line naming every component that is down, and why."""
        if self.why:
            log.warning(
                "degraded: %s",
                "; ".join(f"{k} down ({v})" for k, v in sorted(self.why.items())),
            )

    async def run(self) -> None:
        last_report = time.monotonic()
        self.report()
        while True:
            await asyncio.sleep(min(self.check_s, self.report_s))
            try:
                self.check()
                now = time.monotonic()
                if now - last_report >= self.report_s:
                    self.report()
                    last_report = now
            except Exception:  # a bug here must not freeze health at its last answer
                log.exception("health check failed")


def _problem(problems: list[str], part: str, version: str) -> str:
    for p in problems:
        if p.startswith(part):
            return p
    return f"model set {version} has no {part}"
