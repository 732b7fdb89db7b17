"""A simulated pilot through a real engine, with the truth to check the governance reports by.

    python -m benchmarks.pilot_sim [--days 35] [--orders-per-day 3000] [--control-fraction 0.1]
        [--seed 31] [--tune-budget 45] [--analyst-accuracy 0.95] [--confirm-share 0.5]
        [--out docs/examples]

1. A history (`training.simulate`, DEFAULT world, seed 31, used nowhere else): TRAIN_DAYS,
   then `--days` of pilot. The champion is trained on the TRAIN_DAYS as `ordersight train
   --orders` does (last fifth held out; every label of the file, the optimistic "labels as
   in the file" of benchmarks/fraud_eval.py), the challenger on their last CHALLENGER_DAYS
   with the first candidate (no tuning).
2. `ordersight serve` in a child process, warmed from the pre-pilot history, with a decision
   log, a SQLite store, `--control-fraction` and the challenger in shadow (SetChallenger).
3. The pilot goes hour by hour through ScoreBatch; after each hour, what became known in it
   is sent in time order, known_at the simulator's (so up to an hour late): a CHARGEBACK for
   an approved fraud at its `label_known_at` (none for the 0.5% never labelled); for a
   REVIEW, an analyst's ResolveReview (cases from ListReviews) 1-24 h after the order,
   right with probability `--analyst-accuracy` (a fraud judged legitimate ships: its
   chargeback follows; the engine dates a verdict by its latest order, so the cases due
   after the pilot get its last order's time); CONFIRMED_FRAUD for `--confirm-share` of the
   declined frauds (the bank confirms some); nothing for a legitimate order (legitimate by
   the horizon) but a verdict; a CHARGEBACK for each pre-pilot fraud labelled during the
   pilot (the warm start knows only labels known by its last order). Outcomes go on for
   LABEL_HORIZON days; the reports run as of then, every pilot order mature.
4. The truth (the `scenario` column) by the pilot report's definitions and cost defaults:
   model arm against control group, challenger's counterfactual on the model arm. truth.md
   holds each pilot report figure with its interval beside the truth, the figure recomputed
   from the outcomes sent (the report's arithmetic), and the labels no outcome could give.
"""

from __future__ import annotations

import argparse
import heapq
import re
import socket
import subprocess
import sys
import tempfile
import time
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path

import grpc
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from ordersight.v1 import risk_pb2 as pb
from ordersight.v1 import risk_pb2_grpc as pb_grpc
from PIL import Image

from benchmarks.servers import server_process, wait_serving
from engine.codec.order_messages import orders_from_table
from engine.decision_log import segments
from training.simulate import simulate
from training.train import train

START = datetime(2026, 3, 2, tzinfo=UTC)
TRAIN_DAYS, CHALLENGER_DAYS, LABEL_HORIZON = 56, 28, 60
HOUR_US, DAY_US = 3_600_000_000, 86_400_000_000
REVIEW_COST, CHARGEBACK_FEE, MARGIN = 5.0, 15.0, 0.25  # `ordersight report pilot` defaults
REVIEWERS = ("analyst-ana", "analyst-ben", "analyst-chen")
RATES = ("catch rate", "review rate", "false-decline rate", "false declines")
NUM = r"-?[\d,]*\.?\d+(?:e[+-]?\d+)?"
CELL = re.compile(rf"({NUM}) \[({NUM}), ({NUM})\]")  # a report cell: value [low, high]
BOUND = re.compile(rf"({NUM}) … ({NUM}) \(95%: ({NUM}) … ({NUM})\)")  # bounds (interval)


def micros(col: pa.ChunkedArray) -> np.ndarray:  # -1 where null
    return col.cast(pa.int64()).fill_null(-1).to_numpy()


def iso(us: int) -> str:
    return datetime.fromtimestamp(us / 1e6, UTC).strftime("%Y-%m-%dT%H:%M:%S")


