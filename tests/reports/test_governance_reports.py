"""`ordersight report accuracy|bias|pilot` on a real decision log: a real server (control
group on, a challenger in shadow) scores eight simulated days over gRPC; outcomes come from
the simulation's true labels, with delays and a few naming no logged order. The reports'
figures are checked against figures computed here from the history's labels and the log."""

from __future__ import annotations

import json
import re
import shutil
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from ordersight.v1 import risk_pb2 as pb
from ordersight.v1 import risk_pb2_grpc as pb_grpc

from engine.cli import main
from engine.decision_log import segments
from engine.reports.render import cell
from tests.grpc_harness import TIMEOUT_S, RunningServer, orders_of

N_ORDERS = 12_000
HORIZON = 3.0  # days: the last ~3 days of the log are immature
CONTROL = 0.2
UNMATCHED = ["missing-1", "missing-2", "missing-3"]


class Log:
    def __init__(self, folder: Path, rows: pd.DataFrame, challenger: pd.DataFrame,
                 truth: pd.DataFrame, outcomes: Path, out: pd.DataFrame) -> None:  # fmt: skip
        self.folder, self.rows, self.challenger = folder, rows, challenger
        self.truth, self.outcomes, self.out = truth, outcomes, out
        self.as_of = rows["created_at"].max()


@pytest.fixture(scope="module")
def log(models_dir: Path, history: pa.Table, tmp_path_factory: pytest.TempPathFactory) -> Log:
    root = tmp_path_factory.mktemp("governance")
    challenger = root / "challenger"  # the same models, declining from a lower score
    shutil.copytree(models_dir, challenger)
    manifest = json.loads((challenger / "manifest.json").read_text())
    manifest["version"] += "-low-decline"
    manifest["policy"]["decline_threshold"] = manifest["policy"]["review_threshold"] * 1.5
    (challenger / "manifest.json").write_text(json.dumps(manifest))
    part = history.slice(history.num_rows - N_ORDERS)
    srv = RunningServer(
        models_dir, log_dir=str(root / "log"), single_process=True, control_fraction=CONTROL
    ).start()
    try:
        admin = pb_grpc.ModelAdminStub(srv.channel)
        admin.SetChallenger(pb.LoadModelRequest(path=str(challenger)), timeout=TIMEOUT_S)
        orders = orders_of(part)
        for i in range(0, len(orders), 2000):
            batch = pb.OrderList(orders=orders[i : i + 2000])
            srv.stub.ScoreBatch(pb.ScoreBatchRequest(orders=batch), timeout=TIMEOUT_S)
        end = time.monotonic() + TIMEOUT_S
        while True:  # the challenger decides on its own thread: wait for its last batch
            s = admin.GetStatus(pb.GetModelStatusRequest(), timeout=TIMEOUT_S)
            if s.challenger_decisions + s.challenger_dropped >= len(orders):
                break
            assert time.monotonic() < end, s
            time.sleep(0.02)
    finally:
        srv.stop()
    table = pa.Table.from_batches(list(segments.read_folder(root / "log"))).to_pandas()
    rows = table[table["kind"] == "decision"].reset_index(drop=True)
    truth = part.select(["order_id", "customer_id", "created_at", "is_fraud",
                         "billing_country"]).to_pandas()  # fmt: skip
    out = _outcomes(truth, rows.set_index("order_id")["action"])
    pq.write_table(pa.Table.from_pandas(out, preserve_index=False), root / "outcomes.parquet")
    challenger_rows = table[table["kind"] == "challenger"].reset_index(drop=True)
    return Log(root / "log", rows, challenger_rows, truth, root / "outcomes.parquet", out)


