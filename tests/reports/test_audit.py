"""`ordersight audit data` on real simulated histories: a clean one, one with planted
problems, one without labels, CSV and Parquet, and every input error through the CLI."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import pyarrow.parquet as pq
import pytest
from sklearn.metrics import roc_auc_score

from engine.cli import main
from engine.features.matrix import FEATURE_NAMES
from engine.reports.audit import AuditResult, audit
from engine.reports.audit_checks import rank_auc
from engine.reports.audit_groups import DEGRADED, LABEL_GROUP, UNUSABLE, USABLE, feature_groups

DAY_US = 86_400_000_000
MISSING_DAY, LOW_DAY = 10, 12  # days after the first, in the planted history


def _parquet(tmp: Path, table: pa.Table, name: str = "orders.parquet") -> Path:
    path = tmp / name
    pq.write_table(table, path)
    return path


def _csv(tmp: Path, table: pa.Table, name: str = "orders.csv", **edits: tuple[int, str]) -> Path:
    """`table` as CSV text (no items); `column=(row0, text)` replaces one cell."""
    cols = {n: table.column(n).cast(pa.string()) for n in table.column_names if n != "items"}
    for column, (row, text) in edits.items():
        values = cols[column].to_pylist()
        values[row] = text
        cols[column] = pa.chunked_array([pa.array(values, pa.string())])
    path = tmp / name
    pacsv.write_csv(pa.table(cols), path)
    return path


def _set(table: pa.Table, name: str, values: pa.Array) -> pa.Table:
    return table.set_column(table.column_names.index(name), name, values)


def _day(table: pa.Table) -> np.ndarray:
    us = table.column("created_at").cast(pa.int64()).to_numpy()
    return (us // DAY_US) - us.min() // DAY_US


@pytest.fixture(scope="module")
def clean(history: pa.Table, tmp_path_factory: pytest.TempPathFactory) -> AuditResult:
    tmp = tmp_path_factory.mktemp("clean")
    return audit(_parquet(tmp, history), tmp / "report")


def _plant(history: pa.Table) -> pa.Table:
    """Duplicate ids, a day without orders, a day with a tenth of its orders, an empty
    device column, a 'guest' customer on a tenth of the orders, two columns written after
    the outcome; the simulator's own leaking column dropped."""
    day = _day(history)
    low = np.flatnonzero(day == LOW_DAY)
    keep = (day != MISSING_DAY) & ~np.isin(np.arange(day.size), low[low % 10 != 0])
    t = history.filter(pa.array(keep)).drop(["scenario"])
    ids = t.column("order_id").to_pylist()
    ids[100] = ids[101] = ids[102] = ids[10]
    t = _set(t, "order_id", pa.array(ids))
    t = _set(t, "device_id", pa.nulls(t.num_rows, pa.string()))
    customers = t.column("customer_id").to_pylist()
    customers[3::10] = ["guest"] * len(customers[3::10])
    t = _set(t, "customer_id", pa.array(customers))
    y = t.column("is_fraud").to_numpy(zero_copy_only=False)
    fraud = y == 1
    refs = pa.array([f"cb-{i}" if f else None for i, f in enumerate(fraud)], pa.string())
    rng = np.random.default_rng(3)
    score = pa.array(y + rng.uniform(0, 0.5, y.size), pa.float64(), mask=np.isnan(y))
    return t.append_column("chargeback_ref", refs).append_column("review_score", score)


@pytest.fixture(scope="module")
def planted_table(history: pa.Table) -> pa.Table:
    return _plant(history)


@pytest.fixture(scope="module")
def planted(planted_table: pa.Table, tmp_path_factory: pytest.TempPathFactory) -> AuditResult:
    tmp = tmp_path_factory.mktemp("planted")
    return audit(_parquet(tmp, planted_table), tmp / "report")


# --- a clean simulated history ---------------------------------------------------------


def test_clean_history_flags_only_the_simulators_scenario_column(clean: AuditResult) -> None:
    assert clean.leaking == ["scenario"]
    assert clean.blockers == []
    assert clean.duplicates.ids == 0 and clean.duplicates.extra_rows == 0
    assert clean.volume.missing == [] and clean.volume.low == []
    assert all(e.placeholder is False for e in clean.entities)


