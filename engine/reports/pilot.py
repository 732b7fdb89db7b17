"""`ordersight report pilot`: the champion against the pilot's control group (decided by the
rules alone) and against the challenger in shadow, in rates and in money.

Orders created in [--from, --to) whose label is known at as-of or censored (immature orders
are left out of the whole comparison and counted). For each side, with a flag a REVIEW or
DECLINE, on the orders whose label is known (`engine.reports.logdata`):

- catch rate = frauds flagged / frauds; review rate = reviews / orders
- false declines = legitimate orders declined (count; rate over legitimate orders)
- fraud loss = Σ over approved frauds of (amount + chargeback fee)
- review cost = reviews × review cost; lost margin = Σ false-declined amounts × margin
- cost per 1,000 orders = 1,000 × (fraud loss + review cost + lost margin) / orders
- net benefit per 1,000 orders = cost per 1,000 of the other side − the champion's

Censored orders (declined, no outcome: fraud stopped or a false decline, no outcome will
tell) count in orders and review cost, in no label-dependent point value; each such figure
also has bounds, its least and greatest value over every labelling of them (exact: the
extremes lie at each of two groups being all fraud or all legitimate). The groups: each
arm's censored orders against the control group; against the challenger, the champion's
censored orders it would review, and those it would decline (one label for both sides). A
censored order the challenger would approve is left out of both sides (its fraud loss
there is unknown) and counted. The point value is the bounds' end with every censored
order fraud (false declines, lost margin, cost) or legitimate (catch rate).

A reviewed fraud counts as caught (the reviewer stops it) and costs a review. Money is never
added across currencies (the engine has no FX table; `high_value` is in each order's own
units too): every money figure is per currency, the cost assumptions taken in each
currency's major units; rates are over all currencies.

Intervals are 95% percentile bootstrap intervals over customers, not orders: the control
group is assigned by customer, and a customer's orders are not independent. Against the
control group the two arms' customers are resampled separately (they are disjoint);
against the challenger the same resample of the champion's customers serves both sides
(paired: the same orders). A bound's interval runs from the 2.5th percentile of the lower
bound to the 97.5th of the upper one over the same samples. Each sample reweights each
customer's summed quantities by how often it was drawn, so a sample costs a matrix product,
not a pass over the orders.
"""

from __future__ import annotations

import argparse
import warnings
from typing import TYPE_CHECKING, Any

import numpy as np

from engine.errors import InvalidInput
from engine.reports import logdata
from engine.reports.logdata import CENSORED, FRAUD, IMMATURE, LEGITIMATE

if TYPE_CHECKING:
    import pandas as pd

BASE = ("orders", "frauds", "caught", "reviews", "legit", "false_declines",
        "c1", "c1_flagged", "c1_declined", "c2", "c2_flagged", "c2_declined")  # fmt: skip
MONEY = ("orders", "fraud_loss", "review_cost", "lost_margin", "c1_margin", "c2_margin")
CORNERS = (("fraud", "fraud"), ("fraud", "legit"), ("legit", "fraud"), ("legit", "legit"))
"""The labellings of the two groups of censored orders whose figures bound every other."""
BOUNDED = ("catch rate", "false-decline rate", "false declines", "lost margin",
           "lost margin per 1,000 orders", "cost", "cost per 1,000 orders")  # fmt: skip
NET = "net benefit per 1,000 orders"
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
    frame: pd.DataFrame, action: np.ndarray, group: np.ndarray, currencies: list[str],
    args: argparse.Namespace,
) -> np.ndarray:  # fmt: skip
    """(orders, len(BASE) + len(MONEY) × currencies): each order's contribution; `group`
    (1 or 2) places each censored order in its group, 0 for the others."""
    label, amount = frame["label"].to_numpy(), frame["amount"].to_numpy(np.float64)
    fraud, legit = label == FRAUD, label == LEGITIMATE
    flagged, declined = action != "APPROVE", action == "DECLINE"
    reviewed = action == "REVIEW"
    censored = [(label == CENSORED) & (group == g) for g in (1, 2)]
    cols = [np.ones(len(frame)), fraud, fraud & flagged, reviewed, legit, legit & declined]
    for c in censored:
        cols += [c, c & flagged, c & declined]
    cur = frame["currency"].to_numpy()
    margin = amount * args.false_decline_margin
    for c in currencies:
        mine = cur == c
        cols += [
            mine,
            mine * (fraud & ~flagged) * (amount + args.chargeback_fee),
            mine * reviewed * args.review_cost,
            mine * (legit & declined) * margin,
        ]
        cols += [mine * (k & declined) * margin for k in censored]
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


