"""The pilot's control group: a fixed share of customers decided by the rules alone.

A customer is in the control group when a hash of its entity key falls under the control
fraction. The entity key is already a keyed hash of customer_id under the engine's secret
(`engine.orders.hashing`), so the assignment is deterministic for a deployment (the same
customer is in the same arm on every replica, after every restart, offline and online),
cannot be steered by a client choosing ids without the secret, and is independent of the
velocity table's use of the key: the key is mixed once more (a SplitMix64 step over the
engine's own `hashing.mix64`, with a salt of its own) before it is compared.
"""

from __future__ import annotations

import numpy as np

from engine.orders.hashing import mix64
from engine.orders.schema import ENTITY_KINDS

CAUSE = "CONTROL_GROUP"
"""The fallback cause of a control-group decision (path FALLBACK): what the decision log
and the pilot report tell the two arms apart by."""
_CUSTOMER = ENTITY_KINDS.index("customer_id")
_SALT = np.uint64(0x5DEECE66DC011720)
_GOLDEN = np.uint64(0x9E3779B97F4A7C15)


def _mix(x: np.ndarray) -> np.ndarray:
    """SplitMix64's step: the golden-ratio increment, then the engine's own finaliser
    (`hashing.mix64`, which moves every input bit to every output bit; uint64 wraps)."""
    with np.errstate(over="ignore"):
        return np.asarray(mix64(x + _GOLDEN))


def in_control(keys: np.ndarray, fraction: float) -> np.ndarray:
    """Rows (entity keys, `OrderArrays.keys`) whose customer is in the control group."""
    if fraction <= 0.0:
        return np.zeros(keys.shape[0], np.bool_)
    u = _mix(keys[:, _CUSTOMER] ^ _SALT) >> np.uint64(11)  # 53 bits: exact in a float64
    return u.astype(np.float64) < fraction * float(1 << 53)


def check_fraction(fraction: float) -> float:
    """`fraction` as a share in [0, 0.5] (ValueError naming the setting otherwise): a
    control group larger than the treated group is not a pilot."""
    if not 0.0 <= fraction <= 0.5:
        raise ValueError(f"control_fraction must be between 0 and 0.5, is {fraction}")
    return float(fraction)
