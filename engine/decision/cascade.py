"""The scoring pipeline: features -> tier one -> tier two or fallback -> policy -> reasons.

Knows nothing of gRPC. The server's batcher calls `Engine.score` with a micro-batch;
`score-file` calls `Engine.decide` on a replayed history. Everything after the features is
stateless per row, so both paths make the same decision from the same features.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

import numpy as np
import pyarrow as pa

from engine.decision.control import CAUSE as CONTROL_CAUSE
from engine.decision.control import in_control
from engine.decision.decisions import Decisions
from engine.decision.policy import APPROVE, FALLBACK, MODEL, SCREENED_OUT, PolicyConfig, decide
from engine.decision.reasons import Reason, model_reasons, rule_reasons, trigger_reason
from engine.features import matrix as features
from engine.features.velocity import VelocityState
from engine.jit import njit
from engine.models.artifacts import ModelSet
from engine.models.scorers import sigmoid
from engine.orders.arrays import OrderArrays
from engine.orders.batch import OrderBatch

log = logging.getLogger(__name__)


_NO_REASONS: list[Reason] = []


def _logit(p: np.ndarray) -> np.ndarray:
    p = np.clip(p, 1e-12, 1 - 1e-12)
    return np.log(p) - np.log1p(-p)


def escalation_mask(
    p1: np.ndarray,
    threshold: float,
    amount: np.ndarray,
    key_account: np.ndarray,
    policy: PolicyConfig,
) -> np.ndarray:
    """Rows tier two must see: tier one's suspects, plus high-stakes orders (high value,
    key accounts) so that a human reviewing them gets the model's reasons."""
    return (p1 >= threshold) | (amount >= policy.high_value) | key_account


@njit
def _screen(p_flag, threshold, amount, key_account, high_value, cal_x, cal_y, escalate, score, raw):
    """`escalation_mask` per row, and for screened-out rows tier one's calibrated score and
    its log-odds (`_logit`), in one pass: the same values as the NumPy expressions (tested).
    Returns the escalated rows' indices, in row order."""
    n_up = 0
    for i in range(p_flag.shape[0]):
        esc = p_flag[i] >= threshold or amount[i] >= high_value or key_account[i]
        escalate[i] = esc
        n_up += esc
        if not esc:
            s = np.interp(p_flag[i], cal_x, cal_y)
            score[i] = s
            c = min(max(s, 1e-12), 1 - 1e-12)
            raw[i] = np.log(c) - np.log1p(-c)
    up = np.empty(n_up, np.int64)
    k = 0
    for i in range(p_flag.shape[0]):
        if escalate[i]:
            up[k] = i
            k += 1
    return up


class _CostModel:
    """Predicts tier two's run time for n rows: fixed + per_row * n, learnt by EWMA."""

    def __init__(self) -> None:
        self.fixed = 50e-6
        self.per_row = 10e-6

    def predict(self, n: int) -> float:
        return self.fixed + self.per_row * n

    def observe(self, n: int, seconds: float) -> None:
        if n > 0:
            self.per_row = 0.9 * self.per_row + 0.1 * max(seconds - self.fixed, 0.0) / n


