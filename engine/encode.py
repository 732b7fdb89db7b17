"""Arrow order table -> flat NumPy arrays the kernels read.

Strings are hashed to 64-bit keys by one Numba kernel over the Arrow buffers (FNV-1a with a
splitmix64 finaliser), so the same string gives the same key in every process: Python's
`hash` is salted per process and would break training/serving parity.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, fields

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from engine.jit import njit
from engine.schema import ENTITY_COLUMNS

# Entity kinds that carry velocity state: the single entity columns, then pairs that say
# whether a customer has used this device / card before.
PAIRS: tuple[tuple[str, str], ...] = (
    ("customer_id", "device_id"),
    ("customer_id", "card_fingerprint"),
)
ENTITY_KINDS: tuple[str, ...] = ENTITY_COLUMNS + tuple(f"{a}+{b}" for a, b in PAIRS)

RISKY_CATEGORIES = ("electronics", "gift_card")
ZERO_DECIMAL = ("JPY", "KRW", "VND", "CLP", "ISK", "HUF", "TWD", "UGX", "XOF", "XAF")
THREE_DECIMAL = ("BHD", "KWD", "OMR", "JOD", "TND", "IQD", "LYD")

_FNV_OFFSET = np.uint64(0xCBF29CE484222325)
_FNV_PRIME = np.uint64(0x100000001B3)


@njit
def _mix64(x):
    x = (x ^ (x >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    x = (x ^ (x >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return x ^ (x >> np.uint64(31))


@njit
def _hash_strings(offsets, data, valid, salts, out):
    """FNV-1a over each string's bytes, salted per string; 0 marks null or empty (unknown)."""
    for i in range(out.shape[0]):
        start = offsets[i]
        end = offsets[i + 1]
        if not valid[i] or end == start:
            out[i] = 0
            continue
        h = _FNV_OFFSET ^ salts[i]
        for j in range(start, end):
            h = (h ^ np.uint64(data[j])) * _FNV_PRIME
        h = _mix64(h)
        out[i] = h if h != 0 else np.uint64(1)


@njit
def _pair_keys(a, b, salt, out):
    for i in range(out.shape[0]):
        if a[i] == 0 or b[i] == 0:
            out[i] = 0
        else:
            h = _mix64(a[i] ^ _mix64(b[i] ^ salt))
            out[i] = h if h != 0 else np.uint64(1)


@njit
def _item_stats(list_offsets, qty, price, cat, risky_a, risky_b, out_lines, out_qty, out_risky):
    for i in range(out_lines.shape[0]):
        start = list_offsets[i]
        end = list_offsets[i + 1]
        total = 0.0
        risky = 0.0
        q = 0.0
        for j in range(start, end):
            line = float(qty[j]) * float(price[j])
            total += line
            q += qty[j]
            if cat[j] == risky_a or cat[j] == risky_b:
                risky += line
        out_lines[i] = end - start
        out_qty[i] = q
        out_risky[i] = risky / total if total > 0 else (np.nan if end == start else 0.0)


def hash_strings(arr: pa.Array | pa.ChunkedArray, salt: int = 0) -> np.ndarray:
    """Stable 64-bit keys for a string array (0 for null or empty)."""
    if isinstance(arr, pa.ChunkedArray):
        arr = arr.combine_chunks()
    if not pa.types.is_string(arr.type):
        arr = arr.cast(pa.string())
    n = len(arr)
    out = np.empty(n, dtype=np.uint64)
    if n == 0:
        return out
    validity, offsets_buf, data_buf = arr.buffers()
    offsets = np.frombuffer(offsets_buf, dtype=np.int32)[arr.offset : arr.offset + n + 1]
    data = (
        np.frombuffer(data_buf, dtype=np.uint8) if data_buf is not None else np.zeros(0, np.uint8)
    )
    valid = (
        np.ones(n, dtype=np.bool_)
        if arr.null_count == 0
        else np.asarray(arr.is_valid().to_numpy(zero_copy_only=False), dtype=np.bool_)
    )
    _hash_strings(offsets, data, valid, np.full(n, salt, dtype=np.uint64), out)
    return out


def hash_values(values: Sequence[str | None], salt: int = 0) -> np.ndarray:
    """`hash_strings` for Python strings, without building an Arrow array (the gRPC path)."""
    return hash_columns([values], [salt])[0]


def hash_columns(columns: Sequence[Sequence[str | None]], salts: Sequence[int]) -> np.ndarray:
    """Hash several equally long columns of Python strings in one kernel call.

    Returns (len(columns), n) keys; the same keys as `hash_strings` on each column.
    """
    n = len(columns[0]) if columns else 0
    raw = [v.encode() if v else b"" for col in columns for v in col]
    offsets = np.zeros(len(raw) + 1, dtype=np.int32)
    np.cumsum([len(b) for b in raw], out=offsets[1:])
    data = np.frombuffer(b"".join(raw), dtype=np.uint8)
    salt = np.repeat(np.asarray(salts, dtype=np.uint64), n)
    out = np.empty(len(raw), dtype=np.uint64)
    _hash_strings(offsets, data, np.ones(len(raw), np.bool_), salt, out)
    return out.reshape(len(columns), n)


