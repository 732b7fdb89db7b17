"""`ordersight report bias`: review, decline, approval and false-positive rates per segment,
and the disparate-impact ratio of each segment's approval rate (the four-fifths rule).

Segments (`engine.reports.logdata.segment_columns`): first order seen or returning
customer, account age, channel, amount band, billing country, and every `--segment`
column (of the log, or of `--customers` joined by customer_id).

Per segment, fairlearn's `MetricFrame` computes the rates and their bootstrap intervals
(`n_boot` = `--boot`, 95% percentile intervals, `random_state` = `--seed`). The rows it
resamples are groups of customers, not orders: within each segment every customer is
hashed into one of BUCKETS groups and a row is the summed counts of that group's orders.
A customer's orders are not independent draws (one compromised account gives many frauds),
so customers are the unit to resample; and fairlearn runs each metric in Python over the
rows of every sample, so a row per order would make the report's cost grow with the log.

- approval, review, decline rate = orders with that action / orders
- false-positive rate = legitimate orders declined or reviewed / legitimate orders, over
  the orders known legitimate only (labels as in the accuracy report; only with
  --outcomes). Declines without an outcome are censored (a declined order ships nothing, so
  no chargeback can say whether it was fraud): they are in neither count, and each
  segment's count of them is shown beside its rate. A segment whose declines are mostly
  censored has a false-positive rate resting on its reviews and its confirmed declines
- disparate-impact ratio = approval rate of the segment / approval rate of the most
  favoured segment of its kind: the segment with the highest approval rate among those of
  at least `--min-size` orders (a segment of five orders, all approved, is no reference).
  Its interval is a second MetricFrame's: one group per comparison, holding the segment's
  and the reference's orders, whose metric is that ratio, so each bootstrap sample
  recomputes both rates.

A ratio below 0.8 is flagged (the four-fifths rule of the US EEOC's Uniform Guidelines), on
segments of at least `--min-size` orders; smaller ones are shown as "too few". The rule is
a screening threshold, not a finding: a flagged segment needs its reasons read (a segment
can be declined more because it holds more fraud; the false-positive rate says whether its
legitimate orders pay for it).
"""

from __future__ import annotations

import argparse
import re
from typing import TYPE_CHECKING, Any

import numpy as np

from engine.errors import InvalidInput
from engine.reports import logdata
from engine.reports.logdata import CENSORED, LEGITIMATE

if TYPE_CHECKING:
    import pandas as pd

FOUR_FIFTHS = 0.8
CI = [0.025, 0.975]
BUCKETS = 100
"""Groups of customers per segment that the bootstrap resamples (see the module's
docstring)."""


def add_arguments(p: argparse.ArgumentParser) -> None:
    logdata.add_log_arguments(p, "optional")
    p.add_argument(
        "--segment", action="append", default=[], metavar="COL",
        help="also segment by this column (of the log, a feature, or of --customers); repeatable",
    )  # fmt: skip
    p.add_argument(
        "--customers", help="CSV or Parquet file with customer_id and the --segment columns"
    )
    p.add_argument(
        "--min-size", type=int, default=100,
        help="segments with fewer orders are shown but not flagged (default 100)",
    )  # fmt: skip
    p.add_argument(
        "--arm", choices=("model", "control", "all"), default="model",
        help="which decisions: the models' (default), the pilot's control group, or all",
    )  # fmt: skip
    p.add_argument(
        "--boot", type=int, default=200, help="bootstrap samples per interval (default 200)"
    )
    p.add_argument("--seed", type=int, default=0, help="bootstrap seed (default 0)")
    p.add_argument("--out", default="reports/bias", help="report folder (default %(default)s)")


# Columns of the count vector each row fairlearn sees carries.
ORDERS, APPROVED, REVIEWED, DECLINED, LEGIT, LEGIT_FLAGGED, CENSORED_N = range(7)
WIDTH = 7


def share(num: int, den: int, width: int = WIDTH) -> Any:
    """A MetricFrame metric over rows of `width`-long count vectors: sum of column `num` /
    sum of column `den` (NaN when that is 0)."""

    def metric(y_true: Any, y_pred: Any) -> float:
        c = np.asarray(y_true).reshape(-1, width).sum(axis=0)
        return float(c[num] / c[den]) if c[den] > 0 else float("nan")

    metric.__name__ = f"share_{num}_{den}"
    return metric