def test_clean_history_label_metadata_is_not_a_candidate(clean: AuditResult) -> None:
    skipped = dict(clean.not_checked)
    assert "label metadata" in skipped["is_fraud"]
    assert "label metadata" in skipped["label_known_at"]
    assert {k.column for k in clean.leaks}.isdisjoint({"is_fraud", "label_known_at"})


def test_clean_history_every_group_is_usable(clean: AuditResult) -> None:
    assert {v.group.name: v.verdict for v in clean.groups} == {
        g.name: USABLE for g in feature_groups()
    }


def test_clean_history_labels(clean: AuditResult) -> None:
    lab = clean.labels
    assert 0.98 < lab.coverage < 1.0  # the simulator leaves a small share unlabelled
    assert lab.frauds > 100 and lab.time_share == 1.0
    assert set(lab.delays) == {"all", "fraud", "legitimate"}
    p50 = {k: v[1] for k, v in lab.delays.items()}
    assert p50["fraud"] < p50["legitimate"]
    assert lab.negative == 0
    assert sum(w.frauds for w in clean.weeks) == lab.frauds
    assert sum(w.orders for w in clean.weeks) == clean.rows


def test_clean_history_report_folder(clean: AuditResult) -> None:
    assert clean.report is not None
    folder = clean.report.parent
    assert {p.name for p in folder.iterdir()} == {
        "README.md",
        "label-delay.png",
        "volume-per-day.png",
    }
    text = clean.report.read_text()
    for heading in (
        "Columns",
        "Labels",
        "Duplicate order ids",
        "Volume per day",
        "Entities",
        "Class balance",
        "Columns that leak the label",
        "Feature groups",
    ):
        assert f"## {heading}\n" in text
    assert "`scenario` leaks the label" in text
    assert "label metadata" in text
    for png in ("label-delay.png", "volume-per-day.png"):
        assert (folder / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_entity_cardinalities_match_the_table(history: pa.Table, clean: AuditResult) -> None:
    by = {e.column: e for e in clean.entities}
    assert list(by) == [
        "customer_id",
        "device_id",
        "card_fingerprint",
        "ip",
        "email_domain",
        "address_fingerprint",
    ]
    for name, e in by.items():
        col = history.column(name)
        assert e.distinct == pc.count_distinct(col).as_py()
        assert e.rows == history.num_rows - col.null_count
        assert e.quantiles[-1] == pc.max(pc.value_counts(col.drop_null()).field("counts")).as_py()


# --- planted problems ------------------------------------------------------------------


def test_planted_duplicate_ids(planted: AuditResult, planted_table: pa.Table) -> None:
    d = planted.duplicates
    assert (d.ids, d.extra_rows) == (1, 3)
    assert d.examples == [(planted_table.column("order_id")[10].as_py(), [11, 101, 102])]


def test_planted_missing_and_low_days(
    planted: AuditResult, planted_table: pa.Table, history: pa.Table
) -> None:
    first = np.datetime64(planted.volume.first_day)
    assert planted.volume.missing == [str(first + np.timedelta64(MISSING_DAY, "D"))]
    [(day, n)] = planted.volume.low
    assert day == str(first + np.timedelta64(LOW_DAY, "D"))
    assert n == int((_day(planted_table) == LOW_DAY).sum())
    assert n < 0.2 * int((_day(history) == LOW_DAY).sum())
    assert planted.volume.gap_hours > 24
    assert planted.report is not None
    assert day in planted.report.read_text()


def test_planted_empty_column(planted: AuditResult) -> None:
    device = next(c for c in planted.columns if c.name == "device_id")
    assert device.present == 0.0 and device.non_null == 0.0
    for group in ("device velocity", "customer+device pair"):
        v = planted.verdict(group)
        assert v.verdict == UNUSABLE and "'device_id' is empty on 100.0%" in v.reason
    assert planted.verdict("card velocity").verdict == USABLE


def test_planted_placeholder_customer(planted: AuditResult) -> None:
    customer = next(e for e in planted.entities if e.column == "customer_id")
    assert customer.placeholder and customer.top == "guest"
    v = planted.verdict("customer velocity")
    assert v.verdict == DEGRADED and "'guest'" in v.reason


def test_planted_leaking_columns(planted: AuditResult) -> None:
    assert sorted(planted.leaking) == ["chargeback_ref", "review_score"]
    by = {k.column: k for k in planted.leaks}
    assert by["chargeback_ref"].method == "target-encoding AUC"
    assert by["review_score"].method == "rank AUC"
    assert by["review_score"].auc == 1.0
    assert planted.report is not None
    text = planted.report.read_text()
    assert "`chargeback_ref` leaks the label" in text and "`review_score` leaks" in text


def test_no_labels(history: pa.Table, tmp_path: Path) -> None:
    path = _parquet(tmp_path, history.drop(["is_fraud", "label_known_at"]))
    r = audit(path, tmp_path / "report")
    assert not r.labels.has_column and r.labels.labelled == 0
    v = r.verdict(LABEL_GROUP)
    assert v.verdict == UNUSABLE and "no labels" in v.reason
    assert r.leaks == [] and all(why == "needs labels of both classes" for _, why in r.not_checked)
    assert r.verdict("device velocity").verdict == USABLE
    assert r.report is not None
    assert "No labels" in r.report.read_text()


def test_labels_all_empty(history: pa.Table, tmp_path: Path) -> None:
    t = _set(history, "is_fraud", pa.nulls(history.num_rows, pa.int8()))
    r = audit(_parquet(tmp_path, t), None)
    assert r.labels.has_column and r.labels.labelled == 0
    assert r.verdict(LABEL_GROUP).reason == "no order has a label"


def test_labels_without_their_time(history: pa.Table, tmp_path: Path) -> None:
    r = audit(_parquet(tmp_path, history.drop(["label_known_at"])), None)
    v = r.verdict(LABEL_GROUP)
    assert v.verdict == DEGRADED and "--label-delay" in v.reason


@pytest.mark.parametrize(
    ("shift_days", "reason"),
    [
        (100, "fraud labels became known before the last order"),
        (-50, "labels are known before their order was placed"),
    ],
)
def test_label_times_that_degrade_the_windows(
    history: pa.Table, tmp_path: Path, shift_days: int, reason: str
) -> None:
    shifted = pc.add(
        history.column("label_known_at"), pa.scalar(shift_days * DAY_US, pa.duration("us"))
    )
    r = audit(_parquet(tmp_path, _set(history, "label_known_at", shifted)), None)
    v = r.verdict(LABEL_GROUP)
    assert v.verdict == DEGRADED and reason in v.reason


def test_label_horizon_judges_settled_orders(history: pa.Table, tmp_path: Path) -> None:
    path = _parquet(tmp_path, history)
    short = audit(path, None, horizon_days=7).labels
    assert 0 < short.settled < short.rows
    assert short.settled_labelled <= short.settled
    assert audit(path, None, horizon_days=1000).labels.settled == 0


def test_types_the_engine_does_not_read(history: pa.Table, tmp_path: Path) -> None:
    t = _set(history, "amount_minor", history.column("amount_minor").cast(pa.float64()))
    t = _set(t, "is_fraud", t.column("is_fraud").cast(pa.float64()))  # as pandas writes it
    r = audit(_parquet(tmp_path, t), None)
    assert "'amount_minor': the engine reads int64, the file has double" in r.blockers
    assert r.verdict("amount").verdict == UNUSABLE
    assert r.labels.labelled > 0  # 0.0 / 1.0 / NaN are still read as labels


def test_nanosecond_times(history: pa.Table, clean: AuditResult, tmp_path: Path) -> None:
    ns = pa.timestamp("ns", tz="UTC")
    t = _set(history, "created_at", history.column("created_at").cast(ns))
    r = audit(_parquet(tmp_path, t), None)
    assert (r.first, r.last, r.blockers) == (clean.first, clean.last, [])
    fine = pc.add(t.column("account_created_at").cast(ns), pa.scalar(1, pa.duration("ns")))
    r = audit(_parquet(tmp_path, _set(t, "account_created_at", fine)), None)
    assert r.verdict("account age").verdict == UNUSABLE
    assert "refuses finer times" in r.verdict("account age").reason


# --- CSV -------------------------------------------------------------------------------


def test_csv_history(history: pa.Table, tmp_path: Path) -> None:
    part = history.slice(0, 6000)
    csv = audit(_csv(tmp_path, part), None)
    parquet = audit(_parquet(tmp_path, part), None)
    assert csv.csv and not csv.blockers
    assert csv.verdict("items").verdict == UNUSABLE and "CSV" in csv.verdict("items").reason
    assert {v.group.name: v.verdict for v in csv.groups if v.group.name != "items"} == {
        v.group.name: v.verdict for v in parquet.groups if v.group.name != "items"
    }
    assert csv.leaking == ["scenario"]
    assert csv.labels.labelled == parquet.labels.labelled
    types = {c.name: c.file_type for c in csv.columns}
    assert types["created_at"] == "text: times" and types["amount_minor"] == "text: integers"


def test_csv_read_in_passes_gives_the_same_audit(history: pa.Table, tmp_path: Path) -> None:
    path = _csv(tmp_path, history.slice(0, 3000))
    whole = audit(path, None)
    passes = audit(path, None, csv_pass_bytes=1)  # one column per pass
    assert passes.columns == whole.columns
    assert [(k.column, k.auc) for k in passes.leaks] == [(k.column, k.auc) for k in whole.leaks]


def test_csv_times_without_a_zone(history: pa.Table, tmp_path: Path) -> None:
    part = history.slice(0, 2000)
    naive = pc.strftime(part.column("created_at"), "%Y-%m-%dT%H:%M:%S")
    path = _csv(tmp_path, _set(part, "created_at", naive))
    r = audit(path, None)
    created = next(c for c in r.columns if c.name == "created_at")
    assert created.problem and "zone" in created.problem and "2,000" in created.note
    assert any(b.startswith("'created_at'") for b in r.blockers)


# --- the command line and its errors ---------------------------------------------------


def test_cli_writes_the_report(history: pa.Table, tmp_path: Path, capsys) -> None:
    path = _parquet(tmp_path, history.slice(0, 5000))
    assert main(["audit", "data", "--orders", str(path), "--out", str(tmp_path / "r")]) == 0
    assert capsys.readouterr().out.strip() == str(tmp_path / "r" / "README.md")


def test_cli_default_out(history: pa.Table, tmp_path: Path, capsys, monkeypatch) -> None:
    path = _parquet(tmp_path, history.slice(0, 5000))
    monkeypatch.chdir(tmp_path)
    assert main(["audit", "data", "--orders", str(path)]) == 0
    assert capsys.readouterr().out.strip() == "reports/audit/README.md"
    assert (tmp_path / "reports" / "audit" / "README.md").is_file()


def test_cli_help_names_every_flag(capsys) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["audit", "data", "--help"])
    assert exc.value.code == 0
    out = capsys.readouterr().out
    for flag in ("--orders", "--out", "--label-horizon-days"):
        assert flag in out


