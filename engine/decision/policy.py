"""Policy: scores to APPROVE / REVIEW / DECLINE, with the human-in-the-loop triggers."""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from typing import Any

import numpy as np

from engine.jit import njit

APPROVE, REVIEW, DECLINE = 1, 2, 3
SCREENED_OUT, MODEL, FALLBACK = 1, 2, 3
ACTION_NAMES = {APPROVE: "APPROVE", REVIEW: "REVIEW", DECLINE: "DECLINE"}
PATH_NAMES = {SCREENED_OUT: "SCREENED_OUT", MODEL: "MODEL", FALLBACK: "FALLBACK"}

_NO_TRIGGERS: list[str] = []


@dataclass(frozen=True)
class PolicyConfig:
    """Thresholds; training proposes them in the manifest, a config file may override them."""

    review_threshold: float = 0.3
    """Probability at or above which an order is reviewed."""
    decline_threshold: float = 0.85
    """Probability at or above which an order is declined."""
    low_confidence_low: float = 0.2
    """Model scores in [low_confidence_low, review_threshold) go to a human (LOW_CONFIDENCE):
    just under the line, where the model is least sure."""
    high_value: float = 2000.0
    """Orders of at least this amount, in major currency units, are reviewed (HIGH_VALUE).
    No FX conversion is done: the threshold applies to every currency's major unit."""
    key_account_auto_decline: bool = False
    """If false, a key account's decline becomes a review (KEY_ACCOUNT)."""
    fallback_can_decline: bool = False
    """If false, a fallback decline becomes a review (MODEL_UNAVAILABLE)."""
    max_reasons: int = 5
    """Named reasons per decision; the remaining contribution is one OTHER_FEATURES reason."""

    def __post_init__(self) -> None:
        if not 0.0 <= self.review_threshold <= self.decline_threshold <= 1.0:
            raise ValueError(
                "need 0 <= review_threshold <= decline_threshold <= 1, got "
                f"{self.review_threshold} and {self.decline_threshold}"
            )
        if not 0.0 <= self.low_confidence_low <= self.review_threshold:
            raise ValueError(
                "need 0 <= low_confidence_low <= review_threshold, got "
                f"{self.low_confidence_low} and {self.review_threshold}"
            )
        if self.max_reasons < 1:
            raise ValueError(f"max_reasons must be at least 1, is {self.max_reasons}")

    @classmethod
    def from_dict(cls, d: dict[str, Any], base: PolicyConfig | None = None) -> PolicyConfig:
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ValueError(f"unknown policy setting(s): {', '.join(unknown)}")
        merged = asdict(base or cls())
        merged.update(d)
        return cls(**merged)


TRIGGERS = ("HIGH_VALUE", "KEY_ACCOUNT", "LOW_CONFIDENCE", "MODEL_UNAVAILABLE")
_HIGH_VALUE, _KEY_ACCOUNT, _LOW_CONFIDENCE, _MODEL_UNAVAILABLE = (1 << k for k in range(4))


@njit
def _decide(
    score, path, amount, key_account, control, review, decline, low, high_value, key_decline,
    fb_decline, action, fired,
):  # fmt: skip
    for i in range(score.shape[0]):
        judged = path[i] != SCREENED_OUT
        a = APPROVE
        if judged and score[i] >= decline:
            a = DECLINE
        elif judged and score[i] >= review:
            a = REVIEW
        f = 0
        if judged and amount[i] >= high_value:
            f |= _HIGH_VALUE
        if key_account[i] and a == DECLINE and not key_decline:
            f |= _KEY_ACCOUNT
        if judged and low <= score[i] < review and not control[i]:
            f |= _LOW_CONFIDENCE
        if path[i] == FALLBACK and a == DECLINE and not fb_decline and not control[i]:
            f |= _MODEL_UNAVAILABLE
        action[i] = REVIEW if f else a
        fired[i] = f


def decide(
    cfg: PolicyConfig,
    score: np.ndarray,
    path: np.ndarray,
    amount: np.ndarray,
    key_account: np.ndarray,
    control: np.ndarray | None = None,
) -> tuple[np.ndarray, list[list[str]]]:
    """Action per row and the triggers that forced a human review.

    Orders tier one screened out are approved: only tier two or the rules judge an order,
    and high-value or key-account orders are never screened out (`escalation_mask`).
    A trigger turns any action into REVIEW: HIGH_VALUE and LOW_CONFIDENCE for every judged
    order, KEY_ACCOUNT and MODEL_UNAVAILABLE for declines the config does not let through.
    Rows of the pilot's `control` group (decided by the rules by design,
    `engine.decision.control`) get neither LOW_CONFIDENCE (a model's doubt) nor
    MODEL_UNAVAILABLE: their rules decline as the old method did; HIGH_VALUE and KEY_ACCOUNT
    apply to both arms alike.
    """
    n = score.shape[0]
    action = np.empty(n, dtype=np.int8)
    fired = np.empty(n, dtype=np.int8)
    _decide(
        np.ascontiguousarray(score, dtype=np.float64),
        np.ascontiguousarray(path, dtype=np.int8),
        np.ascontiguousarray(amount, dtype=np.float64),
        np.ascontiguousarray(key_account, dtype=np.bool_),
        np.zeros(n, np.bool_) if control is None else np.ascontiguousarray(control, np.bool_),
        float(cfg.review_threshold),
        float(cfg.decline_threshold),
        float(cfg.low_confidence_low),
        float(cfg.high_value),
        bool(cfg.key_account_auto_decline),
        bool(cfg.fallback_can_decline),
        action,
        fired,
    )
    triggers: list[list[str]] = [_NO_TRIGGERS] * n  # shared, never mutated
    for i in fired.nonzero()[0].tolist():
        triggers[i] = [name for k, name in enumerate(TRIGGERS) if fired[i] >> k & 1]
    return action, triggers