def entity_keys(single: list[np.ndarray]) -> np.ndarray:
    """(n, len(ENTITY_KINDS)) keys from the hashed ENTITY_COLUMNS, pair keys appended."""
    n = single[0].shape[0]
    keys = np.zeros((n, len(ENTITY_KINDS)), dtype=np.uint64)
    for j, h in enumerate(single):
        keys[:, j] = h
    for p, (a, b) in enumerate(PAIRS):
        col = np.empty(n, dtype=np.uint64)
        _pair_keys(
            single[ENTITY_COLUMNS.index(a)],
            single[ENTITY_COLUMNS.index(b)],
            np.uint64(100 + p),
            col,
        )
        keys[:, len(ENTITY_COLUMNS) + p] = col
    return keys


def minor_exponent(currency: str) -> int:
    """Decimal places of a currency's minor unit (2 unless listed)."""
    c = currency.upper()
    return 0 if c in ZERO_DECIMAL else 3 if c in THREE_DECIMAL else 2


@dataclass
class Encoded:
    """One batch of orders as flat arrays, in row order."""

    n: int
    t: np.ndarray  # float64 seconds since the epoch (created_at)
    amount: np.ndarray  # float64, major currency units
    amount_minor: np.ndarray  # int64
    account_age_days: np.ndarray  # float64, NaN when unknown
    key_account: np.ndarray  # bool
    keys: np.ndarray  # uint64 (n, len(ENTITY_KINDS)); 0 = unknown
    billing_country: np.ndarray  # uint64 hashes
    shipping_country: np.ndarray
    ip_country: np.ndarray
    n_lines: np.ndarray  # float64
    n_units: np.ndarray  # float64
    risky_share: np.ndarray  # float64 share of item value in risky categories
    note_len: np.ndarray  # float64

    def take(self, rows: np.ndarray | slice) -> Encoded:
        """The same arrays for a subset of rows (an index array, a mask or a slice)."""
        kw = {f.name: getattr(self, f.name)[rows] for f in fields(self) if f.name != "n"}
        return Encoded(n=len(kw["t"]), **kw)


def epoch_seconds(arr: pa.ChunkedArray | pa.Array) -> np.ndarray:
    """A timestamp column as float64 epoch seconds (nulls must be filled first)."""
    us = arr.cast(pa.int64()).to_numpy(zero_copy_only=False)
    return np.asarray(us, dtype=np.float64) / 1e6


def _minor_exponent(currency: pa.ChunkedArray) -> np.ndarray:
    exp = np.full(len(currency), 2.0)
    upper = pc.utf8_upper(currency)
    exp[pc.is_in(upper, pa.array(ZERO_DECIMAL)).to_numpy(zero_copy_only=False)] = 0.0
    exp[pc.is_in(upper, pa.array(THREE_DECIMAL)).to_numpy(zero_copy_only=False)] = 3.0
    return exp


def encode(table: pa.Table) -> Encoded:
    """Encode a table already checked by `engine.schema.conform`."""
    n = table.num_rows
    t = epoch_seconds(table.column("created_at"))
    amount_minor = np.asarray(table.column("amount_minor").to_numpy(), dtype=np.int64)
    amount = amount_minor / np.power(10.0, _minor_exponent(table.column("currency")))

    acct = table.column("account_created_at")
    age = np.full(n, np.nan)
    if acct.null_count < n:
        valid = acct.is_valid().to_numpy(zero_copy_only=False)
        acct_s = epoch_seconds(acct.fill_null(0))
        age[valid] = (t[valid] - acct_s[valid]) / 86400.0
    key_account = np.asarray(
        table.column("key_account").fill_null(False).to_numpy(zero_copy_only=False), dtype=np.bool_
    )

    keys = entity_keys(
        [hash_strings(table.column(name), salt=j + 1) for j, name in enumerate(ENTITY_COLUMNS)]
    )

    items = table.column("items").combine_chunks()
    n_lines = np.zeros(n)
    n_units = np.zeros(n)
    risky = np.full(n, np.nan)
    if n and items.null_count < n:
        items = items.fill_null([])  # type: ignore[arg-type]
        flat = items.flatten()
        qty = np.asarray(
            flat.field("quantity").fill_null(0).to_numpy(zero_copy_only=False), np.int64
        )
        price = np.asarray(
            flat.field("unit_price_minor").fill_null(0).to_numpy(zero_copy_only=False), np.int64
        )
        cat = hash_strings(flat.field("category"))
        risky_keys = hash_values(RISKY_CATEGORIES)
        offsets = np.asarray(items.offsets.to_numpy(), dtype=np.int64) - items.offsets[0].as_py()
        _item_stats(offsets, qty, price, cat, risky_keys[0], risky_keys[1], n_lines, n_units, risky)

    note_len = np.asarray(
        pc.utf8_length(table.column("note")).fill_null(0).to_numpy(zero_copy_only=False),
        dtype=np.float64,
    )
    return Encoded(
        n=n,
        t=t,
        amount=amount,
        amount_minor=amount_minor,
        account_age_days=age,
        key_account=key_account,
        keys=keys,
        billing_country=hash_strings(table.column("billing_country")),
        shipping_country=hash_strings(table.column("shipping_country")),
        ip_country=hash_strings(table.column("ip_country")),
        n_lines=n_lines,
        n_units=n_units,
        risky_share=risky,
        note_len=note_len,
    )