def _outcomes(truth: pd.DataFrame, action: pd.Series) -> pd.DataFrame:
    """Chargebacks 1-6 days after each fraud, but for half of the declined ones (a declined
    order never ships: those are censored); a confirmed-legitimate for a tenth of the rest
    a day after; four frauds also confirmed legitimate first (fraud wins); three outcomes
    for orders never logged."""
    rng = np.random.default_rng(7)
    fraud = truth[truth["is_fraud"] == 1]
    declined = (fraud["order_id"].map(action) == "DECLINE").to_numpy()
    fraud = fraud[~declined | (np.arange(len(fraud)) % 2 == 0)]
    legit = truth[truth["is_fraud"] == 0].sample(frac=0.1, random_state=3)
    day = pd.Timedelta(days=1)
    parts = [
        pd.DataFrame({"order_id": fraud["order_id"], "kind": "CHARGEBACK", "is_fraud": True,
                      "known_at": fraud["created_at"] + day * rng.uniform(1, 6, len(fraud))}),
        pd.DataFrame({"order_id": legit["order_id"], "kind": "CONFIRMED_LEGITIMATE",
                      "is_fraud": False, "known_at": legit["created_at"] + day}),
        pd.DataFrame({"order_id": fraud["order_id"][:4], "kind": "REVIEW_VERDICT",
                      "is_fraud": False, "known_at": fraud["created_at"][:4]}),
        pd.DataFrame({"order_id": UNMATCHED, "kind": "CHARGEBACK", "is_fraud": True,
                      "known_at": truth["created_at"].iloc[0]}),
    ]  # fmt: skip
    out = pd.concat(parts, ignore_index=True)
    out["known_at"] = out["known_at"].dt.floor("us")  # the outcomes table holds microseconds
    return out


def _labels(log: Log, as_of: pd.Timestamp) -> pd.Series:
    """The oracle: 1 fraud (a chargeback known by as-of), 0 legitimate (a legitimate outcome
    by as-of and no chargeback, or not declined and older than the horizon), -2 censored
    (declined, no outcome by as-of, whatever its age), -1 immature; by order id."""
    known = log.out[log.out["known_at"] <= as_of]
    fraud = set(known.loc[known["is_fraud"], "order_id"])
    legit = set(known.loc[~known["is_fraud"], "order_id"])
    r = log.rows
    old = r["created_at"] + pd.Timedelta(days=HORIZON) <= as_of
    label = [1 if o in fraud else 0 if o in legit else -2 if a == "DECLINE" else 0 if ok else -1
             for o, ok, a in zip(r["order_id"], old, r["action"], strict=True)]  # fmt: skip
    return pd.Series(label, index=r["order_id"].to_numpy())


