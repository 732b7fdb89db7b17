"""Outcomes as a table from a file: the reports' `--outcomes FILE`, every rule named."""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from engine.errors import InvalidInput
from engine.store.tables import OUTCOMES, read_outcomes


def _write(path: Path, **cols: list) -> str:
    pq.write_table(pa.table(cols), path)
    return str(path)


def test_a_parquet_file_with_nanosecond_times_reads_as_the_store_does(tmp_path: Path) -> None:
    ns = pa.array([1_767_700_000_123_456_789, 1_767_800_000_000_000_000], pa.timestamp("ns"))
    path = _write(
        tmp_path / "o.parquet", order_id=["a", "b"], kind=["CHARGEBACK", "CONFIRMED_LEGITIMATE"],
        is_fraud=[True, False], known_at=ns,
    )  # fmt: skip
    t = read_outcomes(path)
    assert t.schema == OUTCOMES
    assert t.column("known_at")[0].value == 1_767_700_000_123_456  # truncated to µs, as UTC
    assert t.column("reviewer").null_count == 2


@pytest.mark.parametrize(
    ("cols", "needle"),
    [
        ({"order_id": ["a"], "kind": ["CHARGEBACK"], "is_fraud": [True]}, "known_at"),
        ({"order_id": ["a"], "kind": ["REFUND"], "is_fraud": [True],
          "known_at": pa.array([0], pa.timestamp("us"))}, "column kind, row 1"),
        ({"order_id": ["a", None], "kind": ["CHARGEBACK"] * 2, "is_fraud": [True, True],
          "known_at": pa.array([0, 0], pa.timestamp("us"))}, "column order_id, row 2"),
    ],
)  # fmt: skip
def test_a_bad_file_is_refused_naming_the_column_and_row(
    tmp_path: Path, cols: dict, needle: str
) -> None:
    with pytest.raises(InvalidInput, match=needle):
        read_outcomes(_write(tmp_path / "o.parquet", **cols))


def test_a_csv_file_reads_too(tmp_path: Path) -> None:
    p = tmp_path / "o.csv"
    p.write_text("order_id,kind,is_fraud,known_at\na,CONFIRMED_FRAUD,true,2026-01-02T03:04:05Z\n")
    t = read_outcomes(str(p))
    assert t.column("order_id").to_pylist() == ["a"] and t.column("is_fraud").to_pylist() == [True]