class Pilot:
    """The pilot's clock over a real server: each hour's orders, then what became known."""

    def __init__(self, target: str, pilot: pa.Table, before: pa.Table, args: argparse.Namespace):
        self.channel = grpc.insecure_channel(target)
        self.risk, self.reviews, self.admin = (stub(self.channel) for stub in (
            pb_grpc.OrderRiskStub, pb_grpc.ReviewsStub, pb_grpc.ModelAdminStub))  # fmt: skip
        self.args, self.pilot, self.rng = args, pilot, np.random.default_rng(args.seed + 1)
        self.t, self.known = micros(pilot["created_at"]), micros(pilot["label_known_at"])
        self.fraud = pc.not_equal(pilot["scenario"], "legit").to_numpy(zero_copy_only=False)
        self.amount = pilot["amount_minor"].to_numpy() / 100.0  # every simulated currency: cents
        self.cur = pilot["currency"].to_numpy(zero_copy_only=False)
        # the champion's action, its fallback cause and the analyst's verdict of each order
        self.action, self.cause, self.verdict = (np.full(len(self.t), "", object) for _ in "abc")
        self.sent: set[int] = set()  # pilot rows a fraud outcome was sent for
        self.orders: dict[int, pb.Order] = {}  # pilot rows, and pre-pilot rows as -1 - row
        self.queue: list[tuple[int, str, int]] = []  # (known_at, kind, row) of outcomes to send
        self.due: dict[str, tuple[int, int]] = {}  # order id -> (review time, row)
        self.calls: Counter[str] = Counter()
        self.replies: Counter[str] = Counter()  # ReportOutcomes' duplicates and unmatched
        known, fraud = micros(before["label_known_at"]), before["is_fraud"].to_numpy(False)
        late = np.flatnonzero((known >= self.t[0]) & (fraud == 1))
        for i, o in zip(late.tolist(), orders_from_table(before.take(late)), strict=True):
            self.orders[-1 - i] = o
            heapq.heappush(self.queue, (int(known[i]), "CHARGEBACK", -1 - i))
        self.before_chargebacks = late.size

    def score(self, lo: int, hi: int) -> None:
        orders = orders_from_table(self.pilot.slice(lo, hi - lo))
        req = pb.ScoreBatchRequest(orders=pb.OrderList(orders=orders))
        decisions = self.risk.ScoreBatch(req, timeout=300).decisions
        self.calls["ScoreBatch"] += 1
        for i, (o, d) in enumerate(zip(orders, decisions, strict=True), start=lo):
            self.orders[i], self.cause[i] = o, d.fallback_cause
            self.action[i] = pb.Action.Name(d.action)
            if self.action[i] == "REVIEW":
                self.due[o.order_id] = (int(self.t[i] + self.rng.uniform(1, 24) * HOUR_US), i)
            elif self.fraud[i] and self.known[i] >= 0:
                if self.action[i] == "APPROVE":
                    heapq.heappush(self.queue, (int(self.known[i]), "CHARGEBACK", i))
                elif self.rng.random() < self.args.confirm_share:
                    heapq.heappush(self.queue, (int(self.known[i]), "CONFIRMED_FRAUD", i))

    def resolve(self, now: int | None) -> None:
        """The analysts: each open case whose time has come (every one when `now` is None)."""
        token, due = None, []
        while token != "":  # every page of the open queue
            req = pb.ListReviewsRequest(status="open", page_size=500, page_token=token or "")
            page = self.reviews.ListReviews(req, timeout=60)
            self.calls["ListReviews"] += 1
            due += [c.order_id for c in page.cases if c.order_id in self.due
                    and (now is None or self.due[c.order_id][0] <= now)]  # fmt: skip
            token = page.next_page_token
        for oid in due:
            i = self.due.pop(oid)[1]
            says_fraud = self.fraud[i] == (self.rng.random() < self.args.analyst_accuracy)
            self.verdict[i] = "FRAUD" if says_fraud else "LEGITIMATE"
            req = pb.ResolveReviewRequest(order_id=oid, verdict=pb.Verdict.Value(self.verdict[i]),
                                          reviewer=REVIEWERS[i % 3], note="simulated")  # fmt: skip
            self.reviews.ResolveReview(req, timeout=60)
            self.calls["ResolveReview"] += 1
            if not says_fraud and self.fraud[i] and self.known[i] >= 0:  # shipped
                heapq.heappush(self.queue, (int(self.known[i]), "CHARGEBACK", i))

    def report(self, now: int) -> None:
        """The outcomes known before `now`, in time order, at most 1,000 a call."""
        batch = []
        while self.queue and self.queue[0][0] < now:
            known, kind, row = heapq.heappop(self.queue)
            self.sent.add(row)
            oc = pb.Outcome(order=self.orders[row], kind=pb.OutcomeKind.Value(kind))
            oc.known_at.FromMicroseconds(known)
            batch.append(oc)
        for lo in range(0, len(batch), 1000):
            req = pb.ReportOutcomesRequest(outcomes=batch[lo : lo + 1000])
            r = self.risk.ReportOutcomes(req, timeout=120)
            self.calls["ReportOutcomes"] += 1
            self.replies.update(duplicates=r.duplicates, unmatched=r.unmatched)

    def run(self, start: int, end: int, as_of: int) -> pb.ModelStatus:
        """The pilot, the outcomes after it, and the status once the challenger is done."""
        edges = np.searchsorted(self.t, np.arange(start, end + 1, HOUR_US)).tolist()
        for h in range(len(edges) - 1):
            if edges[h] < edges[h + 1]:
                self.score(edges[h], edges[h + 1])
            self.resolve(start + (h + 1) * HOUR_US)
            self.report(start + (h + 1) * HOUR_US)
        self.resolve(None)
        for day in range(end, as_of, DAY_US):
            self.report(min(day + DAY_US, as_of + 1))
        for _ in range(600):  # the challenger decides off the hot path: wait for it
            s = self.admin.GetStatus(pb.GetModelStatusRequest(), timeout=30)
            if s.challenger_decisions + s.challenger_dropped >= self.pilot.num_rows:
                return s
            time.sleep(0.5)
        raise TimeoutError(f"the challenger decided {s.challenger_decisions} of {len(self.t)}")


