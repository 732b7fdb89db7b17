"""`ordersight forecast ...` end to end on small simulated data, through engine.cli.main."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow.csv as pacsv
import pyarrow.parquet as pq
import pytest

from engine.cli import main

FAST = ["--rounds", "20", "--rows-per-series", "40"]


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("sim")
    assert (
        main(
            [
                "forecast",
                "simulate",
                "--series",
                "12",
                "--days",
                "200",
                "--horizon",
                "14",
                "--seed",
                "3",
                "--out",
                str(out),
            ]
        )
        == 0
    )
    return out


def _data(world: Path) -> list[str]:
    return [
        "--demand",
        str(world / "demand.parquet"),
        "--covariates",
        str(world / "covariates.parquet"),
        "--static",
        str(world / "static.parquet"),
    ]


def test_simulate_train_predict(world: Path, tmp_path: Path) -> None:
    assert {p.name for p in world.iterdir()} == {
        "demand.parquet",
        "covariates.parquet",
        "static.parquet",
    }
    models = tmp_path / "m"
    assert (
        main(["forecast", "train", *_data(world), "--horizon", "14", "--out", str(models), *FAST])
        == 0
    )
    out = tmp_path / "f.csv"
    assert (
        main(
            [
                "forecast",
                "predict",
                "--models",
                str(models),
                *_data(world),
                "--out",
                str(out),
                "--service-level",
                "0.95",
                "--lead-time",
                "7",
            ]
        )
        == 0
    )
    t = pacsv.read_csv(out)
    labels = [f"q0.{k}" for k in range(1, 10)]
    assert t.column_names == ["series_id", "date", *labels, "reorder_point"]
    assert t.num_rows == 12 * 14
    q = np.stack([t[c].to_numpy() for c in labels], axis=1)
    assert (np.diff(q, axis=1) >= 0).all() and (q >= 0).all()
    demand = pq.read_table(world / "demand.parquet").to_pydict()
    sid = str(t["series_id"][0])
    last = max(d for s, d in zip(demand["series_id"], demand["date"], strict=True) if s == sid)
    assert str(t["date"][0]) == str(np.datetime64(last) + 1)


def test_backtest_writes_report(world: Path, tmp_path: Path) -> None:
    out = tmp_path / "bt"
    assert (
        main(
            [
                "forecast",
                "backtest",
                *_data(world),
                "--horizon",
                "14",
                "--origins",
                "1",
                "--out",
                str(out),
                *FAST,
            ]
        )
        == 0
    )
    r = json.loads((out / "report.json").read_text())
    assert {"model:horizon-feature", "seasonal_naive", "autoets"} <= set(r["overall"])
    est = r["overall"]["model:horizon-feature"]["established"]
    assert 0 <= est["coverage80"] <= 1 and est["mase"] > 0 and est["sql"] > 0
    assert "MASE" in (out / "report.md").read_text() and (out / "fan_chart.png").stat().st_size


def test_bad_input_exits_2_naming_column_and_row(
    world: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bad = tmp_path / "bad.csv"
    bad.write_text("series_id,date,value\na,2024-01-01,3\na,2024-01-02,lots\n")
    code = main(
        ["forecast", "train", "--demand", str(bad), "--horizon", "3", "--out", str(tmp_path / "m")]
    )
    assert code == 2
    err = capsys.readouterr().err
    assert "ordersight forecast: error:" in err and "column 'value', row 2: 'lots'" in err
    code = main(
        ["forecast", "train", *_data(world), "--horizon", "30", "--out", str(tmp_path / "m")]
    )  # the simulated covariates reach 14 days past the end
    assert code == 2 and "has no value for" in capsys.readouterr().err
    code = main(
        [
            "forecast",
            "train",
            *_data(world),
            "--horizon",
            "3",
            "--quantiles",
            "0.9,0.1",
            "--out",
            str(tmp_path / "m"),
        ]
    )
    assert code == 2 and "--quantiles: increasing" in capsys.readouterr().err
