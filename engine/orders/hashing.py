"""Stable 64-bit keys for strings: FNV-1a over the bytes with a splitmix64 finaliser.

The same string gives the same key in every process and on every entry point (Python's
`hash` is salted per process and would break training/serving parity); a salt per column
keeps equal strings in different columns apart. 0 is reserved for an unknown (empty) value.
The constants fix every key in stored velocity state: they cannot change without a rebuild.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from engine.jit import njit, njit_inline
from engine.orders.schema import ENTITY_COLUMNS, PAIRS

FNV_OFFSET = np.uint64(0xCBF29CE484222325)
FNV_PRIME = np.uint64(0x100000001B3)
ENTITY_SALTS = np.array([j + 1 for j in range(len(ENTITY_COLUMNS))], np.uint64)
COUNTRY_SALT = 0
PAIR_SALTS = np.array([100 + p for p in range(len(PAIRS))], np.uint64)


@njit_inline
def mix64(x):
    x = (x ^ (x >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    x = (x ^ (x >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return x ^ (x >> np.uint64(31))


@njit_inline
def fnv(buf, lo, hi, salt):
    """Key of buf[lo:hi]: 0 for empty, never 0 otherwise."""
    if hi == lo:
        return np.uint64(0)
    h = FNV_OFFSET ^ np.uint64(salt)
    for j in range(lo, hi):
        h = (h ^ np.uint64(buf[j])) * FNV_PRIME
    h = mix64(h)
    return h if h != 0 else np.uint64(1)


@njit_inline
def pair_key(a, b, salt):
    """Key of a pair of keys (0 when either is unknown)."""
    if a == 0 or b == 0:
        return np.uint64(0)
    h = mix64(a ^ mix64(b ^ salt))
    return h if h != 0 else np.uint64(1)


@njit
def _hash_spans(buf, starts, ends, salt, out):
    for i in range(out.shape[0]):
        out[i] = fnv(buf, starts[i], ends[i], salt)


def hash_values(values: Sequence[str | None], salt: int = 0) -> np.ndarray:
    """Keys of Python strings (None and "" are unknown, 0), as the codecs compute them."""
    raw = [v.encode() if v else b"" for v in values]
    ends = np.cumsum([len(b) for b in raw], dtype=np.int64)
    starts = ends - np.array([len(b) for b in raw], np.int64)
    out = np.empty(len(raw), np.uint64)
    _hash_spans(np.frombuffer(b"".join(raw) or b"\0", np.uint8), starts, ends, salt, out)
    return out