def figures(action: np.ndarray, label: np.ndarray, amount: np.ndarray, cur: np.ndarray) -> dict:
    """The pilot report's figures on known labels (1 fraud, 0 legitimate; any other value,
    censored, in neither), by `engine.reports.pilot`'s definitions (the oracle)."""
    fraud, legit = label == 1, label == 0
    flagged, declined, reviewed = action != "APPROVE", action == "DECLINE", action == "REVIEW"
    out = {"catch rate": (fraud & flagged).sum() / fraud.sum(), "review rate": reviewed.mean(),
           "false-decline rate": (legit & declined).sum() / legit.sum(),
           "false declines": float((legit & declined).sum())}  # fmt: skip
    for c in sorted(set(cur)):
        m = cur == c
        money = {"fraud loss": (m & fraud & ~flagged) * (amount + CHARGEBACK_FEE),
                 "review cost": (m & reviewed) * REVIEW_COST,
                 "lost margin": (m & legit & declined) * amount * MARGIN}  # fmt: skip
        money["cost"] = sum(money.values())
        out |= {f"{c} {k} per 1,000 orders": 1000 * v.sum() / m.sum() for k, v in money.items()}
    return out


def parse_pilot(text: str) -> dict[tuple[str, str], list]:
    """(comparison, figure) -> the pilot report's [champion, other, difference] cells, each
    (text, value, low, high) or None; comparison "control" or "challenger"."""
    out: dict[tuple[str, str], list] = {}
    section = cur = ""
    for line in text.splitlines():
        if line.startswith("## Champion against the"):
            section, cur = ("control" if "control group" in line else "challenger"), ""
        elif line.startswith("#### "):
            cur = line[5:].strip() + " "
        elif line.startswith("**Net benefit") and section:
            c = re.search(r"\((\w+)\)", line)
            known, _, bounds = line.partition("bounds over")
            out[(section, f"{c and c.group(1)} net benefit")] = [None, None, _cell(known)]
            out[(section, f"{c and c.group(1)} net benefit: bounds")] = [None, None, _cell(bounds)]
        elif line.startswith("| ") and section:
            cells = [c.strip() for c in line.strip().strip("|").split("|")]
            if len(cells) == 4 and cells[0]:
                out[(section, cur + cells[0])] = [_cell(c) for c in cells[1:]]
    return out


def _cell(text: str) -> tuple | None:
    """(text, value, low, high) of a `value [low, high]` cell; of a bounds cell `lower …
    upper (95%: low … high)`, (text, lower, low, high, upper); None for neither."""
    m = BOUND.search(text)
    if m is not None:
        lo, hi, ci_lo, ci_hi = (float(g.replace(",", "")) for g in m.groups())
        return (m.group(0), lo, ci_lo, ci_hi, hi)
    m = CELL.search(text)
    return None if m is None else (m.group(0), *(float(g.replace(",", "")) for g in m.groups()))


