"""`ordersight report routing` on routed cases built here: one table where `new`-tier
customers are given novice agents far more often (and so resolve slower and breach their SLA
more), one where every customer is treated alike. The report's figures are checked against
figures computed here from the table; the store input is a real SQLite store."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from engine.cli import main
from tests.services import postgres_server

N_CASES = 3000
N_CUSTOMERS = 600
HOUR = 3600
SLA_S = 8 * HOUR
BOOT = ["--boot", "40"]
SCHEMA = [
    "case_id", "order_id", "customer_id", "customer_tier", "customer_orders", "language",
    "amount", "currency", "category", "confidence", "priority", "source", "features", "status",
    "agent_id", "queue", "agent_experience", "agent_level", "predicted_handle_s",
    "predicted_resolution_s", "sla_s", "reasons", "routes", "created_at", "routed_at",
    "completed_at", "handle_s", "quality",
]  # fmt: skip


def routed_cases(novice_share_new: float, seed: int = 5) -> pd.DataFrame:
    """N_CASES cases of N_CUSTOMERS customers (a quarter `new` tier). A case goes to a novice
    (experience 0-9) with probability `novice_share_new` for `new`-tier customers and 0.1 for
    the others; a novice's case takes 6-12 h, an experienced agent's 1-5 h (SLA 8 h). Amount,
    history, language, region and priority are drawn independently of the tier."""
    rng = np.random.default_rng(seed)
    tiers = rng.choice(["new", "standard", "key"], N_CUSTOMERS, p=[0.25, 0.6, 0.15])
    cust = rng.integers(0, N_CUSTOMERS, N_CASES)
    tier = tiers[cust]
    novice = rng.random(N_CASES) < np.where(tier == "new", novice_share_new, 0.1)
    status = rng.choice(["completed", "assigned", "queued"], N_CASES, p=[0.8, 0.1, 0.1])
    has_agent = status != "queued"
    created = 1_767_225_600 + np.sort(rng.integers(0, 30 * 86_400, N_CASES))
    took = np.where(novice, rng.integers(6 * HOUR, 12 * HOUR, N_CASES),
                    rng.integers(1 * HOUR, 5 * HOUR, N_CASES))  # fmt: skip
    done = status == "completed"
    routes = np.where(has_agent, 1 + (rng.random(N_CASES) < 0.05), 0)
    frame = pd.DataFrame({
        "case_id": [f"case-{i:05d}" for i in range(N_CASES)],
        "order_id": [f"SO-{i}" for i in range(N_CASES)],
        "customer_id": [f"cust-{c}" for c in cust],
        "customer_tier": tier,
        "customer_orders": np.where(cust % 2 == 0, 0, 1 + cust % 7),
        "language": np.array(["en", "de", "fr"])[cust % 3],
        "amount": rng.choice([120.0, 2_400.0, 18_000.0, 90_000.0], N_CASES),
        "currency": "EUR",
        "category": rng.choice(["storage", "compute", "network"], N_CASES),
        "confidence": 0.9,
        "priority": rng.choice(["low", "normal", "high", "urgent"], N_CASES),
        "source": "order",
        "features": "{}",
        "status": status,
        "agent_id": np.where(has_agent, [f"agent-{i % 40}" for i in range(N_CASES)], None),
        "queue": "general",
        "agent_experience": np.where(has_agent & novice, rng.integers(0, 10, N_CASES),
                                     np.where(has_agent, rng.integers(10, 200, N_CASES), 0)),
        "agent_level": np.where(has_agent, 3, 0),
        "predicted_handle_s": 1800.0,
        "predicted_resolution_s": 3 * HOUR * 1.0,
        "sla_s": float(SLA_S),
        "reasons": "[]",
        "routes": routes,
        "created_at": created.astype(float),
        "routed_at": np.where(has_agent, created + 60.0, np.nan),
        "completed_at": np.where(done, created + took, np.nan).astype(float),
        "handle_s": np.where(done, took / 2, np.nan),
        "quality": np.where(done, 0.9, np.nan),
    })  # fmt: skip
    return frame[SCHEMA]


def oracle(frame: pd.DataFrame, by: pd.Series) -> pd.DataFrame:
    """Per segment: counts, mean and p90 resolution (h), breach rate, novice share, mean
    experience and rework rate, computed directly from the cases."""
    res = (frame["completed_at"] - frame["created_at"]).where(frame["status"] == "completed")
    agent = frame["status"] != "queued"
    d = frame.assign(seg=by.to_numpy(), res=res / HOUR, breach=(res > frame["sla_s"]),
                     nov=(frame["agent_experience"] < 10).where(agent),
                     exp=frame["agent_experience"].where(agent),
                     rework=(frame["routes"] > 1).where(frame["routes"] >= 1))  # fmt: skip
    done = d[d["status"] == "completed"]
    g = d.groupby("seg")
    return pd.DataFrame({
        "cases": g.size(), "queued": g["status"].apply(lambda s: int((s == "queued").sum())),
        "completed": done.groupby("seg").size(), "mean": done.groupby("seg")["res"].mean(),
        "p90": done.groupby("seg")["res"].quantile(0.9),
        "breach": done.groupby("seg")["breach"].mean(), "novice": g["nov"].mean(),
        "experience": g["exp"].mean(), "rework": g["rework"].mean(),
    })  # fmt: skip


def _run(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    code = main(argv)
    got = capsys.readouterr()
    return code, got.out, got.err


def _section(text: str, heading: str) -> str:
    start = text.index("\n" + heading + "\n") + 1
    nxt = re.search(r"\n#{1,3} ", text[start + len(heading) :])
    return text[start : start + len(heading) + (nxt.start() if nxt else len(text))]


def _tables(text: str) -> list[dict[str, list[str]]]:
    """Every Markdown table of `text`: first cell -> the other cells."""
    out, rows = [], None
    for ln in text.splitlines() + [""]:
        if ln.startswith("|"):
            rows = [] if rows is None else rows
            rows.append([c.strip() for c in ln.strip("|").split(" | ")])
        elif rows is not None:
            out.append({r[0]: r[1:] for r in rows[2:]})
            rows = None
    return out


def _first(text: str) -> float:
    return float(text.split(" [")[0].replace(",", ""))


@pytest.fixture(scope="module")
def skewed(tmp_path_factory: pytest.TempPathFactory) -> tuple[pd.DataFrame, Path]:
    frame = routed_cases(0.6)
    path = tmp_path_factory.mktemp("routing") / "cases.parquet"
    frame.sample(frac=1.0, random_state=1).to_parquet(path, index=False)  # any row order
    return frame, path


@pytest.fixture(scope="module")
def skewed_report(
    skewed: tuple[pd.DataFrame, Path], tmp_path_factory: pytest.TempPathFactory
) -> tuple[str, str]:
    out = tmp_path_factory.mktemp("report")
    code = main(["report", "routing", "--cases", str(skewed[1]), "--out", str(out), *BOOT])
    assert code == 0
    return (out / "README.md").read_text(), str(out)


def test_flags_exactly_the_new_tier(
    skewed_report: tuple[str, str], skewed: tuple[pd.DataFrame, Path]
) -> None:
    text, _ = skewed_report
    summary = _section(text, "## Summary")
    got = set(re.findall(r"(\w+ = [\w<>–≥-]+) \(", summary))
    assert got == {"customer_tier = new"}, summary
    for title in ("SLA met", "experienced agent", "resolution time"):
        assert f"customer_tier = new ({title})" in summary, summary
    ratios = _tables(_section(text, "### Segment: customer_tier"))[1]
    assert ratios["new"][1].startswith("below 0.8") and ratios["standard"][1] == ""
    assert _first(ratios["new"][2]) == pytest.approx(0.4 / 0.9, abs=0.08)  # experienced
    by_case = _section(text, "## By case type (not compared)")
    assert "flag" not in by_case and "ratio" not in by_case


def test_figures_match_the_cases(
    skewed_report: tuple[str, str], skewed: tuple[pd.DataFrame, Path]
) -> None:
    text, _ = skewed_report
    frame = skewed[0]
    bands = pd.cut(frame["amount"], [-np.inf, 500, 5000, 50000, np.inf], right=False,
                   labels=["<500", "500–5k", "5k–50k", "≥50k"]).astype(str)  # fmt: skip
    kinds = {"### Segment: customer_tier": frame["customer_tier"],
             "### Segment: amount_band": bands,
             "### Segment: new_or_returning": np.where(frame["customer_orders"] == 0, "new",
                                                       "returning"),
             "### Case type: priority": frame["priority"]}  # fmt: skip
    for heading, by in kinds.items():
        want = oracle(frame, pd.Series(by))
        table = _tables(_section(text, heading))[0]
        assert set(table) == set(want.index), heading
        for seg, w in want.iterrows():
            row = table[seg]
            assert [int(row[i].replace(",", "")) for i in (0, 1, 3)] == [
                w["cases"], w["queued"], w["completed"]
            ], (heading, seg)  # fmt: skip
            assert _first(row[4]) == pytest.approx(w["mean"], abs=0.051), (heading, seg)
            assert float(row[5]) == pytest.approx(w["p90"], abs=0.051), (heading, seg)
            for i, m in ((6, "breach"), (8, "novice"), (9, "rework")):
                assert _first(row[i]) == pytest.approx(w[m], abs=6e-4), (heading, seg, m)
            assert _first(row[7]) == pytest.approx(w["experience"], abs=0.051), (heading, seg)
    assert "novice: an agent with fewer than 10 completed cases" in text
    assert "bootstrap: 40 samples" in text and "seed 0" in text


def test_figures_are_drawn(skewed_report: tuple[str, str]) -> None:
    text, out = skewed_report
    for kind in ("customer_tier", "amount_band", "new_or_returning", "language"):
        assert f"(routing-{kind}.png)" in text
        assert (Path(out) / f"routing-{kind}.png").stat().st_size > 0


def test_a_balanced_table_flags_nothing(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "cases.csv"
    routed_cases(0.1).to_csv(path, index=False)
    code, out, err = _run(["report", "routing", "--cases", str(path),
                           "--out", str(tmp_path / "r"), *BOOT], capsys)  # fmt: skip
    assert code == 0, err
    assert "below four-fifths: none" in out
    assert "Below the four-fifths line: none." in (tmp_path / "r" / "README.md").read_text()


def test_novice_threshold_and_min_size(
    skewed: tuple[pd.DataFrame, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """--novice 1: only agents with no completed case are novices; --min-size above every
    segment: nothing is flagged or compared."""
    argv = ["report", "routing", "--cases", str(skewed[1]), "--out", str(tmp_path), *BOOT]
    code, out, err = _run([*argv, "--novice", "1", "--min-size", "100000"], capsys)
    assert code == 0, err
    assert "below four-fifths: none" in out
    text = (tmp_path / "README.md").read_text()
    tiers = _tables(_section(text, "### Segment: customer_tier"))
    frame = skewed[0]
    agent = frame["status"] != "queued"
    new = frame[agent & (frame["customer_tier"] == "new")]
    assert _first(tiers[0]["new"][8]) == pytest.approx((new["agent_experience"] < 1).mean(), 1e-3)
    assert tiers[1]["new"][1] == "too few"


@pytest.fixture(scope="module")
def postgres(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    with postgres_server(tmp_path_factory.mktemp("pg")) as dsn:
        yield dsn


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_store_gives_the_same_report_as_the_file(
    backend: str, skewed: tuple[pd.DataFrame, Path], tmp_path: Path,
    request: pytest.FixtureRequest, capsys: pytest.CaptureFixture[str],
) -> None:  # fmt: skip
    """A real store (a SQLite file, a PostgreSQL server) holding the file's cases."""
    from engine.store import open_store

    frame, path = skewed
    dsn = str(tmp_path / "store.db") if backend == "sqlite" else request.getfixturevalue("postgres")
    store = open_store(dsn)  # creates the file (or schema) and applies the migrations
    try:
        rows = [tuple(None if pd.isna(v) else v.item() if hasattr(v, "item") else v
                      for v in r) for r in frame.itertuples(index=False)]  # fmt: skip
        marks = ", ".join([store.placeholder] * len(SCHEMA))
        cur = store.conn.cursor()
        cur.executemany(f"INSERT INTO routing_cases ({', '.join(SCHEMA)}) VALUES ({marks})", rows)
        store.conn.commit()
    finally:
        store.close()
    texts = []
    for flag, source in (("--store", dsn), ("--cases", str(path))):
        out = tmp_path / flag.strip("-")
        code, _, err = _run(["report", "routing", flag, source, "--out", str(out), *BOOT], capsys)
        assert code == 0, err
        texts.append((out / "README.md").read_text().split("\n", 3)[3])  # past the source
    assert texts[0] == texts[1]
    assert "customer_tier = new (SLA met)" in texts[0]


