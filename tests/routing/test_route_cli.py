"""`ordersight route simulate | train | predict` end to end on simulated cases, through
`engine.routing.cli.main` (engine.cli's error convention: one line, exit status 2), and what
loading refuses."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq
import pytest

from engine.errors import ModelLoadError
from engine.routing import cases as case_files
from engine.routing.case_sim import QUEUES
from engine.routing.cli import main
from engine.routing.text_model import TextRouter, sha256
from engine.routing.text_prep import GENERAL

OUTPUT = ["predicted", "confidence", "predicted_priority"]


def route(*args: str | Path) -> int:
    return main(["route", *(str(a) for a in args)])


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("route-cli")
    f = {"train": root / "train.csv", "new": root / "new.parquet", "model": root / "model"}
    assert route("simulate", "--cases", 400, "--seed", 8, "--out", f["train"]) == 0
    assert route("simulate", "--cases", 150, "--config", "shifted", "--out", f["new"]) == 0
    assert (
        route("train", "--cases", f["train"], "--text-cols", "subject,body", "--label-col",
              "queue", "--priority-col", "priority", "--out", f["model"])
        == 0
    )  # fmt: skip
    return f


@pytest.mark.parametrize("suffix", [".csv", ".parquet"])
def test_cli_round_trip(files: dict[str, Path], tmp_path: Path, suffix: str) -> None:
    out = tmp_path / f"routed{suffix}"
    assert route("predict", "--models", files["model"], "--cases", files["new"], "--out", out) == 0
    given = pq.read_table(files["new"])
    got = pacsv.read_csv(out) if suffix == ".csv" else pq.read_table(out)
    assert got.column_names == [*given.column_names, *OUTPUT]
    assert got.column("case_id").to_pylist() == given.column("case_id").to_pylist()
    assert set(got.column("predicted").to_pylist()) <= {*QUEUES, GENERAL}
    assert set(got.column("predicted_priority").to_pylist()) <= {"low", "normal", "high", "urgent"}
    conf = np.asarray(got.column("confidence").to_pylist())
    assert ((conf > 0) & (conf <= 1)).all()
    manifest = json.loads((files["model"] / "manifest.json").read_text())
    assert manifest["text_cols"] == ["subject", "body"] and manifest["priority_col"] == "priority"
    assert set(manifest["files"]) == {"model.onnx", "parity.json"}


def test_cases_stream_in_batches(files: dict[str, Path], tmp_path: Path) -> None:
    schema, batches = case_files.read_batches(files["new"], rows=40)
    got = list(batches)
    assert len(got) == 4 and sum(b.num_rows for b in got) == 150
    with case_files.CaseWriter(tmp_path / "copy.csv", schema) as w:
        for b in got:
            w.write(pa.Table.from_batches([b]))
    assert pacsv.read_csv(tmp_path / "copy.csv").num_rows == 150
    header_only, out = tmp_path / "empty.csv", tmp_path / "routed.parquet"
    header_only.write_text("subject,body\n")
    assert route("predict", "--models", files["model"], "--cases", header_only, "--out", out) == 0
    assert pq.read_table(out).column_names == ["subject", "body", *OUTPUT]
    assert pq.read_table(out).num_rows == 0


def test_cli_without_priority_and_fixed_confidence(files: dict[str, Path], tmp_path: Path) -> None:
    model, out = tmp_path / "m", tmp_path / "routed.csv"
    assert (
        route("train", "--cases", files["train"], "--text-cols", "body", "--label-col", "queue",
              "--min-confidence", 0.999, "--out", model)
        == 0
    )  # fmt: skip
    assert route("predict", "--models", model, "--cases", files["new"], "--out", out) == 0
    got = pacsv.read_csv(out)
    assert "predicted_priority" not in got.column_names
    assert got.column("predicted").to_pylist().count(GENERAL) > got.num_rows / 2


def _write_csv(path: Path, rows: dict[str, list[str | None]]) -> Path:
    pacsv.write_csv(pa.table(rows), path)
    return path


@pytest.mark.parametrize(
    ("case", "message"),
    [
        ("missing_text_col", "no column 'subjekt'"),
        ("missing_label_col", "no column 'team'"),
        ("empty_label", "column 'queue', row 4: empty label"),
        ("rare_label", "column 'queue': label 'lonely' has 1 example, needs at least 2"),
        ("one_label", "column 'queue' needs at least 2 distinct labels"),
        ("unreadable", "not a readable Parquet file"),
        ("no_file", "no such file"),
        ("suffix", "expected a .csv or .parquet file"),
        ("confidence", "--min-confidence must be in [0, 1]"),
        ("label_is_text", "--label-col body: is also one of --text-cols"),
        ("no_text", "the text columns hold no letters or digits in any row"),
    ],
)
def test_cli_train_errors(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], case: str, message: str
) -> None:
    rows: dict[str, list[str | None]] = {
        "subject": ["a", "b", "c", "d", "e"],
        "body": ["x", "y", "z", "w", "v"],
        "queue": ["p", "p", "q", "q", "q"],
    }
    cases, text, label, extra = tmp_path / "c.csv", "subject,body", "queue", []
    if case == "missing_text_col":
        text = "subjekt,body"
    elif case == "missing_label_col":
        label = "team"
    elif case == "empty_label":
        rows["queue"][3] = None
    elif case == "rare_label":
        rows["queue"][4] = "lonely"
    elif case == "one_label":
        rows["queue"] = ["p"] * 5
    elif case == "unreadable":
        cases = tmp_path / "c.parquet"
        cases.write_bytes(b"PAR1 this is not parquet")
    elif case == "no_file":
        cases = tmp_path / "absent.csv"
    elif case == "suffix":
        cases = tmp_path / "c.txt"
    elif case == "confidence":
        extra = ["--min-confidence", "1.5"]
    elif case == "label_is_text":
        label = "body"
    elif case == "no_text":
        rows["subject"], rows["body"] = ["", "--", "", "!", ""], [""] * 5
    if case not in ("unreadable", "no_file"):
        _write_csv(cases, rows)
    out = tmp_path / "m"
    code = route("train", "--cases", cases, "--text-cols", text, "--label-col", label,
                 "--out", out, *extra)  # fmt: skip
    err = capsys.readouterr().err.strip()
    assert code == 2
    assert err.startswith("ordersight route: error: ") and "\n" not in err
    assert message in err
    assert not (out / "manifest.json").exists()


def test_cli_predict_errors(
    files: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    def predict(models: Path, cases: Path) -> str:
        assert (
            route("predict", "--models", models, "--cases", cases, "--out", tmp_path / "o.csv") == 2
        )
        return capsys.readouterr().err

    no_body = _write_csv(tmp_path / "nb.csv", {"subject": ["hello"]})
    assert "no column 'body'" in predict(files["model"], no_body)
    taken = _write_csv(tmp_path / "t.csv", {"subject": ["a"], "body": ["b"], "predicted": ["x"]})
    assert "already has a column 'predicted'" in predict(files["model"], taken)
    assert "no manifest.json" in predict(tmp_path, files["new"])
    broken = tmp_path / "broken"
    shutil.copytree(files["model"], broken)
    data = bytearray((broken / "model.onnx").read_bytes())
    data[len(data) // 2] ^= 0xFF
    (broken / "model.onnx").write_bytes(bytes(data))
    assert "model.onnx does not match its checksum" in predict(broken, files["new"])
    assert not (tmp_path / "o.csv").exists()


def test_load_refuses_a_graph_that_no_longer_reproduces_parity(
    files: dict[str, Path], tmp_path: Path
) -> None:
    """A parity sample the graph does not reproduce (here: edited, checksum updated) is refused."""
    folder = tmp_path / "m"
    shutil.copytree(files["model"], folder)
    sample = json.loads((folder / "parity.json").read_text())
    sample["queue"][1] = [1.0] + [0.0] * (len(sample["queue"][1]) - 1)
    (folder / "parity.json").write_text(json.dumps(sample))
    manifest = json.loads((folder / "manifest.json").read_text())
    manifest["files"]["parity.json"]["sha256"] = sha256(folder / "parity.json")
    (folder / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(ModelLoadError, match="differs from scikit-learn"):
        TextRouter.load(folder)
