"""The validation rule table: what a valid order is, with limits, and how a refusal is worded.

Each field kind of `engine.orders.schema` has its rules, with the limits below: text is
required where the schema says so, at most `max_id_bytes` (a note `max_note_bytes`) and
strict UTF-8; a currency or country is also a known code; a time is a valid timestamp from
`earliest` to the clock plus `max_future_s`; an amount or quantity lies between 0 and its
limit; an order has at most `max_items` lines, none over `max_amount_minor`. The validator
kernel (`engine.orders.validate`, where the rule codes are defined) checks every order of
every entry point against them, in slot order (the strings in the schema's order, then the
times, the amount, the items), and reports the first rule a row breaks. This module words
that report (`describe`): the rule and the value, and the entry point says where
(`orders[537].note` for gRPC, `column 'note' row 537` for a file). Events and outcome times,
which are not orders, are checked here in Python with the same rules and limits.

Limits are one typed class with safe defaults, overridden by a `[limits]` table in the
config file.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import asdict, dataclass, fields
from typing import Any, NamedTuple

import numpy as np

from engine.errors import InvalidInput
from engine.orders import reference
from engine.orders import validate as v
from engine.orders.schema import (
    COUNTRY,
    CURRENCY,
    ITEM_FIELDS,
    ITEM_STRING_FIELDS,
    ITEMS,
    NOTE,
    ORDER_FIELDS,
    STRING_FIELDS,
    TIME_FIELDS,
    Field,
)
from engine.orders.validate import (
    COUNTRY_CODE,
    COUNTRY_FORMAT,
    CURRENCY_CODE,
    CURRENCY_FORMAT,
    FREE_TEXT,
    FUTURE,
    LINE_TOTAL,
    NEGATIVE,
    REQUIRED,
    TIMESTAMP,
    TOO_EARLY,
    TOO_LARGE,
    TOO_LONG,
    TOO_MANY,
    UTF8,
)


@dataclass(frozen=True)
class Limits:
    """Bounds on every order field; each protects memory, arithmetic or a feature's meaning."""

    max_id_bytes: int = 128
    """Longest identifier or short text (order_id, customer_id, channel, sku, ...), in bytes."""
    max_note_bytes: int = 4096
    """Longest free-text note, in bytes."""
    max_items: int = 1000
    """Most lines in one order."""
    max_amount_minor: int = 10**12
    """Largest amount_minor, unit_price_minor and line total (quantity x unit price), in minor
    units: far above any real order, far below where int64 or float64 lose exactness."""
    max_quantity: int = 1_000_000
    """Most units on one line."""
    earliest: str = "2000-01-01T00:00:00+00:00"
    """Earliest created_at, account_created_at or event time accepted (ISO 8601)."""
    max_future_s: float = 300.0
    """How far past the server's clock a time may lie (clock skew between hosts)."""
    max_arrow_bytes: int = 256 << 20
    """Largest Arrow IPC payload after decompression: a small compressed request must not
    expand into gigabytes."""
    max_batch_orders: int = 1_000_000
    """Most orders in one ScoreBatch request."""
    extra_currencies: tuple[str, ...] = ()
    """Currency codes accepted besides ISO 4217's ("CODE" for 2 decimals, "CODE:N")."""
    extra_countries: tuple[str, ...] = ()
    """Country codes accepted besides ISO 3166-1 alpha-2 (e.g. "XK")."""

    def __post_init__(self) -> None:
        for name in ("max_id_bytes", "max_note_bytes", "max_items", "max_amount_minor"):
            if getattr(self, name) < 1:
                raise ValueError(f"limits.{name} must be >= 1, is {getattr(self, name)}")
        if self.max_amount_minor > 2**53:
            raise ValueError(
                f"limits.max_amount_minor must be <= 2**53, is {self.max_amount_minor:,}"
            )
        self.earliest_s  # noqa: B018 - parses, so a bad value fails at start-up

    @property
    def earliest_s(self) -> int:
        try:
            t = dt.datetime.fromisoformat(self.earliest)
        except ValueError as exc:
            raise ValueError(f"limits.earliest: {exc}") from exc
        if t.tzinfo is None:
            t = t.replace(tzinfo=dt.UTC)
        return int(t.timestamp())

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Limits:
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ValueError(f"unknown limits setting(s): {', '.join(unknown)}")
        merged = asdict(cls()) | dict(d)
        for name in ("extra_currencies", "extra_countries"):
            merged[name] = tuple(merged[name])
        return cls(**merged)


