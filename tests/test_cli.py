"""The `ordersight` command line, run in-process through `engine.cli.main`."""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import pyarrow.parquet as pq
import pytest

from engine.cli import main
from engine.codec.history import read_history
from engine.decision.cascade import Engine
from engine.decision.policy import ACTION_NAMES, PATH_NAMES
from engine.decision.score_file import replay_history
from engine.features.velocity import VelocityState
from engine.models import artifacts
from engine.orders.schema import HISTORY_SCHEMA
from tests.conftest import CAPACITY
from tests.grpc_harness import RunningServer

ORDER_JSON = {
    "orderId": "o-1",
    "customerId": "c-1",
    "createdAt": "2026-02-01T12:00:00Z",
    "amountMinor": "1999",
    "currency": "USD",
}


@pytest.fixture
def server(models_dir: Path) -> Iterator[RunningServer]:
    s = RunningServer(models_dir).start()
    yield s
    s.stop()


@pytest.fixture
def small_history(history: pa.Table) -> pa.Table:
    return history.slice(0, 2000)


def write(table: pa.Table, path: Path) -> Path:
    pq.write_table(table, path)
    return path


def json_documents(text: str) -> list[dict]:
    """The JSON objects printed one after another."""
    decoder, docs, i = json.JSONDecoder(), [], 0
    while i < len(text):
        if text[i].isspace():
            i += 1
            continue
        doc, i = decoder.raw_decode(text, i)
        docs.append(doc)
    return docs


# --- simulate --------------------------------------------------------------------------------


