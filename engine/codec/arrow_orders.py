"""Arrow order tables (IPC streams, Parquet and CSV histories) to `OrderColumns`, safely.

Untrusted Arrow input is checked before any compute kernel touches it, since pyarrow's
kernels trust their buffers and can crash on corrupt ones:
1. `read_ipc` walks the stream's messages and sums what each record batch's buffers will
   decompress to, read from the IPC metadata, so a small compressed request cannot expand
   into gigabytes (`Limits.max_arrow_bytes`, `Limits.max_batch_orders`); only then is the
   stream decoded.
2. `validated` runs Arrow's full validation (offsets, lengths, nesting) on every column, with
   strings seen as bytes: UTF-8 is one of the validator's rules, reported per row.
3. `conform` casts to the schema's types (dictionary or large strings, naive timestamps read
   as UTF-C, missing optional columns as nulls), naming the column that does not fit.
4. `to_columns` lays the columns out as `OrderColumns` for the one validator and encoder.
"""

from __future__ import annotations

import struct

import numpy as np
import pyarrow as pa
from flatbuffers import encode, number_types, packer
from flatbuffers.table import Table

from engine.errors import InvalidInput
from engine.orders.batch import OrderBatch, OrderRules, default_rules
from engine.orders.columns import NANOS, PRESENT, SECONDS, OrderColumns, empty_columns, scratch
from engine.orders.rules import Limits
from engine.orders.schema import (
    ITEM_FIELDS,
    ITEM_STRING_FIELDS,
    LABEL_FIELDS,
    ORDER_FIELDS,
    STRING_FIELDS,
    TIME_FIELDS,
)

_RECORD_BATCH, _DICTIONARY_BATCH = 3, 2  # flatbuffer MessageHeader union tags
_INT64 = struct.Struct("<q")


def _slot(t: Table, k: int) -> int:
    """Position of a table's field k, 0 when absent."""
    o = t.Offset(4 + 2 * k)
    return t.Pos + o if o else 0


def _batch_size(metadata: pa.Buffer, body: pa.Buffer | None) -> tuple[int, int]:
    """(rows, bytes after decompression) of one IPC message (0, 0 for a schema)."""
    buf = memoryview(metadata)
    msg = Table(buf, encode.Get(packer.uoffset, buf, 0))
    at = _slot(msg, 1)
    kind = encode.Get(number_types.Uint8Flags.packer_type, buf, at) if at else 0
    at = _slot(msg, 2)
    if kind not in (_RECORD_BATCH, _DICTIONARY_BATCH) or not at:
        return 0, 0
    header = Table(buf, msg.Indirect(at))
    if kind == _DICTIONARY_BATCH:
        at = _slot(header, 1)
        if not at:
            return 0, 0
        header = Table(buf, header.Indirect(at))
    at = _slot(header, 0)
    rows = encode.Get(packer.int64, buf, at) if at else 0
    if rows < 0:
        raise ValueError(f"a record batch declares {rows} rows")
    at = _slot(header, 2)
    compressed = _slot(header, 3) != 0
    raw = memoryview(body) if body is not None else memoryview(b"")
    total = 0
    if at:
        start, n = header.Vector(at - header.Pos), header.VectorLen(at - header.Pos)
        for k in range(n):
            offset = encode.Get(packer.int64, buf, start + 16 * k)
            length = encode.Get(packer.int64, buf, start + 16 * k + 8)
            if length < 0 or offset < 0 or offset + length > len(raw):
                raise ValueError("a buffer lies outside the message body")
            if compressed and length >= 8:
                size = _INT64.unpack_from(raw, offset)[0]
                if size < -1:  # -1 marks a buffer stored uncompressed; others are sizes
                    raise ValueError(f"a buffer declares {size} bytes")
                total += length - 8 if size == -1 else size
            else:
                total += length
    return int(rows), int(total)


def read_ipc(payload: bytes | memoryview, limits: Limits, where: str = "arrow_ipc") -> pa.Table:
    """A bounded, fully validated Arrow IPC stream (see the module docstring)."""
    rows = size = 0
    try:
        for message in pa.ipc.MessageReader.open_stream(pa.py_buffer(payload)):
            r, s = _batch_size(message.metadata, message.body)
            rows, size = rows + r, size + s
            if size > limits.max_arrow_bytes:
                raise InvalidInput(
                    f"{where}: decompresses to more than {limits.max_arrow_bytes:,} bytes", where
                )
            if rows > limits.max_batch_orders:
                raise InvalidInput(
                    f"{where}: more than {limits.max_batch_orders:,} orders in one request", where
                )
        table = pa.ipc.open_stream(pa.py_buffer(payload)).read_all()
        for f in table.schema:
            _field_names(f.type, f.name)
    except UnicodeDecodeError as exc:
        raise InvalidInput(f"{where}: a column or field name is not valid UTF-8", where) from exc
    except InvalidInput:
        raise
    except Exception as exc:  # flatbuffers' and pyarrow's own errors on a corrupt stream
        raise InvalidInput(f"{where}: not a readable Arrow IPC stream: {exc}", where) from exc
    return validated(table, where)


