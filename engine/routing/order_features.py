"""The order features a routed case is scored by, beyond its text: one function, used by the
Routing service, the simulator and any offline fit, so a case is described the same way
everywhere.

    f = features(amount=12500.0, lines=[Line("SRV-1001-R", "server", 4, True)],
                 payment_terms="net90", customer_tier="key", customer_orders=12, risk_reasons=0)
    x = vector(f)       # float64 in FEATURES order, with a leading 1 for the intercept

Every feature is scaled to about [0, 1], so one ridge penalty suits them all
(`engine.routing.router.Difficulty` learns how much each lengthens a case):
- `amount`: log10(1 + amount) / 6 (1,000,000 in any currency is 1);
- `lines`, `categories`: order lines and distinct product categories, over 20 and 5, capped;
- `built_to_order`: the share of lines configured to order (custom RAID, memory, software);
- `nonstandard_terms`: 1 when the payment terms are not one of STANDARD_TERMS;
- `key_account`, `new_customer`: the customer's tier, and no earlier order (unknown = 0);
- `risk_reasons`: for a case the risk engine raised (a REVIEW), its reason codes over 5, capped.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import NamedTuple

import numpy as np

FEATURES = (
    "amount", "lines", "categories", "built_to_order", "nonstandard_terms", "key_account",
    "new_customer", "risk_reasons",
)  # fmt: skip
STANDARD_TERMS = frozenset({"", "prepaid", "card", "invoice", "net30"})
"""Payment terms a case can have without anyone negotiating them."""
TIERS = ("new", "standard", "key")
"""Customer tiers a case can name ("" = unknown)."""


class Line(NamedTuple):
    sku: str
    category: str
    quantity: int
    built_to_order: bool = False


def features(
    *,
    amount: float = 0.0,
    lines: Sequence[Line] = (),
    payment_terms: str = "",
    customer_tier: str = "",
    customer_orders: int = -1,
    risk_reasons: int = 0,
) -> dict[str, float]:
    """The case's features by name (see the module's docstring); inputs are checked by the
    caller (the service names the field)."""
    n = len(lines)
    return {
        "amount": min(math.log10(1.0 + max(amount, 0.0)) / 6.0, 1.5),
        "lines": min(n, 20) / 20.0,
        "categories": min(len({line.category for line in lines}), 5) / 5.0,
        "built_to_order": (sum(line.built_to_order for line in lines) / n) if n else 0.0,
        "nonstandard_terms": float(payment_terms.strip().lower() not in STANDARD_TERMS),
        "key_account": float(customer_tier == "key"),
        "new_customer": float(customer_orders == 0 or customer_tier == "new"),
        "risk_reasons": min(risk_reasons, 5) / 5.0,
    }


def vector(named: Mapping[str, float]) -> np.ndarray:
    """[1, f_1, ..., f_k] in FEATURES order; a feature not given is 0."""
    out = np.zeros(len(FEATURES) + 1)
    out[0] = 1.0
    for i, name in enumerate(FEATURES, 1):
        out[i] = float(named.get(name, 0.0))
    return out


def describe(named: Mapping[str, float]) -> list[str]:
    """The features worth a reviewer's attention, in words (for a route's reasons)."""
    out = []
    if named.get("built_to_order", 0.0) > 0:
        out.append(f"{named['built_to_order']:.0%} of lines built to order")
    if named.get("nonstandard_terms", 0.0):
        out.append("non-standard payment terms")
    if named.get("key_account", 0.0):
        out.append("key account")
    if named.get("new_customer", 0.0):
        out.append("new customer")
    if named.get("risk_reasons", 0.0):
        out.append(f"{round(named['risk_reasons'] * 5)} risk reason codes")
    return out