def statistics(
    s: np.ndarray, currencies: list[str], corner: tuple[str, str] | None = None
) -> dict[str, np.ndarray]:
    """Named statistics of summed quantities (the last axis is a `quantities` row): on the
    known labels, or with each group of censored orders labelled as `corner` says."""
    b = {name: s[..., i] for i, name in enumerate(BASE)}
    frauds, caught, legit, fd = b["frauds"], b["caught"], b["legit"], b["false_declines"]
    for g, lab in zip("12", corner or ("", ""), strict=True):
        n, f, d = b[f"c{g}"], b[f"c{g}_flagged"], b[f"c{g}_declined"]
        if lab == "fraud":
            frauds, caught = frauds + n, caught + f
        elif lab == "legit":
            legit, fd = legit + n, fd + d
    with np.errstate(divide="ignore", invalid="ignore"):
        out = {
            "orders": b["orders"], "censored": b["c1"] + b["c2"],
            "catch rate": caught / frauds, "review rate": b["reviews"] / b["orders"],
            "false-decline rate": fd / legit, "false declines": fd,
        }  # fmt: skip
        for k, c in enumerate(currencies):
            m = {n: s[..., len(BASE) + len(MONEY) * k + i] for i, n in enumerate(MONEY)}
            lost = m["lost_margin"].copy()
            for g, lab in zip("12", corner or ("", ""), strict=True):
                lost = lost + m[f"c{g}_margin"] if lab == "legit" else lost
            cost = m["fraud_loss"] + m["review_cost"] + lost
            out[f"{c} orders"] = m["orders"]
            for name, v in (("fraud loss", m["fraud_loss"]), ("review cost", m["review_cost"]),
                            ("lost margin", lost), ("cost", cost)):  # fmt: skip
                out[f"{c} {name}"] = v
                out[f"{c} {name} per 1,000 orders"] = 1000 * v / m["orders"]
    return out


Row = tuple[float, ...]