def run_reports(out: Path, tmp: Path, window: tuple) -> list[str]:
    """`ordersight report pilot|accuracy|bias|drift` on the run's folder `tmp` (as the cwd,
    so the reports name `log` and `store.db`), into `out`; a line per one that failed."""
    start, end, as_of = (iso(t) for t in window)
    labels = ["--log", "log", "--outcomes", "store.db", "--as-of", as_of]
    failed = []
    for name, flags in (("pilot", [*labels, "--from", start, "--to", end]),
                        ("accuracy", [*labels, "--from", start, "--to", end]), ("bias", labels),
                        # a pilot hour holds orders-per-day / 24 orders: judge those of 100
                        ("drift", ["--log", "log", "--models", "models/champion",
                                   "--min-orders", "100"])):  # fmt: skip
        cmd = [sys.executable, "-m", "engine.cli", "report", name, *flags, "--out", str(out / name)]
        r = subprocess.run(cmd, capture_output=True, text=True, cwd=tmp)
        if r.returncode:
            last = " ".join(r.stderr.strip().splitlines()[-1:])
            failed.append(f"- `ordersight report {name}` failed (exit {r.returncode}): {last}")
            continue
        for png in (out / name).glob("*.png"):  # 64-colour palettes: a third of the size
            Image.open(png).convert("RGB").quantize(64).save(png, optimize=True)
    return failed


def comparison(comp: str, truth: dict, seen: dict, report: dict, mismatch: list) -> list[str]:
    """One comparison's section of truth.md. Adds to `mismatch` every point estimate of the
    report that differs from the same figure recomputed from the outcomes sent (`seen`)."""
    rows, misses, bound_misses = [], [], []
    nets = sorted(k[1] for k in report if k[0] == comp and k[1].endswith("net benefit"))
    for name in [*RATES, *sorted(k for k in truth[comp][0] if k not in RATES), *nets]:
        if (comp, name) not in report:
            rows.append(f"| {name} | not in the report | | | | | |")
            continue
        for key in (name, name + ": bounds"):
            if (comp, key) not in report:
                continue
            row = [key.replace(" net benefit", " net benefit per 1,000 orders")]
            for k, (side, cell) in enumerate(zip(("champion", comp, "difference"),
                                                 report[(comp, key)], strict=True)):  # fmt: skip
                v, w = truth[comp][k].get(name), seen[comp][k].get(name)
                if cell is None or v is None:
                    row += ["", ""]
                    continue
                covered = cell[2] <= v <= cell[3]
                row += [cell[0], f"{v:,.4g} {'✓' if covered else '✗'}"]
                if key == name:
                    misses += [] if covered else [f"{name} ({side})"]
                    if not np.isclose(cell[1], w, rtol=2e-3, atol=1e-9):
                        mismatch.append(
                            f"- {comp}, {name} ({side}): the report says "
                            f"{cell[1]:.4g}, the outcomes sent give {w:.4g}"
                        )
                else:
                    bound_misses += [] if covered else [f"{name} ({side})"]
            rows.append("| " + " | ".join(row) + " |")
    title = {"control": "the control group", "challenger": "the challenger (counterfactual)"}
    return [f"## Champion against {title[comp]}", "",
            f"Known-label intervals missing the truth: {', '.join(misses) or 'none'}.", "",
            f"Bounds (with their 95% intervals) missing the truth: "
            f"{', '.join(bound_misses) or 'none'}.", "",
            f"| figure | champion: report [95% CI] | truth | {comp}: report | truth | "
            f"champion − {comp}: report | truth |", "|" + "---|" * 7, *rows, ""]  # fmt: skip