def _field_names(t: pa.DataType, name: str) -> None:
    """Read every nested field name (pyarrow decodes them as UTF-8 on access)."""
    if pa.types.is_struct(t):
        for f in t:
            _field_names(f.type, f.name)
    elif pa.types.is_list(t) or pa.types.is_large_list(t):
        _field_names(t.value_type, t.value_field.name)


def _as_bytes(t: pa.DataType) -> pa.DataType:
    """The same layout with strings as binary (so validation leaves UTF-8 to the rules)."""
    if pa.types.is_string(t):
        return pa.binary()
    if pa.types.is_large_string(t):
        return pa.large_binary()
    if pa.types.is_list(t):
        return pa.list_(_as_bytes(t.value_type))
    if pa.types.is_large_list(t):
        return pa.large_list(_as_bytes(t.value_type))
    if pa.types.is_struct(t):
        return pa.struct([pa.field(f.name, _as_bytes(f.type), f.nullable) for f in t])
    return t


def validated(table: pa.Table, where: str) -> pa.Table:
    """`table`, after Arrow's full validation of every column (InvalidInput names it)."""
    for name, column in zip(table.column_names, table.columns, strict=True):
        as_bytes = _as_bytes(column.type)
        try:
            for chunk in column.chunks:
                (chunk.view(as_bytes) if as_bytes != column.type else chunk).validate(full=True)
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as exc:
            raise InvalidInput(
                f"{where}: column '{name}' is not valid Arrow data: {exc}", name
            ) from exc
    return table


def _compatible(actual: pa.DataType, expected: pa.DataType) -> bool:
    """Whether `actual` can be cast to `expected` without guessing."""
    if actual == expected or pa.types.is_null(actual):
        return True
    if pa.types.is_timestamp(expected):
        return pa.types.is_timestamp(actual)
    if pa.types.is_integer(expected):
        return pa.types.is_integer(actual) or (
            expected == pa.int8() and pa.types.is_boolean(actual)
        )
    if pa.types.is_string(expected):
        if pa.types.is_dictionary(actual):
            actual = actual.value_type
        return pa.types.is_string(actual) or pa.types.is_large_string(actual)
    if pa.types.is_boolean(expected):
        return pa.types.is_boolean(actual)
    if pa.types.is_list(expected):
        return (pa.types.is_list(actual) or pa.types.is_large_list(actual)) and pa.types.is_struct(
            actual.value_type
        )
    return False


def conform(table: pa.Table, *, with_labels: bool = False, where: str = "orders") -> pa.Table:
    """Cast a validated table to the order schema; missing optional columns become nulls.

    Raises `InvalidInput` naming the column when a required column is missing, a column has
    a type that cannot be read as the schema's type, or a required column holds nulls.
    """
    columns = ORDER_FIELDS + (LABEL_FIELDS if with_labels else ())
    names = table.column_names
    if len(set(names)) != len(names):
        dup = next(n for n in names if names.count(n) > 1)
        raise InvalidInput(f"{where}: column '{dup}' appears more than once", dup)
    n = table.num_rows
    arrays = []
    for col in columns:
        if col.column not in names:
            if col.required:
                raise InvalidInput(
                    f"{where}: required column '{col.column}' is missing", col.column
                )
            arrays.append(pa.nulls(n, col.type))
            continue
        arr = table.column(col.column)
        if not _compatible(arr.type, col.type):
            raise InvalidInput(
                f"{where}: column '{col.column}' must be {col.type}, is {arr.type}", col.column
            )
        try:
            if col.column == "items":
                fields = {f.name for f in arr.type.value_type}
                for f in ITEM_FIELDS:
                    if f.column not in fields:
                        raise InvalidInput(
                            f"{where}: column 'items' lacks struct field '{f.column}'", "items"
                        )
            elif pa.types.is_timestamp(arr.type) and arr.type.tz is None:
                # Naive timestamps are read as UTC: the schema stores UTC instants.
                arr = arr.cast(pa.timestamp(arr.type.unit, tz="UTC"))
            arr = arr.cast(col.type)
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as exc:
            raise InvalidInput(
                f"{where}: column '{col.column}' cannot be read as {col.type}: {exc}", col.column
            ) from exc
        if col.required and arr.null_count:
            raise InvalidInput(
                f"{where}: required column '{col.column}' has {arr.null_count} null value(s)",
                col.column,
            )
        arrays.append(arr)
    return pa.Table.from_arrays(
        arrays, schema=pa.schema([pa.field(c.column, c.type) for c in columns])
    )