def test_simulate_writes_a_history(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "sim.parquet"
    assert main(["simulate", "--days", "2", "--out", str(out), "--orders-per-day", "300"]) == 0
    table = pq.read_table(out)
    assert table.num_rows > 0
    assert f"wrote {table.num_rows} orders to {out}" in capsys.readouterr().out
    assert set(HISTORY_SCHEMA.names) <= set(table.column_names)


def test_simulate_shifted_world(tmp_path: Path) -> None:
    """The second configuration is another world: other fraud mix, other label delays."""
    paths = {c: tmp_path / f"{c}.parquet" for c in ("default", "shifted")}
    for config, out in paths.items():
        args = ["simulate", "--days", "3", "--out", str(out), "--orders-per-day", "2000"]
        assert main([*args, "--config", config]) == 0
    tables = {c: pq.read_table(p) for c, p in paths.items()}
    delays = {}
    for c, t in tables.items():
        legit = pc.equal(t.column("scenario"), "legit")
        known = pc.filter(t.column("label_known_at"), legit).cast(pa.int64())
        made = pc.filter(t.column("created_at"), legit).cast(pa.int64())
        delays[c] = pc.max(pc.subtract(known, made)).as_py() / 86400e6
    assert delays["default"] > 45 > delays["shifted"]


def test_simulate_rejects_zero_days(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "sim.parquet"
    assert main(["simulate", "--days", "0", "--out", str(out)]) == 2
    assert "--days" in capsys.readouterr().err
    assert not out.exists()


# --- score-file ------------------------------------------------------------------------------


@pytest.mark.parametrize("suffix", [".parquet", ".csv"])
def test_score_file_matches_replay_history(
    suffix: str,
    tmp_path: Path,
    history_path: Path,
    models_dir: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    out = tmp_path / f"decisions{suffix}"
    argv = [
        "score-file",
        "--models",
        str(models_dir),
        "--orders",
        str(history_path),
        "--out",
        str(out),
        "--state-capacity",
        str(CAPACITY),
    ]
    assert main(argv) == 0
    got = pq.read_table(out) if suffix == ".parquet" else pacsv.read_csv(out)

    hist = read_history(history_path)
    assert got.column_names == ["order_id", "score", "action", "path"]
    assert got.num_rows == hist.table.num_rows
    assert f"scored {got.num_rows} orders" in capsys.readouterr().out

    want = replay_history(
        Engine(artifacts.load(models_dir), VelocityState(CAPACITY)),
        hist.ids,
        hist.arrays,
        hist.labels,
        hist.known_at,
    )
    assert got.column("order_id").to_pylist() == hist.table.column("order_id").to_pylist()
    assert got.column("action").to_pylist() == [ACTION_NAMES[a] for a in want.action.tolist()]
    assert got.column("path").to_pylist() == [PATH_NAMES[p] for p in want.path.tolist()]
    np.testing.assert_allclose(got.column("score").to_numpy(), want.score, rtol=1e-15, atol=0)


def test_score_file_missing_orders(
    tmp_path: Path, models_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    missing = tmp_path / "nope.parquet"
    argv = [
        "score-file",
        "--models",
        str(models_dir),
        "--orders",
        str(missing),
        "--out",
        str(tmp_path / "d.parquet"),
    ]
    assert main(argv) == 2
    assert f"{missing}: no such file" in capsys.readouterr().err


def test_score_file_refuses_an_output_it_does_not_write(
    tmp_path: Path, models_dir: Path, history_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "d.json"
    argv = ["score-file", "--models", str(models_dir), "--orders", str(history_path)]
    assert main([*argv, "--out", str(out)]) == 2
    assert "must end in .parquet or .csv" in capsys.readouterr().err
    assert not out.exists()


def test_detect_on_a_csv_without_rows_says_so(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    csv = tmp_path / "empty.csv"
    csv.write_text("timestamp,value\n")
    assert main(["detect", "--csv", str(csv), "--out", str(tmp_path / "o.csv")]) == 2
    assert "has a header and no rows" in capsys.readouterr().err


# --- train: bad input is reported, not a traceback -------------------------------------------


def _amount_as_strings(t: pa.Table) -> pa.Table:
    i = t.schema.get_field_index("amount_minor")
    return t.set_column(i, "amount_minor", t.column("amount_minor").cast(pa.string()))


@pytest.mark.parametrize(
    "damage",
    [lambda t: t.drop_columns(["amount_minor"]), _amount_as_strings],
    ids=["missing", "strings"],
)
def test_train_names_a_bad_amount_column(
    damage, small_history: pa.Table, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    orders = write(damage(small_history), tmp_path / "orders.parquet")
    code = main(["train", "--orders", str(orders), "--out", str(tmp_path / "models")])
    err = capsys.readouterr().err
    assert code == 2, err
    # (the progress bar shares stderr, so the message is looked for, not anchored)
    assert "ordersight train: error:" in err and "'amount_minor'" in err, err
    assert "Traceback" not in err


def test_train_rejects_a_bad_date(
    small_history: pa.Table, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    orders = write(small_history, tmp_path / "orders.parquet")
    code = main(
        [
            "train",
            "--orders",
            str(orders),
            "--out",
            str(tmp_path / "models"),
            "--train-to",
            "2026-13-45",
        ]
    )
    err = capsys.readouterr().err
    assert code == 2, err
    assert "--train-to must be YYYY-MM-DD or an ISO datetime, is '2026-13-45'" in err


def test_train_as_of_before_any_mature_day_is_refused(
    small_history: pa.Table, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The simulator's legitimate labels come weeks later: on the history's second day no
    earlier day has its labels yet, and training says so instead of learning from frauds."""
    orders = write(small_history, tmp_path / "orders.parquet")
    first = small_history.column("created_at")[0].as_py().date()
    as_of = (first + dt.timedelta(days=2)).isoformat()
    code = main(["train", "--orders", str(orders), "--out", str(tmp_path / "m"), "--as-of", as_of])
    err = capsys.readouterr().err
    assert code == 2, err
    assert "--as-of" in err and "labelled by then" in err, err


# --- score against a running server ----------------------------------------------------------


def test_score_prints_the_decision(
    server: RunningServer, models_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    f = tmp_path / "order.json"
    f.write_text(json.dumps(ORDER_JSON))
    assert main(["score", "--addr", f"127.0.0.1:{server.port}", str(f)]) == 0
    (d,) = json_documents(capsys.readouterr().out)
    assert d["orderId"] == "o-1"
    assert d["action"] in ("APPROVE", "REVIEW", "DECLINE")
    assert d["path"] in ("SCREENED_OUT", "MODEL", "FALLBACK")
    assert d["modelVersion"] == artifacts.load(models_dir).version


def test_score_a_list_prints_one_decision_per_order(
    server: RunningServer, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    f = tmp_path / "orders.json"
    f.write_text(json.dumps([ORDER_JSON, {**ORDER_JSON, "orderId": "o-2"}]))
    assert main(["score", "--addr", f"127.0.0.1:{server.port}", str(f)]) == 0
    assert [d["orderId"] for d in json_documents(capsys.readouterr().out)] == ["o-1", "o-2"]


def test_score_bad_field_is_invalid_argument(
    server: RunningServer, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    f = tmp_path / "order.json"
    f.write_text(json.dumps({**ORDER_JSON, "currency": "usd"}))
    assert main(["score", "--addr", f"127.0.0.1:{server.port}", str(f)]) == 1
    captured = capsys.readouterr()
    assert captured.err.startswith("o-1: INVALID_ARGUMENT: currency:"), captured.err
    assert captured.out == ""


def test_score_unparseable_json_field(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    # Caught before any call: no server needed.
    f = tmp_path / "order.json"
    f.write_text(json.dumps({**ORDER_JSON, "amountMinor": "lots"}))
    assert main(["score", "--addr", "127.0.0.1:1", str(f)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("ordersight score: error:") and "amountMinor" in err, err
