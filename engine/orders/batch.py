"""What every entry point gets back: validated, encoded orders and a refusal per bad row.

`OrderRules` is the rule table for one set of `Limits`, built once; `check(columns)` runs
the one validator and the one encoder (`engine.orders.arrays.encode`) and returns an
`OrderBatch`. A refusal names where the bad value was, in the entry point's own terms: a
field path for gRPC (`orders.orders[537].note`), a column and row for a file.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from engine.errors import InvalidInput
from engine.orders.arrays import OrderArrays, encode
from engine.orders.columns import OrderColumns
from engine.orders.rules import (
    ERROR_FIELDS,
    ITEM_ERROR_FIELDS,
    LINE_TOTAL,
    Limits,
    describe,
    rule_arrays,
)
from engine.orders.schema import STRING_FIELDS, Field
from engine.orders.validate import RULE_CODES

MALFORMED_BELOW = min(RULE_CODES)
"""Rule codes below the validator's are the wire decoder's: the message did not parse."""


class OrderRules:
    """The rule table for one set of limits, as the validator kernel reads it."""

    def __init__(self, limits: Limits | None = None) -> None:
        self.limits = limits or Limits()
        self.arrays = rule_arrays(self.limits)

    def latest(self, wall_s: float) -> float:
        """Latest time accepted when the server's clock reads `wall_s`."""
        return wall_s + self.limits.max_future_s

    def check(self, cols: OrderColumns, latest: float) -> OrderBatch:
        enc = encode(cols, self.arrays, latest)
        return OrderBatch(enc.ids, enc.channels, enc.arrays, enc.errors, cols, self, latest)


@functools.cache
def default_rules() -> OrderRules:
    """The rule table with the default limits, built once (its ISO tables take a moment)."""
    return OrderRules()


@dataclass(slots=True)
class OrderBatch:
    """Orders in input order; a refused row has an empty id, no channel and an empty order's
    values in `arrays` (`ok` selects the others)."""

    ids: list[str]
    channels: list[str | None]
    arrays: OrderArrays
    errors: np.ndarray  # int64 (n, 5): rule, field, item, a, b; rule 0 for a valid row
    columns: OrderColumns
    rules: OrderRules
    latest: float

    @property
    def n(self) -> int:
        return len(self.ids)

    @property
    def ok(self) -> np.ndarray:
        return self.errors[:, 0] == 0

    @property
    def malformed(self) -> np.ndarray:
        """Rows the wire decoder could not parse (the others failed validation, if at all)."""
        r = self.errors[:, 0]
        return (r > 0) & (r < MALFORMED_BELOW)

    def describe(self, i: int) -> tuple[Field | None, int, str]:
        """(field, item index or -1, what is wrong) for refused row i."""
        rule, field, item, a, b = (int(v) for v in self.errors[i])
        f = ERROR_FIELDS[field] if field >= 0 else None
        raw = b""
        if f is not None and field < len(STRING_FIELDS):
            raw = self.columns.text(i, field)
        return f, item, describe(rule, f, a, b, raw, self.rules.limits, self.latest)  # type: ignore[arg-type]

    def refusal_at(self, i: int, prefix: str) -> InvalidInput:
        """Refused row i worded for a protobuf request: `prefix` + the field's path."""
        rule, field, item = (int(v) for v in self.errors[i, :3])
        f, item, what = self.describe(i)
        assert f is not None, "malformed rows are worded by the wire decoder"
        if field in ITEM_ERROR_FIELDS:
            path = f"{prefix}items[{item}].{f.path}"
        elif rule == LINE_TOTAL:
            path = f"{prefix}items[{item}]"
        else:
            path = prefix + f.path
        return InvalidInput(f"{path}: {what}", path)

    def refusal_in(self, i: int, where: str) -> InvalidInput:
        """Refused row i worded for a table: `where: column 'x' row r: ...`."""
        rule, field, item = (int(v) for v in self.errors[i, :3])
        f, item, what = self.describe(i)
        assert f is not None, "tables have no malformed rows"
        if field in ITEM_ERROR_FIELDS:
            place = f"column 'items.{f.column}' row {i} item {item}"
        elif rule == LINE_TOTAL:
            place = f"column 'items' row {i} item {item}"
        else:
            place = f"column '{f.column}' row {i}"
        return InvalidInput(f"{where}: {place}: {what}", f.column)

    def raise_first(self, word: Callable[[int], InvalidInput]) -> None:
        """Raise the first refused row's refusal, worded by `word(row)`."""
        bad = np.flatnonzero(~self.ok)
        if bad.size:
            raise word(int(bad[0]))