def compare(
    qa: np.ndarray, qb: np.ndarray, ca: np.ndarray, cb: np.ndarray, paired: bool,
    currencies: list[str], n_boot: int, seed: int,
) -> tuple[dict[str, Row], dict[str, Row]]:  # fmt: skip
    """Per statistic: champion (a), other (b), a − b, each as (value, low, high) on the
    known labels; plus "<currency> net benefit per 1,000 orders" (b's cost per 1,000 − a's)
    in the a−b slot. And the bounds over the censored: per statistic, for a, b and a − b,
    (lower, upper, the lower's 2.5th percentile, the upper's 97.5th)."""
    rng = np.random.default_rng(seed)
    pa_, pb_ = per_customer(qa, ca), per_customer(qb, cb)
    if paired:
        both = boot_sums(np.hstack([pa_, pb_]), n_boot, rng)
        ba, bb = both[:, : qa.shape[1]], both[:, qa.shape[1] :]
    else:
        ba, bb = boot_sums(pa_, n_boot, rng), boot_sums(pb_, n_boot, rng)
    sums = qa.sum(axis=0), qb.sum(axis=0)

    def sides(corner: tuple[str, str] | None) -> list[list[dict[str, Any]]]:
        """[a, b, a − b] as values and as samples, with the net benefits."""
        out = []
        for x, y in (sums, (ba, bb)):
            sa, sb = statistics(x, currencies, corner), statistics(y, currencies, corner)
            d = {n: sa[n] - sb[n] for n in sa}
            d |= {n.split(" ", 1)[0] + " net benefit per 1,000 orders": -d[n]
                  for n in sa if n.endswith(" cost per 1,000 orders")}  # fmt: skip
            out.append([sa, sb, d])
        return out

    known, corners = sides(None), [sides(c) for c in CORNERS]
    out, bounds = {}, {}
    for name in known[0][2]:
        row: list[float] = []
        brow: list[float] = []
        for k in range(3):
            if name not in known[0][k]:  # a net benefit: no side of its own
                row += [float("nan")] * 3
                brow += [float("nan")] * 4
                continue
            row += [float(known[0][k][name]), *_interval(known[1][k][name])]
            vals = np.array([c[0][k][name] for c in corners], np.float64)
            samples = np.array([c[1][k][name] for c in corners], np.float64)
            with warnings.catch_warnings():  # a figure undefined under every labelling
                warnings.simplefilter("ignore", RuntimeWarning)
                lo_s, hi_s = np.nanmin(samples, axis=0), np.nanmax(samples, axis=0)
                lo, hi = np.nanmin(vals), np.nanmax(vals)
            brow += [float(lo), float(hi), _interval(lo_s)[0], _interval(hi_s)[1]]
        out[name], bounds[name] = tuple(row), tuple(brow)
    return out, bounds


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
    n_immature = int(immature.sum())
    frame = frame.loc[~immature.to_numpy()].reset_index(drop=True)
    frame["customer"] = pd.factorize(frame["customer_id"].fillna(""))[0]
    currencies = sorted(frame["currency"].dropna().unique())
    censored = frame["label"] == CENSORED
    rep = Report(args.out, "Pilot: the champion against the control group and the challenger")
    rep.para(
        f"Log `{data.folder}`; outcomes `{args.outcomes}` as of {as_of:%Y-%m-%d %H:%M} UTC; "
        f"orders created in [{start:%Y-%m-%d %H:%M}, {end:%Y-%m-%d %H:%M}) UTC; left out as "
        f"immature (approved or reviewed, no outcome, younger than "
        f"{args.label_horizon_days:g} days at as-of): {n_immature:,}; censored (declined, "
        f"no outcome): {int(censored.sum()):,} ("
        + ", ".join(f"{n:,} {a}" for a, n in frame.loc[censored].groupby("arm").size().items())
        + ")."
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
            "censoring: a declined order ships nothing, so no chargeback can come; whether it "
            "was fraud is known only if an outcome says so (a bank's confirmation, a "
            "customer's complaint). A declined order without one is censored at any age: "
            "the point values count known labels only, so false declines and lost margin "
            "are those confirmed legitimate, a lower end; the rows *: bounds* give each "
            "figure's least and greatest value over every labelling of the censored orders "
            "(the true value lies within, as far as the other labels are right), with the "
            "interval from the lower bound's 2.5th percentile to the upper's 97.5th",
            "the challenger's decisions were never acted on: its comparison is counterfactual, "
            "scored on the outcomes of the champion's decisions. A censored order the "
            "challenger would approve could be its fraud loss or nothing: such orders are "
            "left out of both sides (counted below)",
            "a reviewed order counts as stopped if fraud and approved if not (the reviewer is "
            "assumed right)",
        ]
    )
    model = frame.loc[(frame["arm"] == "model").to_numpy()].reset_index(drop=True)
    control = frame.loc[(frame["arm"] == "control").to_numpy()].reset_index(drop=True)
    results: list[tuple[str, dict[str, Any], dict[str, Any]]] = []
    rep.heading("Champion against the control group")
    if control.empty or model.empty:
        rep.para(
            "No control-group decisions in this period (the engine ran with "
            "control_fraction 0, `serve --control-fraction`)."
            if control.empty
            else "No champion decisions in this period."
        )
    else:
        arms = ((model, model["action"].to_numpy(), 1), (control, control["action"].to_numpy(), 2))
        _versus(rep, results, "control", arms, False, currencies, args)
    for version, ch in data.challenger.groupby("model_version"):
        rep.heading(f"Champion against the challenger {version}")
        joined = model.merge(ch[["seq", "order_id", "action"]], on=["seq", "order_id"],
                             how="inner", suffixes=("", "_challenger"))  # fmt: skip
        missing = len(model) - len(joined)
        other = joined["action_challenger"].to_numpy()
        unknown = ((joined["label"] == CENSORED) & (other == "APPROVE")).to_numpy()
        joined, other = joined.loc[~unknown].reset_index(drop=True), other[~unknown]
        rep.para(
            f"Paired on the champion's orders the challenger decided ({len(joined):,}; "
            f"{missing:,} of the champion's orders have no challenger decision: it was not "
            "set then, or dropped them when behind). Left out of both sides: "
            f"{int(unknown.sum()):,} censored orders the challenger would approve (its fraud "
            "loss on them is unknown). Bounds: the censored orders it would review form one "
            "group, those it would decline the other."
        )
        if joined.empty:
            continue
        group = np.where(other == "REVIEW", 1, 2)
        pair = ((joined, joined["action"].to_numpy(), group), (joined, other, group))
        _versus(rep, results, f"challenger {version}", pair, True, currencies, args)
    if data.challenger.empty:
        rep.para("No challenger decisions in the log (`ordersight models challenger`).")
    _figure(rep, results, currencies)
    rep.heading("Outcomes")
    rep.bullets(outcomes.lines())
    path = rep.write()
    print(f"pilot report: {path}")
    for name, r, bounds in results:
        for c in currencies:
            v, w = r[f"{c} {NET}"], bounds[f"{c} {NET}"]
            print(f"{NET} against {name} ({c}): {v[6]:.2f} [{v[7]:.2f}, {v[8]:.2f}] on known "
                  f"labels; bounds {w[8]:.2f} … {w[9]:.2f}")  # fmt: skip
    return 0