def ratio_of(num: int, den: int, width: int = WIDTH) -> Any:
    """The metric of `ratios`' comparisons: the compared segment's share (`num` / `den`, as
    `share`) over the reference segment's rows' share."""

    def metric(y_true: Any, y_pred: Any, reference: Any) -> float:
        c = np.asarray(y_true).reshape(-1, width)
        ref = np.asarray(reference, bool)
        own, top = c[~ref].sum(axis=0), c[ref].sum(axis=0)
        if own[den] == 0 or top[num] == 0 or top[den] == 0:
            return float("nan")
        return float((own[num] / own[den]) / (top[num] / top[den]))

    metric.__name__ = f"ratio_{num}_{den}"
    return metric


_di_ratio = ratio_of(APPROVED, ORDERS)
"""Approval rate of the compared segment's rows over the reference segment's rows."""


def order_counts(label: np.ndarray, action: np.ndarray) -> np.ndarray:
    """(orders, WIDTH): each order's contribution to the count vector (censored orders are
    in no legitimate count)."""
    legit = label == LEGITIMATE
    return np.stack(
        [np.ones(label.size), action == "APPROVE", action == "REVIEW", action == "DECLINE",
         legit, legit & (action != "APPROVE"), label == CENSORED], axis=1,
    ).astype(np.int64)  # fmt: skip