def _run(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    code = main(argv)
    got = capsys.readouterr()
    return code, got.out, got.err


def _section(text: str, heading: str) -> str:
    """From the line starting with `heading` to the next heading of its level or above."""
    start = text.index("\n" + heading) + 1
    level = len(heading) - len(heading.lstrip("#"))
    nxt = re.search(rf"\n#{{1,{level}}} ", text[start + len(heading) :])
    return text[start : start + len(heading) + (nxt.start() if nxt else len(text))]


def _table(text: str) -> dict[str, list[str]]:
    """The first Markdown table of `text`: first cell -> the other cells."""
    lines = [ln for ln in text.splitlines() if ln.startswith("|")][2:]
    rows = [[c.strip() for c in ln.strip("|").split(" | ")] for ln in lines]
    return {r[0]: r[1:] for r in rows}


def _first(cell_text: str) -> float:
    return float(cell_text.split(" [")[0].replace(",", ""))


def _rates(rows: pd.DataFrame, label: np.ndarray) -> list[str]:
    """The accuracy report's columns, computed here: rates on known labels, and bounds from
    the two extreme labellings of the censored (all legitimate, all fraud)."""
    action = rows["action"].to_numpy()
    flagged, declined = action != "APPROVE", action == "DECLINE"
    n = len(rows)

    def r(a: Any, b: Any) -> float:
        return float(np.sum(a)) / float(np.sum(b)) if np.sum(b) else float("nan")

    def three(lab: np.ndarray) -> tuple[float, float, float]:
        fraud, legit = lab == 1, lab == 0
        return (r(fraud & flagged, fraud), r(declined & fraud, declined & (fraud | legit)),
                r(legit & declined, legit))  # fmt: skip

    known, fraud = label >= 0, label == 1
    cens = label == -2
    ck, cf, cl = three(label), three(np.where(cens, 1, label)), three(np.where(cens, 0, label))
    span = [f"{cell(lo)} – {cell(hi)}"
            for lo, hi in ((cl[0], cf[0]), (cl[1], cf[1]), (cf[2], cl[2]))]  # fmt: skip
    values = [n, r(known, np.ones(n)), int(np.sum(label == -1)), int(np.sum(cens)),
              int(np.sum(fraud)), ck[0], span[0], ck[1], span[1], ck[2], span[2],
              r(action == "REVIEW", np.ones(n))]  # fmt: skip
    return [cell(v) if not isinstance(v, str) else v for v in values]


def test_accuracy_matches_the_labels_and_reports_unmatched_outcomes(
    log: Log, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, err = _run(["report", "accuracy", "--log", str(log.folder), "--outcomes",
                           str(log.outcomes), "--label-horizon-days", str(HORIZON),
                           "--out", str(tmp_path)], capsys)  # fmt: skip
    assert code == 0 and "accuracy report" in out, err
    text = (tmp_path / "README.md").read_text()
    assert (tmp_path / "rates-per-day.png").stat().st_size > 0
    label = _labels(log, log.as_of).to_numpy()
    overall = [ln for ln in _section(text, "## Overall").splitlines() if ln.startswith("|")][2]
    assert overall == "| " + " | ".join(_rates(log.rows, label)) + " |"
    channels = _table(_section(text, "## Per channel"))
    for ch, idx in log.rows.groupby("channel").groups.items():
        assert channels[ch] == _rates(log.rows.loc[idx], label[idx]), ch
    days = _table(_section(text, "## Per day"))
    day = log.rows["created_at"].dt.floor("D").dt.strftime("%Y-%m-%d").to_numpy()
    for d in np.unique(day):
        mine = day == d
        want = _rates(log.rows[mine], label[mine])
        assert days[d][:-1] == want, d
        assert days[d][-1] == ("immature" if (label[mine] == -1).any() else "yes")
    assert int(overall.split(" | ")[3].replace(",", "")) == int(np.sum(label == -2)) > 0
    assert days[day[0]][-1] == "yes" and days[day[-1]][-1] == "immature"
    versions = _table(_section(text, "## Per model version"))
    control = (log.rows["fallback_cause"] == "CONTROL_GROUP").to_numpy()
    assert 0.1 < control.mean() < 0.3
    assert versions["control group (rules)"][0] == cell(int(control.sum()))
    late = int((log.out["known_at"] > log.as_of).sum())
    assert f"{len(log.out):,} outcomes read; {late:,} known after as-of" in text
    assert "unmatched outcomes (no logged order): 3 — first: `missing-1`, `missing-2`" in text

    window = ["--from", day[0], "--to", str(np.unique(day)[2]), "--out", str(tmp_path / "w")]
    code, _, _ = _run(["report", "accuracy", "--log", str(log.folder), "--outcomes",
                       str(log.outcomes), *window], capsys)  # fmt: skip
    text = (tmp_path / "w" / "README.md").read_text()
    overall = [ln for ln in _section(text, "## Overall").splitlines() if ln.startswith("|")][2]
    assert overall.split(" | ")[0] == "| " + cell(int(np.isin(day, np.unique(day)[:2]).sum()))


def test_bias_flags_a_planted_segment_and_decodes_the_countries(
    log: Log, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The customers whose orders were most often reviewed or declined, enough of them for
    150 orders, form the segment "planted": its approval rate is far under the others', so
    it is flagged; ten other customers are "tiny", too few to flag."""
    model = log.rows[log.rows["fallback_cause"] != "CONTROL_GROUP"].reset_index(drop=True)
    share = (model["action"] != "APPROVE").groupby(model["customer_id"]).agg(["mean", "size"])
    share = share.sort_values("mean", ascending=False, kind="stable")
    planted = share.index[: int(np.searchsorted(share["size"].cumsum(), 150)) + 1]
    rest = share.index[len(planted) :]
    tier = {c: "planted" for c in planted} | {c: "tiny" for c in rest[-10:]}
    tier |= {c: "other" for c in rest[:-10]}
    customers = tmp_path / "customers.csv"
    pd.DataFrame({"customer_id": list(tier), "tier": list(tier.values())}).to_csv(
        customers, index=False
    )
    code, out, _ = _run(["report", "bias", "--log", str(log.folder), "--outcomes",
                         str(log.outcomes), "--label-horizon-days", str(HORIZON),
                         "--customers", str(customers), "--segment", "tier", "--boot", "20",
                         "--out", str(tmp_path / "r")], capsys)  # fmt: skip
    assert code == 0 and "below four-fifths: " in out and "tier = planted" in out
    text = (tmp_path / "r" / "README.md").read_text()
    assert (tmp_path / "r" / "ratio-tier.png").stat().st_size > 0
    rows = _table(_section(text, "## Segment: tier"))
    seg = model["customer_id"].map(tier)
    approved = model["action"] == "APPROVE"
    rate = approved.groupby(seg).mean()
    size = seg.value_counts()
    top = rate[size >= 100].max()
    label = _labels(log, log.as_of)[model["order_id"]].to_numpy()
    legit = label == 0
    for s in ("planted", "other", "tiny"):
        mine = (seg == s).to_numpy()
        orders, appr, _, _, fpr, censored, ratio, flag = rows[s]
        assert orders == cell(int(mine.sum()))
        assert censored == cell(int(np.sum(mine & (label == -2))))  # not in the rate
        assert _first(appr) == pytest.approx(rate[s], abs=5e-4)
        fp = np.mean(~approved.to_numpy()[mine & legit])
        assert _first(fpr) == pytest.approx(fp, abs=5e-4)
        assert _first(ratio) == pytest.approx(rate[s] / top, abs=5e-4)
        lo, hi = (float(x) for x in re.findall(r"[\d.]+", ratio.split("[")[1]))
        assert lo <= hi
    assert rows["planted"][-1].startswith("below 0.8") and rate["planted"] / top < 0.8
    assert rows["tiny"][-1] == "too few" and rows["other"][-1] == ""
    countries = _table(_section(text, "## Segment: billing_country"))
    by_id = log.truth.set_index("order_id")["billing_country"]
    want = by_id[model["order_id"]].value_counts()
    assert {k: v[0] for k, v in countries.items()} == {k: cell(int(n)) for k, n in want.items()}
    first = int(
        _table(_section(text, "## Segment: customer"))["first order seen"][0].replace(",", "")
    )
    # A fresh engine sees each customer's first order as new; a customer whose slot the
    # bounded velocity table evicted looks new once more.
    assert model["customer_id"].nunique() <= first <= 1.01 * model["customer_id"].nunique()


def test_bias_without_outcomes_leaves_false_positives_out(
    log: Log, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ["--segment", "currency", "--arm", "control", "--boot", "5", "--out", str(tmp_path)]
    code, _, _ = _run(["report", "bias", "--log", str(log.folder), *argv], capsys)
    assert code == 0
    text = (tmp_path / "README.md").read_text()
    assert "false-positive rates need outcomes" in text and "false-positive rate |" not in text
    control = log.rows[log.rows["fallback_cause"] == "CONTROL_GROUP"]
    currency = _table(_section(text, "## Segment: currency"))
    assert {k: v[0] for k, v in currency.items()} == {
        k: cell(int(n)) for k, n in control["currency"].value_counts().items()
    }


def _grouped(label: np.ndarray, ch_act: np.ndarray, x: float | None, y: float | None) -> Any:
    """`label` with the censored orders the challenger would review labelled `x`, those it
    would decline `y` (None: left censored)."""
    out = label.astype(float)
    for act, v in (("REVIEW", x), ("DECLINE", y)):
        if v is not None:
            out[(label == -2) & (ch_act == act)] = v
    return out


def _bounds(text: str) -> tuple[float, float]:
    m = re.match(r"([-\d.,e+]+) … ([-\d.,e+]+) \(95%: ", text)
    assert m is not None, text
    return float(m.group(1).replace(",", "")), float(m.group(2).replace(",", ""))


def _costs(rows: pd.DataFrame, action: np.ndarray, label: np.ndarray) -> dict[str, float]:
    """One side of the pilot, for EUR, with the default cost assumptions, on the known
    labels (1 fraud, 0 legitimate; -2, censored, in neither)."""
    fraud, legit = label == 1, label == 0
    eur = (rows["currency"] == "EUR").to_numpy()
    amount = rows["amount"].to_numpy()
    loss = np.sum((amount + 15.0)[eur & fraud & (action == "APPROVE")])
    reviews = 5.0 * np.sum(eur & (action == "REVIEW"))
    margin = 0.25 * np.sum(amount[eur & legit & (action == "DECLINE")])
    return {
        "catch rate": np.sum(fraud & (action != "APPROVE")) / np.sum(fraud),
        "review rate": np.mean(action == "REVIEW"),
        "false declines": float(np.sum(legit & (action == "DECLINE"))),
        "censored": int(np.sum(label == -2)),
        "per 1000": 1000 * (loss + reviews + margin) / np.sum(eur),
    }


def test_pilot_compares_the_champion_with_the_control_group_and_the_challenger(
    log: Log, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    day = log.rows["created_at"].dt.floor("D")
    start, end = day.min(), day.min() + pd.Timedelta(days=4)
    code, out, _ = _run(["report", "pilot", "--log", str(log.folder), "--outcomes",
                         str(log.outcomes), "--label-horizon-days", str(HORIZON), "--from",
                         f"{start:%Y-%m-%d}", "--to", f"{end:%Y-%m-%d}", "--boot", "200",
                         "--out", str(tmp_path)], capsys)  # fmt: skip
    assert code == 0 and "net benefit per 1,000 orders against control (EUR)" in out
    text = (tmp_path / "README.md").read_text()
    assert (tmp_path / "net-benefit.png").stat().st_size > 0
    assert "review cost 5 per review; chargeback fee 15" in text and "censoring" in text
    assert "counterfactual" in text
    label = _labels(log, log.as_of)
    inside = ((log.rows["created_at"] >= start) & (log.rows["created_at"] < end)).to_numpy()
    rows = log.rows[inside & (label.to_numpy() != -1)].reset_index(drop=True)
    lab = label[rows["order_id"]].to_numpy()
    is_model = (rows["fallback_cause"] != "CONTROL_GROUP").to_numpy()
    act = rows["action"].to_numpy()
    ch = log.challenger.set_index(["seq", "order_id"])["action"]
    keys = list(zip(rows["seq"][is_model], rows["order_id"][is_model], strict=True))
    ch_act = ch.loc[keys].to_numpy()
    # a censored order the challenger would approve is left out of both sides
    keep = ~((lab[is_model] == -2) & (ch_act == "APPROVE"))
    paired = rows[is_model][keep].reset_index(drop=True)
    p_act, p_lab, p_ch = act[is_model][keep], lab[is_model][keep], ch_act[keep]
    assert (lab == -2).sum() > 0 and (p_lab == -2).sum() > 0
    assert f"left out of both sides: {int((~keep).sum()):,} censored" in text.lower()

    def side(r: pd.DataFrame, a: np.ndarray, la: np.ndarray, as_: float | None) -> dict:
        """One side's figures with its censored orders labelled `as_` (None: known only)."""
        return _costs(r, a, la if as_ is None else np.where(la == -2, as_, la))

    sides = {
        "control": lambda x, y: (side(rows[is_model], act[is_model], lab[is_model], x),
                                 side(rows[~is_model], act[~is_model], lab[~is_model], y)),
        # paired: one labelling per order, the groups those the challenger would review or
        # decline; x labels the first group, y the second
        "challenger": lambda x, y: (_costs(paired, p_act, _grouped(p_lab, p_ch, x, y)),
                                    _costs(paired, p_ch, _grouped(p_lab, p_ch, x, y))),
    }  # fmt: skip
    champion, control = sides["control"](None, None)
    _, shadow = sides["challenger"](None, None)
    assert shadow["false declines"] > champion["false declines"]  # it declines more
    assert champion["censored"] == int((lab[is_model] == -2).sum())
    versus = {"control": _section(text, "## Champion against the control group"),
              "challenger": _section(text, "## Champion against the challenger")}  # fmt: skip
    for comp, section in versus.items():
        mine, other = sides[comp](None, None)
        corners = [sides[comp](x, y) for x in (0.0, 1.0) for y in (0.0, 1.0)]
        t = _table(section)
        for name in ("catch rate", "review rate", "false declines", "censored"):
            assert _first(t[name][0]) == pytest.approx(mine[name], rel=1e-3), name
            assert _first(t[name][1]) == pytest.approx(other[name], rel=1e-3), name
        for k in (0, 1):  # the false declines' bounds: every labelling of the censored
            lo, hi = _bounds(t["false declines: bounds"][k])
            assert (
                lo
                == min(c[k]["false declines"] for c in corners)
                == (mine, other)[k]["false declines"]
            )  # known labels: the lower end
            assert hi == max(c[k]["false declines"] for c in corners)
        eur = _table(_section(text[text.index(section) :], "#### EUR"))
        assert _first(eur["cost per 1,000 orders"][0]) == pytest.approx(mine["per 1000"], rel=1e-3)
        net = re.search(r"per 1,000 orders \(EUR\), known labels: ([-\d.,e+]+) \[.*"
                        r"bounds over the censored orders: (.*?)\*\*", section)  # fmt: skip
        assert net is not None
        assert float(net.group(1).replace(",", "")) == pytest.approx(
            other["per 1000"] - mine["per 1000"], rel=1e-3
        )
        nets = [b["per 1000"] - a["per 1000"] for a, b in corners]
        lo, hi = _bounds(net.group(2))
        assert (lo, hi) == (pytest.approx(min(nets), rel=1e-3), pytest.approx(max(nets), rel=1e-3))
        # against the challenger (it declines from a lower score) every censored order is
        # one it declines too: the two sides' unknown margins cancel
        assert lo < hi if comp == "control" else lo <= hi
    assert "unmatched outcomes (no logged order): 3" in text


@pytest.mark.parametrize(
    ("kind", "extra", "words"),
    [
        ("accuracy", ["--log", "/no/such/folder"], "--log: /no/such/folder is not a folder"),
        ("accuracy", ["--from", "last tuesday"], "--from: 'last tuesday' is not a date"),
        ("accuracy", ["--from", "2026-02-01", "--to", "2026-01-01"], "--to (2026-01-01) must"),
        ("accuracy", ["--as-of", "soon"], "--as-of: 'soon' is not a date"),
        ("accuracy", ["--label-horizon-days", "0"], "--label-horizon-days must be > 0"),
        ("accuracy", ["--outcomes", "NOCOL"], "missing column(s) is_fraud"),
        ("accuracy", ["--outcomes", "BADKIND"], "column kind, row 2: 'REFUND' is not one of"),
        ("bias", ["--segment", "loyalty"], "--segment: no column 'loyalty'"),
        ("bias", ["--customers", "NOID"], "has no column customer_id"),
        ("bias", ["--customers", "DUPID", "--segment", "tier"], "column customer_id, row 2"),
        ("bias", ["--min-size", "0"], "--min-size must be >= 1"),
        ("pilot", ["--review-cost", "-1"], "--review-cost must be a number >= 0"),
        ("pilot", ["--boot", "0"], "--boot must be between 1 and 100000"),
        ("pilot", ["--from", "2030-01-01", "--to", "2030-01-02"], "--from/--to: no decisions"),
    ],
)
def test_bad_input_names_the_flag_or_column(
    log: Log, tmp_path: Path, capsys: pytest.CaptureFixture[str], kind: str,
    extra: list[str], words: str,
) -> None:  # fmt: skip
    files = {
        "NOCOL": pd.DataFrame({"order_id": ["a"], "kind": ["CHARGEBACK"],
                               "known_at": ["2026-01-01T00:00:00"]}),
        "BADKIND": pd.DataFrame({"order_id": ["a", "b"], "kind": ["CHARGEBACK", "REFUND"],
                                 "is_fraud": [True, False],
                                 "known_at": ["2026-01-01T00:00:00"] * 2}),
        "NOID": pd.DataFrame({"customer": ["c"], "tier": ["x"]}),
        "DUPID": pd.DataFrame({"customer_id": ["c", "c"], "tier": ["x", "y"]}),
    }  # fmt: skip
    extra = list(extra)
    for i, v in enumerate(extra):
        if v in files:
            extra[i] = str(tmp_path / f"{v}.csv")
            files[v].to_csv(extra[i], index=False)
    base = {"--log": str(log.folder), "--outcomes": str(log.outcomes),
            "--out": str(tmp_path / "out")}  # fmt: skip
    if kind == "pilot":
        base |= {"--from": "2026-01-18", "--to": "2026-01-20"}
    for flag, value in zip(extra[::2], extra[1::2], strict=True):
        base[flag] = value
    argv = ["report", kind] + [x for kv in base.items() for x in kv]
    code, _, err = _run(argv, capsys)
    assert code == 2, err
    assert words in err, err
    assert not (tmp_path / "out").exists()


def test_a_log_folder_without_decisions_is_refused(
    start_server: Any, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    code, _, err = _run(["report", "bias", "--log", str(empty)], capsys)
    assert code == 2 and "--log: " in err and "holds no decision log segments" in err
    srv = start_server(log_dir=str(tmp_path / "events"), single_process=True)
    ev = pb.CheckoutEvent(channel="app", code="PAYMENT_TIMEOUT")
    ev.time.FromSeconds(1_769_947_200)
    srv.stub.ReportEvent(pb.ReportEventRequest(events=[ev]), timeout=TIMEOUT_S)
    srv.stop()
    code, _, err = _run(["report", "bias", "--log", str(tmp_path / "events")], capsys)
    assert code == 2 and "holds no decisions" in err, err


@pytest.mark.parametrize("kind", ["accuracy", "bias", "pilot"])
def test_help_names_every_flag(kind: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        main(["report", kind, "--help"])
    assert info.value.code == 0
    text = capsys.readouterr().out
    flags = {
        "accuracy": ["--log", "--outcomes", "--as-of", "--label-horizon-days", "--from", "--to",
                     "--out"],
        "bias": ["--log", "--outcomes", "--segment", "--customers", "--min-size", "--arm",
                 "--boot", "--seed", "--as-of", "--label-horizon-days", "--out"],
        "pilot": ["--log", "--outcomes", "--from", "--to", "--review-cost",
                  "--false-decline-margin", "--chargeback-fee", "--boot", "--seed", "--as-of",
                  "--label-horizon-days", "--out"],
    }[kind]  # fmt: skip
    for flag in flags:
        assert flag in text, flag


def test_outcomes_from_a_store_give_the_same_report_as_the_file(
    log: Log, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """--outcomes takes a store's DSN (a real SQLite store) as well as a file."""
    from engine.store import open_store
    from engine.store.base import Outcome

    dsn = str(tmp_path / "store.db")
    store = open_store(dsn)
    try:
        store.add_outcomes([
            Outcome(r.order_id, r.kind, bool(r.is_fraud), r.known_at.timestamp())
            for r in log.out.itertuples()
        ])  # fmt: skip
    finally:
        store.close()
    texts = []
    for source, out in ((dsn, tmp_path / "a"), (str(log.outcomes), tmp_path / "b")):
        argv = ["--outcomes", source, "--label-horizon-days", str(HORIZON), "--out", str(out)]
        code, _, err = _run(["report", "accuracy", "--log", str(log.folder), *argv], capsys)
        assert code == 0, err
        texts.append((out / "README.md").read_text().split("\n", 3)[3])  # past the sources
    assert texts[0] == texts[1]
