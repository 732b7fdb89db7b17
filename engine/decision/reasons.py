"""Reason codes: what a reviewer reads for every REVIEW and DECLINE.

Model reasons are exact TreeSHAP contributions (`engine.models.treeshap`) in log-odds: the
`max_reasons` features that pushed the score up most are named, the rest is summed into
one OTHER_FEATURES reason, so `base_value + sum(contributions) == raw_score` exactly.
Fallback reasons are the fired rules with their weights, which sum the same way.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import numpy as np

from engine.features.matrix import FEATURE_NAMES
from engine.models.scorers import RULES


class Reason(NamedTuple):
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


_LABEL_STATS = (  # label-window statistics: prefix, wording ({w}: the window)
    ("known_frauds_", "{v:.1f} confirmed frauds linked in the last {w} (decayed)"),
    ("fraud_rate_", "{v:.0%} of its orders labelled in the last {w} were fraud"),
)


def _describer(feature: str) -> Callable[[float], str]:
    """One line about a feature's value, for a reviewer, its wording chosen once per
    feature; the returned function takes NaN for an unknown value."""
    if feature in _ORDER:
        template, unknown = _ORDER[feature], f"{feature.replace('_', ' ')}: unknown"
        return lambda v: unknown if v != v else template.format(v=v, b="yes" if v >= 0.5 else "no")
    entity, _, stat = feature.partition(".")
    who = _ENTITY.get(entity, entity)
    if stat == "age_days":
        return lambda v: (
            f"{who}: never seen before" if v != v else f"{who}: first seen {v:.1f} days ago"
        )
    unknown = f"{who}: unknown"
    window = stat[4:]
    if stat.startswith("cnt_"):
        none = f"{who}: no earlier orders in the last {window}"
        return lambda v: (
            unknown
            if v != v
            else none
            if v < 0.05
            else f"{who}: {v:.1f} orders in the last {window} (decayed count)"
        )
    if stat.startswith("amt_"):
        return lambda v: (
            unknown if v != v else f"{who}: {v:.2f} spent in the last {window} (decayed sum)"
        )
    for prefix, text in _LABEL_STATS:
        if stat.startswith(prefix):
            template = f"{who}: {text.replace('{w}', stat.rpartition('_')[2])}"

            def label_stat(v: float, t: str = template) -> str:
                return unknown if v != v else t.format(v=v)

            return label_stat
    if stat == "customer_changes_30d":
        return lambda v: (
            unknown if v != v else f"{who}: passed between customers {v:.1f} times in 30 days"
        )
    return lambda v: unknown if v != v else f"{feature} = {v:g}"


_CODES = [code_of(f) for f in FEATURE_NAMES]
_DESCRIBE = [_describer(f) for f in FEATURE_NAMES]
_OTHER = "All other features together"


def model_reasons(contrib: np.ndarray, X: np.ndarray, max_reasons: int) -> list[list[Reason]]:
    """Reasons for each row of `contrib` (m, n_features + 1, base value last) and `X`
    (m, n_features): the `max_reasons` largest positive contributions, named, then the rest
    as one OTHER_FEATURES reason. The top ones are picked for all rows at once."""
    c = contrib[:, :-1]
    top = np.argsort(-c, axis=1, kind="stable")[:, :max_reasons]
    top_c = np.take_along_axis(c, top, axis=1)
    keep = top_c > 0
    top_x = np.take_along_axis(X, top, axis=1).astype(np.float64)
    rest = (c.sum(axis=1) - np.where(keep, top_c, 0.0).sum(axis=1)).tolist()
    out = []
    for r, (js, cs, xs, ks) in enumerate(
        zip(top.tolist(), top_c.tolist(), top_x.tolist(), keep.tolist(), strict=True)
    ):
        reasons = [
            Reason(_CODES[j], FEATURE_NAMES[j], cj, _DESCRIBE[j](xj))
            for j, cj, xj, k in zip(js, cs, xs, ks, strict=True)
            if k
        ]
        reasons.append(Reason("OTHER_FEATURES", "", rest[r], _OTHER))
        out.append(reasons)
    return out


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
