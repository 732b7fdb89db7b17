"""`ordersight report routing`: time to resolution, SLA breaches and the experience of the
agent each case was given, per customer segment, with the bias report's disparate-impact
check, so that routing can be shown not to hand some customers the least experienced agents.

Input: the routed cases (`engine.reports.routing_data`: `--store` or `--cases`, and
`--where` to keep one router's of a file holding several).
Customer segments: customer_tier, amount band (major units of the case's own currency, no
FX, as the bias report's bands; wider bands, because complex-order cases run to six
figures), new or returning (customer_orders 0, or above 0; -1 unknown), language, and every
`--segment` column (of the cases, or of `--customers` joined by customer_id as the bias
report joins it). Priority and category are shown too, as case types: routing is meant to
treat them differently, so they are not compared.

Per segment:
- cases, and how many are still queued or assigned (open: a segment whose cases wait is a
  finding even before any of them is resolved);
- over completed cases: mean time to resolution (completed_at - created_at), its 90th
  percentile, SLA breach rate (resolution > sla_s);
- over cases given an agent (assigned or completed): mean agent_experience (the agent's
  completed cases in the category when assigned), novice share (experience below
  `--novice`);
- rework rate: cases routed more than once / cases routed at least once.

Intervals are the bias report's (`engine.reports.bias`): fairlearn's MetricFrame over groups
of customers (a customer's cases are not independent draws: one customer's difficult account
gives many slow cases), 95% percentile intervals from `--boot` samples, seed `--seed`. The
90th percentile has none: the resampled rows are summed counts of groups of customers, and a
percentile is not a sum.

Disparate impact, on customer segments only: for each "good outcome" (SLA met rate,
experienced-agent rate = 1 - novice share, and speed = 1 / mean resolution time, so its
ratio is reference mean / segment mean), the ratio of the segment to the most favoured
segment of its kind among those with at least `--min-size` cases in the figure's
denominator (completed cases for SLA and speed, cases given an agent for experience);
intervals, the reference and the four-fifths flag exactly as in the bias report.
"""

from __future__ import annotations

import argparse
import re
from typing import TYPE_CHECKING, Any, NamedTuple

import numpy as np

from engine.errors import InvalidInput
from engine.reports import bias, logdata, routing_data
from engine.reports.routing_data import UNKNOWN
from engine.routing.order_features import TIERS
from engine.routing.team import PRIORITIES
from engine.store.routing import ASSIGNED, COMPLETED, QUEUED

if TYPE_CHECKING:
    import pandas as pd

NOVICE = 10
AMOUNT_BANDS = ((500.0, "<500"), (5_000.0, "500–5k"), (50_000.0, "5k–50k"), (np.inf, "≥50k"))
NEW, RETURNING = "new", "returning"
CASE_KINDS = ("priority", "category")

# Columns of the count vector each case contributes (summed per group of customers).
(CASES, QUEUED_N, ASSIGNED_N, DONE, SLA_MET, BREACHED, RESOLUTION_S, WITH_AGENT, EXPERIENCE,
 NOVICES, EXPERIENCED, ROUTED, REWORK) = range(13)  # fmt: skip
WIDTH = 13
METRICS = {
    "resolution": bias.share(RESOLUTION_S, DONE, WIDTH),
    "breach": bias.share(BREACHED, DONE, WIDTH),
    "experience": bias.share(EXPERIENCE, WITH_AGENT, WIDTH),
    "novice": bias.share(NOVICES, WITH_AGENT, WIDTH),
    "rework": bias.share(REWORK, ROUTED, WIDTH),
}


class Ratio(NamedTuple):
    """A good outcome compared across segments: share `num` / `den`, higher is better;
    segments with fewer than --min-size `size` are not flagged."""

    name: str
    title: str
    num: int
    den: int
    size: int


RATIOS = (
    Ratio("sla", "SLA met", SLA_MET, DONE, DONE),
    Ratio("experienced", "experienced agent", EXPERIENCED, WITH_AGENT, WITH_AGENT),
    Ratio("speed", "resolution time", DONE, RESOLUTION_S, DONE),
)


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--store", help="the store's DSN (a SQLite file or postgresql://...)")
    p.add_argument("--cases", help="or: a Parquet or CSV file with the routing_cases columns")
    p.add_argument(
        "--where", action="append", default=[], metavar="COL=VALUE",
        help="only the cases whose column COL is VALUE (e.g. router=ordersight); repeatable",
    )  # fmt: skip
    p.add_argument(
        "--segment", action="append", default=[], metavar="COL",
        help="also segment by this column (of the cases, or of --customers); repeatable",
    )  # fmt: skip
    p.add_argument(
        "--customers", help="CSV or Parquet file with customer_id and the --segment columns"
    )
    p.add_argument(
        "--novice", type=int, default=NOVICE,
        help="an agent with fewer completed cases in the category is a novice (default 10)",
    )  # fmt: skip
    p.add_argument(
        "--min-size", type=int, default=100,
        help="segments with fewer cases (in a figure's denominator) are shown but not "
        "flagged (default 100)",
    )  # fmt: skip
    p.add_argument(
        "--boot", type=int, default=200, help="bootstrap samples per interval (default 200)"
    )
    p.add_argument("--seed", type=int, default=0, help="bootstrap seed (default 0)")
    p.add_argument("--out", default="reports/routing", help="report folder (default %(default)s)")


