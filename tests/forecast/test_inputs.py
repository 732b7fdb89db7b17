"""Every input rule: a bad file is refused with a message naming the column and the row."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from engine.errors import InvalidInput
from engine.forecast.inputs import build_panel, demand_from_orders, read_frame
from training.demand_sim import simulate_demand


def _csv(tmp_path: Path, text: str, name: str = "d.csv") -> pa.Table:
    path = tmp_path / name
    path.write_text(text)
    return read_frame(path, "demand")


GOOD = "series_id,date,value\na,2024-01-01,1\na,2024-01-02,2\na,2024-01-04,5\nb,2024-01-02,3\n"


def test_missing_periods_are_zero_or_unknown(tmp_path: Path) -> None:
    p = build_panel(_csv(tmp_path, GOOD))
    assert p.values.tolist()[0] == [1.0, 2.0, 0.0, 5.0]
    assert np.isnan(p.values[1, 0]) and p.values[1, 1] == 3.0  # b starts on day two
    q = build_panel(_csv(tmp_path, GOOD), missing="nan")
    assert np.isnan(q.values[0, 2])


@pytest.mark.parametrize(
    ("text", "match"),
    [
        (GOOD.replace("a,2024-01-02,2", "a,2024-01-02,two"), "column 'value', row 2: 'two' is not"),
        (
            GOOD + "a,2024-01-02,7\n",
            r"rows 2 and 5: duplicate \(series_id, date\) = \(a, 2024-01-02",
        ),
        (
            GOOD.replace("2024-01-04", "2024-13-04"),
            "column 'date', row 3: '2024-13-04' is not a date",
        ),
        (
            GOOD.replace("2024-01-04,5", "2024-01-04 10:30:00,5"),
            "column 'date', row 3: .* whole day",
        ),
        (GOOD.replace("value", "qty"), "no column 'value'"),
        (GOOD.replace("b,2024", ",2024"), "column 'series_id', row 4: empty"),
    ],
)
def test_bad_demand_names_column_and_row(tmp_path: Path, text: str, match: str) -> None:
    with pytest.raises(InvalidInput, match=match):
        build_panel(_csv(tmp_path, text))


def test_weekly_dates_must_share_a_weekday(tmp_path: Path) -> None:
    text = "series_id,date,value\na,2024-01-01,1\na,2024-01-08,2\na,2024-01-16,3\n"
    assert build_panel(_csv(tmp_path, text.replace("01-16", "01-15")), freq="W").n_periods == 3
    with pytest.raises(InvalidInput, match="row 3: 2024-01-16.* not on the weekly grid"):
        build_panel(_csv(tmp_path, text), freq="W")


def test_unknown_freq_and_missing_rule(tmp_path: Path) -> None:
    with pytest.raises(InvalidInput, match="--freq must be one of D, W, H, is 'M'"):
        build_panel(_csv(tmp_path, GOOD), freq="M")
    with pytest.raises(InvalidInput, match="--missing must be zero or nan"):
        build_panel(_csv(tmp_path, GOOD), missing="drop")


def test_hourly_grid(tmp_path: Path) -> None:
    text = "series_id,date,value\na,2024-01-01 00:00:00,1\na,2024-01-01 03:00:00,2\n"
    assert build_panel(_csv(tmp_path, text), freq="H").values.tolist() == [[1, 0, 0, 2]]


COV = (
    "date,price,weather\n2024-01-01,1.0,sun\n2024-01-02,1.1,rain\n2024-01-03,,rain\n"
    "2024-01-04,1.2,sun\n"
)


def test_covariate_gaps_are_forward_filled_and_named(tmp_path: Path) -> None:
    cov = COV + "2024-01-05,1.3,sun\n2024-01-06,1.3,sun\n"
    with pytest.warns(
        UserWarning, match="column 'price': missing on 1 date.s. from 2024-01-03.*forward-filled"
    ):
        p = build_panel(_csv(tmp_path, GOOD), horizon=2, covariates=_csv(tmp_path, cov, "c.csv"))
    assert p.covariate_names == ("price", "weather")
    assert p.covariates[0, 2, 0] == pytest.approx(1.1)  # carried from the day before
    assert p.encoding["weather"] == ("rain", "sun") and p.covariates[0, 1, 1] == 0
    assert any("price" in n for n in p.notes)


def test_a_covariate_missing_for_the_horizon_is_refused(tmp_path: Path) -> None:
    with pytest.raises(InvalidInput, match="column 'price' has no value for 2024-01-05.*horizon"):
        build_panel(_csv(tmp_path, GOOD), horizon=2, covariates=_csv(tmp_path, COV, "c.csv"))


def test_a_covariate_missing_for_a_series_history_is_refused(tmp_path: Path) -> None:
    cov = "series_id,date,promo\na,2024-01-02,0\na,2024-01-03,0\na,2024-01-04,1\n"
    cov += "b,2024-01-02,0\nb,2024-01-03,0\nb,2024-01-04,1\n"
    with pytest.raises(
        InvalidInput, match="'promo' has no value for series a, 2024-01-01.*history"
    ):
        build_panel(_csv(tmp_path, GOOD), covariates=_csv(tmp_path, cov, "c.csv"))


def test_covariate_and_static_duplicates_and_non_numbers(tmp_path: Path) -> None:
    cov = "series_id,date,promo\na,2024-01-01,0\na,2024-01-01,1\n"
    with pytest.raises(InvalidInput, match=r"rows 1 and 2: duplicate \(series_id, date\)"):
        build_panel(_csv(tmp_path, GOOD), covariates=_csv(tmp_path, cov, "c.csv"))
    static = "series_id,region\na,north\nb,south\na,east\n"
    with pytest.raises(InvalidInput, match=r"rows 1 and 3: duplicate \(series_id\) = \(a\)"):
        build_panel(_csv(tmp_path, GOOD), static=_csv(tmp_path, static, "s.csv"))


def test_static_only_series_is_a_new_series(tmp_path: Path) -> None:
    static = "series_id,region,size\na,north,1\nb,south,2\nc,south,3\n"
    p = build_panel(_csv(tmp_path, GOOD), static=_csv(tmp_path, static, "s.csv"))
    c = list(p.series_ids).index("c")
    assert p.first[c] == p.last[c] + 1 == p.n_periods and np.isnan(p.values[c]).all()
    assert p.static_names == ("region", "size") and p.static[c].tolist() == [1.0, 3.0]


def test_parquet_and_csv_read_alike(tmp_path: Path) -> None:
    sim = simulate_demand(4, 30, seed=1, horizon=0)
    pq.write_table(sim.demand, tmp_path / "d.parquet")
    import pyarrow.csv as pacsv

    pacsv.write_csv(sim.demand, tmp_path / "d.csv")
    a = build_panel(read_frame(tmp_path / "d.parquet", "demand"))
    b = build_panel(read_frame(tmp_path / "d.csv", "demand"))
    np.testing.assert_array_equal(a.values, b.values)


def test_demand_from_an_order_history(tmp_path: Path) -> None:
    from training.simulate import simulate

    orders = simulate(2, seed=3, orders_per_day=300)
    path = tmp_path / "orders.parquet"
    pq.write_table(orders, path)
    t = demand_from_orders(path, "category", "units", "D")
    items = pa.compute.list_flatten(orders["items"].combine_chunks())
    assert sum(t["value"].to_pylist()) == sum(items.field("quantity").to_pylist())
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        p = build_panel(t)
    assert set(p.series_ids) == {c or "unknown" for c in set(items.field("category").to_pylist())}
    with pytest.raises(InvalidInput, match="--level must be one of"):
        demand_from_orders(path, "store", "units", "D")


@pytest.mark.parametrize(
    ("old", "new", "match"),
    [
        ("a,2024-01-02,2", "a,2024-01-02,1_000", "column 'value', row 2: '1_000' is not a number"),
        ("a,2024-01-02,2", "a,2024,2", "column 'date', row 2: '2024' is not a date"),
    ],
)
def test_values_python_would_take_and_arrow_does_not_are_named(
    tmp_path: Path, old: str, new: str, match: str
) -> None:
    """The rule is Arrow's cast: a value it refuses is named by its row, never a traceback."""
    with pytest.raises(InvalidInput, match=match):
        build_panel(_csv(tmp_path, GOOD.replace(old, new)))


def test_dates_with_a_zone_read_as_utc(tmp_path: Path) -> None:
    import re

    zoned = re.sub(r",(2024-01-0\d),", r",\1T00:00:00Z,", GOOD)
    zoned = zoned.replace("a,2024-01-02T00:00:00Z,", "a,2024-01-02T01:00:00+01:00,")
    np.testing.assert_array_equal(
        build_panel(_csv(tmp_path, zoned)).values, build_panel(_csv(tmp_path, GOOD)).values
    )
    mixed = GOOD.replace("a,2024-01-02,", "a,2024-01-02T00:00:00Z,")
    with pytest.raises(InvalidInput, match="mixes times with a zone and without"):
        build_panel(_csv(tmp_path, mixed))
