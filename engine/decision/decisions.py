"""Decisions for a batch of orders, in row order: what the cascade returns and the codecs
encode (engine.codec.decision_encoder, engine.codec.decision_table)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from engine.decision.reasons import Reason


@dataclass
class Decisions:
    """Decisions for a batch, in row order."""

    order_ids: list[str]
    action: np.ndarray  # int8, engine.decision.policy.APPROVE / REVIEW / DECLINE
    score: np.ndarray  # float64 probability of fraud
    raw: np.ndarray  # float64 log-odds
    base: np.ndarray  # float64 base value the reasons add to
    path: np.ndarray  # int8, SCREENED_OUT / MODEL / FALLBACK
    reasons: list[list[Reason]]
    triggers: list[list[str]]
    causes: list[str]
    model_version: str

    def __len__(self) -> int:
        return len(self.order_ids)

    def take(self, rows: Sequence[int]) -> Decisions:
        """The decisions of the given rows, in that order."""
        i = list(rows)
        return Decisions(
            [self.order_ids[k] for k in i],
            self.action[i],
            self.score[i],
            self.raw[i],
            self.base[i],
            self.path[i],
            [self.reasons[k] for k in i],
            [self.triggers[k] for k in i],
            [self.causes[k] for k in i],
            self.model_version,
        )

    @classmethod
    def concat(cls, parts: list[Decisions]) -> Decisions:
        """One batch of decisions from parts decided by one model version (a call is one
        version's: the engine reads its models once per call)."""
        versions = {p.model_version for p in parts}
        if len(versions) > 1:
            raise ValueError(f"one batch's decisions by several model versions: {sorted(versions)}")
        return cls(
            [i for p in parts for i in p.order_ids],
            np.concatenate([p.action for p in parts]),
            np.concatenate([p.score for p in parts]),
            np.concatenate([p.raw for p in parts]),
            np.concatenate([p.base for p in parts]),
            np.concatenate([p.path for p in parts]),
            [r for p in parts for r in p.reasons],
            [t for p in parts for t in p.triggers],
            [c for p in parts for c in p.causes],
            parts[0].model_version,
        )