def _versus(
    rep: Any, results: list, name: str, sides: Any, paired: bool, currencies: list[str],
    args: argparse.Namespace,
) -> None:  # fmt: skip
    """One comparison's tables: `sides` the champion's and the other's (frame, action,
    group of the censored); the two frames are the same orders when `paired`."""
    (fa, aa, ga), (fb, ab, gb) = sides
    r, bounds = compare(
        quantities(fa, aa, np.broadcast_to(ga, aa.shape), currencies, args),
        quantities(fb, ab, np.broadcast_to(gb, ab.shape), currencies, args),
        fa["customer"].to_numpy(), fb["customer"].to_numpy(), paired,
        currencies, args.boot, args.seed,
    )  # fmt: skip
    _tables(rep, r, bounds, name.split(" ")[0], currencies)
    results.append((name, r, bounds))


def _cell(v: tuple[float, ...], i: int) -> str:
    if np.isnan(v[i]):
        return "–"
    return f"{v[i]:,.4g} [{v[i + 1]:,.4g}, {v[i + 2]:,.4g}]"


def _bound(v: tuple[float, ...], i: int) -> str:
    """Bounds (lower … upper) with their 95% interval: the cell of a *: bounds* row."""
    if np.isnan(v[i]) and np.isnan(v[i + 1]):
        return "–"
    return f"{v[i]:,.4g} … {v[i + 1]:,.4g} (95%: {v[i + 2]:,.4g} … {v[i + 3]:,.4g})"


def _rows(r: dict[str, Any], bounds: dict[str, Any], names: list[str], cut: int) -> list:
    rows = []
    for n in names:
        rows.append((n[cut:], _cell(r[n], 0), _cell(r[n], 3), _cell(r[n], 6)))
        if n[cut:] in BOUNDED:
            b = bounds[n]
            rows.append((n[cut:] + ": bounds", _bound(b, 0), _bound(b, 4), _bound(b, 8)))
    return rows


def _tables(
    rep: Any, r: dict[str, Any], bounds: dict[str, Any], other: str, currencies: list[str]
) -> None:
    headers = ("", "champion", other, "champion − " + other)
    rates = ["orders", "censored", "catch rate", "review rate", "false-decline rate",
             "false declines"]  # fmt: skip
    rep.table(headers, _rows(r, bounds, rates, 0))
    for c in currencies:
        rep.heading(f"{c}", 4)
        names = [f"{c} orders"] + [f"{c} {m}{per}" for m in ("fraud loss", "review cost",
                 "lost margin", "cost") for per in ("", " per 1,000 orders")]  # fmt: skip
        rep.table(headers, _rows(r, bounds, names, len(c) + 1))
        v, b = r[f"{c} net benefit per 1,000 orders"], bounds[f"{c} net benefit per 1,000 orders"]
        rep.para(
            f"**Net benefit of the champion per 1,000 orders ({c}), known labels: "
            f"{_cell(v, 6)}; bounds over the censored orders: {_bound(b, 8)}** ({other}'s "
            "cost per 1,000 orders minus the champion's; positive: the champion costs less; "
            "the known-label value counts no censored order as a false decline, the bounds "
            "every labelling of them)."
        )


def _figure(rep: Any, results: list[tuple[str, Any, Any]], currencies: list[str]) -> None:
    from engine.reports.render import figure

    points = [(f"{name}, {c}", r[f"{c} net benefit per 1,000 orders"][6:9],
               b[f"{c} net benefit per 1,000 orders"][8:12])
              for name, r, b in results for c in currencies]  # fmt: skip
    if not points:
        return
    fig, ax = figure(7.0, 0.9 + 0.35 * len(points))
    y = np.arange(len(points))
    v = np.array([p[1] for p in points], float)
    w = np.array([p[2] for p in points], float)
    ax.hlines(y, w[:, 2], w[:, 3], color="0.75", lw=6, label="bounds over the censored (95%)")
    ax.hlines(y, w[:, 0], w[:, 1], color="0.45", lw=6, label="bounds over the censored")
    err = np.nan_to_num(np.abs(np.vstack([v[:, 0] - v[:, 1], v[:, 2] - v[:, 0]])))
    ax.errorbar(v[:, 0], y, xerr=err, fmt="o", capsize=3, label="known labels [95% CI]")
    ax.axvline(0.0, color="0.4", lw=1)
    ax.set_yticks(y, [p[0] for p in points])
    ax.set_xlabel("net benefit of the champion per 1,000 orders (currency units)")
    ax.set_title("Champion against each comparison", fontsize=10)
    ax.legend(fontsize=7, loc="best")
    rep.figure("net-benefit", fig, "net benefit per 1,000 orders")