def _error(argv: list[str], capsys) -> str:
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err
    assert err.startswith("ordersight audit: error: ")
    return err


@pytest.fixture(scope="module")
def small(history: pa.Table) -> pa.Table:
    return history.slice(0, 300)


def _run(path: Path, *extra: str) -> list[str]:
    return ["audit", "data", "--orders", str(path), "--out", str(path.parent / "r"), *extra]


def test_error_no_such_file(tmp_path: Path, capsys) -> None:
    assert "no such file" in _error(_run(tmp_path / "nope.parquet"), capsys)


def test_error_not_parquet(tmp_path: Path, capsys) -> None:
    path = tmp_path / "orders.parquet"
    path.write_bytes(b"order_id,customer_id\n1,2\n")
    assert "not a readable Parquet file" in _error(_run(path), capsys)


def test_error_not_csv(small: pa.Table, tmp_path: Path, capsys) -> None:
    path = _csv(tmp_path, small)
    with path.open("a") as f:
        f.write('"o-x","c-y"\n')  # a row with two fields
    assert "not a readable CSV file" in _error(_run(path), capsys)


def test_error_no_rows(small: pa.Table, tmp_path: Path, capsys) -> None:
    assert "no orders (0 rows)" in _error(_run(_parquet(tmp_path, small.slice(0, 0))), capsys)