class _Strings:
    """String arrays gathered into one buffer, as spans: their bytes are copied once."""

    def __init__(self) -> None:
        self.parts: list[np.ndarray] = []
        self.size = 0

    def add(self, column: pa.Array | pa.ChunkedArray, out: np.ndarray) -> None:
        """Spans of a string column (nulls empty) into `out` (2, len(column)), chunk by chunk."""
        chunks = column.chunks if isinstance(column, pa.ChunkedArray) else [column]
        row = 0
        for arr in chunks:
            n = len(arr)
            if n == 0:
                continue
            starts, ends = out[0, row : row + n], out[1, row : row + n]
            row += n
            if arr.null_count == n:
                starts[:] = ends[:] = 0
                continue
            _, offsets_buf, data_buf = arr.buffers()
            offsets = np.frombuffer(offsets_buf, np.int32)[arr.offset : arr.offset + n + 1]
            lo, hi = int(offsets[0]), int(offsets[-1])
            if hi > lo:
                self.parts.append(np.frombuffer(data_buf, np.uint8)[lo:hi])
            base = self.size - lo
            np.add(offsets[:-1], base, out=starts, casting="unsafe")
            np.add(offsets[1:], base, out=ends, casting="unsafe")
            if arr.null_count:
                null = np.asarray(arr.is_null().to_numpy(zero_copy_only=False), np.bool_)
                ends[null] = starts[null]
            self.size += hi - lo

    def buffer(self) -> np.ndarray:
        buf = scratch(max(self.size, 1), np.uint8)
        at = 0
        for part in self.parts:
            buf[at : at + part.size] = part
            at += part.size
        return buf


def _ints(arr: pa.Array | pa.ChunkedArray) -> np.ndarray:
    return np.asarray(arr.fill_null(0).to_numpy(zero_copy_only=False), np.int64)


def to_columns(table: pa.Table) -> OrderColumns:
    """A conformed table as OrderColumns (strings copied once into one buffer)."""
    n = table.num_rows
    items = table.column("items").combine_chunks().fill_null([])  # type: ignore[arg-type]
    offsets = np.asarray(items.offsets.to_numpy(), np.int64)
    flat = items.flatten()
    cols = empty_columns(n, len(flat), np.zeros(1, np.uint8))
    strings = _Strings()
    for s, f in enumerate(STRING_FIELDS):
        strings.add(table.column(f.column), cols.spans[s])
    for s, f in enumerate(ITEM_STRING_FIELDS):
        strings.add(flat.field(f.column), cols.item_spans[s])
    for k, f in enumerate(TIME_FIELDS):
        col = table.column(f.column)
        us = _ints(col.cast(pa.int64()))
        seconds = np.floor_divide(us, 1_000_000)
        cols.times[k, SECONDS] = seconds
        cols.times[k, NANOS] = (us - seconds * 1_000_000) * 1000
        cols.times[k, PRESENT] = np.asarray(col.is_valid().to_numpy(zero_copy_only=False))
    cols.amount_minor[:] = _ints(table.column("amount_minor"))
    cols.key_account[:] = (
        table.column("key_account").fill_null(False).to_numpy(zero_copy_only=False)
    )
    cols.item_rows[:] = offsets - offsets[0]
    cols.item_ints[0] = _ints(flat.field("quantity"))
    cols.item_ints[1] = _ints(flat.field("unit_price_minor"))
    if flat.null_count:  # a null item is an empty one, as protobuf has no null items
        null = np.asarray(flat.is_null().to_numpy(zero_copy_only=False), np.bool_)
        cols.item_ints[:, null] = 0
        cols.item_spans[:, 1, null] = cols.item_spans[:, 0, null]
    return cols._replace(buf=strings.buffer())


def decode_table(
    table: pa.Table,
    rules: OrderRules | None = None,
    latest: float = float("inf"),
    where: str = "orders",
) -> OrderBatch:
    """A table of orders (trusted or already validated), conformed, checked and encoded;
    raises the first refusal (`where: column 'x' row r: ...`)."""
    batch = (rules or default_rules()).check(to_columns(conform(table, where=where)), latest)
    batch.raise_first(lambda i: batch.refusal_in(i, where))
    return batch
