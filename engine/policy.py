"""Policy: scores to APPROVE / REVIEW / DECLINE, with the human-in-the-loop triggers."""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from typing import Any

import numpy as np

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


def decide(
    cfg: PolicyConfig,
    score: np.ndarray,
    path: np.ndarray,
    amount: np.ndarray,
    key_account: np.ndarray,
) -> tuple[np.ndarray, list[list[str]]]:
    """Action per row and the triggers that forced a human review.

    Orders tier one screened out are approved: only tier two or the rules judge an order,
    and high-value or key-account orders are never screened out (`escalation_mask`).
    """
    judged = path != SCREENED_OUT
    action = np.full(score.shape[0], APPROVE, dtype=np.int8)
    action[judged & (score >= cfg.review_threshold)] = REVIEW
    action[judged & (score >= cfg.decline_threshold)] = DECLINE
    masks = {
        "HIGH_VALUE": judged & (amount >= cfg.high_value),
        "KEY_ACCOUNT": key_account & (action == DECLINE) & (not cfg.key_account_auto_decline),
        "LOW_CONFIDENCE": judged
        & (score >= cfg.low_confidence_low)
        & (score < cfg.review_threshold),
        "MODEL_UNAVAILABLE": (path == FALLBACK)
        & (action == DECLINE)
        & (not cfg.fallback_can_decline),
    }
    any_trigger = np.zeros(score.shape[0], dtype=np.bool_)
    for m in masks.values():
        any_trigger |= m
    action[any_trigger] = REVIEW
    triggers: list[list[str]] = [_NO_TRIGGERS] * score.shape[0]  # shared, never mutated
    for i in np.flatnonzero(any_trigger):
        triggers[i] = [name for name, m in masks.items() if m[i]]
    return action, triggers