@pytest.mark.parametrize("name", ["order_id", "customer_id", "created_at", "amount_minor"])
def test_error_required_column_missing(small: pa.Table, tmp_path: Path, capsys, name) -> None:
    err = _error(_run(_parquet(tmp_path, small.drop([name]))), capsys)
    assert f"required column '{name}' is missing" in err


def test_error_column_named_twice(small: pa.Table, tmp_path: Path, capsys) -> None:
    path = _csv(tmp_path, small.append_column("note_2", small.column("note")))
    path.write_text(path.read_text().replace('"note_2"', '"note"', 1))
    assert "column 'note' appears more than once" in _error(_run(path), capsys)


@pytest.mark.parametrize(
    ("column", "row", "text", "message"),
    [
        ("created_at", 4, "yesterday", "column 'created_at' row 5 is not a time: 'yesterday'"),
        ("created_at", 7, "", "column 'created_at' row 8 is empty"),
        ("amount_minor", 2, "12x", "column 'amount_minor' row 3 is not a number: '12x'"),
        ("is_fraud", 5, "yes", "column 'is_fraud' row 6 must be 0, 1 or empty, is 'yes'"),
        ("is_fraud", 9, "2", "column 'is_fraud' row 10 must be 0, 1 or empty, is 2"),
        ("label_known_at", 1, "soon", "column 'label_known_at' row 2 is not a time: 'soon'"),
    ],
)
def test_error_bad_value_names_column_and_row(
    small: pa.Table, tmp_path: Path, capsys, column, row, text, message
) -> None:
    path = _csv(tmp_path, small, **{column: (row, text)})
    assert message in _error(_run(path), capsys)


