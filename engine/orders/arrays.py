"""Orders as the flat arrays the feature kernels read, and the one kernel that makes them.

`encode` validates every row of an `OrderColumns` (`engine.orders.validate`) and turns the
valid ones into `OrderArrays`: times in seconds, amounts in major units (the currency's own
exponent), entity keys (keyed SipHash) and country keys (`engine.orders.hashing`), item
statistics, note length;
it also gathers the order ids and channels as one UTF-8 text for Python to slice. Every
entry point goes through it, so a feature cannot depend on how an order arrived.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from itertools import accumulate
from typing import NamedTuple

import numpy as np

from engine.jit import njit
from engine.orders import hashing
from engine.orders.columns import scratch
from engine.orders.hashing import entity_key, fnv, pair_key
from engine.orders.schema import (
    COUNTRY_COLUMNS,
    ENTITY_COLUMNS,
    ENTITY_KINDS,
    ITEM_STRING_SLOT,
    PAIRS,
    RISKY_CATEGORIES,
    STRING_SLOT,
    TIME_SLOT,
)
from engine.orders.validate import check_orders, utf8_chars


@dataclass
class OrderArrays:
    """One batch of orders as flat arrays, in row order."""

    n: int
    t: np.ndarray  # float64 seconds since the epoch (created_at)
    amount: np.ndarray  # float64, major currency units
    amount_minor: np.ndarray  # int64
    account_age_days: np.ndarray  # float64, NaN when unknown
    key_account: np.ndarray  # bool
    keys: np.ndarray  # uint64 (n, len(ENTITY_KINDS)); 0 = unknown
    billing_country: np.ndarray  # uint64 keys
    shipping_country: np.ndarray
    ip_country: np.ndarray
    n_lines: np.ndarray  # float64
    n_units: np.ndarray  # float64
    risky_share: np.ndarray  # float64 share of item value in risky categories, NaN for none
    note_len: np.ndarray  # float64, code points

    def take(self, rows: np.ndarray | slice) -> OrderArrays:
        """The same arrays for a subset of rows (an index array, a mask or a slice)."""
        kw = {f.name: getattr(self, f.name)[rows] for f in fields(self) if f.name != "n"}
        return OrderArrays(n=len(kw["t"]), **kw)


# Entries of EncodePlan.slots.
CREATED, ACCOUNT, CURRENCY, NOTE, ORDER_ID, CHANNEL, CATEGORY = range(7)


class EncodePlan(NamedTuple):
    """Which slots the encoder reads, the salts and the entity key: arguments, not globals,
    so Numba's cache of this file cannot outlive a change to the schema nor hold a key;
    packed into a few arrays, since every field of an argument costs dispatch time on every
    call."""

    slots: np.ndarray  # int64, indexed by CREATED ... CATEGORY: time, string, item slots
    entities: np.ndarray  # int64 (2, entity columns): string slot, salt
    countries: np.ndarray  # int64: string slots of the countries (salt 0)
    pairs: np.ndarray  # int64 (pairs, 3): the two entity columns, salt
    risky: np.ndarray  # uint8: the risky categories' bytes, concatenated
    risky_offsets: np.ndarray  # int64
    key: np.ndarray  # uint64 (2,): hashing.KEY itself, so a new secret counts from the next call


PLAN = EncodePlan(
    slots=np.array(
        [
            TIME_SLOT["created_at"],
            TIME_SLOT["account_created_at"],
            STRING_SLOT["currency"],
            STRING_SLOT["note"],
            STRING_SLOT["order_id"],
            STRING_SLOT["channel"],
            ITEM_STRING_SLOT["category"],
        ],
        np.int64,
    ),  # fmt: skip
    entities=np.array(
        [[STRING_SLOT[c] for c in ENTITY_COLUMNS], hashing.ENTITY_SALTS.tolist()], np.int64
    ),
    countries=np.array([STRING_SLOT[c] for c in COUNTRY_COLUMNS], np.int64),
    pairs=np.array(
        [
            [ENTITY_COLUMNS.index(a), ENTITY_COLUMNS.index(b), int(salt)]
            for (a, b), salt in zip(PAIRS, hashing.PAIR_SALTS, strict=True)
        ],
        np.int64,
    ),
    risky=np.frombuffer("".join(RISKY_CATEGORIES).encode(), np.uint8),
    risky_offsets=np.array([0, *accumulate(len(c.encode()) for c in RISKY_CATEGORIES)]),
    key=hashing.KEY,
)


@njit
def _encode(cols, rules, latest, plan, f, amount_minor, keys, countries, key_account, errors,
            chars):  # fmt: skip
    """Validate and encode every row; returns (rows that failed, bytes written to `text`,
    `text`: the valid rows' ids and channels, UTF-8, concatenated).

    f rows: t, amount, account age, lines, units, risky share, note length. A failed row gets
    an empty order's values and no id or channel. Arrays are read out of their NamedTuples
    once, before the loop (see `check_orders`)."""
    n_bad = check_orders(cols, rules, latest, errors)
    buf, spans, times, amounts = cols.buf, cols.spans, cols.times, cols.amount_minor
    accounts, item_rows, item_spans, item_ints = (
        cols.key_account, cols.item_rows, cols.item_spans, cols.item_ints,
    )  # fmt: skip
    exponents = rules.currencies
    slots, entities, country_slots, pairs = plan.slots, plan.entities, plan.countries, plan.pairs
    risky, risky_offsets = plan.risky, plan.risky_offsets
    k0, k1 = plan.key[0], plan.key[1]  # read at every call: set_secret changes it in place
    created, account, currency = slots[CREATED], slots[ACCOUNT], slots[CURRENCY]
    note, category = slots[NOTE], slots[CATEGORY]
    own_strings = (slots[ORDER_ID], slots[CHANNEL])
    n_entities = entities.shape[1]
    # Sized from the spans themselves: a caller's spans may overlap, so buf's size bounds
    # nothing (Numba checks no bounds).
    size = 0
    for k in range(2):
        for i in range(amounts.shape[0]):
            size += spans[own_strings[k], 1, i] - spans[own_strings[k], 0, i]
    text = np.empty(size, np.uint8)
    written = n_chars = 0
    chars[0] = 0
    for i in range(amounts.shape[0]):
        if errors[i, 0]:
            f[:, i] = 0.0
            f[2, i] = f[5, i] = np.nan
            amount_minor[i] = 0
            keys[i, :] = 0
            countries[:, i] = 0
            key_account[i] = False
            chars[2 * i + 1] = chars[2 * i + 2] = n_chars
            continue
        sec, ns = times[created, 0, i], times[created, 1, i]
        t = (sec * 1_000_000 + ns // 1000) / 1e6
        c = spans[currency, 0, i]
        code = ((buf[c] - 65) * 26 + (buf[c + 1] - 65)) * 26 + (buf[c + 2] - 65)
        f[0, i] = t
        f[1, i] = amounts[i] / 10.0 ** exponents[code]
        f[2, i] = np.nan
        if times[account, 2, i]:
            sec, ns = times[account, 0, i], times[account, 1, i]
            f[2, i] = (t - (sec * 1_000_000 + ns // 1000) / 1e6) / 86400.0
        lo, hi = item_rows[i], item_rows[i + 1]
        total = risky_value = units = 0.0
        for j in range(lo, hi):
            q, p = item_ints[0, j], item_ints[1, j]
            line = float(q) * float(p)
            total += line
            units += q
            c0, c1 = item_spans[category, 0, j], item_spans[category, 1, j]
            for r in range(risky_offsets.shape[0] - 1):
                r0, r1 = risky_offsets[r], risky_offsets[r + 1]
                same = c1 - c0 == r1 - r0
                k = 0
                while same and k < c1 - c0:
                    same = buf[c0 + k] == risky[r0 + k]
                    k += 1
                if same:
                    risky_value += line
                    break
        f[3, i] = hi - lo
        f[4, i] = units
        f[5, i] = np.nan if hi == lo else risky_value / total if total > 0 else 0.0
        f[6, i] = utf8_chars(buf, spans[note, 0, i], spans[note, 1, i])
        amount_minor[i] = amounts[i]
        key_account[i] = accounts[i]
        for j in range(n_entities):
            s = entities[0, j]
            keys[i, j] = entity_key(k0, k1, buf, spans[s, 0, i], spans[s, 1, i], entities[1, j])
        for j in range(country_slots.shape[0]):
            s = country_slots[j]
            countries[j, i] = fnv(buf, spans[s, 0, i], spans[s, 1, i], 0)
        for p in range(pairs.shape[0]):
            x, y = keys[i, pairs[p, 0]], keys[i, pairs[p, 1]]
            keys[i, n_entities + p] = pair_key(x, y, np.uint64(pairs[p, 2]))
        for k in range(2):  # the strings Python builds: order id, channel
            s = own_strings[k]
            a, b = spans[s, 0, i], spans[s, 1, i]
            for j in range(a, b):
                text[written] = buf[j]
                written += 1
            n_chars += utf8_chars(buf, a, b)
            chars[2 * i + 1 + k] = n_chars
    return n_bad, written, text


class Encoding(NamedTuple):
    """What `encode` returns."""

    arrays: OrderArrays
    ids: list[str]
    channels: list[str | None]
    errors: np.ndarray  # int64 (n, 5): rule, field, item, a, b; rule 0 for a valid row


def encode(cols, rules, latest: float) -> Encoding:  # type: ignore[no-untyped-def]
    """Validate `cols` (OrderColumns) against `rules` (RuleArrays), created_at no later than
    `latest` (epoch seconds), and encode the valid rows."""
    n = cols.amount_minor.shape[0]
    f = scratch((7, n), np.float64)
    amount_minor = scratch(n, np.int64)
    keys = scratch((n, len(ENTITY_KINDS)), np.uint64)
    countries = scratch((len(COUNTRY_COLUMNS), n), np.uint64)
    key_account = np.empty(n, np.bool_)
    errors = scratch((n, 5), np.int64)
    chars = np.empty(2 * n + 1, np.int64)
    _, written, text = _encode(
        cols, rules, float(latest), PLAN, f, amount_minor, keys, countries, key_account,
        errors, chars,
    )  # fmt: skip
    s = text[:written].tobytes().decode()
    c = chars.tolist()
    ids = [s[a:b] for a, b in zip(c[0::2], c[1::2], strict=False)]
    channels = [s[a:b] or None for a, b in zip(c[1::2], c[2::2], strict=True)]
    t, amount, age, n_lines, n_units, risky, note_len = f
    arrays = OrderArrays(
        n=n, t=t, amount=amount, amount_minor=amount_minor, account_age_days=age,
        key_account=key_account, keys=keys, billing_country=countries[0],
        shipping_country=countries[1], ip_country=countries[2], n_lines=n_lines,
        n_units=n_units, risky_share=risky, note_len=note_len,
    )  # fmt: skip
    return Encoding(arrays, ids, channels, errors)
