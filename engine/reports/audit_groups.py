"""The engine's feature groups, the input columns each needs, and a verdict per group on
whether a history can feed it: usable, degraded or unusable, with the reason in plain words.

The groups are derived from `engine.features.matrix.FEATURE_NAMES`, so a feature added to
the engine lands in a group here or fails the audit's tests (`feature_groups` covers every
name once).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from engine.features.matrix import FEATURE_NAMES, ORDER_FEATURES
from engine.orders.schema import COUNTRY_COLUMNS, ENTITY_COLUMNS, PAIRS
from engine.reports.audit_checks import Labels, Leak

USABLE, DEGRADED, UNUSABLE = "usable", "degraded", "unusable"
USABLE_COMPLETENESS = 0.95
"""A group is usable when every column it needs has a value on this share of the orders it
applies to: the few orders without one are unknown to the features (NaN or a new entity),
which the model learns to treat as such without losing the signal elsewhere."""
DEGRADED_COMPLETENESS = 0.20
"""Below this share the features are unknown on most orders: the model mostly learns that
the value is missing, not what it says, so the group is unusable rather than degraded."""
MIN_LABEL_COVERAGE = 0.90
"""Share of settled orders (placed a horizon before the last) that should carry a label;
below it, entity fraud rates are counted over an unknown, probably biased part of orders."""
MIN_LABEL_TIME_SHARE = 0.95
"""Share of labels that should say when they became known (`label_known_at`). Without it the
engine assumes every label arrived `--label-delay` days after its order, so a chargeback
that took six weeks would be visible to the features after one."""
MIN_FRAUD_LABELS = 100
"""Fewest fraud labels known by the last order (the only ones the label windows can count
in this file) for per-entity fraud rates to be learnt: with fewer, hardly any entity ever
carries one and the model cannot tell the feature from noise."""
MIN_FRAUD_IN_HORIZON = 0.5
"""Share of fraud labels that should be known within the label horizon; when most arrive
later, an entity's fraud shows in its features only long after it happened."""
OPTIONAL_TEXT = ("note",)
"""Columns whose absence on an order is a value: the feature is the note's length, 0 without
one. Only a column missing from the file, or empty on every order, makes it unusable."""
CARD_ONLY = ("card_fingerprint", "card_bin")
"""Columns that exist only on card payments: their completeness is over card orders when the
file has `payment_method`, so a wallet order's empty card is not counted as a gap."""

_ORDER_GROUP = {
    "amount": "amount",
    "amount_vs_customer_avg": "amount",
    "account_age_days": "account age",
    "key_account": "key account",
    "billing_shipping_mismatch": "geography",
    "ip_billing_mismatch": "geography",
    "ip_shipping_mismatch": "geography",
    "n_lines": "items",
    "n_units": "items",
    "risky_category_share": "items",
    "hour_utc": "time of day",
    "note_len": "note",
}
_NAMES = {
    "customer_id": "customer",
    "device_id": "device",
    "card_fingerprint": "card",
    "ip": "IP address",
    "email_domain": "e-mail domain",
    "address_fingerprint": "shipping address",
}
LABEL_GROUP = "matured-label windows"
_LABEL_FEATURES = (".known_frauds_", ".fraud_rate_")


@dataclass(frozen=True)
class FeatureGroup:
    name: str
    gives: str
    """What the group tells the model, in plain words."""
    needs: tuple[str, ...]
    features: tuple[str, ...]


def _group_of(feature: str) -> str:
    if feature in ORDER_FEATURES:
        return _ORDER_GROUP[feature]
    if any(tag in feature for tag in _LABEL_FEATURES):
        return LABEL_GROUP
    kind = feature.split(".", 1)[0]
    if "+" in kind:
        a, b = kind.split("+")
        return f"{_NAMES[a]}+{_NAMES[b]} pair"
    return f"{_NAMES[kind]} velocity"


def feature_groups() -> list[FeatureGroup]:
    """Every engine feature in exactly one group, groups in the order their features come,
    the label windows last."""
    members: dict[str, list[str]] = {}
    for f in FEATURE_NAMES:
        members.setdefault(_group_of(f), []).append(f)
    needs: dict[str, tuple[tuple[str, ...], str]] = {
        "amount": (("amount_minor", "currency"), "order value, and against the customer's usual"),
        "account age": (("account_created_at",), "how old the account is at the order"),
        "key account": (("key_account",), "whether the customer is a key account"),
        "geography": (COUNTRY_COLUMNS, "billing, shipping and IP country mismatches"),
        "items": (("items",), "order lines, units, share of risky categories"),
        "time of day": (("created_at",), "the hour of the order (UTC)"),
        "note": (("note",), "the length of the customer's note"),
        LABEL_GROUP: (
            ("is_fraud", "label_known_at"),
            "known frauds and fraud rate per entity over 1, 7 and 30 days, from labels as "
            "they became known",
        ),
    }
    for col in ENTITY_COLUMNS:
        needs[f"{_NAMES[col]} velocity"] = (
            (col,),
            f"orders and spend per {_NAMES[col]} over 10 minutes to 30 days, and its age",
        )
    for a, b in PAIRS:
        needs[f"{_NAMES[a]}+{_NAMES[b]} pair"] = (
            (a, b),
            f"whether the {_NAMES[a]} has used this {_NAMES[b]} before",
        )
    labels = members.pop(LABEL_GROUP)
    members[LABEL_GROUP] = labels  # last: it reads every entity and the labels
    return [FeatureGroup(g, needs[g][1], needs[g][0], tuple(fs)) for g, fs in members.items()]