def test_error_created_at_not_a_time_type(small: pa.Table, tmp_path: Path, capsys) -> None:
    t = _set(small, "created_at", small.column("created_at").cast(pa.int64()))
    err = _error(_run(_parquet(tmp_path, t)), capsys)
    assert "column 'created_at' must be a time" in err and "int64" in err


def test_error_null_created_at_in_parquet(small: pa.Table, tmp_path: Path, capsys) -> None:
    values = small.column("created_at").to_pylist()
    values[6] = None
    t = _set(small, "created_at", pa.array(values, small.schema.field("created_at").type))
    assert "column 'created_at' row 7 is empty" in _error(_run(_parquet(tmp_path, t)), capsys)


@pytest.mark.parametrize("value", ["0", "-3", "abc", "nan"])
def test_error_label_horizon(small: pa.Table, tmp_path: Path, capsys, value) -> None:
    err = _error(_run(_parquet(tmp_path, small), "--label-horizon-days", value), capsys)
    assert "--label-horizon-days must be a number of days > 0" in err


def test_error_out_is_a_file(small: pa.Table, tmp_path: Path, capsys) -> None:
    (tmp_path / "taken").write_text("")
    argv = [
        "audit",
        "data",
        "--orders",
        str(_parquet(tmp_path, small)),
        "--out",
        str(tmp_path / "taken"),
    ]
    assert "--out" in _error(argv, capsys)


# --- contracts -------------------------------------------------------------------------


def test_feature_groups_cover_every_feature_once() -> None:
    names = [f for g in feature_groups() for f in g.features]
    assert sorted(names) == sorted(FEATURE_NAMES) and len(names) == len(set(names))


def test_rank_auc_matches_sklearn() -> None:
    rng = np.random.default_rng(0)
    y = (rng.random(5000) < 0.1).astype(np.int8)
    for x in (rng.normal(size=5000) + y, rng.integers(0, 4, 5000) + y, np.zeros(5000)):
        assert rank_auc(x.astype(np.float64), y) == pytest.approx(roc_auc_score(y, x), abs=1e-12)
