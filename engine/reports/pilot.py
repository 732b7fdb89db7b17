"""`ordersight report pilot`: the champion against the pilot's control group (decided by the
rules alone) and against the challenger in shadow, in rates and in money.

Orders created in [--from, --to) whose label is known at as-of (immature orders are left
out of the whole comparison and counted). For each side, with a flag a REVIEW or DECLINE:

- catch rate = frauds flagged / frauds; review rate = reviews / orders
- false declines = legitimate orders declined (count; rate over legitimate orders)
- fraud loss = Σ over approved frauds of (amount + chargeback fee)
- review cost = reviews × review cost; lost margin = Σ false-declined amounts × margin
- cost per 1,000 orders = 1,000 × (fraud loss + review cost + lost margin) / orders
- net benefit per 1,000 orders = cost per 1,000 of the other side − the champion's

A reviewed fraud counts as caught (the reviewer stops it) and costs a review. Money is never
added across currencies (the engine has no FX table; `high_value` is in each order's own
units too): every money figure is per currency, the cost assumptions taken in each
currency's major units; rates are over all currencies.

Intervals are 95% percentile bootstrap intervals over customers, not orders: the control
group is assigned by customer, and a customer's orders are not independent. Against the
control group the two arms' customers are resampled separately (they are disjoint);
against the challenger the same resample of the champion's customers serves both sides
(paired: the same orders). Each sample reweights each customer's summed quantities by how
often it was drawn, so a sample costs a matrix product, not a pass over the orders.
"""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING, Any

import numpy as np

from engine.errors import InvalidInput
from engine.reports import logdata
from engine.reports.logdata import FRAUD, IMMATURE, LEGITIMATE

if TYPE_CHECKING:
    import pandas as pd

BASE = ("orders", "frauds", "caught", "reviews", "legit", "false_declines")
MONEY = ("orders", "fraud_loss", "review_cost", "lost_margin")
_CHUNK_CELLS = 4_000_000  # bootstrap weights held at once (samples × customers)


def add_arguments(p: argparse.ArgumentParser) -> None:
    logdata.add_log_arguments(p, "required")
    p.add_argument("--from", dest="start", required=True, help="orders created at or after")
    p.add_argument("--to", dest="end", required=True, help="orders created before")
    p.add_argument("--review-cost", type=float, default=5.0, help="cost of one review (5.0)")
    p.add_argument(
        "--false-decline-margin", type=float, default=0.25,
        help="share of a falsely declined order's amount lost (0.25)",
    )  # fmt: skip
    p.add_argument(
        "--chargeback-fee", type=float, default=15.0, help="fee per approved fraud (15.0)"
    )
    p.add_argument("--boot", type=int, default=1000, help="bootstrap samples (1000)")
    p.add_argument("--seed", type=int, default=0, help="bootstrap seed (0)")
    p.add_argument("--out", default="reports/pilot", help="report folder (default %(default)s)")


def _check(args: argparse.Namespace) -> None:
    for flag, v in (("--review-cost", args.review_cost), ("--chargeback-fee", args.chargeback_fee),
                    ("--false-decline-margin", args.false_decline_margin)):  # fmt: skip
        if not (v >= 0 and np.isfinite(v)):
            raise InvalidInput(f"{flag} must be a number >= 0, is {v}", flag)
    if not 1 <= args.boot <= 100_000:
        raise InvalidInput(f"--boot must be between 1 and 100000, is {args.boot}", "--boot")


def quantities(
    frame: pd.DataFrame, action: np.ndarray, currencies: list[str], args: argparse.Namespace
) -> np.ndarray:
    """(orders, len(BASE) + len(MONEY) × currencies): each order's contribution."""
    label, amount = frame["label"].to_numpy(), frame["amount"].to_numpy(np.float64)
    fraud, legit = label == FRAUD, label == LEGITIMATE
    flagged, declined = action != "APPROVE", action == "DECLINE"
    reviewed = action == "REVIEW"
    cols = [np.ones(len(frame)), fraud, fraud & flagged, reviewed, legit, legit & declined]
    cur = frame["currency"].to_numpy()
    for c in currencies:
        mine = cur == c
        cols += [
            mine,
            mine * (fraud & ~flagged) * (amount + args.chargeback_fee),
            mine * reviewed * args.review_cost,
            mine * (legit & declined) * amount * args.false_decline_margin,
        ]
    return np.stack(cols, axis=1).astype(np.float64)