def test_extra_segments_from_the_cases_and_the_customers_file(
    skewed: tuple[pd.DataFrame, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    frame, path = skewed
    ids = frame["customer_id"].drop_duplicates()
    region = np.where(ids.str.split("-").str[1].astype(int) % 2 == 0, "north", "south")
    pd.DataFrame({"customer_id": ids, "region": region}).to_csv(tmp_path / "c.csv", index=False)
    argv = ["report", "routing", "--cases", str(path), "--out", str(tmp_path / "r"), *BOOT,
            "--segment", "category", "--segment", "source", "--segment", "region",
            "--customers", str(tmp_path / "c.csv")]  # fmt: skip
    code, out, err = _run(argv, capsys)
    assert code == 0, err
    text = (tmp_path / "r" / "README.md").read_text()
    table = _tables(_section(text, "### Segment: region"))[0]
    by = frame["customer_id"].map(dict(zip(ids, region, strict=True)))
    assert {k: int(v[0].replace(",", "")) for k, v in table.items()} == by.value_counts().to_dict()
    assert _tables(_section(text, "### Segment: source"))[0]["order"][0] == f"{N_CASES:,}"
    assert text.count("### Segment: category") == 0  # a case type stays a case type
    assert "region = " not in _section(text, "## Summary")


def test_where_keeps_one_routers_cases(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """The same case ids routed by two routers in one file: --where picks one router's."""
    skew, fair = routed_cases(0.6).assign(router="a"), routed_cases(0.1, seed=6).assign(router="b")
    path = tmp_path / "both.parquet"
    pd.concat([skew, fair], ignore_index=True).to_parquet(path, index=False)
    base = ["report", "routing", "--cases", str(path), "--out", str(tmp_path / "r"), *BOOT]
    code, out, err = _run([*base, "--where", "router=a"], capsys)
    assert code == 0, err
    assert "customer_tier = new (experienced agent)" in out and "amount_band" not in out
    text = (tmp_path / "r" / "README.md").read_text()
    assert "where `router=a`: 3,000 cases" in text
    code, out, err = _run([*base, "--where", "router=b"], capsys)
    assert code == 0 and "below four-fifths: none" in out, err
    code, _, err = _run(base, capsys)
    assert code == 2 and f"row {N_CASES + 1} (case 'case-00000'): 'case-00000' appears twice" in err
    fair.loc[9, "sla_s"] = -1.0
    pd.concat([skew, fair], ignore_index=True).to_parquet(path, index=False)
    code, _, err = _run([*base, "--where", "router=b"], capsys)
    assert code == 2 and f"column sla_s, row {N_CASES + 10} (case 'case-00009')" in err, err


def _bad(frame: pd.DataFrame, tmp_path: Path, suffix: str = ".parquet") -> str:
    path = tmp_path / f"bad{suffix}"
    if suffix == ".csv":
        frame.to_csv(path, index=False)
    else:
        frame.to_parquet(path, index=False)
    return str(path)


@pytest.mark.parametrize("column", ["sla_s", "customer_tier", "completed_at", "agent_experience"])
def test_a_missing_column_is_named(
    column: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = _bad(routed_cases(0.6).drop(columns=[column]), tmp_path)
    code, _, err = _run(["report", "routing", "--cases", path, "--out", str(tmp_path / "r")],
                        capsys)  # fmt: skip
    assert code == 2 and f"no column {column}" in err, err
    assert not (tmp_path / "r").exists()


def _with(column: str, row: int, value: object) -> pd.DataFrame:
    frame = routed_cases(0.6).astype({column: object})
    frame.loc[row - 1, column] = value
    return frame


def _completed_row(frame: pd.DataFrame) -> int:
    return int(np.flatnonzero(frame["status"] == "completed")[7]) + 1


@pytest.mark.parametrize(
    ("column", "value", "words", "suffix"),
    [
        ("sla_s", "soon", "'soon' is not a number", ".csv"),
        ("sla_s", 0.0, "must be > 0", ".parquet"),
        ("completed_at", "early", "is before created_at", ".parquet"),
        ("status", "closed", "is not one of queued, assigned, completed", ".csv"),
        ("customer_tier", "gold", "is not one of new, standard, key or empty", ".csv"),
        ("priority", "", "is not one of low, normal, high, urgent", ".csv"),
        ("routes", 1.5, "is not a whole number", ".csv"),
        ("customer_orders", -2, "must be >= -1", ".parquet"),
        ("customer_id", None, "empty", ".parquet"),
        ("case_id", "case-00000", "appears twice", ".csv"),
    ],
)
def test_a_bad_value_names_its_column_and_row(
    column: str, value: object, words: str, suffix: str, tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:  # fmt: skip
    frame = routed_cases(0.6)
    row = _completed_row(frame)
    if value == "early":
        value = frame.loc[row - 1, "created_at"] - 1.0
    path = _bad(_with(column, row, value), tmp_path, suffix)
    code, _, err = _run(["report", "routing", "--cases", path, "--out", str(tmp_path / "r")],
                        capsys)  # fmt: skip
    assert code == 2, err
    assert f"column {column}, row {row} (case " in err and words in err, err
    assert not (tmp_path / "r").exists()


@pytest.mark.parametrize(
    ("argv", "words"),
    [
        ([], "give exactly one of --store DSN and --cases FILE"),
        (["--store", "STORE", "--cases", "CASES"], "give exactly one of"),
        (["--store", "NOSTORE"], "--store: "),
        (["--cases", "CASES", "--segment", "region"], "--segment: no column 'region'"),
        (["--cases", "CASES", "--where", "router"], "--where: expected COL=VALUE, is 'router'"),
        (["--cases", "CASES", "--where", "router=a"], "has no column 'router'"),
        (["--cases", "CASES", "--where", "status=closed"], "no case of --cases"),
        (["--store", "STORE", "--where", "router=a"], "has no column 'router'"),
        (["--cases", "CASES", "--novice", "0"], "--novice must be >= 1"),
        (["--cases", "CASES", "--min-size", "0"], "--min-size must be >= 1"),
        (["--cases", "CASES", "--boot", "0"], "--boot must be >= 1"),
    ],
)
def test_bad_flags_are_named(
    argv: list[str], words: str, skewed: tuple[pd.DataFrame, Path], tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:  # fmt: skip
    names = {"STORE": str(tmp_path / "x.db"), "NOSTORE": str(tmp_path / "none.db"),
             "CASES": str(skewed[1])}  # fmt: skip
    argv = [names.get(a, a) for a in argv]
    from engine.store import open_store

    open_store(names["STORE"]).close()  # an empty store, migrated: it has no router column
    code, _, err = _run(["report", "routing", *argv, "--out", str(tmp_path / "r")], capsys)
    assert code == 2 and words in err, err


def test_help_names_every_flag(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        main(["report", "routing", "--help"])
    assert info.value.code == 0
    text = capsys.readouterr().out
    for flag in ("--store", "--cases", "--where", "--segment", "--customers", "--novice",
                 "--min-size", "--boot", "--seed", "--out"):  # fmt: skip
        assert flag in text, flag
    with pytest.raises(SystemExit):
        main(["report", "--help"])
    assert "routing" in capsys.readouterr().out
