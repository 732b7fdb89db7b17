"""The one columnar representation of orders, whatever they arrived as.

The wire decoder (request bytes), the Arrow reader (IPC batches, Parquet and CSV histories)
and nothing else build `OrderColumns`; the validator and the encoder (`engine.orders.batch`)
read only it. Strings are spans into one byte buffer, so the wire decoder points into the
request itself and copies nothing; the slots follow `engine.orders.schema`. Arrays are
field-major (a field's values for all orders side by side), so a columnar source fills
each field with one contiguous copy.
"""

from __future__ import annotations

import math
import mmap
from typing import NamedTuple

import numpy as np

from engine.orders.schema import ITEM_STRING_FIELDS, STRING_FIELDS, TIME_FIELDS

N_STRINGS = len(STRING_FIELDS)
N_TIMES = len(TIME_FIELDS)
N_ITEM_STRINGS = len(ITEM_STRING_FIELDS)
QUANTITY, UNIT_PRICE = 0, 1  # columns of item_ints
SECONDS, NANOS, PRESENT = 0, 1, 2  # last axis of times


class OrderColumns(NamedTuple):
    """n orders; every array is C-contiguous. An empty span is an unknown (or empty) value."""

    buf: np.ndarray  # uint8: the bytes every span points into
    spans: np.ndarray  # int64 (N_STRINGS, 2, n): [start, end) of each string in buf
    times: np.ndarray  # int64 (N_TIMES, 3, n): seconds, nanos, present (0 or 1)
    amount_minor: np.ndarray  # int64 (n,)
    key_account: np.ndarray  # bool (n,)
    item_rows: np.ndarray  # int64 (n + 1,): order i's items are item_rows[i]:item_rows[i + 1]
    item_spans: np.ndarray  # int64 (N_ITEM_STRINGS, 2, m)
    item_ints: np.ndarray  # int64 (2, m): quantity, unit_price_minor
    malformed: np.ndarray  # int64 (n, 2): the wire decoder's error code (0 none), byte offset

    @property
    def n(self) -> int:
        return int(self.amount_minor.shape[0])

    def text(self, i: int, slot: int) -> bytes:
        """Order i's string in `slot`, as bytes."""
        lo, hi = self.spans[slot, :, i]
        return self.buf[lo:hi].tobytes()


def scratch(shape: int | tuple[int, ...], dtype: type | np.dtype) -> np.ndarray:
    """A zeroed array for a batch's columns, on plain anonymous memory.

    numpy advises transparent huge pages for large arrays; where the kernel then compacts
    memory on the first touch (THP `defrag=madvise`), a large array written once costs
    several times its copy. The engine's long-lived, randomly accessed table opts into huge
    pages itself (`engine.features.velocity`)."""
    count = shape if isinstance(shape, int) else math.prod(shape)
    if count < 1 << 17:  # small: numpy's own allocator (and its cache) is cheaper
        return np.zeros(shape, dtype)
    dt = np.dtype(dtype)
    buf = mmap.mmap(-1, count * dt.itemsize)
    return np.frombuffer(buf, dt, count).reshape(shape)


def empty_columns(n: int, n_items: int, buf: np.ndarray) -> OrderColumns:
    """Columns of n orders with n_items items, zeroed (every value unknown), over `buf`. The
    per-order int64 arrays are views of one block: one allocation instead of five."""
    a, b, c = n * N_STRINGS * 2, n * N_TIMES * 3, n * 2
    block = scratch(a + b + 2 * n + 1 + c, np.int64)
    return OrderColumns(
        buf=buf,
        spans=block[:a].reshape(N_STRINGS, 2, n),
        times=block[a : a + b].reshape(N_TIMES, 3, n),
        amount_minor=block[a + b : a + b + n],
        key_account=np.zeros(n, np.bool_),
        item_rows=block[a + b + n : a + b + 2 * n + 1],
        item_spans=scratch((N_ITEM_STRINGS, 2, n_items), np.int64),
        item_ints=scratch((2, n_items), np.int64),
        malformed=block[a + b + 2 * n + 1 :].reshape(n, 2),
    )