RULE_NAMES: dict[int, str] = {
    REQUIRED: "required", UTF8: "utf8", TOO_LONG: "too_long", CURRENCY_CODE: "currency",
    COUNTRY_CODE: "country", TIMESTAMP: "timestamp", TOO_EARLY: "too_early", FUTURE: "future",
    NEGATIVE: "negative", TOO_LARGE: "too_large", TOO_MANY: "too_many_items",
    LINE_TOTAL: "line_total",
}  # fmt: skip
"""A short name per rule, for metrics; the wire decoder's codes are all "malformed"."""


def rule_name(code: int) -> str:
    return RULE_NAMES.get(code, "malformed")


# What the kernel's `field` output indexes: where each slot's Field is.
ERROR_FIELDS: tuple[Field, ...] = (
    STRING_FIELDS
    + TIME_FIELDS
    + tuple(f for f in ORDER_FIELDS if f.column == "amount_minor")
    + tuple(f for f in ORDER_FIELDS if f.kind == ITEMS)
    + ITEM_STRING_FIELDS
    + tuple(f for f in ITEM_FIELDS if f.column in ("quantity", "unit_price_minor"))
)
F_TIME = len(STRING_FIELDS)
F_AMOUNT = F_TIME + len(TIME_FIELDS)
F_ITEMS = F_AMOUNT + 1
F_ITEM_STRING = F_ITEMS + 1
F_QUANTITY = F_ITEM_STRING + len(ITEM_STRING_FIELDS)
F_PRICE = F_QUANTITY + 1
ITEM_ERROR_FIELDS = frozenset(range(F_ITEM_STRING, F_PRICE + 1))


class RuleArrays(NamedTuple):
    """The rule table as the validator kernel reads it (one per `Limits`), packed into a few
    arrays: every field of a kernel argument costs dispatch time on every call."""

    strings: np.ndarray  # int64 (3, string slots): most bytes, required, format
    item_strings: np.ndarray  # int64 per item string slot: most bytes
    times: np.ndarray  # int64 per time slot: required
    scalars: np.ndarray  # int64 (N_SCALARS,): see engine.orders.validate
    currencies: np.ndarray  # int8 (26**3,): minor-unit exponent, -1 unknown
    countries: np.ndarray  # bool (26**2,)


def _max_bytes(f: Field, limits: Limits) -> int:
    return limits.max_note_bytes if f.kind == NOTE else limits.max_id_bytes


def rule_arrays(limits: Limits) -> RuleArrays:
    fmt = {CURRENCY: CURRENCY_FORMAT, COUNTRY: COUNTRY_FORMAT}
    strings = np.zeros((3, len(STRING_FIELDS)), np.int64)
    for s, f in enumerate(STRING_FIELDS):
        strings[v.MAX_BYTES, s] = _max_bytes(f, limits)
        strings[v.IS_REQUIRED, s] = f.required
        strings[v.FORMAT, s] = fmt.get(f.kind, FREE_TEXT)
    scalars = np.zeros(v.N_SCALARS, np.int64)
    scalars[v.SC_EARLIEST] = limits.earliest_s
    scalars[v.SC_MAX_AMOUNT] = limits.max_amount_minor
    scalars[v.SC_MAX_QUANTITY] = limits.max_quantity
    scalars[v.SC_MAX_ITEMS] = limits.max_items
    scalars[v.SC_F_TIME], scalars[v.SC_F_AMOUNT], scalars[v.SC_F_ITEMS] = F_TIME, F_AMOUNT, F_ITEMS
    scalars[v.SC_F_ITEM_STRING], scalars[v.SC_F_QUANTITY] = F_ITEM_STRING, F_QUANTITY
    scalars[v.SC_F_PRICE] = F_PRICE
    return RuleArrays(
        strings=strings,
        item_strings=np.array([_max_bytes(f, limits) for f in ITEM_STRING_FIELDS], np.int64),
        times=np.array([f.required for f in TIME_FIELDS], np.int64),
        scalars=scalars,
        currencies=reference.currency_table(limits.extra_currencies),
        countries=reference.country_table(limits.extra_countries),
    )