def per_customer(q: np.ndarray, customers: np.ndarray) -> np.ndarray:
    """Rows of `q` summed per customer: one row for each customer present, none for the
    others (the bootstrap draws from exactly these rows)."""
    uniq, codes = np.unique(customers, return_inverse=True)
    out = np.zeros((uniq.size, q.shape[1]))
    np.add.at(out, codes, q)
    return out


def boot_sums(per: np.ndarray, n_boot: int, rng: np.random.Generator) -> np.ndarray:
    """(n_boot, columns): the column sums of `per` over n_boot resamples of its rows."""
    n = per.shape[0]
    out = np.empty((n_boot, per.shape[1]))
    chunk = max(1, _CHUNK_CELLS // max(n, 1))
    for lo in range(0, n_boot, chunk):
        k = min(chunk, n_boot - lo)
        draws = rng.integers(0, n, size=(k, n)) + (np.arange(k) * n)[:, None]
        weights = np.bincount(draws.ravel(), minlength=k * n).reshape(k, n)
        out[lo : lo + k] = weights @ per
    return out


def statistics(s: np.ndarray, currencies: list[str]) -> dict[str, np.ndarray]:
    """Named statistics of summed quantities (the last axis is a `quantities` row)."""
    b = {name: s[..., i] for i, name in enumerate(BASE)}
    with np.errstate(divide="ignore", invalid="ignore"):
        out = {
            "orders": b["orders"], "catch rate": b["caught"] / b["frauds"],
            "review rate": b["reviews"] / b["orders"],
            "false-decline rate": b["false_declines"] / b["legit"],
            "false declines": b["false_declines"],
        }  # fmt: skip
        for k, c in enumerate(currencies):
            m = {n: s[..., len(BASE) + 4 * k + i] for i, n in enumerate(MONEY)}
            cost = m["fraud_loss"] + m["review_cost"] + m["lost_margin"]
            out[f"{c} orders"] = m["orders"]
            for name, v in (("fraud loss", m["fraud_loss"]), ("review cost", m["review_cost"]),
                            ("lost margin", m["lost_margin"]), ("cost", cost)):  # fmt: skip
                out[f"{c} {name}"] = v
                out[f"{c} {name} per 1,000 orders"] = 1000 * v / m["orders"]
    return out


def compare(
    qa: np.ndarray, qb: np.ndarray, ca: np.ndarray, cb: np.ndarray, paired: bool,
    currencies: list[str], n_boot: int, seed: int,
) -> dict[str, tuple[float, float, float, float, float, float, float, float, float]]:  # fmt: skip
    """Per statistic: champion (a), other (b), a − b, each as (value, low, high); plus
    "<currency> net benefit per 1,000 orders" (b's cost per 1,000 − a's) in the a−b slot."""
    rng = np.random.default_rng(seed)
    pa_, pb_ = per_customer(qa, ca), per_customer(qb, cb)
    if paired:
        both = boot_sums(np.hstack([pa_, pb_]), n_boot, rng)
        ba, bb = both[:, : qa.shape[1]], both[:, qa.shape[1] :]
    else:
        ba, bb = boot_sums(pa_, n_boot, rng), boot_sums(pb_, n_boot, rng)
    sa, sb = statistics(qa.sum(axis=0), currencies), statistics(qb.sum(axis=0), currencies)
    ta, tb = statistics(ba, currencies), statistics(bb, currencies)
    out = {}
    for name in sa:
        diff = float(sa[name] - sb[name])
        d_boot = ta[name] - tb[name]
        if name.endswith(" cost per 1,000 orders"):
            c = name.split(" ", 1)[0]
            out[f"{c} net benefit per 1,000 orders"] = (
                float("nan"), np.nan, np.nan, float("nan"), np.nan, np.nan,
                -diff, *_interval(-d_boot),
            )  # fmt: skip
        out[name] = (float(sa[name]), *_interval(ta[name]), float(sb[name]),
                     *_interval(tb[name]), diff, *_interval(d_boot))  # fmt: skip
    return out  # type: ignore[return-value]


def _interval(x: np.ndarray) -> tuple[float, float]:
    x = x[np.isfinite(x)]
    if not x.size:
        return float("nan"), float("nan")
    lo, hi = np.percentile(x, [2.5, 97.5])
    return float(lo), float(hi)


def run(args: argparse.Namespace) -> int:
    import pandas as pd

    from engine.reports.render import Report

    _check(args)
    start, end = logdata.parse_time(args.start, "--from"), logdata.parse_time(args.end, "--to")
    assert start is not None and end is not None  # required flags
    if end <= start:
        raise InvalidInput(f"--to ({args.end}) must come after --from ({args.start})", "--to")
    data = logdata.read_log(args.log)
    frame = logdata.within(data.decisions, start, end)
    frame, outcomes, as_of = logdata.read_labels(args, data, frame)
    if frame.empty:
        raise InvalidInput(
            f"--from/--to: no decisions in the log created in [{args.start}, {args.end})",
            "--from",
        )
    immature = frame["label"] == IMMATURE
    n_immature = frame.loc[immature].groupby("arm").size()
    frame = frame.loc[~immature.to_numpy()].reset_index(drop=True)
    frame["customer"] = pd.factorize(frame["customer_id"].fillna(""))[0]
    currencies = sorted(frame["currency"].dropna().unique())
    rep = Report(args.out, "Pilot: the champion against the control group and the challenger")
    rep.para(
        f"Log `{data.folder}`; outcomes `{args.outcomes}` as of {as_of:%Y-%m-%d %H:%M} UTC; "
        f"orders created in [{start:%Y-%m-%d %H:%M}, {end:%Y-%m-%d %H:%M}) UTC with a known "
        f"label; left out as immature (no outcome, younger than {args.label_horizon_days:g} "
        f"days at as-of): {int(n_immature.sum()):,}."
    )
    rep.heading("Cost assumptions")
    rep.bullets(
        [
            f"review cost {args.review_cost:g} per review; chargeback fee "
            f"{args.chargeback_fee:g} per approved fraud; lost margin "
            f"{args.false_decline_margin:g} × the amount of a falsely declined order",
            "each in the major units of the order's own currency: money is reported per "
            f"currency ({', '.join(currencies)}), never converted or added across currencies",
            f"intervals: 95% percentile bootstrap over customers, {args.boot} samples, "
            f"seed {args.seed}",
        ]
    )
    rep.heading("Limits")
    rep.bullets(
        [
            "censoring: a declined order ships nothing, so no chargeback can come; its fraud "
            "is known only if an outcome says so. Declined orders without one count as "
            "legitimate past the horizon, which overstates false declines and lost margin of "
            "the side that declines more",
            "the challenger's decisions were never acted on: its comparison is counterfactual, "
            "scored on the outcomes of the champion's decisions (an order the champion "
            "declined and the challenger would approve has no chargeback to show whether it "
            "was fraud)",
            "a reviewed order counts as stopped if fraud and approved if not (the reviewer is "
            "assumed right)",
        ]
    )
    model = frame.loc[(frame["arm"] == "model").to_numpy()].reset_index(drop=True)
    control = frame.loc[(frame["arm"] == "control").to_numpy()].reset_index(drop=True)
    results: list[tuple[str, dict[str, Any]]] = []
    rep.heading("Champion against the control group")
    if control.empty or model.empty:
        rep.para(
            "No control-group decisions in this period (the engine ran with "
            "control_fraction 0, `serve --control-fraction`)."
            if control.empty
            else "No champion decisions in this period."
        )
    else:
        r = compare(
            quantities(model, model["action"].to_numpy(), currencies, args),
            quantities(control, control["action"].to_numpy(), currencies, args),
            model["customer"].to_numpy(), control["customer"].to_numpy(), False,
            currencies, args.boot, args.seed,
        )  # fmt: skip
        _tables(rep, r, "control", currencies)
        results.append(("control", r))
    for version, ch in data.challenger.groupby("model_version"):
        rep.heading(f"Champion against the challenger {version}")
        joined = model.merge(ch[["seq", "order_id", "action"]], on=["seq", "order_id"],
                             how="inner", suffixes=("", "_challenger"))  # fmt: skip
        missing = len(model) - len(joined)
        rep.para(
            f"Paired on the champion's orders the challenger decided ({len(joined):,}; "
            f"{missing:,} of the champion's orders have no challenger decision: it was not "
            "set then, or dropped them when behind)."
        )
        if joined.empty:
            continue
        r = compare(
            quantities(joined, joined["action"].to_numpy(), currencies, args),
            quantities(joined, joined["action_challenger"].to_numpy(), currencies, args),
            joined["customer"].to_numpy(), joined["customer"].to_numpy(), True,
            currencies, args.boot, args.seed,
        )  # fmt: skip
        _tables(rep, r, "challenger", currencies)
        results.append((f"challenger {version}", r))
    if data.challenger.empty:
        rep.para("No challenger decisions in the log (`ordersight models challenger`).")
    _figure(rep, results, currencies)
    rep.heading("Outcomes")
    rep.bullets(outcomes.lines())
    path = rep.write()
    print(f"pilot report: {path}")
    for name, r in results:
        for c in currencies:
            v = r[f"{c} net benefit per 1,000 orders"]
            print(f"net benefit per 1,000 orders against {name} ({c}): {v[6]:.2f} "
                  f"[{v[7]:.2f}, {v[8]:.2f}]")  # fmt: skip
    return 0


def _cell(v: tuple[float, ...], i: int) -> str:
    if np.isnan(v[i]):
        return "–"
    return f"{v[i]:,.4g} [{v[i + 1]:,.4g}, {v[i + 2]:,.4g}]"


def _tables(rep: Any, r: dict[str, Any], other: str, currencies: list[str]) -> None:
    headers = ("", "champion", other, "champion − " + other)
    rates = ("orders", "catch rate", "review rate", "false-decline rate", "false declines")
    rep.table(headers, [(n, _cell(r[n], 0), _cell(r[n], 3), _cell(r[n], 6)) for n in rates])
    for c in currencies:
        rep.heading(f"{c}", 4)
        names = [f"{c} orders"] + [f"{c} {m}{per}" for m in ("fraud loss", "review cost",
                 "lost margin", "cost") for per in ("", " per 1,000 orders")]  # fmt: skip
        rows = [(n[len(c) + 1 :], _cell(r[n], 0), _cell(r[n], 3), _cell(r[n], 6)) for n in names]
        rep.table(headers, rows)
        v = r[f"{c} net benefit per 1,000 orders"]
        rep.para(
            f"**Net benefit of the champion per 1,000 orders ({c}): {_cell(v, 6)}** "
            f"({other}'s cost per 1,000 orders minus the champion's; positive: the champion "
            "costs less)."
        )


def _figure(rep: Any, results: list[tuple[str, dict[str, Any]]], currencies: list[str]) -> None:
    from engine.reports.render import figure

    points = [(f"{name}, {c}", r[f"{c} net benefit per 1,000 orders"][6:9])
              for name, r in results for c in currencies]  # fmt: skip
    if not points:
        return
    fig, ax = figure(7.0, 0.9 + 0.35 * len(points))
    y = np.arange(len(points))
    v = np.array([p[1] for p in points], float)
    err = np.nan_to_num(np.abs(np.vstack([v[:, 0] - v[:, 1], v[:, 2] - v[:, 0]])))
    ax.errorbar(v[:, 0], y, xerr=err, fmt="o", capsize=3)
    ax.axvline(0.0, color="0.4", lw=1)
    ax.set_yticks(y, [p[0] for p in points])
    ax.set_xlabel("net benefit of the champion per 1,000 orders (currency units)")
    ax.set_title("Champion against each comparison (95% bootstrap intervals)", fontsize=10)
    rep.figure("net-benefit", fig, "net benefit per 1,000 orders")