def case_counts(frame: pd.DataFrame, novice: int) -> np.ndarray:
    """(cases, WIDTH): each case's contribution to the count vector."""
    status = frame["status"].to_numpy()
    done = status == COMPLETED
    res = frame["resolution_s"].to_numpy(np.float64)
    met = done & (res <= frame["sla_s"].to_numpy(np.float64))
    agent = frame["has_agent"].to_numpy(bool)
    exp = np.where(agent, frame["agent_experience"].to_numpy(np.float64), 0.0)
    nov = agent & (exp < novice)
    routes = frame["routes"].to_numpy(np.float64)
    return np.stack(
        [np.ones(len(frame)), status == QUEUED, status == ASSIGNED, done,
         met, done & ~met, np.where(done, res, 0.0), agent, exp, nov, agent & ~nov,
         routes >= 1, routes > 1], axis=1,
    ).astype(np.float64)  # fmt: skip


def segments(
    frame: pd.DataFrame, extra: list[str], customers: str | None
) -> tuple[dict[str, pd.Series], dict[str, pd.Series]]:
    """(customer kinds, case-type kinds): kind -> each case's segment."""
    import pandas as pd

    orders = frame["customer_orders"].to_numpy()
    who: dict[str, pd.Series] = {
        "customer_tier": frame["customer_tier"],
        "amount_band": logdata.band_of(frame["amount"], AMOUNT_BANDS),
        "new_or_returning": pd.Series(
            np.select([orders == 0, orders > 0], [NEW, RETURNING], UNKNOWN), index=frame.index
        ),
        "language": frame["language"],
    }
    what = {k: frame[k] for k in CASE_KINDS}
    table = logdata.read_customers(customers) if customers else None
    for col in extra:
        if col in who or col in what:
            continue
        if col in frame.columns:
            who[col] = logdata.as_categories(frame[col])
        elif table is not None and col in table.columns:
            who[col] = logdata.as_categories(frame["customer_id"].map(table[col]))
        else:
            where = f"the cases' columns, nor in {customers}" if customers else (
                "the cases' columns (give --customers FILE for a column of yours)"
            )  # fmt: skip
            raise InvalidInput(f"--segment: no column {col!r} in {where}", "--segment")
    return who, what


_ORDER = {n: i for i, n in enumerate((*TIERS, *(b for _, b in AMOUNT_BANDS), RETURNING,
                                      *PRIORITIES))}  # fmt: skip


def segment_order(name: str) -> tuple[int, tuple[int, str]]:
    """Tiers, bands and priorities in their order, then the bias report's order."""
    return (_ORDER.get(name, len(_ORDER)), logdata.segment_order(name))


def segment_table(
    counts: np.ndarray, segment: pd.Series, customers: np.ndarray, resolution: np.ndarray,
    compare: bool, args: argparse.Namespace,
) -> pd.DataFrame:  # fmt: skip
    """One row per segment: counts, METRICS with intervals, p90 resolution and, when
    `compare`, each RATIOS' ratio, interval, reference and flag."""
    import pandas as pd
    from fairlearn.metrics import MetricFrame

    labels = segment.astype(str).to_numpy()
    seg, rows = bias.bucket_rows(counts, labels, customers)
    mf = MetricFrame(
        metrics=METRICS, y_true=bias.vectors(rows), y_pred=np.zeros(len(rows)),
        sensitive_features=pd.Series(seg, name="segment"),
        n_boot=args.boot, ci_quantiles=bias.CI, random_state=args.seed,
    )  # fmt: skip
    table = mf.by_group.copy()
    lo, hi = mf.by_group_ci
    for m in METRICS:
        table[m + "_lo"], table[m + "_hi"] = lo[m], hi[m]
    sums = pd.DataFrame(rows, index=seg).groupby(level=0).sum().reindex(table.index)
    for col, name in ((CASES, "cases"), (QUEUED_N, "queued"), (ASSIGNED_N, "assigned"),
                      (DONE, "completed"), (WITH_AGENT, "with_agent")):  # fmt: skip
        table[name] = sums[col].astype(int)
    done = ~np.isnan(resolution)
    p90 = pd.Series(resolution[done]).groupby(labels[done]).quantile(0.9)
    table["p90"] = p90.reindex(table.index).astype(float)
    for r in RATIOS if compare else ():
        table = table.join(_compare(r, sums, rows, seg, args))
    table.index = pd.Index([str(i) for i in table.index], name="segment")
    return table.loc[sorted(table.index, key=segment_order)]