def iso(epoch_s: float) -> str:
    try:
        return dt.datetime.fromtimestamp(epoch_s, dt.UTC).isoformat(timespec="seconds")
    except (OverflowError, OSError, ValueError):
        return f"{epoch_s:.0f} s after the epoch"


def _text(raw: bytes) -> str:
    s = raw[:40].decode(errors="replace")
    return repr(s + "..." if len(raw) > 40 else s)


def describe(
    rule: int, field: Field, a: int, b: int, raw: bytes, limits: Limits, latest: float
) -> str:
    """The rule a value broke, worded with the value and the limit (without the location).
    `a`, `b` are the kernel's numbers for the rule, `raw` the string value's bytes."""
    if rule == REQUIRED:
        return "required"
    if rule == UTF8:
        return "not valid UTF-8"
    if rule == TOO_LONG:
        return f"{a:,} bytes, at most {_max_bytes(field, limits):,}"
    if rule == CURRENCY_CODE:
        return f"{_text(raw)} is not an ISO 4217 currency code this engine takes"
    if rule == COUNTRY_CODE:
        return f"{_text(raw)} is not an ISO 3166-1 alpha-2 country code"
    if rule == TIMESTAMP:
        return f"not a valid timestamp (seconds {a}, nanos {b})"
    if rule == TOO_EARLY:
        return f"{iso(a)} is before {iso(limits.earliest_s)}, the earliest accepted"
    if rule == FUTURE:
        return f"{iso(a)} is in the future (latest accepted {iso(latest)})"
    if rule == NEGATIVE:
        return f"must be >= 0, is {a}"
    if rule == TOO_LARGE:
        top = limits.max_quantity if field.column == "quantity" else limits.max_amount_minor
        return f"{a:,}, at most {top:,}"
    if rule == TOO_MANY:
        return f"{a:,} items, at most {limits.max_items:,}"
    if rule == LINE_TOTAL:
        return f"quantity x unit_price_minor = {a:,} x {b:,}, more than {limits.max_amount_minor:,}"
    raise ValueError(f"unknown rule {rule}")


def _refuse(name: str, rule: int, a: int = 0, b: int = 0, limits: Limits | None = None,
            latest: float = 0.0, field: Field = STRING_FIELDS[0]) -> InvalidInput:  # fmt: skip
    return InvalidInput(
        f"{name}: {describe(rule, field, a, b, b'', limits or Limits(), latest)}", name
    )


def check_text(value: str, name: str, limits: Limits, required: bool = False) -> None:
    """A text field outside an order (an event's channel or code), by the TEXT rules."""
    if required and not value:
        raise _refuse(name, REQUIRED)
    size = len(value.encode(errors="surrogatepass"))
    if size > limits.max_id_bytes:
        raise _refuse(name, TOO_LONG, size, limits=limits)


def check_time(seconds: int, nanos: int, name: str, limits: Limits, latest: float) -> float:
    """A time outside an order (an event's, an outcome's known_at), by the TIME rules;
    returns it in epoch seconds."""
    if not 0 <= nanos < 1_000_000_000 or seconds > v.TIMESTAMP_MAX_S:
        raise _refuse(name, TIMESTAMP, seconds, nanos)
    if seconds < limits.earliest_s:
        raise _refuse(name, TOO_EARLY, seconds, limits=limits)
    if seconds > latest:
        raise _refuse(name, FUTURE, seconds, limits=limits, latest=latest)
    return seconds + nanos / 1e9
