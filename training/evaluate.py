"""The held-out report: tier two alone, the rules alone and the engine's cascade, overall and
per simulated scenario, against the cascade's goals."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from engine.decision.cascade import Engine, escalation_mask
from engine.decision.policy import MODEL
from engine.features.velocity import VelocityState
from engine.models.artifacts import load
from engine.orders.arrays import OrderArrays
from training.report import binary_metrics, plot, scenario_metrics

MAX_ESCALATION = 0.15
CASCADE_RECALL = 0.99  # the goal, measured on the held-out period
REVIEW_RATE = 0.03  # share of orders the review queue can take


@dataclass
class Held:
    """The held-out period: features, final labels, orders and (simulated) scenarios."""

    X: np.ndarray
    y: np.ndarray
    orders: OrderArrays
    scenario: np.ndarray | None


def evaluate(
    out: Path, held: Held, thr1_note: str, onnx_err: float
) -> tuple[dict[str, Any], np.ndarray]:
    """Held-out metrics of tier two alone, the rules alone and the engine's cascade, overall
    and per scenario when the history names them; and the cascade's score of every held-out
    order (what serving answers: the drift reference's score)."""
    models = load(out)
    if models.problems:
        raise RuntimeError(f"freshly trained models fail to load: {models.problems}")
    policy = models.policy
    X, y = held.X, held.y
    p2 = models.tier2.score(X)  # type: ignore[union-attr]
    p1 = models.tier1.screen(X)  # type: ignore[union-attr]
    p_rules = models.fallback.score(X)
    amount, key = held.orders.amount, held.orders.key_account
    escalated = escalation_mask(p1, models.tier1.threshold, amount, key, policy)  # type: ignore[union-attr]
    flagged2 = (p2 >= policy.review_threshold) & (y == 1)
    # The engine's own decisions on the held-out rows (features already computed).
    engine = Engine(models, VelocityState(capacity=64, probe=4))
    d = engine.decide([""] * y.size, held.orders, X)
    cascade_score = d.score
    review_rate = float((p2 >= policy.review_threshold).mean())
    report = {
        "held_out_orders": int(y.size),
        "held_out_frauds": int(y.sum()),
        "tier2": binary_metrics(y, p2, REVIEW_RATE),
        "cascade": binary_metrics(y, cascade_score, REVIEW_RATE),
        "tier1_alone": binary_metrics(y, models.tier1.calibrate(p1), REVIEW_RATE),  # type: ignore[union-attr]
        "rules_alone": binary_metrics(y, p_rules, REVIEW_RATE),
        "review_rate_target": REVIEW_RATE,
        "tier2_flag_rate": review_rate,
        "tier1_escalation_rate": float(escalated.mean()),
        "tier1_escalation_rate_screener_only": float((p1 >= models.tier1.threshold).mean()),  # type: ignore[union-attr]
        "cascade_recall_of_tier2_flagged_frauds": (
            float(escalated[flagged2].mean()) if flagged2.any() else float("nan")
        ),
        "tier2_flagged_frauds": int(flagged2.sum()),
        "tier1_goals": {
            "max_escalation_rate": MAX_ESCALATION,
            "min_cascade_recall": CASCADE_RECALL,
            "escalation_met": bool(escalated.mean() <= MAX_ESCALATION),
            "recall_met": bool(flagged2.any() and escalated[flagged2].mean() >= CASCADE_RECALL),
        },
        "tier1_threshold_note": thr1_note,
        "engine_paths": {
            "screened_out": float((d.path == 1).mean()),
            "model": float((d.path == MODEL).mean()),
            "fallback": float((d.path == 3).mean()),
        },
        "engine_actions": {
            "approve": float((d.action == 1).mean()),
            "review": float((d.action == 2).mean()),
            "decline": float((d.action == 3).mean()),
        },
        "onnx_vs_lightgbm_max_abs_error": onnx_err,
        "policy": asdict(policy),
    }
    if held.scenario is not None:
        report["scenarios"] = scenario_metrics(
            y, held.scenario, p2, cascade_score, escalated, policy.review_threshold, REVIEW_RATE
        )
    plot(
        out / "report.png",
        y,
        {"tier two": p2, "cascade": cascade_score, "rules": p_rules},
        f"Held-out period: {y.size} orders, {int(y.sum())} frauds",
    )
    return report, cascade_score