def _compare(
    r: Ratio, sums: pd.DataFrame, rows: np.ndarray, seg: np.ndarray, args: argparse.Namespace
) -> pd.DataFrame:
    """One RATIOS' columns (`{name}`, `_lo`, `_hi`, `_ref`, `_flag`) for every segment."""
    import pandas as pd

    den = sums[r.den].astype(float)
    rate = sums[r.num] / den.where(den > 0)
    small = (sums[r.size] < args.min_size).to_numpy()
    cols = [r.name, r.name + "_lo", r.name + "_hi"]
    out = pd.DataFrame(np.nan, index=sums.index, columns=cols)
    ref = ""
    if rate.notna().any():
        ref = bias.most_favoured(rate, sums[r.size], args.min_size)
        metric = bias.ratio_of(r.num, r.den, WIDTH)
        got = bias.ratios(rows, seg, ref, args.boot, args.seed, metric)
        got.columns = cols
        out.update(got)
        out.loc[ref, cols] = 1.0
    out[r.name + "_ref"] = ref
    out[r.name + "_flag"] = bias.flags(out[r.name], out[r.name + "_hi"], small)
    return out


def run(args: argparse.Namespace) -> int:
    from engine.reports.render import Report

    for flag, value in (("--min-size", args.min_size), ("--boot", args.boot),
                        ("--novice", args.novice)):  # fmt: skip
        if value < 1:
            raise InvalidInput(f"{flag} must be >= 1, is {value}", flag)
    frame = routing_data.read_routed_cases(args.store, args.cases, args.segment, args.where)
    who, what = segments(frame, args.segment, args.customers)
    counts = case_counts(frame, args.novice)
    customers = frame["customer_id"].to_numpy()
    resolution = frame["resolution_s"].to_numpy(np.float64)
    unit = _unit(resolution)
    status = frame["status"].value_counts()
    rep = Report(args.out, "Routing: resolution and agent experience per customer segment")
    t0, t1 = (_utc(frame["created_at"].agg(f)) for f in ("min", "max"))
    only = f" where {', '.join(f'`{w}`' for w in args.where)}" if args.where else ""
    rep.para(
        f"{routing_data.source_name(args.store, args.cases)}{only}: {len(frame):,} cases created "
        f"{t0} to {t1} UTC ({int(status.get(COMPLETED, 0)):,} completed, "
        f"{int(status.get(ASSIGNED, 0)):,} assigned, {int(status.get(QUEUED, 0)):,} queued)."
    )
    rep.bullets([
        f"novice: an agent with fewer than {args.novice} completed cases in the case's "
        "category when assigned (--novice)",
        f"bootstrap: {args.boot} samples of customers (in up to {bias.BUCKETS} groups per "
        f"segment), 95% percentile intervals, seed {args.seed}; the p90 has no interval",
        f"segments with fewer than {args.min_size} cases in a ratio's denominator (completed "
        "cases for SLA and resolution time, cases given an agent for experience) are not "
        "flagged (--min-size) nor taken as the reference",
        "ratio = the segment's SLA met rate, experienced-agent rate (1 - novice share) or "
        "speed (reference mean resolution time / the segment's) over the most favoured "
        f"segment's of its kind; flagged below {bias.FOUR_FIFTHS} (the four-fifths rule)",
        "time to resolution and SLA: completed cases only; experience: cases given an "
        "agent (assigned or completed); rework: routed more than once / routed at least once",
        "a flag is a reason to look, not a finding: a segment's cases may be harder (its "
        "categories and priorities are in the by-case-type section)",
    ])  # fmt: skip
    flagged: list[str] = []
    rep.heading("By customer segment", 2)
    for kind, segment in who.items():
        table = segment_table(counts, segment, customers, resolution, True, args)
        for r in RATIOS:
            hit = table.index[table[r.name + "_flag"].str.startswith("below")]
            flagged += [f"{kind} = {s} ({r.title})" for s in hit]
        _section(rep, kind, table, unit, True)
    rep.heading("By case type (not compared)", 2)
    for kind, segment in what.items():
        table = segment_table(counts, segment, customers, resolution, False, args)
        _section(rep, kind, table, unit, False)
    rep.heading("Summary", 2)
    rep.para("Below the four-fifths line: " + ("; ".join(flagged) if flagged else "none") + ".")
    path = rep.write()
    print(f"routing report: {path}")
    print(f"below four-fifths: {'; '.join(flagged) if flagged else 'none'}")
    return 0