@dataclass
class Facts:
    """What a verdict reads about one input column."""

    in_file: bool
    complete: float
    """Share of the orders it applies to that have a value."""
    problem: str | None = None
    scope: str = ""
    """The orders completeness is over, when not all ("card payments")."""
    placeholder: str = ""
    leak: Leak | None = None
    lines_complete: float = math.nan
    """`items` only: share of order lines with a category."""


@dataclass
class Verdict:
    group: FeatureGroup
    complete: float
    verdict: str
    reason: str


def _pct(x: float) -> str:
    return f"{100 * x:.1f}%"


def _column_verdict(name: str, f: Facts, csv: bool) -> tuple[str, str]:
    if not f.in_file:
        if name == "items" and csv:
            return (
                UNUSABLE,
                "a CSV holds flat columns only: write the history as Parquet to give "
                "the engine its order lines",
            )
        return UNUSABLE, f"the file has no '{name}' column"
    if f.problem:
        return UNUSABLE, f"'{name}': {f.problem}; the trainer refuses the file until it is fixed"
    if f.leak is not None and f.leak.flagged:
        return UNUSABLE, (
            f"'{name}' alone separates the labels ({f.leak.method} {f.leak.auc:.3f}): it was "
            "probably written after the outcome was known"
        )
    over = f" of {f.scope}" if f.scope else " of orders"
    if name in OPTIONAL_TEXT:
        if f.complete == 0:
            return UNUSABLE, f"'{name}' is empty on every order: the feature would be constant"
        return USABLE, f"'{name}' on {_pct(f.complete)} of orders (an order without one is 0)"
    if f.complete < DEGRADED_COMPLETENESS:
        return UNUSABLE, f"'{name}' is empty on {_pct(1 - f.complete)}{over}"
    if f.complete < USABLE_COMPLETENESS:
        return (
            DEGRADED,
            f"'{name}' is empty on {_pct(1 - f.complete)}{over}: those orders get unknown values",
        )
    if f.placeholder:
        return DEGRADED, f"'{name}': {f.placeholder}"
    if name == "items" and f.lines_complete < USABLE_COMPLETENESS:
        return (
            DEGRADED,
            f"the category is missing on {_pct(1 - f.lines_complete)} of order "
            "lines: the risky-category share reads only the rest",
        )
    return USABLE, ""


def _label_verdict(lab: Labels) -> tuple[str, str]:
    if not lab.has_column:
        return UNUSABLE, "the file has no 'is_fraud' column: no labels"
    if not lab.labelled:
        return UNUSABLE, "no order has a label"
    if not lab.frauds:
        return UNUSABLE, "no order is labelled fraud: the windows would count nothing"
    problems = []
    if lab.time_share < MIN_LABEL_TIME_SHARE:
        problems.append(
            f"{_pct(1 - lab.time_share)} of labels do not say when they became known: the "
            "engine assumes --label-delay days after the order"
        )
    settled = lab.settled > 0
    cover = lab.settled_coverage if settled else lab.coverage
    if cover < MIN_LABEL_COVERAGE:
        where = f"orders older than {lab.horizon_days:g} days" if settled else "orders"
        problems.append(f"only {_pct(cover)} of {where} have a label")
    if lab.has_time and lab.frauds_in_span < MIN_FRAUD_LABELS:
        problems.append(
            f"only {lab.frauds_in_span:,} fraud labels became known before the last order "
            f"(fewer than {MIN_FRAUD_LABELS}), and the windows count only those"
        )
    elif lab.frauds < MIN_FRAUD_LABELS:
        problems.append(f"only {lab.frauds:,} fraud labels (fewer than {MIN_FRAUD_LABELS})")
    if lab.negative:
        problems.append(f"{lab.negative:,} labels are known before their order was placed")
    if lab.fraud_in_horizon < MIN_FRAUD_IN_HORIZON:
        problems.append(
            f"only {_pct(lab.fraud_in_horizon)} of fraud labels are known within "
            f"{lab.horizon_days:g} days"
        )
    if problems:
        return DEGRADED, "; ".join(problems)
    med = lab.delays.get("fraud", [math.nan] * 2)[1]
    return USABLE, (
        f"labels on {_pct(lab.coverage)} of orders; {lab.frauds_in_span:,} fraud labels known "
        f"before the last order, after {med:.1f} days (median)"
    )


_RANK = {USABLE: 0, DEGRADED: 1, UNUSABLE: 2}


def verdicts(facts: dict[str, Facts], lab: Labels, csv: bool) -> list[Verdict]:
    """One verdict per feature group: the worst over the columns it needs, with that
    column's reason; the label windows are judged on the labels themselves."""
    out = []
    for g in feature_groups():
        if g.name == LABEL_GROUP:
            problem = next((n for n in g.needs if facts[n].problem), None)
            if problem is not None:
                worst, reason = UNUSABLE, f"'{problem}': {facts[problem].problem}"
            else:
                worst, reason = _label_verdict(lab)
            out.append(Verdict(g, lab.coverage, worst, reason))
            continue
        judged = [_column_verdict(n, facts[n], csv) for n in g.needs]
        worst, reason = max(judged, key=lambda p: _RANK[p[0]])  # the first of the worst
        reason = reason or next((why for _, why in judged if why), "")
        complete = min(facts[n].complete if facts[n].in_file else 0.0 for n in g.needs)
        scoped = [f"'{n}' over {facts[n].scope}" for n in g.needs if facts[n].scope]
        over = f" ({', '.join(scoped)})" if scoped else ""
        out.append(Verdict(g, complete, worst, reason or f"complete on {_pct(complete)}{over}"))
    return out