def bucket_rows(
    counts: np.ndarray, segment: np.ndarray, customers: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """The rows fairlearn resamples: per segment, the summed counts of each of up to BUCKETS
    groups of customers (a customer's orders always in one group). Returns the rows'
    segments and their count vectors."""
    import pandas as pd

    bucket = pd.util.hash_array(customers.astype(object)) % np.uint64(BUCKETS)
    sums = pd.DataFrame(counts).groupby([segment, bucket.astype(np.int64)]).sum()
    return sums.index.get_level_values(0).to_numpy(), sums.to_numpy()


def vectors(matrix: np.ndarray) -> np.ndarray:
    """Rows as a 1-d object array of count vectors (how MetricFrame takes one value per
    row that is itself a vector, whatever the number of rows)."""
    out = np.empty(len(matrix), object)
    out[:] = list(matrix)
    return out


def segment_table(
    counts: np.ndarray, segment: pd.Series, customers: np.ndarray, with_fpr: bool,
    min_size: int, n_boot: int, seed: int,
) -> pd.DataFrame:  # fmt: skip
    """One row per segment: orders, the rates with their intervals, the ratio, its
    interval, the reference segment and the flag."""
    import pandas as pd
    from fairlearn.metrics import MetricFrame

    seg, rows = bucket_rows(counts, segment.astype(str).to_numpy(), customers)
    metrics: dict[str, Any] = {"approval": share(APPROVED, ORDERS),
                               "review": share(REVIEWED, ORDERS),
                               "decline": share(DECLINED, ORDERS)}  # fmt: skip
    if with_fpr:
        metrics["fpr"] = share(LEGIT_FLAGGED, LEGIT)
    mf = MetricFrame(
        metrics=metrics, y_true=vectors(rows), y_pred=np.zeros(len(rows)),
        sensitive_features=pd.Series(seg, name="segment"),
        n_boot=n_boot, ci_quantiles=CI, random_state=seed,
    )  # fmt: skip
    table = mf.by_group.copy()
    lo, hi = mf.by_group_ci
    for m in metrics:
        table[m + "_lo"], table[m + "_hi"] = lo[m], hi[m]
    sizes = pd.Series(rows[:, ORDERS], index=seg).groupby(level=0).sum()
    table["orders"] = sizes.reindex(table.index).astype(int)
    cens = pd.Series(rows[:, CENSORED_N], index=seg).groupby(level=0).sum()
    table["censored"] = cens.reindex(table.index).astype(int)
    reference = most_favoured(table["approval"], table["orders"], min_size)
    table["reference"] = reference
    table = table.join(ratios(rows, seg, reference, n_boot, seed))
    table.loc[reference, ["ratio", "ratio_lo", "ratio_hi"]] = 1.0
    table["flag"] = flags(table["ratio"], table["ratio_hi"], table["orders"] < min_size)
    table.index = pd.Index([str(i) for i in table.index], name="segment")
    return table.loc[sorted(table.index, key=logdata.segment_order)]


def most_favoured(rate: pd.Series, size: pd.Series, min_size: int) -> str:
    """The reference segment: the highest `rate` among segments of at least `min_size`
    (`size`), or among all when none is that large."""
    pool = rate[(size >= min_size) & rate.notna()]
    return str((pool if len(pool) else rate).idxmax())


def flags(ratio: Any, ratio_hi: Any, small: Any) -> np.ndarray:
    """The flag of each ratio: "too few" for a small segment, else "below 0.8" under the
    four-fifths line ("below 0.8 (interval too)" when its whole interval is), else ""."""
    below = (np.asarray(ratio, float) < FOUR_FIFTHS) & ~np.asarray(small, bool)
    whole = np.asarray(ratio_hi, float) < FOUR_FIFTHS
    return np.where(
        small, "too few", np.where(below, np.where(whole, "below 0.8 (interval too)",
                                                   "below 0.8"), "")
    )  # fmt: skip


def ratios(
    rows: np.ndarray, seg: np.ndarray, reference: str, n_boot: int, seed: int,
    metric: Any = _di_ratio,
) -> pd.DataFrame:  # fmt: skip
    """Each segment's disparate-impact ratio and interval, from a MetricFrame whose groups
    are the comparisons (the segment's rows plus the reference's); `metric` is a `ratio_of`
    (default: approval rates)."""
    import pandas as pd
    from fairlearn.metrics import MetricFrame

    ref_rows = np.flatnonzero(seg == reference)
    others = [s for s in pd.unique(seg) if s != reference]
    if not others:
        return pd.DataFrame(columns=["ratio", "ratio_lo", "ratio_hi"], dtype=float)
    take, group, is_ref = [], [], []
    for s in others:
        own = np.flatnonzero(seg == s)
        take += [own, ref_rows]
        group += [np.full(own.size + ref_rows.size, s, object)]
        is_ref += [np.zeros(own.size, bool), np.ones(ref_rows.size, bool)]
    idx = np.concatenate(take)
    mf = MetricFrame(
        metrics={"ratio": metric}, y_true=vectors(rows[idx]), y_pred=np.zeros(idx.size),
        sensitive_features=pd.Series(np.concatenate(group), name="comparison"),
        sample_params={"ratio": {"reference": np.concatenate(is_ref)}},
        n_boot=n_boot, ci_quantiles=CI, random_state=seed,
    )  # fmt: skip
    lo, hi = mf.by_group_ci
    out = pd.DataFrame({"ratio": mf.by_group["ratio"], "ratio_lo": lo["ratio"],
                        "ratio_hi": hi["ratio"]})  # fmt: skip
    out.index = out.index.astype(object)
    return out


def run(args: argparse.Namespace) -> int:
    from engine.reports.render import Report

    if args.min_size < 1:
        raise InvalidInput(f"--min-size must be >= 1, is {args.min_size}", "--min-size")
    if args.boot < 1:
        raise InvalidInput(f"--boot must be >= 1, is {args.boot}", "--boot")
    data = logdata.read_log(args.log, tuple(args.segment))
    frame = data.decisions
    if args.arm != "all":
        frame = frame.loc[(frame["arm"] == args.arm).to_numpy()].reset_index(drop=True)
        if frame.empty:
            raise InvalidInput(f"--arm: the log holds no decisions of arm {args.arm}", "--arm")
    outcomes = None
    if args.outcomes:
        frame, outcomes, as_of = logdata.read_labels(args, data, frame)
        label = frame["label"].to_numpy()
    else:
        label = np.full(len(frame), -1, np.int8)
    counts = order_counts(label, frame["action"].to_numpy())
    customers = frame["customer_id"].fillna("").to_numpy()
    kinds = logdata.segment_columns(frame, args.segment, args.customers)
    rep = Report(args.out, "Bias: decisions per segment")
    intro = (
        f"Log `{data.folder}`, {len(frame):,} decisions (arm: {args.arm}); bootstrap "
        f"{args.boot} samples of customers (in up to {BUCKETS} groups per segment), 95% "
        f"intervals, seed {args.seed}; segments under "
        f"{args.min_size} orders are not flagged."
    )
    if outcomes is not None:
        intro += (
            f" Outcomes `{args.outcomes}` as of {as_of:%Y-%m-%d %H:%M} UTC, label horizon "
            f"{args.label_horizon_days:g} days."
        )
    rep.para(intro)
    rep.bullets(
        [
            "ratio = approval rate / approval rate of the most favoured segment of the kind "
            f"(the highest among segments of at least {args.min_size} orders); flagged below "
            f"{FOUR_FIFTHS} (the four-fifths rule)",
            "false-positive rate = legitimate orders declined or reviewed / orders known "
            "legitimate; censored (declined, no outcome: no chargeback can come, so fraud or "
            "legitimate is unknown) are left out of it, their number per segment in the "
            "column censored"
            if outcomes is not None
            else "false-positive rates need outcomes (--outcomes): left out of this report",
            "a flag is a reason to look, not a finding: a segment holding more fraud is "
            "declined more; its false-positive rate says whether its legitimate orders pay",
        ]
    )
    flagged: list[str] = []
    for kind, segment in kinds.items():
        table = segment_table(
            counts,
            segment,
            customers,
            outcomes is not None,
            args.min_size,
            args.boot,
            args.seed,
        )
        flagged += [f"{kind} = {s}" for s in table.index[table["flag"].str.startswith("below")]]
        _section(rep, kind, table, outcomes is not None)
    rep.heading("Summary", 2)
    rep.para(
        "Segments below the four-fifths line: " + (", ".join(flagged) if flagged else "none") + "."
    )
    if outcomes is not None:
        rep.bullets(outcomes.lines())
    path = rep.write()
    print(f"bias report: {path}")
    print(f"below four-fifths: {', '.join(flagged) if flagged else 'none'}")
    return 0


def _ci(table: pd.DataFrame, m: str, seg: str) -> str:
    v, lo, hi = (table.at[seg, c] for c in (m, m + "_lo", m + "_hi"))
    return "–" if np.isnan(v) else f"{v:.3f} [{lo:.3f}, {hi:.3f}]"


def _section(rep: Any, kind: str, table: pd.DataFrame, with_fpr: bool) -> None:
    from engine.reports.render import figure

    rep.heading(f"Segment: {kind}", 2)
    rep.para(f"Reference (most favoured): `{table['reference'].iloc[0]}`.")
    headers = ["segment", "orders", "approval", "review", "decline"]
    headers += ["false-positive rate", "censored (excluded)"] if with_fpr else []
    headers += ["ratio [95% interval]", "flag"]
    rows = []
    for seg in table.index:
        row = [seg, int(table.at[seg, "orders"])]
        row += [_ci(table, m, seg) for m in ("approval", "review", "decline")]
        row += [_ci(table, "fpr", seg), int(table.at[seg, "censored"])] if with_fpr else []
        row += [_ci(table, "ratio", seg), table.at[seg, "flag"]]
        rows.append(row)
    rep.table(headers, rows)
    fig, ax = figure(7.0, 0.9 + 0.35 * len(table))
    y = np.arange(len(table))
    r = table["ratio"].to_numpy(float)
    err = np.vstack([r - table["ratio_lo"].to_numpy(float), table["ratio_hi"].to_numpy(float) - r])
    colors = ["0.6" if f == "too few" else ("C3" if f else "C0") for f in table["flag"]]
    ax.errorbar(r, y, xerr=np.nan_to_num(np.abs(err)), fmt="none", ecolor="0.4", capsize=3)
    ax.scatter(r, y, c=colors, zorder=3)
    ax.axvline(FOUR_FIFTHS, color="C3", ls="--", lw=1, label="four-fifths (0.8)")
    ax.set_yticks(y, [str(s) for s in table.index])
    ax.set_xlabel("approval rate / most favoured segment's (grey: too few orders)")
    ax.set_title(f"Disparate-impact ratio: {kind}", fontsize=10)
    ax.legend(fontsize=8, loc="lower left")
    rep.figure("ratio-" + re.sub(r"[^A-Za-z0-9_-]", "_", kind), fig, f"ratio per {kind}")