def _utc(t: float) -> str:
    import datetime as dt

    return dt.datetime.fromtimestamp(t, dt.UTC).strftime("%Y-%m-%d %H:%M")


def _unit(resolution: np.ndarray) -> tuple[str, float]:
    """Minutes when completed cases mostly take under two hours, else hours."""
    done = resolution[~np.isnan(resolution)]
    return ("min", 60.0) if done.size and np.median(done) < 7200 else ("h", 3600.0)


def _ci(table: pd.DataFrame, m: str, seg: str, scale: float = 0.0) -> str:
    """A figure and its interval: a rate to 3 decimals, or a mean (`scale`: its unit) to 1."""
    v, lo, hi = (table.at[seg, c] / (scale or 1.0) for c in (m, m + "_lo", m + "_hi"))
    d = 1 if scale else 3
    return "–" if np.isnan(v) else f"{v:,.{d}f} [{lo:,.{d}f}, {hi:,.{d}f}]"


def _p90(v: float) -> str:
    return "–" if np.isnan(v) else f"{v:,.1f}"


def _section(
    rep: Any, kind: str, table: pd.DataFrame, unit: tuple[str, float], compare: bool
) -> None:
    name, scale = unit
    rep.heading(f"{'Segment' if compare else 'Case type'}: {kind}", 3)
    headers = ["segment", "cases", "queued", "assigned", "completed",
               f"mean resolution ({name})", f"p90 ({name})", "SLA breach rate",
               "mean agent experience", "novice share", "rework rate"]  # fmt: skip
    rows = [
        [s, *(int(table.at[s, c]) for c in ("cases", "queued", "assigned", "completed")),
         _ci(table, "resolution", s, scale), _p90(table.at[s, "p90"] / scale),
         _ci(table, "breach", s), _ci(table, "experience", s, 1.0), _ci(table, "novice", s),
         _ci(table, "rework", s)]
        for s in table.index
    ]  # fmt: skip
    rep.table(headers, rows)
    if compare:
        refs = ", ".join(f"{r.title} `{table[r.name + '_ref'].iloc[0]}`" for r in RATIOS)
        rep.para(f"Most favoured (reference): {refs}.")
        headers = ["segment"] + [x for r in RATIOS for x in (f"{r.title} ratio", "flag")]
        rows = [[s] + [x for r in RATIOS for x in (_ci(table, r.name, s),
                                                     table.at[s, r.name + "_flag"])]
                for s in table.index]  # fmt: skip
        rep.table(headers, rows)
        _figure(rep, kind, table, unit)


def _figure(rep: Any, kind: str, table: pd.DataFrame, unit: tuple[str, float]) -> None:
    """Mean resolution time and novice share per segment, with their intervals; red where
    the segment's ratio is flagged, grey where it has too few cases."""
    from engine.reports.render import figure

    name, scale = unit
    fig, _ = figure(10.0, 0.9 + 0.35 * len(table))
    fig.clf()
    y = np.arange(len(table))
    panels = (("resolution", "speed", scale, f"mean time to resolution ({name})"),
              ("novice", "experienced", 1.0, "novice share"))  # fmt: skip
    for i, (m, ratio, div, label) in enumerate(panels):
        ax = fig.add_subplot(1, 2, i + 1)
        v = table[m].to_numpy(float) / div
        err = np.vstack([v - table[m + "_lo"].to_numpy(float) / div,
                         table[m + "_hi"].to_numpy(float) / div - v])  # fmt: skip
        flag = table[ratio + "_flag"]
        colors = ["0.6" if f == "too few" else ("C3" if f else "C0") for f in flag]
        ax.errorbar(v, y, xerr=np.nan_to_num(np.abs(err)), fmt="none", ecolor="0.4", capsize=3)
        ax.scatter(v, y, c=colors, zorder=3)
        ax.set_yticks(y, [str(s) for s in table.index] if i == 0 else [""] * len(y))
        ax.set_xlabel(label)
        ax.invert_yaxis()  # the first segment at the top, as in the tables
    fig.suptitle(f"{kind}: red = below four-fifths, grey = too few cases", fontsize=10)
    rep.figure("routing-" + re.sub(r"[^A-Za-z0-9_-]", "_", kind), fig, f"per {kind}")