class Engine:
    """Scores orders. `featurize` (and so `score`, `score_arrays`, `report_outcomes`) changes
    the velocity state: one thread at a time, in arrival order. `decide` only reads the
    models, so chunks may be decided on other threads meanwhile."""

    def __init__(
        self,
        models: ModelSet,
        state: VelocityState,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.models = models
        self.state = state
        self.clock = clock
        self.cost = _CostModel()
        self.control_fraction = 0.0  # the pilot's control group (engine.decision.control)
        self.orders_seen = 0  # orders added to the state
        self.latest_order_time = -np.inf  # event time of the newest order scored

    def warm(self) -> None:
        """Run every kernel once and time tier two, so no request pays for compilation."""
        self.cost = self.warm_models(self.models)

    def swap(self, models: ModelSet, cost: _CostModel) -> None:
        """Serve `models` (warmed by `warm_models`) from the next batch on: `decide` reads
        the models once per batch, so a batch is one version's."""
        self.models, self.cost = models, cost

    def warm_models(self, models: ModelSet) -> _CostModel:
        """Run every kernel and path of `models` once on a scratch state (the engine's own
        is not touched) and time its tier two; its cost model is returned."""
        from engine.codec.arrow_orders import decode_table
        from engine.orders.schema import ORDER_SCHEMA

        big = models.policy.high_value * 1000  # in minor units: forces tier two and review
        order = {
            "order_id": "warm", "customer_id": "warm", "created_at": 0,
            "amount_minor": int(big), "currency": "USD", "device_id": "d", "ip": "i",
            "card_fingerprint": "c", "email_domain": "e", "address_fingerprint": "a",
            "billing_country": "US", "shipping_country": "GB", "ip_country": "FR",
            "account_created_at": 0, "key_account": True, "note": "warm",
            "items": [{"sku": "s", "category": "electronics", "quantity": 1,
                       "unit_price_minor": int(big)}],
        }  # fmt: skip
        order["created_at"] = order["account_created_at"] = 1_700_000_000 * 10**6
        orders = decode_table(pa.Table.from_pylist([order, order], schema=ORDER_SCHEMA))
        scratch = Engine(models, VelocityState(capacity=64, probe=4), self.clock)
        scratch.score(orders)
        scratch.score(orders, deadlines=np.full(2, -np.inf))  # the fallback's path
        enc = orders.arrays
        features.replay(enc, np.array([1, 0], np.int8), np.array([1.0, 2.0]), scratch.state)
        scratch.report_outcomes(enc, np.array([1, 0], np.int8), np.array([1.0, 2.0]))
        cost = _CostModel()
        tier2 = models.tier2
        if tier2 is not None:
            X = features.compute(enc, scratch.state)[:1]

            def best(n: int) -> float:
                Xn = np.repeat(X, n, axis=0)
                times = []
                for _ in range(5):
                    t0 = time.perf_counter()
                    tier2.score(Xn)
                    times.append(time.perf_counter() - t0)
                return min(times)

            one, many = best(1), best(64)
            cost.fixed = one
            cost.per_row = max(many - one, 0.0) / 63
        return cost

    def score(self, orders: OrderBatch, deadlines: np.ndarray | None = None) -> Decisions:
        """Score new, valid orders in row order and add them to the state."""
        return self.score_arrays(orders.ids, orders.arrays, deadlines)

    def score_arrays(
        self, order_ids: list[str], enc: OrderArrays, deadlines: np.ndarray | None = None
    ) -> Decisions:
        """`score` for orders given as ids and arrays."""
        return self.decide(order_ids, enc, self.featurize(enc), deadlines)

    def featurize(self, enc: OrderArrays) -> np.ndarray:
        """Features of new orders, which are added to the state: the half of `score_encoded`
        that must run in arrival order; `decide` may then run on any thread."""
        if enc.n:
            self.latest_order_time = max(self.latest_order_time, float(enc.t.max()))
            self.orders_seen += enc.n
        return features.compute(enc, self.state)

    def report_outcomes(self, enc: OrderArrays, is_fraud: np.ndarray, known_at: np.ndarray) -> None:
        """Apply known outcomes of orders (label events at `known_at`, epoch seconds)."""
        self.state.report_labels(known_at, np.asarray(is_fraud, np.int8), enc.keys)

    def decide(
        self,
        order_ids: list[str],
        enc: OrderArrays,
        X: np.ndarray,
        deadlines: np.ndarray | None = None,
        explain: bool = True,
        models: ModelSet | None = None,
    ) -> Decisions:
        """Decisions for rows whose features are computed. `explain=False` skips the reason
        codes (and leaves `raw` as the model's log-odds): for replays that only need the
        action, score and path. `models` (default: the engine's, read once) lets a caller
        decide every chunk of one call with the same version."""
        m = self.models if models is None else models
        n = enc.n
        path = np.empty(n, dtype=np.int8)
        path.fill(SCREENED_OUT)
        raw = np.zeros(n)
        base = np.zeros(n)
        causes = [""] * n
        score = np.zeros(n)
        if m.tier1 is not None:
            escalate = np.empty(n, dtype=np.bool_)
            cal_x, cal_y = m.tier1.calibration
            escalated = _screen(
                m.tier1.screen(X),
                m.tier1.threshold,
                enc.amount,
                enc.key_account,
                m.policy.high_value,
                cal_x,
                cal_y,
                escalate,
                score,
                raw,
            )
        else:
            escalated = np.arange(n)
        control = in_control(enc.keys, self.control_fraction) if self.control_fraction else None
        if control is not None:
            escalated = escalated[~control[escalated]]

        to_model, to_rules, cause = self._split_by_deadline(escalated, deadlines, m)
        if control is not None and control.any():
            controlled = np.flatnonzero(control)
            to_rules = np.concatenate([to_rules, controlled])
            cause = [*cause, *([CONTROL_CAUSE] * controlled.size)]
        if to_model.size:
            t0 = time.perf_counter()
            try:
                p2 = m.tier2.score(X[to_model])  # type: ignore[union-attr]
            except Exception as exc:
                log.exception("tier two failed on %d rows", to_model.size)
                to_rules = np.concatenate([to_rules, to_model])
                cause.extend([f"TIER2_ERROR: {type(exc).__name__}: {exc}"] * to_model.size)
                to_model = to_model[:0]
            else:
                self.cost.observe(to_model.size, time.perf_counter() - t0)
                score[to_model] = p2
                raw[to_model] = _logit(p2)
                base[to_model] = m.tier2.expected  # type: ignore[union-attr]
                path[to_model] = MODEL
        fired = None
        if to_rules.size:
            fired = m.fallback.fired(X[to_rules])
            r = m.fallback.raw(fired)
            raw[to_rules] = r
            base[to_rules] = m.fallback.bias
            score[to_rules] = sigmoid(r)
            path[to_rules] = FALLBACK
            for i, c in zip(to_rules, cause, strict=True):
                causes[i] = c

        action, triggers = decide(m.policy, score, path, enc.amount, enc.key_account, control)
        # Approved orders share one empty list (never mutated): building a list per order
        # would cost more than scoring it on a large replay.
        reasons: list[list[Reason]] = [_NO_REASONS] * n
        flagged = action != APPROVE
        flagged_rows = flagged.nonzero()[0]
        if explain and flagged_rows.size:
            to_explain = flagged_rows[path[flagged_rows] == MODEL]
            if to_explain.size:
                contrib = m.tier2.contributions(X[to_explain])  # type: ignore[union-attr]
                raw[to_explain] = contrib.sum(axis=1)
                base[to_explain] = contrib[:, -1]
                explained = model_reasons(contrib, X[to_explain], m.policy.max_reasons)
                for i, rs in zip(to_explain.tolist(), explained, strict=True):
                    reasons[i] = rs
            if fired is not None:
                for k, i in enumerate(to_rules):
                    if flagged[i]:
                        reasons[i] = rule_reasons(fired[k], m.fallback.weights)
            for i in flagged_rows.tolist():
                reasons[i] = reasons[i] + [trigger_reason(t) for t in triggers[i]]
        return Decisions(
            order_ids, action, score, raw, base, path, reasons, triggers, causes, m.version
        )

    def _split_by_deadline(
        self, escalated: np.ndarray, deadlines: np.ndarray | None, m: ModelSet
    ) -> tuple[np.ndarray, np.ndarray, list[str]]:
        """Split escalated rows between tier two and the fallback, with the fallback's cause."""
        if escalated.size == 0:
            return escalated, escalated, []
        if m.tier2 is None:
            return escalated[:0], escalated, ["MODEL_MISSING"] * escalated.size
        if deadlines is None:
            return escalated, escalated[:0], []
        remaining = deadlines[escalated] - self.clock()
        late = remaining < self.cost.predict(escalated.size)
        return escalated[~late], escalated[late], ["DEADLINE"] * int(late.sum())
