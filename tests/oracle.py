"""Test oracles: the order rules and encoding written again in plain Python over protobuf
objects, and decisions built as protobuf objects. They live here, not in the engine: the
engine has one codec and one validator; these check it."""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac

import numpy as np
from ordersight.v1 import risk_pb2 as pb

from engine.decision.decisions import Decisions
from engine.errors import InvalidInput
from engine.orders import hashing
from engine.orders.reference import country_codes, currency_exponents
from engine.orders.rules import Limits
from engine.orders.schema import ENTITY_KINDS, RISKY_CATEGORIES

_MASK = (1 << 64) - 1
_CURRENCIES = currency_exponents()
_COUNTRIES = country_codes()
LIMITS = Limits()


def _iso(s: int) -> str:
    try:
        return dt.datetime.fromtimestamp(s, dt.UTC).isoformat(timespec="seconds")
    except (OverflowError, OSError, ValueError):
        return f"{s:.0f} s after the epoch"


def _mix(x: int) -> int:
    x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & _MASK
    x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & _MASK
    return x ^ (x >> 31)


def fnv(s: str, salt: int = 0) -> int:
    """The countries' unkeyed key."""
    if not s:
        return 0
    h = 0xCBF29CE484222325 ^ salt
    for b in s.encode():
        h = ((h ^ b) * 0x100000001B3) & _MASK
    return _mix(h) or 1


def _rotl(x: int, b: int) -> int:
    return ((x << b) | (x >> (64 - b))) & _MASK


def siphash24(k0: int, k1: int, data: bytes) -> int:
    """SipHash-2-4, as the paper writes it: 64-bit words, little-endian."""
    v = [k0 ^ 0x736F6D6570736575, k1 ^ 0x646F72616E646F6D,
         k0 ^ 0x6C7967656E657261, k1 ^ 0x7465646279746573]  # fmt: skip

    def rounds(n: int) -> None:
        for _ in range(n):
            v[0] = (v[0] + v[1]) & _MASK
            v[1] = _rotl(v[1], 13) ^ v[0]
            v[0] = _rotl(v[0], 32)
            v[2] = (v[2] + v[3]) & _MASK
            v[3] = _rotl(v[3], 16) ^ v[2]
            v[0] = (v[0] + v[3]) & _MASK
            v[3] = _rotl(v[3], 21) ^ v[0]
            v[2] = (v[2] + v[1]) & _MASK
            v[1] = _rotl(v[1], 17) ^ v[2]
            v[2] = _rotl(v[2], 32)

    tail = len(data) % 8
    blocks = [data[i : i + 8] for i in range(0, len(data) - tail, 8)]
    blocks.append(data[len(data) - tail :] + bytes(7 - tail) + bytes([len(data) & 0xFF]))
    for block in blocks:
        m = int.from_bytes(block, "little")
        v[3] ^= m
        rounds(2)
        v[0] ^= m
    v[2] ^= 0xFF
    rounds(4)
    return v[0] ^ v[1] ^ v[2] ^ v[3]


def derive_key(secret: bytes) -> tuple[int, int]:
    """The entity key of a secret, as docs/SECURITY.md states it."""
    d = hmac.new(secret, b"ordersight entity keys v1", hashlib.sha256).digest()
    return int.from_bytes(d[:8], "little"), int.from_bytes(d[8:16], "little")


def current_key() -> tuple[int, int]:
    """The key the engine encodes with now (the public one unless a test set a secret)."""
    return int(hashing.KEY[0]), int(hashing.KEY[1])


def entity_key(s: str, salt: int, key: tuple[int, int]) -> int:
    """An entity column's key: SipHash-2-4 of the salt's 8-byte word and the UTF-8 bytes."""
    if not s:
        return 0
    return siphash24(*key, salt.to_bytes(8, "little") + s.encode()) or 1


def _strings(o: pb.Order) -> list[tuple[str, str, str]]:
    """(path, value, kind) in the schema's string order."""
    c, p, s = o.customer, o.payment, o.shipping
    return [
        ("order_id", o.order_id, "req"), ("customer_id", o.customer_id, "req"),
        ("currency", o.currency, "currency"), ("channel", o.channel, "text"),
        ("customer.email_domain", c.email_domain, "text"), ("payment.method", p.method, "text"),
        ("payment.card_bin", p.card_bin, "text"),
        ("payment.card_fingerprint", p.card_fingerprint, "text"),
        ("payment.billing_country", p.billing_country, "country"),
        ("shipping.country", s.country, "country"),
        ("shipping.postal_code", s.postal_code, "text"),
        ("shipping.address_fingerprint", s.address_fingerprint, "text"), ("ip", o.ip, "text"),
        ("ip_country", o.ip_country, "country"), ("device_id", o.device_id, "text"),
        ("note", o.note, "note"),
    ]  # fmt: skip