def labels_table(p: Pilot, control: np.ndarray, ch_act: np.ndarray, seen: np.ndarray) -> list:
    """Per arm: the true frauds, and why the labels the reports see differ from them."""
    lines = ["## Why intervals miss: the labels the outcomes cannot give", "",
             "| arm | true frauds | frauds in the outcomes | declined frauds, no outcome | approved"
             " frauds never labelled | analysts: legitimate judged fraud | analysts: fraud judged"
             " legitimate | false declines: truth → report's upper bound |",
             "|" + "---|" * 8]  # fmt: skip
    unsent, a = ~np.isin(np.arange(len(p.action)), list(p.sent)), p.action
    for name, arm in (("model arm", ~control), ("control", control)):
        f = p.fraud & arm
        silent, wrong = f & (a == "DECLINE") & unsent, arm & ~p.fraud & (p.verdict == "FRAUD")
        cells = [f, arm & seen, silent, f & (a == "APPROVE") & (p.known < 0), wrong,
                 f & (p.verdict == "LEGITIMATE")]  # fmt: skip
        fd = int((arm & ~p.fraud & (a == "DECLINE")).sum())
        lines.append(f"| {name} | " + " | ".join(f"{c.sum():,}" for c in cells)
                     + f" | {fd:,} → {fd + silent.sum():,} |")  # fmt: skip
        if name == "model arm":
            n, by = silent.sum(), Counter(ch_act[silent].tolist())
            censored = int((arm & (a == "DECLINE") & unsent).sum())
            note = (
                f"Censoring, inherent (a declined order never ships, so no chargeback can "
                f"come): {n:,} of the model arm's {f.sum():,} frauds were declined and never "
                f"confirmed; with the {fd:,} legitimate declines (none confirmed: a declined "
                f"order gets no verdict) they are the arm's {censored:,} censored orders. The "
                f"report counts them in no point value: its false declines are the confirmed "
                f"ones (none: no outcome here says a decline was legitimate; {fd:,} true), and "
                f"its bounds run to {fd + n:,}, every censored "
                f"decline legitimate. The catch rate's point value leaves them out (its upper "
                f"bound counts them caught); the {wrong.sum():,} wrong FRAUD verdicts count "
                f"as caught. Against the challenger, those frauds are ones it would flag too "
                f"({n - by['APPROVE']:,} of {n:,}; the censored orders it would approve are "
                f"left out of both sides), and {(wrong & (ch_act == 'APPROVE')).sum():,} "
                "wrong verdicts are orders it would approve (its fraud loss)."
            )
    return [*lines, "", note, ""]


