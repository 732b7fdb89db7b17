"""Reason codes: what a reviewer reads for every REVIEW and DECLINE.

Model reasons are TreeSHAP contributions (LightGBM's `pred_contrib`) in log-odds: the
`max_reasons` features that pushed the score up most are named, the rest is summed into
one OTHER_FEATURES reason, so `base_value + sum(contributions) == raw_score` exactly.
Fallback reasons are the fired rules with their weights, which sum the same way.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from engine.features import FEATURE_NAMES
from engine.scorers import RULES


@dataclass(frozen=True)
class Reason:
    code: str
    feature: str
    contribution: float
    message: str


_ENTITY = {
    "customer_id": "Customer",
    "device_id": "Device",
    "card_fingerprint": "Card",
    "ip": "IP address",
    "email_domain": "Email domain",
    "address_fingerprint": "Shipping address",
    "customer_id+device_id": "This customer on this device",
    "customer_id+card_fingerprint": "This customer with this card",
}
_ORDER = {
    "amount": "Order amount {v:.2f}",
    "amount_vs_customer_avg": "Amount is {v:.1f}x this customer's recent average",
    "account_age_days": "Account opened {v:.1f} days before the order",
    "key_account": "Key account: {v:.0f}",
    "billing_shipping_mismatch": "Billing and shipping countries differ: {b}",
    "ip_billing_mismatch": "IP country differs from billing country: {b}",
    "ip_shipping_mismatch": "IP country differs from shipping country: {b}",
    "n_lines": "{v:.0f} order lines",
    "n_units": "{v:.0f} units ordered",
    "risky_category_share": "{v:.0%} of the value in electronics or gift cards",
    "hour_utc": "Placed at {v:.1f} h UTC",
    "note_len": "Customer note of {v:.0f} characters",
}


def code_of(feature: str) -> str:
    return feature.replace("+", "_").replace(".", "_").upper()


def describe(feature: str, value: float) -> str:
    """One line about a feature's value, for a reviewer."""
    missing = value is None or (isinstance(value, float) and math.isnan(value))
    if feature in _ORDER:
        if missing:
            return f"{feature.replace('_', ' ')}: unknown"
        return _ORDER[feature].format(v=value, b="yes" if value >= 0.5 else "no")
    entity, _, stat = feature.partition(".")
    who = _ENTITY.get(entity, entity)
    if stat == "age_days":
        return f"{who}: never seen before" if missing else f"{who}: first seen {value:.1f} days ago"
    if missing:
        return f"{who}: unknown"
    if stat.startswith("cnt_"):
        if value < 0.05:
            return f"{who}: no earlier orders in the last {stat[4:]}"
        return f"{who}: {value:.1f} orders in the last {stat[4:]} (decayed count)"
    if stat.startswith("amt_"):
        return f"{who}: {value:.2f} spent in the last {stat[4:]} (decayed sum)"
    if stat == "known_frauds":
        return f"{who}: {value:.1f} confirmed frauds linked (decayed)"
    if stat == "fraud_rate":
        return f"{who}: {value:.0%} of its labelled orders were fraud"
    if stat == "customer_changes_30d":
        return f"{who}: passed between customers {value:.1f} times in 30 days"
    return f"{feature} = {value:g}"


def model_reasons(contrib: np.ndarray, x: np.ndarray, max_reasons: int) -> list[Reason]:
    """Reasons from one row's contributions (n_features + 1, base value last)."""
    c = contrib[:-1]
    top = np.argsort(-c, kind="stable")[:max_reasons]
    top = top[c[top] > 0]
    reasons = [
        Reason(
            code_of(FEATURE_NAMES[j]),
            FEATURE_NAMES[j],
            float(c[j]),
            describe(FEATURE_NAMES[j], float(x[j])),
        )
        for j in top
    ]
    rest = float(c.sum() - c[top].sum())
    reasons.append(Reason("OTHER_FEATURES", "", rest, "All other features together"))
    return reasons


def rule_reasons(fired: np.ndarray, weights: np.ndarray) -> list[Reason]:
    return [
        Reason(r.code, r.feature, float(weights[k]), r.message)
        for k, r in enumerate(RULES)
        if fired[k]
    ]


def trigger_reason(trigger: str) -> Reason:
    messages = {
        "HIGH_VALUE": "High-value order: a human decides",
        "KEY_ACCOUNT": "Key account: never declined automatically",
        "LOW_CONFIDENCE": "Score in the low-confidence band",
        "MODEL_UNAVAILABLE": "Model unavailable: rules cannot decline on their own",
    }
    return Reason(trigger, "", 0.0, messages[trigger])