def validate_order(o: pb.Order, prefix: str, latest: float, limits: Limits = LIMITS) -> None:
    """Raise what the engine's validator raises for this order (the same rule, first)."""

    def fail(path: str, what: str) -> None:
        raise InvalidInput(f"{prefix}{path}: {what}", prefix + path)

    for path, value, kind in _strings(o):
        size = len(value.encode())
        top = limits.max_note_bytes if kind == "note" else limits.max_id_bytes
        if not value:
            if kind in ("req", "currency"):
                fail(path, "required")
            continue
        if size > top:
            fail(path, f"{size:,} bytes, at most {top:,}")
        if kind == "currency" and value not in _CURRENCIES:
            fail(path, f"{value[:40]!r} is not an ISO 4217 currency code this engine takes")
        if kind == "country" and value not in _COUNTRIES:
            fail(path, f"{value[:40]!r} is not an ISO 3166-1 alpha-2 country code")
    times = [("created_at", o.HasField("created_at"), o.created_at, True)]
    has_acct = o.customer.HasField("account_created_at")
    times.append(("customer.account_created_at", has_acct, o.customer.account_created_at, False))
    for path, present, ts, required in times:
        if not present:
            if required:
                fail(path, "required")
            continue
        if not 0 <= ts.nanos < 1_000_000_000 or ts.seconds > 253_402_300_799:
            fail(path, f"not a valid timestamp (seconds {ts.seconds}, nanos {ts.nanos})")
        if ts.seconds < limits.earliest_s:
            fail(
                path,
                f"{_iso(ts.seconds)} is before {_iso(limits.earliest_s)}, the earliest accepted",
            )
        if ts.seconds > latest:
            fail(path, f"{_iso(ts.seconds)} is in the future (latest accepted {_iso(latest)})")
    if o.amount_minor < 0:
        fail("amount_minor", f"must be >= 0, is {o.amount_minor}")
    if o.amount_minor > limits.max_amount_minor:
        fail("amount_minor", f"{o.amount_minor:,}, at most {limits.max_amount_minor:,}")
    if len(o.items) > limits.max_items:
        fail("items", f"{len(o.items):,} items, at most {limits.max_items:,}")
    for k, item in enumerate(o.items):
        for name in ("sku", "category"):
            size = len(getattr(item, name).encode())
            if size > limits.max_id_bytes:
                fail(f"items[{k}].{name}", f"{size:,} bytes, at most {limits.max_id_bytes:,}")
        q, p = item.quantity, item.unit_price_minor
        for name, v, top in (
            ("quantity", q, limits.max_quantity),
            ("unit_price_minor", p, limits.max_amount_minor),
        ):
            if v < 0:
                fail(f"items[{k}].{name}", f"must be >= 0, is {v}")
            if v > top:
                fail(f"items[{k}].{name}", f"{v:,}, at most {top:,}")
        if p > 0 and q * p > limits.max_amount_minor:
            top = limits.max_amount_minor
            fail(f"items[{k}]", f"quantity x unit_price_minor = {q:,} x {p:,}, more than {top:,}")


def encode_orders(
    orders: list[pb.Order], key: tuple[int, int] | None = None
) -> dict[str, np.ndarray]:
    """The engine's arrays for valid orders, computed in Python (entity keys under `key`,
    by default the engine's current one)."""
    key = current_key() if key is None else key
    n = len(orders)
    out = {
        "t": np.empty(n), "amount": np.empty(n), "amount_minor": np.empty(n, np.int64),
        "account_age_days": np.full(n, np.nan), "key_account": np.zeros(n, np.bool_),
        "keys": np.zeros((n, len(ENTITY_KINDS)), np.uint64),
        "billing_country": np.zeros(n, np.uint64),
        "shipping_country": np.zeros(n, np.uint64), "ip_country": np.zeros(n, np.uint64),
        "n_lines": np.zeros(n), "n_units": np.zeros(n), "risky_share": np.full(n, np.nan),
        "note_len": np.zeros(n),
    }  # fmt: skip
    for i, o in enumerate(orders):
        t = (o.created_at.seconds * 1_000_000 + o.created_at.nanos // 1000) / 1e6
        out["t"][i] = t
        out["amount"][i] = o.amount_minor / 10.0 ** _CURRENCIES[o.currency]
        out["amount_minor"][i] = o.amount_minor
        a = o.customer.account_created_at
        if o.customer.HasField("account_created_at"):
            out["account_age_days"][i] = (
                t - (a.seconds * 1_000_000 + a.nanos // 1000) / 1e6
            ) / 86400.0
        out["key_account"][i] = o.customer.key_account
        single = [o.customer_id, o.device_id, o.payment.card_fingerprint, o.ip,
                  o.customer.email_domain, o.shipping.address_fingerprint]  # fmt: skip
        keys = [entity_key(v, j + 1, key) for j, v in enumerate(single)]
        for p, (x, y) in enumerate(((0, 1), (0, 2))):
            a_, b_ = keys[x], keys[y]
            keys.append(0 if a_ == 0 or b_ == 0 else (_mix(a_ ^ _mix(b_ ^ (100 + p))) or 1))
        out["keys"][i] = keys
        out["billing_country"][i] = fnv(o.payment.billing_country)
        out["shipping_country"][i] = fnv(o.shipping.country)
        out["ip_country"][i] = fnv(o.ip_country)
        if o.items:
            total = risky = units = 0.0
            for item in o.items:
                line = float(item.quantity) * float(item.unit_price_minor)
                total += line
                units += item.quantity
                if item.category in RISKY_CATEGORIES:
                    risky += line
            out["n_lines"][i] = len(o.items)
            out["n_units"][i] = units
            out["risky_share"][i] = risky / total if total > 0 else 0.0
        out["note_len"][i] = len(o.note)
    return out


def decisions_to_pb(d: Decisions, latency_us: list[int]) -> list[pb.Decision]:
    out = []
    for i in range(len(d)):
        out.append(
            pb.Decision(
                order_id=d.order_ids[i],
                action=int(d.action[i]),
                score=float(d.score[i]),
                path=int(d.path[i]),
                reasons=[
                    pb.Reason(
                        code=r.code,
                        feature=r.feature,
                        contribution=r.contribution,
                        message=r.message,
                    )
                    for r in d.reasons[i]
                ],
                review_triggers=d.triggers[i],
                model_version=d.model_version,
                latency_us=latency_us[i],
                raw_score=float(d.raw[i]),
                base_value=float(d.base[i]),
                fallback_cause=d.causes[i],
            )
        )
    return out