def truth_md(p: Pilot, ch_act: np.ndarray, report: dict, header: list[str]) -> str:
    control = p.cause == "CONTROL_GROUP"
    sent = np.isin(np.arange(len(p.t)), list(p.sent)) | (p.verdict == "FRAUD")
    # the labels the reports see: fraud if an outcome says so; a DECLINE without one is
    # censored (-2); else legitimate (a verdict, or past the horizon: every order is)
    seen = np.where(sent, 1, np.where((p.action == "DECLINE") & (p.verdict == ""), -2, 0))
    shadow = ~control & (ch_act != "")
    left_out = shadow & (seen == -2) & (ch_act == "APPROVE")  # the report leaves them out

    def arms(label: np.ndarray, paired: np.ndarray) -> dict:  # comparison -> (a, b, a − b)
        def side(action: np.ndarray, rows: np.ndarray) -> dict:
            return figures(action[rows], label[rows], p.amount[rows], p.cur[rows])

        out, sides = {}, {"control": (side(p.action, ~control), side(p.action, control)),
                          "challenger": (side(p.action, paired), side(ch_act, paired))}  # fmt: skip
        for comp, (a, b) in sides.items():
            d = {k: a[k] - b[k] for k in a}
            d |= {k[:4] + "net benefit": -d[k] for k in a if k.endswith("cost per 1,000 orders")}
            out[comp] = (a, b, d)
        return out

    mismatch: list[str] = []
    truth = arms(p.fraud.astype(int), shadow)
    recomputed = arms(seen, shadow & ~left_out)
    lines = [*header, *comparison("control", truth, recomputed, report, mismatch)]
    lines += comparison("challenger", truth, recomputed, report, mismatch)
    lines += [*labels_table(p, control, ch_act, sent), "## Does the report compute what it "
              "says?", "", "Each known-label figure recomputed from the outcomes this run sent "
              "(fraud if one said so; a decline without one censored, in no figure; else "
              f"legitimate; against the challenger without the {left_out.sum():,} censored "
              "orders it would approve):", "",
              *(mismatch or ["- every estimate matches."])]  # fmt: skip
    return "\n".join(lines) + "\n"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    for flag, kind, default, text in (
        ("days", int, 35, "pilot days"), ("orders-per-day", int, 3000, ""),
        ("control-fraction", float, 0.1, ""), ("seed", int, 31, "simulator seed"),
        ("tune-budget", float, 45.0, "the champion's, seconds"),
        ("analyst-accuracy", float, 0.95, ""), ("confirm-share", float, 0.5,
        "declined frauds the bank confirms"), ("out", str, "docs/examples", "reports, truth.md"),
    ):  # fmt: skip
        ap.add_argument(f"--{flag}", type=kind, default=default, help=f"{text} ({default})")
    args = ap.parse_args()
    out, t0 = Path(args.out), time.perf_counter()
    took: dict[str, float] = {}

    def lap(name: str) -> None:
        took[name] = time.perf_counter() - t0 - sum(took.values())

    with tempfile.TemporaryDirectory(prefix="pilot-sim-") as tmp_name:
        tmp = Path(tmp_name)
        table = simulate(TRAIN_DAYS + args.days, seed=args.seed,
                         orders_per_day=args.orders_per_day, start=START)  # fmt: skip
        start = int((START + timedelta(days=TRAIN_DAYS)).timestamp() * 1e6)
        end, as_of = start + args.days * DAY_US, start + (args.days + LABEL_HORIZON) * DAY_US
        split = int(np.searchsorted(micros(table["created_at"]), start))
        before, pilot, history = table.slice(0, split), table.slice(split), tmp / "history.pq"
        pq.write_table(before, history)
        lap("simulate")
        champion, challenger = tmp / "models" / "champion", tmp / "models" / "challenger"
        train(history, champion, tune_budget_s=args.tune_budget, progress=False)
        first = (START + timedelta(days=TRAIN_DAYS - CHALLENGER_DAYS)).date().isoformat()
        train(history, challenger, train_from=first, tune_budget_s=0, progress=False)
        lap("train")
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = str(s.getsockname()[1])
        log, store = tmp / "log", tmp / "store.db"
        cmd = [sys.executable, "-m", "engine.cli", "serve", "--models", str(champion),
               "--host", "127.0.0.1", "--port", port, "--workers", "1", "--warm-from",
               str(history), "--log-dir", str(log), "--store", str(store),
               "--control-fraction", str(args.control_fraction)]  # fmt: skip
        with server_process(cmd, tmp / "server.log") as proc:
            try:
                wait_serving(f"127.0.0.1:{port}", proc)
                p = Pilot(f"127.0.0.1:{port}", pilot, before, args)
                p.admin.SetChallenger(pb.LoadModelRequest(path=str(challenger)), timeout=300)
                status = p.run(start, end, as_of)
                p.channel.close()
            except Exception:
                print((tmp / "server.log").read_text()[-4000:], file=sys.stderr)
                raise
        lap("pilot")
        failed = run_reports(out.resolve(), tmp, (start, end, as_of))
        lap("reports")
        got: dict[str, str] = {}
        for b in segments.read_folder(log):  # the challenger's actions
            rows = b.filter(pc.equal(b["kind"], "challenger"))
            got.update(zip(rows["order_id"].to_pylist(), rows["action"].to_pylist(), strict=True))
    ch_act = np.array([got.get(i, "") for i in pilot["order_id"].to_pylist()], object)
    report = {} if any("report pilot" in f for f in failed) else parse_pilot(
        (out / "pilot" / "README.md").read_text())  # fmt: skip
    flags = " ".join(f"--{k.replace('_', '-')} {v}" for k, v in vars(args).items())
    header = [
        "# Simulated pilot: the reports against the truth", "",
        f"`python -m benchmarks.pilot_sim {flags}`; run time "
        + ", ".join(f"{k} {v / 60:.1f} min" for k, v in took.items())
        + ". The assumptions are in the docstring of `benchmarks/pilot_sim.py`.", "",
        f"- pilot {iso(start)[:10]} to {iso(end)[:10]}: {pilot.num_rows:,} orders, "
        f"{(p.cause == 'CONTROL_GROUP').sum():,} in the control group, {p.fraud.sum():,} "
        f"frauds; reports as of {iso(as_of)[:10]} ({LABEL_HORIZON} days later: every order "
        "mature) in `pilot/`, `accuracy/`, `bias/`, `drift/`",
        f"- calls {dict(p.calls)}; ReportOutcomes found {p.replies['duplicates']:,} duplicates, "
        f"{p.replies['unmatched']:,} unmatched ({p.before_chargebacks:,} for pre-pilot orders); "
        f"REVIEWs without a case: {len(p.due):,}; the challenger decided "
        f"{status.challenger_decisions:,}, dropped {status.challenger_dropped:,}, agreed "
        f"{status.challenger_agreement:.1%}",
        "- truth: the report's definitions and cost defaults on the same orders with the "
        "simulator's labels (against the challenger: every order it decided, the few the "
        "report leaves out included); ✓ on a known-label row when the report's 95% interval "
        "covers it, on a *: bounds* row when it lies between the lower bound's 2.5th "
        "percentile and the upper bound's 97.5th", *failed, "",
    ]  # fmt: skip
    (out / "truth.md").write_text(truth_md(p, ch_act, report, header))
    print(f"wrote {out / 'truth.md'}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
